"""Dataset loaders: digits, npz, the absent-data errors, folder datasets, the real CIFAR-10 subset."""
import cv2
import numpy as np
import pytest
import torch

from advrbd_plugin.data import (DatasetBundle, DatasetNotFoundError, channel_stats, load_dataset,
                                shared_data_path)
from advrbd_plugin.registry import DATASETS, UnknownNameError
from advrbd_plugin.types import PoisonedDataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _arrays(n_train=12, n_test=6, size=8, channels=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        x_train=rng.integers(0, 256, (n_train, size, size, channels), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.int64) % classes,
        x_test=rng.integers(0, 256, (n_test, size, size, channels), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.int64) % classes,
    )


def test_registry_lists_loaders():
    assert {"digits", "cifar10", "cifar100", "gtsrb", "tiny-imagenet", "imagenette"} <= set(DATASETS.names())


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("cifar-10")


def test_digits_shapes_and_dtypes(digits):
    assert digits.x_train.shape == (1437, 16, 16, 1) and digits.x_test.shape == (360, 16, 16, 1)
    assert digits.x_train.dtype == torch.uint8 and digits.y_train.dtype == torch.int64
    assert digits.num_classes == 10 and digits.classes == [str(d) for d in range(10)]
    assert int(digits.x_train.max()) == 255 and int(digits.x_train.min()) == 0
    assert digits.channels == 1 and digits.input_size == 16
    counts = torch.bincount(digits.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified 20 %


def test_digits_split_is_deterministic(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.x_train, again.x_train) and torch.equal(digits.y_test, again.y_test)


def test_digits_stats_and_train_set(digits):
    mean, std = channel_stats(digits.x_train)
    x = digits.x_train.double() / 255
    assert mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)
    ds = digits.train_set()
    assert isinstance(ds, PoisonedDataset) and len(ds) == 1437 and ds.channels == 1
    assert ds.mean == digits.mean and ds.num_classes == 10 and ds.name == "digits"
    assert len(digits.test_set()) == 360


def test_npz_round_trip(tmp_path):
    arrays = _arrays()
    path = tmp_path / "tiny.npz"
    np.savez_compressed(path, classes=np.array(["a", "b", "c"]), extra=np.zeros(3), **arrays)
    bundle = load_dataset(f"npz:{path}")
    assert bundle.name == "tiny" and bundle.classes == ["a", "b", "c"] and bundle.num_classes == 3
    for key, value in arrays.items():
        assert torch.equal(getattr(bundle, key), torch.from_numpy(value))
    assert load_dataset(str(path)).num_classes == 3  # a bare .npz path works too


def test_npz_nchw_and_grayscale_are_converted(tmp_path):
    arrays = _arrays(channels=3)
    nchw = {k: (v.transpose(0, 3, 1, 2) if k.startswith("x") else v) for k, v in arrays.items()}
    np.savez(tmp_path / "nchw.npz", **nchw)
    bundle = load_dataset(f"npz:{tmp_path / 'nchw.npz'}")
    assert torch.equal(bundle.x_train, torch.from_numpy(arrays["x_train"]))
    gray = {k: (v[..., 0] if k.startswith("x") else v) for k, v in arrays.items()}
    np.savez(tmp_path / "gray.npz", **gray)
    assert load_dataset(f"npz:{tmp_path / 'gray.npz'}").x_train.shape == (12, 8, 8, 1)


def test_npz_ambiguous_layout_is_an_error(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = np.zeros((12, 3, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "amb.npz", **arrays)
    with pytest.raises(ValueError, match=r"x_train.*\(N, H, W, C\).*\(12, 3, 8, 3\)"):
        load_dataset(f"npz:{tmp_path / 'amb.npz'}")


def test_npz_missing_file_names_path_and_fix(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value) and "npz:PATH" in str(err.value)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_dataset(f"npz:{path}")


def test_npz_missing_keys(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="missing y_test"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_wrong_dtypes(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "float.npz", **{**arrays, "x_test": arrays["x_test"] / 255.0})
    with pytest.raises(ValueError, match="x_test.*uint8.*float64"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "flab.npz", **{**arrays, "y_train": arrays["y_train"].astype(np.float32)})
    with pytest.raises(ValueError, match="y_train.*integer"):
        load_dataset(f"npz:{tmp_path / 'flab.npz'}")


def test_npz_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", classes=np.array(["a", None], dtype=object), **_arrays(classes=2))
    with pytest.raises(ValueError, match="Python objects"):
        load_dataset(f"npz:{tmp_path / 'obj.npz'}")


def test_bundle_validation_messages():
    a = _arrays()
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        DatasetBundle("t", a["x_train"], a["y_train"], a["x_test"], a["y_test"], num_classes=2)
    with pytest.raises(ValueError, match="shaped like x_train"):
        DatasetBundle("t", a["x_train"], a["y_train"], a["x_test"][..., :1], a["y_test"], 3)
    with pytest.raises(ValueError, match="3 names"):
        DatasetBundle("t", a["x_train"], a["y_train"], a["x_test"], a["y_test"], 3, classes=["x"])
    flat = DatasetBundle("t", np.zeros_like(a["x_train"]), a["y_train"], a["x_test"], a["y_test"], 3)
    assert min(flat.std) > 0  # constant channel: std floored at 1/255


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "gtsrb", "tiny-imagenet", "imagenette"])
def test_absent_data_raises_clear_error(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "--data-root" in msg and "--download" in msg
    if name == "cifar10":
        assert "npz:../shared/data/cifar10_subset.npz" in msg


def _write_png(path, rng, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_imagenette_folder(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "imagenette2-320"
    for split, n in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n03888257"):
            for i in range(n):
                _write_png(base / split / wnid / f"{i}.png", rng)
    bundle = load_dataset("imagenette", root=str(tmp_path))
    assert bundle.x_train.shape == (6, 64, 64, 3) and bundle.x_test.shape == (4, 64, 64, 3)
    assert bundle.classes == ["tench", "parachute"]
    assert bundle.y_train.tolist() == [0, 0, 0, 1, 1, 1] and bundle.y_test.tolist() == [0, 0, 1, 1]


def test_tiny_imagenet_val_annotations(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "tiny-imagenet-200"
    for wnid in ("n001", "n002"):
        for i in range(2):
            _write_png(base / "train" / wnid / "images" / f"{wnid}_{i}.png", rng, (64, 64))
    lines = []
    for i, wnid in enumerate(("n002", "n001", "n002")):
        _write_png(base / "val" / "images" / f"val_{i}.png", rng, (64, 64))
        lines.append(f"val_{i}.png\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    bundle = load_dataset("tiny-imagenet", root=str(tmp_path))
    assert bundle.classes == ["n001", "n002"] and bundle.x_train.shape == (4, 64, 64, 3)
    assert bundle.y_test.tolist() == [1, 0, 1]
    expected = cv2.cvtColor(cv2.imread(str(base / "val" / "images" / "val_1.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(bundle.x_test[1].numpy(), expected)


def test_shared_data_path_honours_env(tmp_path, monkeypatch):
    (tmp_path / "x.npz").write_bytes(b"")
    monkeypatch.setenv("ADVRBD_DATA_DIR", str(tmp_path))
    assert shared_data_path("x.npz") == tmp_path / "x.npz"
    assert shared_data_path("absent.npz") is None


@pytest.mark.realdata
def test_real_cifar10_subset():
    path = shared_data_path("cifar10_subset.npz")
    if path is None:
        pytest.skip("cifar10_subset.npz not found (set ADVRBD_DATA_DIR or place ../shared/data)")
    bundle = load_dataset(f"npz:{path}")
    assert bundle.x_train.shape == (11000, 32, 32, 3) and bundle.x_test.shape == (10000, 32, 32, 3)
    assert bundle.classes[:3] == ["airplane", "automobile", "bird"] and bundle.num_classes == 10
    assert torch.bincount(bundle.y_train).tolist() == [1100] * 10
    assert bundle.mean == pytest.approx((125.8 / 255, 123.2 / 255, 114.1 / 255), abs=0.01)


def test_corrupt_cifar_names_the_failed_check(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not the real batch")  # a partial copy
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    msg = str(err.value)
    assert "failed torchvision's file and checksum check" in msg and str(tmp_path) in msg
    assert "does not exist" in msg  # the second place looked, <root>/cifar10
    assert err.value.reason in msg and "--data-root" not in err.value.reason


def test_backdoorbench_entry_point_names_its_own_data_flag(tmp_path, monkeypatch, capsys):
    from advrbd_plugin.integrations import backdoorbench as bb_entry

    record = tmp_path / "record" / "badnet_0_1"
    record.mkdir(parents=True)
    torch.save({"model_name": "preactresnet18", "num_classes": 10, "model": {}, "data_path": "./data",
                "img_size": (32, 32, 3), "clean_data": "cifar10", "bd_train": {}, "bd_test": {}},
               record / "attack_result.pt")
    monkeypatch.chdir(tmp_path)
    assert bb_entry.main(["--result_file", "badnet_0_1", "--defense", "none",
                          "--dataset_path", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--dataset_path DIR" in err and "does not exist" in err
    assert "--data-root" not in err and "--download" not in err
