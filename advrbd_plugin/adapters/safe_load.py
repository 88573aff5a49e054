"""Read files of untrusted toolbox records without running code stored in them.

Toolbox records (``attack_result.pt``, ``info.pickle``, backdoor-toolbox's ``imgs`` ...)
are pickles, and a pickle can run any code on load. Here:

* ``torch.save`` files (zip or legacy format) load with ``torch.load(weights_only=True)``
  plus an allow-list of the numpy globals the toolboxes' files need (arrays, dtypes,
  scalars, under both numpy 1 and numpy 2 module names);
* plain pickles load through a ``pickle.Unpickler`` whose ``find_class`` only returns
  the same allow-listed names (plus containers);
* anything else is refused with :class:`UnsafeRecordError`, which names the offending
  types and the opt-in ``--trust-pickles`` (``trust_pickles=True``), the only way a full
  pickle load happens;
* missing, empty, truncated or wrong-format files raise :class:`RecordError` naming the
  file, never a traceback from deep inside torch or pickle.
"""
from __future__ import annotations

import codecs
import collections
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["RecordError", "UnsafeRecordError", "TRUST_FLAG", "load"]

from ..errors import RecordError, UnsafeRecordError, is_zip  # noqa: E402 (re-exported here)

TRUST_FLAG = "--trust-pickles (trust_pickles=True in Python)"
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 torch.save file




def _multiarray():
    try:
        import numpy._core.multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as ma
    return ma


def _numpy_globals() -> list[tuple[Callable, str]]:
    """(object, the dotted name a pickle uses for it): arrays, dtypes and scalars under the
    numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) module names."""
    ma = _multiarray()
    out = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for cls in vars(getattr(np, "dtypes", object)).values():  # numpy >= 1.25 dtype classes
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            out.append((cls, f"numpy.dtypes.{cls.__name__}"))
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
    return out


def _plain_globals() -> dict[str, Any]:
    """What a plain pickle may reference: the numpy names plus harmless builtins."""
    names = {name: obj for obj, name in _numpy_globals()}
    names.update({
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
        "builtins.complex": complex, "builtins.bytearray": bytearray,
        "_codecs.encode": codecs.encode,  # protocol-2 pickles spell bytes this way
    })
    return names


def _refuse(path: Path, offending: list[str]) -> UnsafeRecordError:
    kinds = ", ".join(sorted(set(offending))) or "unknown Python objects"
    return UnsafeRecordError(
        f"{path}: refused to load: it references {kinds}, which is not a tensor, numpy array "
        f"or plain container; unpickling it could run code stored in the file. Records come "
        f"from untrusted parties, so only allow-listed types are read. If you trust this file, "
        f"re-run with {TRUST_FLAG}.")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if not path.is_file():
        raise RecordError(f"{path}: expected a file, found a directory")
    if path.stat().st_size == 0:
        raise RecordError(f"{path}: the file is empty (an interrupted save?); regenerate it")


class _Restricted(pickle.Unpickler):
    def __init__(self, file, allowed: dict[str, Any]):
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        raise _Refused(full)


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _torch_load(path: Path, trust: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        offending = _unsafe_globals(path, text)
        if not offending and not _UNSAFE_HINTS.search(text):
            raise RecordError(f"{path}: not a readable torch.save file ({_first_line(text)})") from None
        if trust:
            return _trusted_torch_load(path)
        raise _refuse(path, offending) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
            IndexError, TypeError, AttributeError) as exc:
        raise RecordError(f"{path}: truncated or not a torch.save file "
                          f"({type(exc).__name__}: {_first_line(str(exc))})") from None


def _trusted_torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the user opted in; still report which file broke
        raise RecordError(f"{path}: could not be loaded even with {TRUST_FLAG} "
                          f"({type(exc).__name__}: {_first_line(str(exc))})") from None


_UNSAFE_HINTS = re.compile(r"Unsupported global|not an allowed global|Can only build")


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """The offending global names, read from the pickle opcodes (nothing is executed)."""
    allowed = set(_plain_globals())
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        names = [n for n in names if n not in allowed]
    except Exception:
        names = []
    if names:
        return names
    return [a or b for a, b in re.findall(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", message)]


def _first_line(text: str) -> str:
    """The exception text on one line (pickle's messages span several), at most 300 chars."""
    return " ".join(text.split())[:300]


def load(path: str | Path, *, trust: bool = False) -> Any:
    """Load one record file safely (see the module docstring).

    path: a ``torch.save`` file or a plain pickle. trust: fall back to a full pickle load
    when the file references types outside the allow-list (the user's explicit opt-in).
    Raises FileNotFoundError, RecordError or UnsafeRecordError, each naming ``path``.
    """
    path = Path(path)
    _check_file(path)
    if is_zip(path):
        return _torch_load(path, trust)
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":  # a zip's first entry, but no readable zip directory
        raise RecordError(f"{path}: a torch.save (zip) file whose end is missing or damaged "
                          f"(truncated: {len(data)} bytes, no zip directory); copy it again or "
                          f"re-save it")
    stream = io.BytesIO(data)
    try:
        first = _Restricted(stream, _plain_globals()).load()
    except _Refused as exc:
        if trust:
            return _trusted_plain_load(path, data)
        raise _refuse(path, [exc.name]) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError, OverflowError) as exc:
        raise RecordError(f"{path}: truncated or not a pickle / torch.save file "
                          f"({type(exc).__name__}: {_first_line(str(exc))})") from None
    if isinstance(first, int) and first == _LEGACY_TORCH_MAGIC:
        return _torch_load(path, trust)
    return first


def _trusted_plain_load(path: Path, data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise RecordError(f"{path}: could not be loaded even with {TRUST_FLAG} "
                          f"({type(exc).__name__}: {_first_line(str(exc))})") from None
