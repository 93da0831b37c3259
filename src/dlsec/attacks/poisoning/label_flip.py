"""Label flipping: change the labels of chosen rows, leave the inputs alone."""

from __future__ import annotations

import numpy as np

from dlsec.attacks.poisoning._base import (
    PoisoningAttack,
    PoisonResult,
    check_class,
    check_rate,
    register_poisoning,
)
from dlsec.core.data import Dataset
from dlsec.errors import UsageError

__all__ = ["LabelFlip"]


@register_poisoning("label-flip")
class LabelFlip(PoisoningAttack):
    """Label flipping, random or targeted.

    ``mode="random"`` flips ``rate`` of all rows to a uniformly drawn other class (an
    untargeted attack on accuracy). ``mode="targeted"`` flips ``rate`` of the ``source``
    class's rows to ``target`` (so the model confuses that class for the target).

    Args:
        rate: fraction of all rows (random) or of the source class (targeted) flipped.
        mode: ``random`` or ``targeted``.
        source: targeted only: the class whose rows are relabelled.
        target: targeted only: the label they get.
        seed: seeds the rows and the new labels.

    Example:
        >>> from dlsec.core import load_dataset
        >>> result = LabelFlip(rate=0.1).poison(load_dataset("builtin:digits"))
        >>> int((result.data.y != load_dataset("builtin:digits").y).sum())
        180
    """

    def __init__(
        self,
        *,
        rate: float = 0.1,
        mode: str = "random",
        source: int | None = None,
        target: int | None = None,
        seed: int = 0,
    ) -> None:
        self.rate = rate
        self.mode = mode
        self.source = source
        self.target = target
        self.seed = seed

    def poison(self, data: Dataset) -> PoisonResult:
        rate = check_rate(self.rate)
        rng = np.random.default_rng(self.seed)
        y = data.y.copy()
        k_classes = data.spec.num_classes
        if self.mode == "random":
            if self.source is not None or self.target is not None:
                raise UsageError("random label flipping takes no source or target; use mode='targeted'")
            k = int(round(rate * len(data)))
            if k < 1:
                raise UsageError(f"rate {rate} flips no row of {len(data)}; raise it")
            index = np.sort(rng.choice(len(data), size=k, replace=False))
            shift = rng.integers(1, k_classes, size=k)
            y[index] = (y[index] + shift) % k_classes
        elif self.mode == "targeted":
            if self.source is None or self.target is None:
                raise UsageError("targeted label flipping needs source and target classes")
            check_class("source", self.source, data)
            check_class("target", self.target, data)
            if self.source == self.target:
                raise UsageError("the source class must differ from the target class")
            pool = np.flatnonzero(data.y == self.source)
            k = int(round(rate * len(pool)))
            if k < 1:
                raise UsageError(
                    f"rate {rate} flips no row of the {len(pool)} in class {self.source}; raise it"
                )
            index = np.sort(rng.choice(pool, size=k, replace=False))
            y[index] = self.target
        else:
            raise UsageError(f"label-flip mode must be random or targeted, got {self.mode!r}")
        return PoisonResult(
            data=Dataset(data.x.copy(), y, data.spec, f"{data.name}[{self.name}]"),
            poison_index=index,
            attack=self.name,
            params=self.get_params(),
            target=None if self.target is None else int(self.target),
            source=None if self.source is None else int(self.source),
        )
