"""Sub-commands beyond run/list/show-config/show-attack: compare, scan, interop.

Each group adds its parsers in a ``_register_*`` function and handles its commands in a
``_dispatch_*`` function returning an exit code, or None when the command is not its own.
Like the rest of the CLI they only parse and call library functions.
"""
from __future__ import annotations

import argparse


def register_commands(sub, run_flags, flags) -> None:
    """sub: argparse subparsers; run_flags(parser) adds the shared run flags;
    flags(namespace) -> dict of those flags (None = not given)."""
    _register_compare(sub, run_flags)
    _register_scan(sub, run_flags)
    _register_interop(sub, run_flags)


def dispatch_command(a: argparse.Namespace, flags) -> int:
    for handler in (_dispatch_compare, _dispatch_scan, _dispatch_interop):
        code = handler(a, flags)
        if code is not None:
            return code
    raise ValueError(f"unknown command {a.cmd!r}")


# -- compare (owner: the baselines / compare work) ----------------------------------------
def _register_compare(sub, run_flags) -> None:
    pass


def _dispatch_compare(a, flags):
    return None


# -- scan (owner: the AdvrBD work) ---------------------------------------------------------
def _register_scan(sub, run_flags) -> None:
    pass


def _dispatch_scan(a, flags):
    return None


# -- interop: --format runs, export-config (owner: the adapters work) ----------------------
def _register_interop(sub, run_flags) -> None:
    pass


def _dispatch_interop(a, flags):
    return None
