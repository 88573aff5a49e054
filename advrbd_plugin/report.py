"""Plots of a run folder and result tables (markdown / csv / json)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from .config import atomic_output

__all__ = ["plot_run", "markdown_table", "csv_text", "fmt_pct"]


def _savefig(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_run(folder: Path, result, truth=None) -> None:
    """Write the score histogram (clean vs poisoned when ``truth`` is known, paper Fig. 5)
    and any per-round history that has ACC/ASR (the enhancement curve, paper Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, values in result.arrays.items():
        if values.is_floating_point():
            _hist(plt, folder / f"{name}_hist.png", values, truth, name)
    if result.scores is not None:
        _hist(plt, folder / "scores_hist.png", result.scores, truth, "suspicion score")
    for stage, rows in result.history.items():
        rows = [r for r in rows if isinstance(r, dict) and "acc" in r]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3))
        xs = list(range(1, len(rows) + 1))
        ax.plot(xs, [r["acc"] for r in rows], "o-", label="ACC")
        if rows[0].get("asr") is not None:
            ax.plot(xs, [r["asr"] for r in rows], "s-", label="ASR")
        ax.set_xlabel("round" if stage != "train" else "epoch")
        ax.set_ylim(0, 1)
        ax.set_title(stage)
        ax.legend()
        _savefig(fig, folder / f"{stage}_curve.png")
        plt.close(fig)


def _hist(plt, path: Path, scores: torch.Tensor, truth, title: str) -> None:
    s = scores.float().cpu()
    ok = torch.isfinite(s)  # unscored samples (NaN) are left out
    if not ok.any():
        return
    lo, hi = float(s[ok].min()), float(s[ok].max())
    log = lo >= 0 and hi / max(lo, 1e-12) > 1e3  # e.g. KL: 1e-6 .. 1
    s = s.clamp(min=1e-12).log10() if log else s
    fig, ax = plt.subplots(figsize=(4.5, 3))
    if truth is not None and truth.poison_mask.any():
        groups = [("clean", ~truth.poison_mask & ~truth.cover_mask), ("poisoned", truth.poison_mask),
                  ("cover", truth.cover_mask)]
        for label, mask in groups:
            if (mask & ok).any():
                ax.hist(s[mask & ok].numpy(), bins=60, alpha=0.6, density=True, label=label)
        ax.legend()
    else:
        ax.hist(s[ok].numpy(), bins=60)
    ax.set_xlabel(f"log10 {title}" if log else title)
    _savefig(fig, path)
    plt.close(fig)


def fmt_pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
