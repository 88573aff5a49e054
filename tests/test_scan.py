"""`advrbd scan`: the defender's own data (npz or class folders), no attack, no truth."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from advrbd_plugin.cli import main as cli_main
from advrbd_plugin.scan import load_scan_data

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "defense.rounds=1"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _arrays(n=96, size=12, seed=0):
    g = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = g.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for k in range(3):
        x[y == k, 4 * k:4 * k + 4] += 150
    return x, y


def test_scan_npz_writes_model_and_ranking(tmp_path, capsys):
    x, y = _arrays()
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    out = tmp_path / "scan"
    assert cli_main(["scan", "--data", str(tmp_path / "mine.npz"), "--model", "resnet20",
                     "--out", str(out), "--quiet", *FAST]) == 0
    assert "flagged" in capsys.readouterr().out
    summary = json.loads((out / "scan.json").read_text())
    assert summary["samples"] == len(x) and 0 <= summary["test_acc"] <= 1
    rows = list(csv.DictReader((out / "suspicious.csv").open()))
    assert sorted(int(r["index"]) for r in rows) == list(range(len(x)))
    flags = [int(r["flagged"]) for r in rows]
    assert flags == sorted(flags, reverse=True), "flagged samples are ranked first"
    assert sum(flags) == summary["flagged"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.endswith("weight") for k in state)


def test_scan_folder_keeps_file_paths(tmp_path):
    x, y = _arrays(n=30, size=16)
    for i, (img, label) in enumerate(zip(x, y)):
        d = tmp_path / "data" / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:03d}.png"), img)
    data, test, paths = load_scan_data(tmp_path / "data", image_size=16)
    assert len(data) == 30 and test is None and data.num_classes == 3
    assert all(p.endswith(".png") for p in paths) and len(paths) == 30
    assert cli_main(["scan", "--data", str(tmp_path / "data"), "--model", "resnet20",
                     "--image-size", "16", "--out", str(tmp_path / "s"), "--quiet", *FAST]) == 0
    rows = list(csv.DictReader((tmp_path / "s" / "suspicious.csv").open()))
    assert rows[0]["path"].endswith(".png")


def test_scan_bad_input(tmp_path, capsys):
    assert cli_main(["scan", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "no file or folder" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    assert cli_main(["scan", "--data", str(tmp_path / "wrong.npz")]) == 2
    assert "x_train and y_train" in capsys.readouterr().err
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.zeros(4))
    assert cli_main(["scan", "--data", str(tmp_path / "float.npz")]) == 2
    assert "uint8" in capsys.readouterr().err
    x, y = _arrays(n=12)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    assert cli_main(["scan", "--data", str(tmp_path / "ok.npz"), "--defense", "finetuning"]) == 2
    assert "needs reserved clean data" in capsys.readouterr().err
