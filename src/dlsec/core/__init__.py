"""The model contract, input specs, datasets, training cards, seeding and safe model I/O."""

from dlsec.core.arch import ARCHITECTURES, build_architecture, register_architecture
from dlsec.core.card import TrainingCard
from dlsec.core.data import BUILTIN_DATASETS, Dataset, load_dataset
from dlsec.core.evaluate import EvalResult, evaluate
from dlsec.core.home import home_dir
from dlsec.core.io import save_safetensors_model, sniff_format
from dlsec.core.loading import load_model
from dlsec.core.model import (
    Access,
    DecisionModel,
    Model,
    ScoreModel,
    WhiteBoxModel,
    default_device,
    inference_mode,
)
from dlsec.core.seeding import seed_everything
from dlsec.core.spec import InputSpec

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_DATASETS",
    "Access",
    "Dataset",
    "DecisionModel",
    "EvalResult",
    "InputSpec",
    "Model",
    "ScoreModel",
    "TrainingCard",
    "WhiteBoxModel",
    "build_architecture",
    "default_device",
    "evaluate",
    "home_dir",
    "inference_mode",
    "load_dataset",
    "load_model",
    "register_architecture",
    "save_safetensors_model",
    "seed_everything",
    "sniff_format",
]
