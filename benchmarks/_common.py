"""Shared bits of the benchmark scripts: the attack list, machine facts, result writing."""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from advrbd_plugin.config import atomic_write_text

RESULTS = Path(__file__).parent / "results"
#: Run folders of the benchmarks (git-ignored); scripts share it, so a cell finished by one
#: script (e.g. the no-defense run of an attack) is reused by the others.
WORK = Path(__file__).parent / "work"
ATTACKS = ["badnet", "blend", "sig", "wanet", "physicalba", "tact", "adaptive_blend", "adaptive_patch"]


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    """Facts that move CPU timings: the CPU model, its vector ISA and AMX tiles (bfloat16 speed
    depends on them), threads."""
    from advrbd_plugin.engine.precision import cpu_features

    f = cpu_features()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "isa": f["capability"], "amx": f["amx"], "avx512_bf16": f["avx512_bf16"]}


def meta(script: str, **extra) -> dict:
    """Command, date and machine of this benchmark run."""
    return {"command": f"python benchmarks/{script} " + shlex.join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(), "machine": machine(), **extra}


def header(title: str, m: dict) -> list[str]:
    mach = m["machine"]
    return [f"# {title}", "", f"Command: `{m['command'].strip()}`  ",
            f"Machine: {mach.get('cpu_model') or mach['processor']}, {mach['cpus']} cpus, torch {mach['torch']}, "
            f"{mach['threads']} torch thread(s), ISA {mach.get('isa')}, AVX512-BF16 {mach.get('avx512_bf16')}, "
            f"AMX {mach.get('amx')}, "
            f"{mach['platform']}  ", f"Date: {m['date']}", ""]


def write(name: str, markdown: str, m: dict, rows: list[dict]) -> None:
    """benchmarks/results/<name>.md and .json (atomic)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.md", markdown)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps({**m, "rows": rows}, indent=2))
    print(f"wrote {RESULTS / name}.md and .json")
