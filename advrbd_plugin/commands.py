"""Sub-commands beyond run/list/show-config: compare, scan, export-config.

Each adds its parser in ``register_commands`` and its action in ``dispatch_command``;
like the rest of the CLI they only parse and call library functions.
"""
from __future__ import annotations

import argparse


def register_commands(sub, run_flags, flags) -> None:
    global _flags
    _flags = flags


def dispatch_command(a: argparse.Namespace) -> int:
    raise ValueError(f"unknown command {a.cmd!r}")
