"""The compare grid on Ray equals the local backend's, and resumes with the missing cells only."""
from __future__ import annotations

import json

import pytest
import torch

from advrbd_plugin.compare import compare

# under `-n`, the tests that open local ports (DDP rendezvous, Ray) share one worker, so
# one cannot take the port another just picked
pytestmark = pytest.mark.xdist_group("ports")

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[ray]\")")

GRID = dict(dataset="digits", attacks=["badnet", "blend"], defenses=["none", "ac"], seeds=[0],
            preset="smoke", sets=["train.epochs=1"], quiet=True, precision="fp32")
KEYS = ("attack", "defense", "acc", "asr", "ra", "tpr", "fpr", "precision")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _table(rows):
    return [{k: r.get(k) for k in KEYS} for r in rows]


def test_ray_grid_equals_local_and_resumes(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray tasks with num_cpus=1 run one thread: same arithmetic
    try:
        local = compare(out=str(tmp_path / "local"), **GRID)
    finally:
        torch.set_num_threads(threads)
    # a first Ray run that stops after one attack, then the whole grid
    compare(out=str(tmp_path / "ray"), backend="ray", **{**GRID, "attacks": ["badnet"]})
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("metrics.json")}
    assert len(first) == 2
    rows = compare(out=str(tmp_path / "ray"), backend="ray", **GRID)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("metrics.json")}
    assert len(after) == 4 and all(after[p] == t for p, t in first.items())  # not recomputed
    assert _table(rows) == _table(local)
    saved = json.loads((tmp_path / "ray" / "digits" / "compare" / "compare.json").read_text())
    assert len(saved["cells"]) == 4


def test_unknown_backend_is_named(tmp_path):
    with pytest.raises(ValueError, match="backend expected 'local' or 'ray'"):
        compare(out=str(tmp_path), backend="dask", **GRID)
