"""advrbd compare: the grid, its files, and resuming a half-finished grid."""
from __future__ import annotations

import json

import pytest
import torch

from advrbd_plugin import compare as compare_mod
from advrbd_plugin.cli import main
from advrbd_plugin.defenses.base import Defense

KEYS = {"attack", "defense", "acc", "asr", "ra", "tpr", "fpr", "precision", "seconds",
        "time_ratio", "clean_data"}
GRID = dict(dataset="digits", attacks=["badnet"], defenses=["clp"], seeds=[0, 1],
            preset="smoke", sets=["train.epochs=1"], quiet=True)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def applies(monkeypatch):
    """Counts Defense.apply calls by defense name."""
    calls: list[str] = []
    original = Defense.apply

    def counting(self, *args, **kwargs):
        calls.append(self.registry_name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Defense, "apply", counting)
    return calls


def test_compare_writes_tables_and_resumes(tmp_path, applies):
    rows = compare_mod.compare(out=tmp_path, **GRID)
    assert sorted(applies) == ["clp", "clp", "none", "none"]
    folder = tmp_path / "digits" / "compare"
    for name in ("compare.md", "compare.csv", "compare.json", "compare_scatter.png"):
        assert (folder / name).is_file()
    saved = json.loads((folder / "compare.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and len(saved["cells"]) == 4
    assert [(r["attack"], r["defense"]) for r in rows] == [
        ("badnet", "none"), ("badnet", "clp"), ("Average", "none"), ("Average", "clp")]
    for r in rows:
        assert KEYS <= set(r)
        assert all(r[k] is None or 0 <= r[k] <= 1 for k in ("acc", "asr", "ra", "tpr", "fpr"))
    none, clp = rows[0], rows[1]
    assert none["time_ratio"] == 1.0 and none["clean_data"] == 0 and "acc_std" in none
    assert clp["time_ratio"] < 1.0
    md = (folder / "compare.md").read_text()
    assert "| Attack | none ACC | none ASR | clp ACC | clp ASR |" in md and "±" in md

    # a half-finished grid: only the missing cell is recomputed
    (tmp_path / "digits" / "badnet" / "clp" / "1" / "metrics.json").unlink()
    applies.clear()
    again = compare_mod.compare(out=tmp_path, **GRID)
    assert applies == ["clp"]
    assert [r["acc"] for r in again] == pytest.approx([r["acc"] for r in rows])


def test_compare_finished_only_trains_nothing(tmp_path, applies):
    with pytest.raises(ValueError, match="no finished cell"):
        compare_mod.compare(out=tmp_path, finished_only=True, **GRID)
    compare_mod.compare(out=tmp_path, **{**GRID, "defenses": ["none"]})
    applies.clear()
    rows = compare_mod.compare(out=tmp_path, finished_only=True,
                               **{**GRID, "attacks": ["badnet", "blend"]})
    assert applies == []  # clp and every blend cell are unfinished: left out, not trained
    assert [(r["attack"], r["defense"], r["seeds"]) for r in rows] == [
        ("badnet", "none", 2), ("Average", "none", 2)]
    assert "Unfinished grid" not in (tmp_path / "digits" / "compare" / "compare.md").read_text()
    (tmp_path / "digits" / "badnet" / "none" / "1" / "metrics.json").unlink()
    compare_mod.compare(out=tmp_path, **{**GRID, "attacks": ["blend"], "seeds": [0]})
    applies.clear()
    rows = compare_mod.compare(out=tmp_path, finished_only=True,
                               **{**GRID, "attacks": ["badnet", "blend"], "seeds": [0]})
    assert applies == []
    avg = {r["defense"]: r["attacks"] for r in rows if r["attack"] == "Average"}
    assert avg == {"none": 1, "clp": 1}  # over blend, the only attack both defenses finished
    clp_blend = next(r for r in rows if r["attack"] == "blend" and r["defense"] == "clp")
    assert rows[-1]["asr"] == clp_blend["asr"]
    md = (tmp_path / "digits" / "compare" / "compare.md").read_text()
    assert "the Average row covers only the attacks every defense finished: blend." in md


def test_compare_cli(tmp_path, applies, capsys):
    code = main(["compare", "--dataset", "digits", "--attacks", "badnet", "--defenses", "finetuning",
                 "--preset", "smoke", "--seed", "3", "--out", str(tmp_path), "--set",
                 "train.epochs=1", "--quiet", "--report-dir", str(tmp_path / "report")])
    assert code == 0 and applies == ["none", "finetuning"]
    assert "| badnet | finetuning |" in capsys.readouterr().out
    row = json.loads((tmp_path / "report" / "compare.json").read_text())["rows"][1]
    assert row["defense"] == "finetuning" and row["clean_data"] > 0
    assert (tmp_path / "digits" / "badnet" / "finetuning" / "3" / "metrics.json").is_file()
    applies.clear()
    assert main(["compare", "--dataset", "digits", "--attacks", "badnet", "blend", "--defenses",
                 "finetuning", "--preset", "smoke", "--seed", "3", "--out", str(tmp_path), "--set",
                 "train.epochs=1", "--quiet", "--finished-only"]) == 0
    assert applies == []


def test_compare_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="at least one attack"):
        compare_mod.compare("digits", [], ["clp"])
