"""A picture of what an attack does: clean samples, training trigger, test trigger."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..types import PoisonedDataset, to_float_nchw
from .base import Attack

_ROWS = ("clean", "train", "test", "diff x4")


def save_attack_grid(attack: Attack, dataset: PoisonedDataset, path: str, n: int = 8,
                     seed: int = 0) -> str:
    """Write a PNG with four rows of ``n`` samples the attack would poison: clean, with the
    training trigger, with the test trigger, and |train - clean| x 4 (to see faint
    triggers). Cells are upscaled to >= 128 pixels (nearest neighbour). Written to a
    temporary file, then renamed; returns ``path``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    cand, _ = attack.poison_candidates(dataset.labels.cpu())
    idx = cand.nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=gen)[:n]]
    if len(idx) == 0:
        raise ValueError(f"{attack.name}: no sample of the dataset can be poisoned")
    clean = to_float_nchw(dataset.images[idx.to(dataset.images.device)])
    train = attack.train_trigger(clean, gen)
    rows = [clean, train, attack.test_trigger(clean, gen), (train - clean).abs() * 4]

    h, w = clean.shape[2:]
    zoom = max(1, -(-128 // max(h, w)))
    gap, margin = 4, 70
    cell_h, cell_w = h * zoom, w * zoom
    canvas = np.full((gap + len(rows) * (cell_h + gap), margin + len(idx) * (cell_w + gap), 3),
                     255, np.uint8)
    for r, (name, batch) in enumerate(zip(_ROWS, rows)):
        y = gap + r * (cell_h + gap)
        cv2.putText(canvas, name, (6, y + cell_h // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (0, 0, 0), 1, cv2.LINE_AA)
        imgs = batch.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        for j, img in enumerate(imgs.numpy()):
            img = np.repeat(np.repeat(img, zoom, 0), zoom, 1)
            if img.shape[2] == 1:
                img = np.repeat(img, 3, 2)
            x = margin + j * (cell_w + gap)
            canvas[y:y + cell_h, x:x + cell_w] = img[:, :, ::-1]  # RGB -> BGR for cv2
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    try:
        if not cv2.imwrite(tmp, canvas):
            raise OSError(f"could not write {path}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
