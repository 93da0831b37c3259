"""Hyperparameters shared by every recipe: the optimiser, regularisation, the seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from dlsec.errors import UsageError

__all__ = ["TrainConfig", "OPTIMIZERS"]

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters every recipe shares (a recipe's own live in the recipe object).

    The defaults reproduce the original standard recipe exactly: AdamW, no augmentation, no
    early stopping. A recipe may suggest other defaults (see ``Recipe.default_config``).

    Args:
        epochs: passes over the training set.
        batch_size: examples per step (the expected batch size under Poisson sampling).
        lr: learning rate.
        weight_decay: L2 penalty (AdamW-style decoupled decay; plain L2 for SGD).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        seed: seeds weight initialisation, batch order, dropout, augmentation, attacks and noise.
        optimizer: ``adamw`` or ``sgd``.
        momentum: SGD momentum in [0, 1).
        lr_schedule: ``constant``, or ``cosine`` (decay per epoch from ``lr`` towards 0).
        dropout: dropout rate given to the architecture's factory (its ``dropout`` argument);
            0 leaves the architecture as configured.
        augment: random augmentation suited to the data: images are shifted by up to
            ``augment_shift`` pixels and get Gaussian noise; tabular rows get Gaussian noise
            on every feature. Noise is ``augment_noise`` times each value's range; the result
            stays within the input bounds.
        augment_shift: largest image shift in pixels (images only).
        augment_noise: noise standard deviation as a fraction of the value range.
        early_stopping: patience in epochs: stop when the validation score has not improved
            for this many epochs and keep the best epoch's weights; 0 turns it off.
        val_size: fraction of the training split held out as the validation split when early
            stopping is on.

    Example:
        >>> config = TrainConfig(epochs=30, augment=True, early_stopping=5)
        >>> config.optimizer
        'adamw'
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    optimizer: str = "adamw"
    momentum: float = 0.0
    lr_schedule: str = "constant"
    dropout: float = 0.0
    augment: bool = False
    augment_shift: int = 1
    augment_noise: float = 0.02
    early_stopping: int = 0
    val_size: float = 0.1

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, 1)
        _int("batch size", self.batch_size, 1)
        _int("seed", self.seed, None)
        _int("augment shift", self.augment_shift, 0)
        _int("early stopping patience", self.early_stopping, 0)
        if not _finite(self.lr) or not self.lr > 0:
            raise UsageError(f"learning rate must be positive, got {self.lr}")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise UsageError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not _finite(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise UsageError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not _finite(self.momentum) or not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.momentum and self.optimizer != "sgd":
            raise UsageError("momentum applies to the sgd optimizer; pass optimizer='sgd' or drop it")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not _finite(self.dropout) or not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.augment, bool):
            raise UsageError(f"augment must be true or false, got {self.augment!r}")
        if not _finite(self.augment_noise) or not 0 <= self.augment_noise <= 1:
            raise UsageError(f"augment noise must be in [0, 1], got {self.augment_noise}")
        if not _finite(self.val_size) or not 0 < self.val_size < 1:
            raise UsageError(f"validation size must be between 0 and 1, got {self.val_size}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (counted from 0)."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the hyperparameters, in declaration order."""
        return tuple(f.name for f in fields(cls))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(name: str, value: Any, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")
