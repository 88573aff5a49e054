"""Which precision a device runs fastest: ``precision: auto``.

Rules (measured in ``benchmarks/engine.py``; results in ``benchmarks/results/engine_*.md``):

* CUDA: bfloat16 autocast where the device has native bf16 (Ampere and newer), else
  float16 autocast with a loss scaler (Volta, Turing), else float32.
* CPU: bfloat16 autocast only where oneDNN has native bf16 kernels: AMX tiles or
  AVX512-BF16 (AMD EPYC Zen 4+, Intel Cooper Lake+), with PyTorch dispatching AVX-512.
  Elsewhere float32: on an AVX2-only CPU bf16 is emulated and a ResNet step is an order
  of magnitude slower. Where the capability string is one we cannot read (a non-x86 CPU,
  an older torch without the feature queries), a one-off micro-probe times both.
* Other devices (MPS, XPU ...): float32.

An explicit ``bf16`` / ``fp16`` / ``fp32`` always wins.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Callable, Optional

import torch

__all__ = ["PRECISIONS", "cpu_features", "resolve_precision", "probe_cpu_bf16"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")

#: ATen CPU capabilities with no native bf16 path.
_NO_BF16 = ("DEFAULT", "NO AVX", "AVX", "AVX2")
#: oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below its bf16 kernels.
_ONEDNN_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_features() -> dict:
    """What torch reports of this CPU: ``capability`` (ATen dispatch, e.g. 'AVX2',
    'AVX512'), ``avx512_bf16`` and ``amx`` (None where this torch cannot tell), and the
    ``onednn_max_isa`` environment cap (None when unset)."""
    def query(name: str) -> Optional[bool]:
        fn = getattr(torch.cpu, name, None)
        try:
            return bool(fn()) if fn is not None else None
        except RuntimeError:
            return None

    return {"capability": str(torch.backends.cpu.get_cpu_capability()),
            "avx512_bf16": query("_is_avx512_bf16_supported"),
            "amx": query("_is_amx_tile_supported"),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None}


def resolve_precision(requested: str, device: torch.device, *, features: Optional[dict] = None,
                      probe: Optional[Callable[[], bool]] = None) -> tuple[str, str]:
    """(precision, why) for ``requested`` ('auto' or an explicit choice) on ``device``.

    features: ``cpu_features()`` (tests pass mocked ones); probe: returns True when bf16 is
    faster on this CPU (default ``probe_cpu_bf16``), only called when the features cannot
    decide.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {requested!r}")
    if requested != "auto":
        return requested, "explicit"
    if device.type == "cuda":
        return _cuda_precision(device)
    if device.type != "cpu":
        return "fp32", f"{device.type}: float32 (no measured faster path)"
    f = cpu_features() if features is None else features
    cap = str(f.get("capability", "")).upper()
    isa = (f.get("onednn_max_isa") or "").upper()
    if isa and isa in _ONEDNN_NO_BF16:
        return "fp32", f"CPU: ONEDNN_MAX_CPU_ISA={isa} has no bf16 kernels"
    if cap in _NO_BF16:
        return "fp32", f"CPU capability {cap}: bf16 would be emulated (an order of magnitude slower)"
    if "AMX" in cap or "BF16" in cap:
        return "bf16", f"CPU capability {cap}: native bf16 kernels"
    if cap.startswith("AVX512"):
        if f.get("amx"):
            return "bf16", f"CPU capability {cap} with AMX tiles: native bf16 kernels"
        if f.get("avx512_bf16"):
            return "bf16", f"CPU capability {cap} with AVX512-BF16: native bf16 kernels"
        if f.get("avx512_bf16") is False:
            return "fp32", f"CPU capability {cap} without AVX512-BF16 or AMX: bf16 would be emulated"
    faster = (probe or probe_cpu_bf16)()
    return ("bf16" if faster else "fp32"), (
        f"CPU capability {cap or 'unknown'}: measured by a micro-probe, bf16 "
        f"{'faster' if faster else 'not faster'} than fp32")


def _cuda_precision(device: torch.device) -> tuple[str, str]:
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return "bf16", f"CUDA {name} (sm_{major}{minor}): native bf16"
    if major >= 7:
        return "fp16", f"CUDA {name} (sm_{major}{minor}): no bf16, fp16 with a loss scaler"
    return "fp32", f"CUDA {name} (sm_{major}{minor}): no fast half precision"


@functools.lru_cache(maxsize=1)
def probe_cpu_bf16(repeats: int = 3) -> bool:
    """True when a small conv net's training step runs >= 1.1x faster under bf16 autocast
    than in float32 on this CPU (about a second, once per process)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
                              torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, padding=1),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step_time(bf16: bool) -> float:
        best = float("inf")
        for _ in range(repeats + 1):  # the first run warms the kernels up
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            best = min(best, time.perf_counter() - t0)
        return best

    return step_time(True) * 1.1 <= step_time(False)
