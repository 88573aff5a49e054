"""advrbd_plugin: the AdvrBD backdoor defense as a plugin for backdoor toolboxes."""
from .registry import ADAPTERS, ATTACKS, DATASETS, DEFENSES, MODELS, Registry
from .types import DefenseResult, GroundTruth, PoisonedDataset, TriggeredTestSet

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS", "ATTACKS", "DATASETS", "DEFENSES", "MODELS", "Registry",
    "DefenseResult", "GroundTruth", "PoisonedDataset", "TriggeredTestSet",
]
