"""The model contract, input specs, datasets, training cards, seeding and safe model I/O.

The names below resolve lazily (PEP 562): ``import dlsec.core.home`` or ``from dlsec.core
import home_dir`` does not import torch; the first use of a name that needs it does. This is
what lets ``dlsec scan``, ``dlsec verify`` and the registry commands start without PyTorch
(see docs/architecture.md, "Start-up cost").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve

if TYPE_CHECKING:
    from dlsec.core.arch import ARCHITECTURES, build_architecture, register_architecture
    from dlsec.core.card import TrainingCard
    from dlsec.core.data import BUILTIN_DATASETS, Dataset, load_dataset
    from dlsec.core.evaluation import EvalResult, evaluate
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

# name -> the submodule that defines it
_EXPORTS = {
    "ARCHITECTURES": "arch",
    "build_architecture": "arch",
    "register_architecture": "arch",
    "TrainingCard": "card",
    "BUILTIN_DATASETS": "data",
    "Dataset": "data",
    "load_dataset": "data",
    "EvalResult": "evaluation",
    "evaluate": "evaluation",
    "home_dir": "home",
    "save_safetensors_model": "io",
    "sniff_format": "io",
    "load_model": "loading",
    "Access": "model",
    "DecisionModel": "model",
    "Model": "model",
    "ScoreModel": "model",
    "WhiteBoxModel": "model",
    "default_device": "model",
    "inference_mode": "model",
    "seed_everything": "seeding",
    "InputSpec": "spec",
}

__all__ = [
    "ARCHITECTURES",
    "Access",
    "BUILTIN_DATASETS",
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


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
