import numpy as np
import pytest
import torch

from advrbd_plugin.types import (DefenseResult, GroundTruth, PoisonedDataset, TriggeredTestSet,
                                 to_float_nchw, to_uint8_nhwc)


def _imgs(n=4, h=8, c=3):
    return torch.randint(0, 256, (n, h, h, c), dtype=torch.uint8)


def test_valid_uint8_and_float_layouts():
    ds = PoisonedDataset(_imgs(), torch.tensor([0, 1, 2, 0]), 3)
    assert len(ds) == 4 and ds.channels == 3 and ds.input_size == (8, 8)
    f = ds.float_images()
    assert f.shape == (4, 3, 8, 8) and f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    ds2 = PoisonedDataset(f, np.array([0, 1, 2, 0]), 3)
    assert ds2.input_size == (8, 8)
    assert torch.equal(to_uint8_nhwc(f), ds.images)
    assert torch.allclose(to_float_nchw(ds.images), f)


def test_one_hot_labels_accepted():
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3)
    assert PoisonedDataset(_imgs(), y, 3).labels.tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("images, match", [
    (torch.zeros(4, 8, 8, dtype=torch.uint8), "4-D batch"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "NHWC"),
    (torch.zeros(4, 8, 8, 3), "NCHW"),
    (torch.full((4, 3, 8, 8), 2.0), r"\[0, 1\]"),
    (torch.zeros(0, 8, 8, 3, dtype=torch.uint8), "at least one"),
    (torch.zeros(4, 8, 8, 3, dtype=torch.int32), "dtype"),
])
def test_bad_images_are_explained(images, match):
    with pytest.raises(ValueError, match=match):
        PoisonedDataset(images, torch.zeros(len(images), dtype=torch.long), 3)


def test_labels_out_of_range_and_length():
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        PoisonedDataset(_imgs(), torch.tensor([0, 1, 3, 0]), 3)
    with pytest.raises(ValueError, match="4 labels"):
        PoisonedDataset(_imgs(), torch.tensor([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="integer >= 2"):
        PoisonedDataset(_imgs(), torch.tensor([0, 0, 0, 0]), 1)


def test_truth_validation_and_without_truth():
    truth = GroundTruth(torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 0, 0]).bool(),
                        torch.tensor([0, 1, 0, 0]).bool(), 1, "x")
    ds = PoisonedDataset(_imgs(), torch.tensor([1, 1, 2, 0]), 3, truth=truth)
    stripped = ds.without_truth()
    assert stripped.truth is None and ds.truth is truth and stripped.images is ds.images
    sub = ds.subset(torch.tensor([0, 3]))
    assert sub.truth.poison_mask.tolist() == [True, False]
    with pytest.raises(ValueError, match="disjoint"):
        PoisonedDataset(_imgs(), torch.tensor([1, 1, 2, 0]), 3, truth=GroundTruth(
            truth.true_labels, truth.poison_mask, truth.poison_mask, 1, "x"))
    with pytest.raises(ValueError, match="boolean vector of length 4"):
        PoisonedDataset(_imgs(), torch.tensor([1, 1, 2, 0]), 3, truth=GroundTruth(
            truth.true_labels, torch.zeros(3).bool(), truth.cover_mask, 1, "x"))


def test_triggered_set_and_result_dict():
    t = TriggeredTestSet(_imgs(), torch.ones(4), torch.tensor([0, 2, 2, 0]), 3, "badnet")
    assert len(t) == 4 and t.target_labels.dtype == torch.long
    r = DefenseResult(model=torch.nn.Linear(2, 2), poison_mask=torch.tensor([True, False]),
                      relabels=torch.tensor([-1, 1]), timings={"a": 1.0, "b": 2.5})
    d = r.to_dict()
    assert d["seconds"] == 3.5 and d["flagged"] == 1 and d["relabeled"] == 1
