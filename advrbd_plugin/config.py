"""Typed configs from dataclasses, packaged YAML, and the run-config precedence."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import os
import shutil
import tempfile
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

__all__ = ["build_config", "packaged_yaml", "load_yaml", "merge", "parse_set", "atomic_write_text",
           "atomic_output"]


def build_config(cls, overrides: Mapping[str, Any] | None = None, what: str | None = None):
    """Instantiate dataclass ``cls`` from its defaults plus ``overrides``.

    Unknown keys raise a ValueError that lists the valid keys and the closest match;
    values are coerced to the field's annotated scalar type where that is lossless
    (e.g. "0.1" or 1 for a float field).
    """
    what = what or cls.__name__
    overrides = dict(overrides or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{what}: unknown key {key!r}.{hint} Valid keys: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(v, hints.get(k), f"{what}.{k}") for k, v in overrides.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, what: str) -> Any:
    if value is None or hint is None:
        return value
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union or (args and type(None) in args):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], what) if len(inner) == 1 else value
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected {getattr(hint, '__name__', hint)}, found {value!r}") from None
    return value


def packaged_yaml(relpath: str) -> dict:
    """Load ``advrbd_plugin/configs/<relpath>``; {} when it does not exist."""
    ref = resources.files("advrbd_plugin").joinpath("configs", *relpath.split("/"))
    if not ref.is_file():
        return {}
    return yaml.safe_load(ref.read_text()) or {}


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ValueError(f"config file {str(p)!r} is not valid YAML{at}: {what}; fix the file "
                         f"(e.g. an unclosed bracket or a tab used for indentation)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], update: Mapping[str, Any], path: str = "",
          strict: bool = True) -> dict:
    """Deep-merge ``update`` into a copy of ``base``; with ``strict``, keys of ``update``
    must exist in ``base`` (except under open sections whose base value is an empty dict)."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        where = f"{path}{k}"
        if strict and k not in out and not (path and base == {}):
            close = difflib.get_close_matches(k, sorted(out), n=1)
            hint = f" Did you mean {path}{close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {where!r}.{hint} Valid keys here: {', '.join(sorted(out))}")
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v, f"{where}.", strict=strict and bool(out[k]))
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(items: list[str] | None) -> dict:
    """['train.epochs=3', 'defense.eps=0.03'] -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (e.g. train.epochs=3), found {item!r}")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _scalar(raw)
    return out


def _scalar(raw: str):
    """A --set value parsed as YAML, except that exponent numbers YAML 1.1 leaves as text
    ('1e-3', '5E4') are floats."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path`` (with the
    usual umask permissions), on error removed: no half-written files are left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutputError(OSError):
    """The output location cannot take what a run writes (read-only, missing, or full)."""


def check_writable(folder: str | os.PathLike, need_bytes: int = 0) -> None:
    """Raise OutputError up front when ``folder`` cannot be created and written, or its disk
    has less than ``need_bytes`` free (nothing is left behind by the check)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder {str(folder)!r} is not writable ({exc.strerror or exc}); "
                          f"pass --out DIR on a writable disk") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OutputError(f"output folder {str(folder)!r}: its disk has {free / 2**20:.1f} MiB free, "
                          f"a run needs about {need_bytes / 2**20:.1f} MiB (model, stage checkpoints, "
                          f"reports); free space or pass --out DIR on another disk")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files ``atomic_output`` leaves when its process is killed mid-write
    (``.<name>.<random>.tmp``) anywhere under ``folder``; returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text via ``atomic_output``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
