"""Byte-level fuzzing of the readers of untrusted files (used by the tests and
``benchmarks/fuzz.py``).

Each reader gets a seed file written by our own code in that format, mutated: bytes
flipped, a run overwritten, a cut, or bytes inserted. Every outcome must be a successful
load or a ``RecordError`` / ``DatasetNotFoundError`` (the package's own error types); any
other exception is a bug, and an unpickled payload (a marker file appearing) is a
security bug.
"""
from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data.base import DatasetNotFoundError
from .errors import RecordError

__all__ = ["SEEDS", "READERS", "mutate", "attempt", "Payload"]

CLEAN_ERRORS = (RecordError, DatasetNotFoundError)


class Payload:
    """Unpickling this creates ``marker`` (it must never be unpickled)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def seeds(marker: str) -> dict[str, bytes]:
    """Seed files per format: a record-like torch.save dict, a plain pickle, a pickle
    carrying a payload, and an npz dataset."""
    g = np.random.RandomState(0)
    record = {"model_name": "preactresnet18", "num_classes": 10, "img_size": (8, 8, 3),
              "model": {"w": torch.randn(4, 3)}, "bd_train": {"poison_indicator": np.zeros(20),
                                                              "original_index_array": np.arange(20)},
              "clean_data": "cifar10", "data_path": "./data"}
    npz = _npz_bytes(x_train=g.randint(0, 255, (20, 8, 8, 3)).astype(np.uint8),
                     y_train=np.arange(20) % 4, x_test=g.randint(0, 255, (8, 8, 8, 3)).astype(np.uint8),
                     y_test=np.arange(8) % 4, classes=np.array(["a", "b", "c", "d"]))
    return {"torch.save record": _torch_bytes(record),
            "plain pickle": pickle.dumps({"attack": "badnet", "attack_target": 0, "pratio": 0.1}),
            "pickle with payload": pickle.dumps({"attack": "badnet", "x": Payload(marker)}),
            "torch.save with payload": _torch_bytes({"model": {}, "x": Payload(marker)}),
            "npz dataset": npz, "npz arrays record": npz}


def _read_record(path: Path):
    from .adapters import safe_load

    return safe_load.load(path)


def _read_npz(path: Path):
    from .data.npz import load_npz

    return load_npz(path)


def _read_arrays(path: Path):
    from .adapters.arrays import Arrays

    return Arrays().load(path)


#: format -> reader of a file of that format.
READERS: dict[str, Callable[[Path], object]] = {
    "torch.save record": _read_record, "plain pickle": _read_record,
    "pickle with payload": _read_record, "torch.save with payload": _read_record,
    "npz dataset": _read_npz, "npz arrays record": _read_arrays}
SEEDS = seeds


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation: flip bytes, overwrite a run, cut, or insert."""
    b = bytearray(data)
    kind = rng.choice(("flip", "run", "cut", "insert", "flip"))
    if kind == "flip" or not b:
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "run":
        start = rng.randrange(len(b))
        b[start:start + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "cut":
        b = b[:rng.randrange(len(b))]
    else:
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(b)


def attempt(reader: Callable[[Path], object], path: Path, data: bytes) -> str:
    """'loaded', 'clean error' or 'uncaught <ExceptionType>' for ``data`` written to ``path``."""
    path.write_bytes(data)
    try:
        reader(path)
    except CLEAN_ERRORS:
        return "clean error"
    except Exception as exc:  # the bug we look for
        return f"uncaught {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    return "loaded"
