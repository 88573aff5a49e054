"""Adapters and interop: the toolboxes' formats in, defense outputs out in their layouts,
untrusted files refused, broken files reported by name."""
from __future__ import annotations

import csv
import datetime
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advrbd_plugin import ADAPTERS, ATTACKS, DATASETS, DEFENSES
from advrbd_plugin.adapters import RecordError, UnsafeRecordError, safe_load
from advrbd_plugin.adapters.arrays import art_result, detect_poison, to_images, to_labels
from advrbd_plugin.adapters.backdoor_toolbox import (from_toolbox_keys, parse_folder_name,
                                                     to_toolbox_keys)
from advrbd_plugin.adapters.names import ATTACK_NAMES, markdown_table, our_attack
from advrbd_plugin.cli import main as cli_main
from advrbd_plugin.integrations import backdoorbench as bb_entry
from advrbd_plugin.interop import run_record
from advrbd_plugin.models import build_model
from advrbd_plugin.types import DefenseResult

from fixtures_toolboxes import (SIZE, FakePoisonedCIFAR10, toolbox_folder_name, toy_bundle,
                                write_backdoorbench_record, write_toolbox_folder)

FAST = dict(preset="smoke", sets=["train.epochs=1"], device="cpu", quiet=True, model="resnet9",
            precision="fp32")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bbtoy():
    """The clean data of the BackdoorBench fixtures, registered as dataset 'bbtoy'."""
    bundle = toy_bundle()
    roots = []

    def load(root=None, download=False):
        roots.append(root)
        return bundle

    DATASETS.register("bbtoy")(load)
    yield bundle, roots
    DATASETS.unregister("bbtoy")


@pytest.fixture(scope="module")
def cifar_toy():
    return toy_bundle(name="cifar10", classes=10, n_train=60, n_test=30)


class Evil:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- names --------------------------------------------------------------------------------------
def test_attack_name_table_maps_onto_registered_attacks():
    assert our_attack("badnet", "backdoorbench") == "badnet"
    assert our_attack("blended", "backdoorbench") == "blend"
    assert our_attack("TaCT", "backdoor-toolbox") == "tact"
    assert our_attack("WaNet", "backdoor-toolbox") == "wanet"
    assert our_attack("PhysicalBA", "backdoorbox") == "physicalba"
    assert our_attack("AdaptivePatch", "backdoorbox") == "adaptive_patch"
    assert our_attack("lc", "backdoorbench") is None
    assert our_attack("badnets") == our_attack("BadNets") == "badnet"
    assert our_attack("physical_ba") == "physicalba" and our_attack("Blended") == "blend"
    assert all(r.ours in ATTACKS for r in ATTACK_NAMES if r.ours)
    assert markdown_table() in (REPO / "README_interop.md").read_text()


# -- safe loading -------------------------------------------------------------------------------
def test_safe_load_reads_numpy_records_and_refuses_code(tmp_path):
    data = {"a": np.arange(3), "k": {np.int64(2): {"path": "x", "other_info": [0, np.int64(1)]}},
            "f": np.zeros(2, np.float32), "t": torch.ones(2)}
    torch.save(data, tmp_path / "ok.pt")
    back = safe_load.load(tmp_path / "ok.pt")
    assert back["k"][2]["other_info"] == [0, 1] and back["a"].tolist() == [0, 1, 2]
    marker = tmp_path / "PWNED"
    torch.save({"x": Evil(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"x": Evil(marker)}, f)
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(UnsafeRecordError, match=r"system.*--trust-pickles"):
            safe_load.load(tmp_path / name)
    assert not marker.exists()
    torch.save({"when": datetime.date(2020, 1, 2)}, tmp_path / "date.pt")
    with pytest.raises(UnsafeRecordError, match="datetime.date"):
        safe_load.load(tmp_path / "date.pt")
    assert safe_load.load(tmp_path / "date.pt", trust=True)["when"].year == 2020


# -- BackdoorBench ------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["badnet", "wanet", "sig"])
def test_backdoorbench_load(tmp_path, bbtoy, attack):
    bundle, roots = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle, attack=attack,
                                        numpy1=attack != "sig")
    rec = ADAPTERS.get("backdoorbench")().load(folder)
    assert Path(roots[-1]) == (tmp_path / "BackdoorBench" / "data" / "bbtoy").resolve()
    res = safe_load.load(folder / "attack_result.pt")
    stored = res["bd_train"]["bd_data_container"]["data_dict"]
    t, train = rec.train.truth, rec.train
    triggered = t.poison_mask | t.cover_mask
    assert sorted(int(i) for i in stored) == torch.nonzero(triggered).flatten().tolist()
    for key, entry in list(stored.items())[:5]:
        i = int(key)
        assert int(train.labels[i]) == entry["other_info"][0]
        assert int(t.true_labels[i]) == entry["other_info"][1] == int(bundle.y_train[i])
        assert bool((train.images[i, -3:, -3:] == 255).all())  # the stored PNG, not the clean image
    assert torch.equal(train.images[~triggered], bundle.x_train[~triggered])
    if attack == "wanet":  # noise samples keep their label -> covers
        assert t.cover_mask.any() and not bool((train.labels[t.cover_mask] != t.true_labels[t.cover_mask]).any())
        assert bool((train.labels[t.poison_mask] == 0).all())
    elif attack == "sig":  # clean-label: poisons keep their label
        assert t.poison_mask.any() and bool((train.labels == t.true_labels).all())
    else:
        assert not t.cover_mask.any() and bool((train.labels[t.poison_mask] == 0).all())
    assert train.mean == bundle.mean and rec.meta["attack"] == our_attack(attack, "backdoorbench")
    assert len(rec.triggered) == int((bundle.y_test != 0).sum())
    assert bool((rec.triggered.target_labels == 0).all())
    assert torch.equal(rec.triggered.true_labels, bundle.y_test[bundle.y_test != 0])
    assert rec.model_name == "preactresnet18" and rec.model is not None
    key = "linear.weight"
    assert torch.equal(rec.model.state_dict()[key], res["model"][f"module.{key}"])


def test_backdoorbench_record_moved_or_with_foreign_paths(tmp_path, bbtoy):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "a" / "BackdoorBench", bundle)
    moved = tmp_path / "b" / "BB"
    shutil.move(str(tmp_path / "a" / "BackdoorBench"), str(moved))
    folder = moved / "record" / folder.name
    res = safe_load.load(folder / "attack_result.pt")
    for split in ("bd_train", "bd_test"):  # v2-branch style absolute paths from another machine
        for entry in res[split]["bd_data_container"]["data_dict"].values():
            entry["path"] = "/elsewhere/BackdoorBench" + entry["path"][1:]
    torch.save(res, folder / "attack_result.pt")
    rec = ADAPTERS.get("backdoorbench")().load(folder)
    assert int((rec.train.truth.poison_mask).sum()) == len(res["bd_train"]["bd_data_container"]["data_dict"])


def test_backdoorbench_writer_columns_and_detection_info(tmp_path, bbtoy):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    adapter = ADAPTERS.get("backdoorbench")()
    rec = adapter.load(folder)
    flagged = rec.train.truth.poison_mask.clone()
    flagged[:3] = True
    result = DefenseResult(model=rec.model, poison_mask=flagged, scores=flagged.float())
    out = adapter.write(rec, result, {"model": "preactresnet18", "acc": 0.75, "asr": 0.125, "ra": 0.5},
                        defense="advrbd")
    d = folder / "defense" / "advrbd"
    assert out["defense_result"] == d / "defense_result.pt"
    saved = safe_load.load(d / "defense_result.pt")
    assert set(saved) == {"model_name", "num_classes", "model"}
    assert saved["model_name"] == "preactresnet18" and saved["num_classes"] == bundle.num_classes
    build_model("preactresnet18", bundle.num_classes, SIZE).load_state_dict(saved["model"], strict=True)
    assert (d / "advrbd_df.csv").read_text() == ",test_acc,test_asr,test_ra\n0,0.75,0.125,0.5\n"
    summary = list(csv.reader(io.StringIO((d / "advrbd_df_summary.csv").read_text())))
    assert summary == [["", "test_acc", "test_asr", "test_ra"], ["last", "0.75", "0.125", "0.5"],
                       ["valid_max", "0.75", "0.125", "0.5"],
                       ["exist_nan_value", "False", "False", "False"]]
    raw = (d / "detection_info.csv").read_bytes()
    assert raw.startswith(b"record,TN,FP,FN,TP,TPR,FPR,target\r\n")
    row = list(csv.reader(io.StringIO(raw.decode())))[1]
    positives = rec.train.truth.poison_mask | rec.train.truth.cover_mask
    fp = int((flagged & ~positives).sum())
    assert row[0] == "badnet_0_1" and row[2] == str(fp) and row[4] == str(int(positives.sum()))
    assert row[7] == "0" and float(row[5]) == 1.0


def test_backdoorbench_entry_point_and_export_config(tmp_path, bbtoy, monkeypatch, capsys):
    bundle, _ = bbtoy
    root = tmp_path / "BackdoorBench"
    write_backdoorbench_record(root, bundle, attack="blended")
    monkeypatch.chdir(root)
    yaml_path = "config/defense/none/bbtoy.yaml"
    assert cli_main(["export-config", "--format", "backdoorbench", "--defense", "none",
                     "--dataset", "bbtoy", "--out", yaml_path]) == 0
    exported = yaml.safe_load(Path(yaml_path).read_text())
    assert exported["defense"] == "none" and {"epochs", "batch_size", "lr", "wd", "device"} <= set(exported)
    assert exported["lr"] == 0.01 and exported["batch_size"] == 128  # BackdoorBench's own recipe
    assert exported["precision"] == "auto"
    assert cli_main(["export-config", "--format", "backdoorbench", "--defense", "none", "--dataset",
                     "bbtoy", "--out", "other.yaml", "--set", "precision=fp32", "--set", "device=cpu",
                     "--set", "train.epochs=7"]) == 0
    other = yaml.safe_load(Path("other.yaml").read_text())
    assert (other["precision"], other["device"], other["epochs"]) == ("fp32", "cpu", 7)
    assert cli_main(["export-config", "--format", "backdoorbench", "--defense", "none", "--dataset",
                     "bbtoy", "--out", "bad.yaml", "--set", "precisionn=fp32"]) == 2
    assert "precisionn" in capsys.readouterr().err and not Path("bad.yaml").exists()
    argv = ["--result_file", "badnet_0_1", "--yaml_path", yaml_path, "--dataset", "bbtoy",
            "--device", "cpu", "--epochs", "1", "--model", "resnet9", "--precision", "fp32",
            "--amp", "False", "-pm", "True", "--num_workers", "4"]
    assert bb_entry.main(argv) == 0
    d = root / "record" / "badnet_0_1" / "defense" / "none"
    saved = safe_load.load(d / "defense_result.pt")
    assert saved["model_name"] == "advrbd_plugin:resnet9"
    build_model("resnet9", bundle.num_classes, SIZE).load_state_dict(saved["model"], strict=True)
    rows = list(csv.DictReader(io.StringIO((d / "none_df.csv").read_text())))
    assert all(0 <= float(rows[0][k]) <= 1 for k in ("test_acc", "test_asr", "test_ra"))
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["attack"] == "blend" and metrics["defense"] == "none" and metrics["train_size"] == 60
    assert list((d / "log").glob("*.log")) and "test_acc" in capsys.readouterr().out
    assert bb_entry.main(argv[:4] + ["--dataset", "cifar10"]) == 2  # record was made on bbtoy
    assert "made on 'bbtoy'" in capsys.readouterr().err
    ran = yaml.safe_load((d / "config.yaml").read_text())["train"]
    assert ran["lr"] == 0.01 and ran["schedule"] == "cosine"
    for f in d.rglob("*"):
        if f.is_file():
            f.unlink()
    assert bb_entry.main(argv + ["--lr", "1e12", "--epochs", "5"]) == 2  # diverges: an error, no result files
    err = capsys.readouterr().err
    assert "diverged" in err and "learning rate" in err and "--lr" in err
    assert not (d / "defense_result.pt").exists() and not (d / "metrics.json").exists()
    Path(yaml_path).write_text(Path(yaml_path).read_text() + "pratioo: 0.1\n")
    assert bb_entry.main(argv) == 2 and "unknown key 'pratioo'" in capsys.readouterr().err


@pytest.fixture
def repair_defense():
    """A post-training defense needing clean data; it keeps what it was given."""
    from advrbd_plugin.defenses import Defense

    seen = {}

    class Repair(Defense):
        needs_trained_model = True
        requires_clean_data = True

        def run(self, data, model, *, clean_set, monitor):
            seen.update(model=model, clean=len(clean_set))
            return DefenseResult(model=model)

    DEFENSES.register("_test_repair")(Repair)
    yield seen
    DEFENSES.unregister("_test_repair")


def test_post_training_defense_gets_the_record_model_and_clean_data(tmp_path, bbtoy, repair_defense):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    rec_model = ADAPTERS.get("backdoorbench")().load(folder).model
    m = run_record("backdoorbench", folder, defense="_test_repair",
                   **{**FAST, "model": None, "sets": ["clean_fraction=0.2"]})
    got = repair_defense["model"].state_dict()
    assert all(torch.equal(v, got[k]) for k, v in rec_model.state_dict().items())
    assert repair_defense["clean"] == m["clean_data"] == 12  # 20 % of the clean train split
    assert safe_load.load(Path(m["outputs"]["defense_result"]))["model_name"] == "preactresnet18"
    res = safe_load.load(folder / "attack_result.pt")
    res["model"] = {k: v for k, v in res["model"].items() if "linear" not in k}
    torch.save(res, folder / "attack_result.pt")
    rec = ADAPTERS.get("backdoorbench")().load(folder)
    assert rec.model is None and "missing: linear.bias" in rec.meta["model_note"]
    with pytest.raises(ValueError, match="repairs a trained model.*missing: linear.bias"):
        run_record("backdoorbench", folder, defense="_test_repair", **FAST)


@pytest.mark.skipif("advrbd" not in DEFENSES, reason="the AdvrBD defense is not registered yet")
def test_backdoorbench_round_trip_with_advrbd(tmp_path, bbtoy):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    m = run_record("backdoorbench", folder, defense="advrbd", **{
        **FAST, "sets": ["train.epochs=2", "defense.rounds=1", "defense.pgd_steps=1"]})
    d = folder / "defense" / "advrbd"
    assert Path(m["outputs"]["defense_result"]) == d / "defense_result.pt"
    assert safe_load.load(d / "defense_result.pt")["model_name"] == "advrbd_plugin:resnet9"
    assert (d / "detection_info.csv").is_file() and (d / "poison_report.csv").is_file()
    assert m["detection"]["tpr"] is not None and 0 <= m["acc"] <= 1
    assert ADAPTERS.get("backdoorbench")().load(folder).train.truth.poison_mask.any()  # still readable


# -- backdoor-toolbox ---------------------------------------------------------------------------
def test_toolbox_folder_names():
    name = toolbox_folder_name("adaptive_blend", 0.003, 0.15, 0.003, "hellokitty_32.png")
    assert name == "adaptive_blend_0.003_alpha=0.150_cover=0.003_trigger=hellokitty_32.png_poison_seed=0"
    assert parse_folder_name(name) == {"poison_type": "adaptive_blend", "poison_rate": 0.003,
                                       "alpha": 0.15, "cover_rate": 0.003,
                                       "trigger": "hellokitty_32.png", "poison_seed": 0}
    assert parse_folder_name("TaCT_0.003_cover=0.003_poison_seed=0")["cover_rate"] == 0.003
    assert parse_folder_name("badnet_all_to_all_0.100_poison_seed=0")["poison_type"] == "badnet_all_to_all"
    assert parse_folder_name("WaNet_0.050_cover=0.100_poison_seed=0_arch=ResNet18")["arch"] == "ResNet18"
    with pytest.raises(ValueError, match="does not follow"):
        parse_folder_name("my_poisoned_set")


@pytest.mark.parametrize("ptype", ["adaptive_blend", "TaCT", "WaNet", "SIG", "badnet", "adaptive_patch"])
def test_toolbox_load(tmp_path, cifar_toy, ptype):
    folder = write_toolbox_folder(tmp_path / "backdoor-toolbox", cifar_toy, poison_type=ptype)
    rec = ADAPTERS.get("backdoor-toolbox")().load(folder, clean=cifar_toy)
    t = rec.train.truth
    assert t.poison_mask.nonzero().flatten().tolist() == safe_load.load(folder / "poison_indices")
    if (folder / "cover_indices").exists():
        assert t.cover_mask.nonzero().flatten().tolist() == safe_load.load(folder / "cover_indices")
    assert torch.equal(t.true_labels, cifar_toy.y_train) and rec.meta["attack"] == our_attack(ptype, "backdoor-toolbox")
    assert rec.train.images.dtype == torch.float32 and rec.train.images.shape[1] == 3
    assert rec.model is not None and rec.model_name == "resnet18" and len(rec.clean) == 10
    assert rec.triggered is not None and bool((rec.triggered.target_labels == 0).all())
    if ptype == "TaCT":  # ASR counts the source class only
        assert bool((rec.triggered.true_labels == 1).all())
    else:
        assert len(rec.triggered) == int((rec.y_test != 0).sum())
    if ptype == "WaNet":  # the folder's warp field, applied by our wanet attack
        grid = torch.clamp(safe_load.load(folder / "identity_grid")
                           + 0.5 * safe_load.load(folder / "noise_grid") / SIZE, -1, 1)
        x = rec.x_test[rec.y_test != 0][:1].permute(0, 3, 1, 2).float() / 255
        want = torch.nn.functional.grid_sample(x, grid, align_corners=True)
        got = rec.triggered.images[:1].permute(0, 3, 1, 2).float() / 255
        assert (want - got).abs().max() <= 1 / 255 + 1e-6


def test_toolbox_model_keys_and_writer(tmp_path, cifar_toy):
    folder = write_toolbox_folder(tmp_path / "backdoor-toolbox", cifar_toy, poison_type="TaCT")
    adapter = ADAPTERS.get("backdoor-toolbox")()
    rec = adapter.load(folder)  # no clean dataset: TaCT poisons come from the source class
    assert bool((rec.train.truth.true_labels[rec.train.truth.poison_mask] == 1).all())
    theirs = safe_load.load(folder / "full_base_aug_seed=2333.pt")
    assert {"linear.weight", "layer2.0.shortcut.0.weight", "bn1.running_mean"} <= set(theirs)
    assert to_toolbox_keys(from_toolbox_keys(theirs)).keys() == theirs.keys()
    flagged = rec.train.truth.poison_mask
    out = adapter.write(rec, DefenseResult(model=rec.model, poison_mask=flagged),
                        {"model": "resnet18"}, defense="advrbd")
    saved = safe_load.load(folder / "defended_advrbd_full_base_aug_seed=2333.pt")
    assert out["model"].name == "defended_advrbd_full_base_aug_seed=2333.pt"
    assert saved.keys() == theirs.keys()
    kept = safe_load.load(folder / "cleansed_set_indices_other_advrbd_seed=2333")
    assert kept == torch.nonzero(~flagged).flatten().tolist()
    again = adapter.load(folder, model_path=folder / "defended_advrbd_full_base_aug_seed=2333.pt")
    assert again.model is not None


def test_toolbox_round_trip(tmp_path, cifar_toy):
    folder = write_toolbox_folder(tmp_path / "backdoor-toolbox", cifar_toy, poison_type="adaptive_blend")
    m = run_record("backdoor-toolbox", folder, defense="none", load_options={"clean": cifar_toy}, **FAST)
    assert Path(m["outputs"]["model"]) == folder / "defended_none_full_base_aug_seed=2333.pt"
    assert Path(m["outputs"]["metrics"]).parent == folder / "advrbd_plugin" / "none"
    saved = safe_load.load(folder / "defended_none_full_base_aug_seed=2333.pt")
    build_model("resnet9", 10, SIZE).load_state_dict(saved, strict=True)
    assert m["attack"] == "adaptive_blend" and m["asr"] is not None and 0 <= m["ra"] <= 1
    assert ADAPTERS.get("backdoor-toolbox")().load(folder).train.truth is not None


# -- BackdoorBox and arrays ---------------------------------------------------------------------
def test_backdoorbox_reports_both_asr_definitions(cifar_toy):
    x, y = cifar_toy.x_train.numpy(), cifar_toy.y_train.tolist()
    train = FakePoisonedCIFAR10(x, y, y_target=1, poisoned_rate=0.1)
    test = FakePoisonedCIFAR10(cifar_toy.x_test.numpy(), cifar_toy.y_test.tolist(), 1, 1.0)
    rec = ADAPTERS.get("backdoorbox")().load((train, test), attack="PhysicalBA")
    assert rec.train.truth.poison_mask.nonzero().flatten().tolist() == sorted(train.poisoned_set)
    assert rec.train.truth.target == 1 and rec.meta["attack"] == "physicalba"
    assert torch.equal(rec.x_test, cifar_toy.x_test) and len(rec.triggered) == len(test)
    m = run_record("backdoorbox", (train, test), defense="none", load_options={"attack": "BadNets"}, **FAST)
    non_target = rec.triggered.true_labels != 1
    assert m["asr"] is not None and m["asr_backdoorbox"] is not None and bool(non_target.any())
    assert isinstance(m["outputs"]["model"], torch.nn.Module)


def test_arrays_layouts_and_labels():
    x = np.random.RandomState(0).randint(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    assert torch.equal(to_images(x, "x"), torch.from_numpy(x))
    assert torch.equal(to_images(x.transpose(0, 3, 1, 2), "x"), torch.from_numpy(x))
    f = to_images(x.astype(np.float32) / 255, "x")
    assert f.shape == (5, 3, 8, 8) and float(f.max()) <= 1
    with pytest.raises(ValueError, match="channels_first"):
        to_images(np.zeros((2, 3, 8, 3), np.float32), "x")
    with pytest.raises(ValueError, match="un-normalized"):
        to_images(np.full((2, 8, 8, 3), -1.0, np.float32), "x")
    y, k = to_labels(np.eye(4)[[0, 3, 1]], 3, None, "y")
    assert y.tolist() == [0, 3, 1] and k == 4
    report, is_clean = art_result(DefenseResult(model=None, poison_mask=torch.tensor([0, 1, 0, 1]).bool(),
                                                scores=torch.tensor([0.1, 0.9, 0.2, 0.8])), 4)
    assert is_clean == [1, 0, 1, 0] and set(report) == {1, 3} and report[1] == pytest.approx(0.9)


def test_arrays_detect_poison_and_cli_run_record(tmp_path, cifar_toy, capsys):
    x = cifar_toy.x_train.numpy().transpose(0, 3, 1, 2).astype(np.float32) / 255  # NCHW floats
    y = np.eye(10)[cifar_toy.y_train.numpy()]                                     # one-hot
    report, is_clean = detect_poison(x, y, defense="none", is_clean=np.ones(60), **FAST)
    assert report == {} and is_clean == [1] * 60
    npz = tmp_path / "poisoned.npz"
    np.savez(npz, x_train=cifar_toy.x_train.numpy(), y_train=cifar_toy.y_train.numpy(),
             is_clean=np.ones(60, np.int64), x_test=cifar_toy.x_test.numpy(), y_test=cifar_toy.y_test.numpy())
    argv = ["run-record", "--format", "arrays", "--record", str(npz), "--defense", "none",
            "--preset", "smoke", "--set", "train.epochs=1", "--device", "cpu", "--quiet",
            "--model", "resnet9", "--precision", "fp32"]
    assert cli_main(argv) == 0
    art = json.loads((tmp_path / "poisoned_none" / "art_detection.json").read_text())
    assert art == {"report": {}, "is_clean": [1] * 60}
    assert "art_detection" in capsys.readouterr().out


# -- untrusted and broken files -----------------------------------------------------------------
def test_malicious_attack_result_is_refused_and_never_run(tmp_path, bbtoy, capsys):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    marker = tmp_path / "PWNED"
    res = safe_load.load(folder / "attack_result.pt")
    res["bd_train"]["getitem_all"] = Evil(marker)
    torch.save(res, folder / "attack_result.pt")
    with pytest.raises(UnsafeRecordError) as err:
        ADAPTERS.get("backdoorbench")().load(folder)
    assert "attack_result.pt" in str(err.value) and "--trust-pickles" in str(err.value)
    assert cli_main(["run-record", "--format", "backdoorbench", "--record", str(folder),
                     "--defense", "none", "--device", "cpu"]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_malicious_toolbox_file_is_refused(tmp_path, cifar_toy):
    folder = write_toolbox_folder(tmp_path / "tb", cifar_toy, poison_type="badnet", with_model=False)
    marker = tmp_path / "PWNED"
    with open(folder / "poison_indices", "wb") as f:  # a plain pickle this time
        pickle.dump([1, 2, Evil(marker)], f)
    with pytest.raises(UnsafeRecordError, match="poison_indices"):
        ADAPTERS.get("backdoor-toolbox")().load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "png", "npz", "wrong dict"])
def test_broken_attack_result_gives_a_clear_error(tmp_path, bbtoy, damage):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    path = folder / "attack_result.pt"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("model_name: preactresnet18\n")
    elif damage == "png":
        shutil.copy(next(folder.glob("bd_train_dataset/*/*.png")), path)
    elif damage == "npz":
        np.savez(folder / "x.npz", a=np.zeros(3))
        shutil.move(str(folder / "x.npz"), str(path))
    else:
        torch.save({"model_name": "preactresnet18", "model": {}}, path)
    with pytest.raises(RecordError) as err:
        ADAPTERS.get("backdoorbench")().load(folder)
    msg = str(err.value)
    assert str(path) in msg and "Traceback" not in msg
    assert {"empty": "empty", "wrong dict": "missing keys"}.get(damage, "torch.save") in msg
    assert "\n" not in msg and not msg.rstrip().endswith(",")  # one whole line, not cut mid-sentence
    if damage == "truncated":
        assert "truncated" in msg and "copy it again" in msg


def test_broken_images_and_mismatched_clean_data(tmp_path, bbtoy, cifar_toy):
    bundle, _ = bbtoy
    folder = write_backdoorbench_record(tmp_path / "BackdoorBench", bundle)
    png = next(folder.glob("bd_train_dataset/*/*.png"))
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(RecordError, match=f"{png.name}: not a readable image"):
        ADAPTERS.get("backdoorbench")().load(folder)
    png.unlink()
    with pytest.raises(RecordError, match="is missing"):
        ADAPTERS.get("backdoorbench")().load(folder)
    other = write_backdoorbench_record(tmp_path / "B2", bundle, name="other")
    shuffled = toy_bundle(seed=1)
    shuffled.y_train = shuffled.y_train.roll(1)
    with pytest.raises(RecordError, match="not in the order"):
        ADAPTERS.get("backdoorbench")().load(other, clean=shuffled)
    tb = write_toolbox_folder(tmp_path / "tb", cifar_toy, poison_type="blend", with_model=False)
    (tb / "imgs").write_bytes((tb / "imgs").read_bytes()[:500])
    with pytest.raises(RecordError, match="imgs"):
        ADAPTERS.get("backdoor-toolbox")().load(tb)
    bad = tmp_path / "objects.npz"
    np.savez(bad, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1))
    with pytest.raises(RecordError, match="objects.npz"):
        ADAPTERS.get("arrays")().load(bad)
