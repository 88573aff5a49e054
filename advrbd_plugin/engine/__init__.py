"""The single training / unlearning / prediction / scoring engine."""
from . import distributed
from .adversarial import masked_kl_scores, random_square_masks
from .core import Engine, TrainConfig, TrainingDiverged, resolve_device
from .data import DeviceData, random_crop_flip

__all__ = ["distributed", "Engine", "TrainConfig", "TrainingDiverged", "resolve_device", "DeviceData", "random_crop_flip",
           "masked_kl_scores", "random_square_masks"]
