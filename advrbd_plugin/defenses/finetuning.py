"""Fine-tuning (the FT baseline of Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending
Against Backdooring Attacks on Deep Neural Networks", RAID 2018).

Data: the already-trained (backdoored) model and reserved clean samples (``clean_set``);
the poisoned training set is not used. All layers are fine-tuned on the clean samples
with a small learning rate, in the hope that the backdoor is forgotten.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_positive, fit_stage
from .base import Defense, DefenseConfig

__all__ = ["FineTuning", "FineTuningConfig"]


@dataclass
class FineTuningConfig(DefenseConfig):
    """epochs_frac: fine-tuning epochs over the clean set / the plain recipe's epochs.
    lr_frac: fine-tuning peak lr / the plain recipe's lr. batch_size: small, because the
    clean set is small (5% of the training split by default)."""

    epochs_frac: float = 1.0
    lr_frac: float = 0.1
    batch_size: int = 64


@DEFENSES.register("finetuning")
class FineTuning(Defense):
    """Fine-tune every layer of the backdoored model on reserved clean data."""

    Config = FineTuningConfig
    requires_clean_data = True
    needs_trained_model = True

    def validate(self) -> None:
        check_positive(self, "epochs_frac", "lr_frac", "batch_size")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        history = {"finetune": fine_tune(self, model, clean_set)}
        return DefenseResult(model=model, history=history)


def fine_tune(defense: Defense, model, clean_set) -> list[dict]:
    """Fine-tune ``model`` in place on ``clean_set`` with the defense's epochs_frac,
    lr_frac and batch_size knobs (shared with fine-pruning); returns the history."""
    c = defense.config
    cfg = defense.train.replace(epochs=c.epochs_frac * defense.train.epochs,
                                lr=c.lr_frac * defense.train.lr, batch_size=c.batch_size)
    return fit_stage(defense, "finetune", model, defense.engine.data(clean_set),
                     clean_set.labels, cfg)
