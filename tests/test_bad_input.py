"""Bad input through the public CLI: one line naming the file or key, what was expected and
how to fix it, exit code 2, and no results left behind (no metrics.json, no model file)."""
from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advrbd_plugin import cli
from advrbd_plugin.fuzz import Payload  # unpickling it would create a marker file
from advrbd_plugin.registry import DATASETS
from fixtures_toolboxes import toy_bundle, write_backdoorbench_record, write_toolbox_folder

SMOKE = ["--preset", "smoke", "--set", "train.epochs=1", "--quiet", "--device", "cpu"]


def _npz(path: Path, **arrays) -> Path:
    base = {"x_train": np.random.RandomState(0).randint(0, 255, (40, 8, 8, 3)).astype(np.uint8),
            "y_train": np.arange(40) % 4,
            "x_test": np.random.RandomState(1).randint(0, 255, (20, 8, 8, 3)).astype(np.uint8),
            "y_test": np.arange(20) % 4}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _pickle_payload_npz(tmp: Path) -> Path:
    path = _npz(tmp / "payload.npz")
    with zipfile.ZipFile(path, "a") as z:  # an npz whose 'classes' is a pickled object array
        arr = np.empty(1, dtype=object)
        arr[0] = Payload(tmp / "PWNED")
        with z.open("classes.npy", "w") as f:
            np.lib.format.write_array(f, arr, allow_pickle=True)
    return path


def _dataset_cases(tmp: Path) -> dict:
    """name -> (argv, words the message must hold). ``run --dataset npz:PATH``."""
    def run(path, *extra):
        return ["run", "--dataset", f"npz:{path}", "--attack", "badnet", *SMOKE, *extra]

    empty = tmp / "empty.npz"
    empty.write_bytes(b"")
    return {
        "npz missing": (run(tmp / "absent.npz"), ["absent.npz"]),
        "npz empty": (run(empty), ["empty.npz"]),
        "npz truncated": (run(_truncate(_npz(tmp / "trunc.npz"))), ["trunc.npz"]),
        "npz pickle payload": (run(_pickle_payload_npz(tmp)), ["payload.npz", "Python objects"]),
        "npz without x_train": (run(_npz(tmp / "nox.npz", x_train=None)), ["x_train"]),
        "npz wrong dtype": (run(_npz(tmp / "dtype.npz", x_train=np.full((40, 8, 8, 3), "a"))),
                            ["x_train"]),
        "npz wrong shape": (run(_npz(tmp / "shape.npz", x_train=np.zeros((40, 64), np.uint8))),
                            ["x_train"]),
        "npz labels out of range": (run(_npz(tmp / "labels.npz", y_train=np.arange(40) % 4 - 1)),
                                    ["y_train"]),
        "npz NaN pixels": (run(_npz(tmp / "nan.npz", x_train=np.full((40, 8, 8, 3), np.nan, np.float32))),
                           ["x_train"]),
        "npz length mismatch": (run(_npz(tmp / "len.npz", y_train=np.arange(39) % 4)),
                                ["y_train"]),
    }


def _arrays_cases(tmp: Path) -> dict:
    """``run-record --format arrays --record FILE.npz``."""
    def rec(path):
        return ["run-record", "--format", "arrays", "--record", str(path), "--defense", "none",
                "--out", str(tmp / "out-arrays"), *SMOKE]

    (tmp / "a_empty.npz").write_bytes(b"")
    a_trunc = _truncate(_npz(tmp / "a_trunc.npz"))
    return {
        "arrays truncated": (rec(a_trunc), ["a_trunc.npz"]),
        "arrays wrong dtype": (rec(_npz(tmp / "a_dtype.npz", x_train=np.full((40, 8, 8, 3), "a"))),
                               ["x_train"]),
        "arrays missing": (rec(tmp / "a_absent.npz"), ["a_absent.npz"]),
        "arrays empty": (rec(tmp / "a_empty.npz"), ["a_empty.npz"]),
        "arrays NaN pixels": (rec(_npz(tmp / "a_nan.npz", x_train=np.full((40, 8, 8, 3), np.nan,
                                                                          np.float32))), ["x_train"]),
        "arrays length mismatch": (rec(_npz(tmp / "a_len.npz", y_train=np.arange(30) % 4)),
                                   ["y_train"]),
    }


def _backdoorbench_cases(tmp: Path, bundle) -> dict:
    def rec(folder):
        return ["run-record", "--format", "backdoorbench", "--record", str(folder), "--defense",
                "none", "--model", "resnet9", *SMOKE]

    def fresh(name):
        return write_backdoorbench_record(tmp / name, bundle)

    empty = fresh("bb_empty")
    (empty / "attack_result.pt").write_bytes(b"")
    trunc = fresh("bb_trunc")
    _truncate(trunc / "attack_result.pt")
    payload = fresh("bb_payload")
    with open(payload / "info.pickle", "wb") as f:
        pickle.dump({"attack": "badnet", "x": Payload(tmp / "PWNED")}, f)
    index = fresh("bb_index")
    res = torch.load(index / "attack_result.pt", weights_only=False)
    data = res["bd_train"]["bd_data_container"]["data_dict"]
    data[10_000] = next(iter(data.values()))
    res["bd_train"]["original_index_array"] = np.append(res["bd_train"]["original_index_array"], 10_000)
    torch.save(res, index / "attack_result.pt")
    order = fresh("bb_order")
    res = torch.load(order / "attack_result.pt", weights_only=False)
    for value in res["bd_train"]["bd_data_container"]["data_dict"].values():
        value["other_info"][1] = (int(value["other_info"][1]) + 1) % bundle.num_classes
    torch.save(res, order / "attack_result.pt")
    return {
        "backdoorbench missing": (rec(tmp / "bb_absent"), ["bb_absent"]),
        "backdoorbench empty": (rec(empty), ["attack_result.pt", "empty"]),
        "backdoorbench truncated": (rec(trunc), ["attack_result.pt", "truncated"]),
        "backdoorbench pickle payload": (rec(payload), ["info.pickle", "--trust-pickles"]),
        "backdoorbench index out of range": (rec(index), ["10000"]),
        "backdoorbench clean data in another order": (rec(order), ["order"]),
    }


def _toolbox_cases(tmp: Path, cifar) -> dict:
    def rec(folder):
        return ["run-record", "--format", "backdoor-toolbox", "--record", str(folder), "--defense",
                "none", "--model", "resnet9", *SMOKE]

    def fresh(name):
        return write_toolbox_folder(tmp / name, cifar, poison_type="badnet", with_model=False)

    payload = fresh("tb_payload")
    with open(payload / "poison_indices", "wb") as f:
        pickle.dump([1, 2, Payload(tmp / "PWNED")], f)
    index = fresh("tb_index")
    torch.save([1, 2, 10_000], index / "poison_indices")
    labels = fresh("tb_labels")
    torch.save(torch.full((60,), 99, dtype=torch.long), labels / "labels")
    shape = fresh("tb_shape")
    torch.save(torch.zeros(60, 16, 16), shape / "imgs")
    empty = fresh("tb_empty")
    (empty / "labels").write_bytes(b"")
    trunc = fresh("tb_trunc")
    _truncate(trunc / "imgs")
    return {
        "toolbox missing": (rec(tmp / "tb_absent"), ["tb_absent"]),
        "toolbox pickle payload": (rec(payload), ["poison_indices", "--trust-pickles"]),
        "toolbox index out of range": (rec(index), ["poison_indices", "10000"]),
        "toolbox labels out of range": (rec(labels), ["labels", "99"]),
        "toolbox wrong image shape": (rec(shape), ["imgs"]),
        "toolbox empty file": (rec(empty), ["labels", "empty"]),
        "toolbox truncated file": (rec(trunc), ["imgs", "truncated"]),
    }


def _config_cases(tmp: Path) -> dict:
    def run(*extra):
        return ["run", "--dataset", "digits", "--out", str(tmp / "out-config"), *SMOKE, *extra]

    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "broken.yaml").write_text("train: {epochs: [\n")
    one = tmp / "one_class"
    (one / "cat").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(one / "cat" / f"{i}.png")
    return {
        "config unknown key": (run("--set", "trainn.epochs=3"), ["trainn"]),
        "config unknown nested key": (run("--set", "train.epoch=3"), ["epoch"]),
        "config wrong type": (run("--set", "train.epochs=many"), ["train.epochs", "expected a number"]),
        "config negative epochs": (run("--set", "train.epochs=-1"), ["epochs"]),
        "config fraction above 1": (run("--set", "clean_fraction=1.5"), ["clean_fraction"]),
        "config defense fraction above 1": (run("--defense", "advrbd", "--set", "defense.seed_frac=1.5"),
                                            ["seed_frac"]),
        "config unknown attack": (run("--attack", "badnett"), ["badnett", "badnet"]),
        "config unknown defense": (run("--defense", "advrbdd"), ["advrbdd", "advrbd"]),
        "config unknown model": (run("--model", "resnet19"), ["resnet19", "resnet18"]),
        "config unknown preset": (["run", "--dataset", "digits", "--preset", "fast", "--quiet"], ["fast"]),
        "config file missing": (run("--config", str(tmp / "absent.yaml")), ["absent.yaml"]),
        "config file not a mapping": (run("--config", str(tmp / "list.yaml")), ["list.yaml"]),
        "config file invalid yaml": (run("--config", str(tmp / "broken.yaml")), ["broken.yaml", "line"]),
        "image folder with one class": (["scan", "--data", str(one), "--model", "resnet9",
                                         "--out", str(tmp / "out-scan"), *SMOKE],
                                        ["one_class", "at least 2 classes"]),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    bundle = toy_bundle()
    DATASETS.register("bbtoy")(lambda root=None, download=False: bundle)
    cifar = toy_bundle(name="cifar10", classes=10, n_train=60, n_test=30)
    out = {**_dataset_cases(tmp), **_arrays_cases(tmp), **_backdoorbench_cases(tmp, bundle),
           **_toolbox_cases(tmp, cifar), **_config_cases(tmp)}
    if not torch.cuda.is_available():
        out["device cuda without a GPU"] = (["run", "--dataset", "digits", "--device", "cuda",
                                             "--out", str(tmp / "out-cuda"), "--quiet"], ["cuda"])
    yield tmp, out
    DATASETS.unregister("bbtoy")


CASE_NAMES = [
    "npz missing", "npz empty", "npz truncated", "npz pickle payload", "npz without x_train",
    "npz wrong dtype", "npz wrong shape", "npz labels out of range", "npz NaN pixels",
    "npz length mismatch", "arrays missing", "arrays empty", "arrays NaN pixels",
    "arrays length mismatch", "backdoorbench missing", "backdoorbench empty",
    "backdoorbench truncated", "backdoorbench pickle payload", "backdoorbench index out of range",
    "backdoorbench clean data in another order", "toolbox missing", "toolbox pickle payload",
    "toolbox index out of range", "toolbox labels out of range", "toolbox wrong image shape",
    "toolbox empty file", "toolbox truncated file", "arrays truncated", "arrays wrong dtype",
    "config unknown key", "config unknown nested key", "config wrong type", "config negative epochs",
    "config fraction above 1", "config defense fraction above 1", "config unknown attack",
    "config unknown defense", "config unknown model", "config unknown preset", "config file missing",
    "config file not a mapping", "config file invalid yaml", "image folder with one class",
    "device cuda without a GPU",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_clear_line_exit_2_and_no_results(cases, name, capsys, monkeypatch):
    tmp, table = cases
    if name not in table:
        pytest.skip("a GPU is present")
    argv, words = table[name]
    monkeypatch.chdir(tmp)
    before = set(tmp.rglob("metrics.json")) | set(tmp.rglob("*.pt"))
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (name, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("advrbd: error: "), (name, err)
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (name, word, lines[0])
    assert not (tmp / "PWNED").exists(), "a pickle payload ran"
    after = set(tmp.rglob("metrics.json")) | set(p for p in tmp.rglob("*.pt") if "out-" in str(p))
    assert not {p for p in after - before if "metrics.json" in p.name or "model.pt" in p.name}, name


def test_a_dataset_smaller_than_one_batch_simply_works(tmp_path):
    path = _npz(tmp_path / "tiny.npz", x_train=np.random.RandomState(0).randint(
        0, 255, (12, 8, 8, 3)).astype(np.uint8), y_train=np.arange(12) % 4)
    code = cli.main(["run", "--dataset", f"npz:{path}", "--out", str(tmp_path / "runs"), *SMOKE])
    assert code == 0 and list((tmp_path / "runs").rglob("metrics.json"))


def test_unwritable_output_fails_before_training(tmp_path, capsys):
    code = cli.main(["run", "--dataset", "digits", "--out", "/proc/advrbd-no-such-place", *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not writable" in err and "--out DIR" in err and len(err.splitlines()) == 1


def test_full_disk_is_caught_up_front(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    code = cli.main(["run", "--dataset", "digits", "--out", str(tmp_path), *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "MiB free" in err and "needs about" in err
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("model.pt"))


def test_disk_full_while_writing_leaves_no_truncated_file(tmp_path, capsys, monkeypatch):
    import errno

    real = torch.save

    def full(obj, f, *a, **kw):
        if str(f).endswith(".tmp") and ".model.pt." in str(f):
            Path(f).write_bytes(b"PK\x03\x04 half a model")
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full)
    code = cli.main(["run", "--dataset", "digits", "--out", str(tmp_path), *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "No space left on device" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.rglob("model.pt")) and not list(tmp_path.rglob("metrics.json"))
    assert not list(tmp_path.rglob("*.tmp"))
