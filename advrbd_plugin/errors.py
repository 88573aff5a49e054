"""The package's own error types for bad input (all ValueErrors, so callers that catch
ValueError keep working; the CLIs answer them with one line and exit code 2)."""
from __future__ import annotations

import zipfile
from pathlib import Path

__all__ = ["RecordError", "UnsafeRecordError", "is_zip"]


class RecordError(ValueError):
    """A record, dataset or array is missing, empty, truncated or not in the expected
    format; the message names the file or key, what was expected and how to fix it."""


class UnsafeRecordError(RecordError):
    """A record file references Python objects outside the allow-list (possible code)."""


def is_zip(path: Path) -> bool:
    """``zipfile.is_zipfile`` that answers instead of raising on a damaged end record
    (it raises BadZipFile for, e.g., a corrupted zip64 locator)."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        raise RecordError(f"{path}: a zip archive (torch.save / np.savez) whose end records are "
                          f"damaged; copy it again or re-save it") from None
