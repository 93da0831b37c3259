"""The recipe contract, the registry of recipes, and the standard recipe.

A recipe is configured by keyword-only hyperparameters (its threat model or privacy budget)
and decides three things about training: what one step does (:meth:`Recipe.train_step`, by
default a gradient step on :meth:`Recipe.loss`), which batches an epoch visits
(:meth:`Recipe.batches`), and what it checks or records between epochs. The loop around it
(:mod:`dlsec.core.loop`) is the same for every recipe: optimiser, seeds, validation and
early stopping, checkpoints and resumption. Recipes register by name and a duplicate name is
refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlsec.core.augment import augment_batch
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.core.registration import register_in
from dlsec.core.spec import InputSpec
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import UsageError

__all__ = [
    "RECIPES",
    "Recipe",
    "Standard",
    "TrainState",
    "fit_normalisation",
    "get_recipe",
    "register_recipe",
]

RECIPES: dict[str, type[Recipe]] = {}


def fit_normalisation(data: Dataset) -> InputSpec:
    """``data.spec`` with mean/std measured on ``data`` (per channel, or per feature)."""
    x = data.x.astype(np.float64)
    if data.spec.kind == "image":
        axes = (0,) + tuple(range(2, x.ndim))
        mean, std = x.mean(axis=axes), x.std(axis=axes)
    else:
        flat = x.reshape(x.shape[0], -1)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return replace(data.spec, mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def register_recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: register a recipe under ``name``; a duplicate raises ``UsageError``.

    Example:
        >>> @register_recipe("mixup")                       # doctest: +SKIP
        ... class Mixup(Recipe):
        ...     def __init__(self, *, alpha: float = 0.2) -> None:
        ...         self.alpha = alpha
    """

    return register_in(RECIPES, name, "recipe")


def get_recipe(name: str, **params: Any) -> Recipe:
    """Build the registered recipe ``name`` with its hyperparameters ``params``.

    Example:
        >>> get_recipe("pgd-at", eps=0.1)
        PGDAT(eps=0.1, norm='linf', steps=10, step_size=None)
    """
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
    cls = RECIPES[name]
    accepted = cls.param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no hyperparameters"
        raise UsageError(f"recipe {name!r} does not take {', '.join(unknown)}; it takes: {takes}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"recipe {name!r}: {exc}") from None


@dataclass
class TrainState:
    """Everything a recipe's step sees: the model, data, optimiser and generators.

    ``module`` is what training forward passes go through (the model's module, or a wrapper a
    recipe installed, such as Opacus' per-example gradient module); ``model`` is the
    input-space wrapper attacks and evaluation use. ``gen`` is the run's CPU generator: batch
    order, augmentation and attack seeds all come from it.
    """

    model: WhiteBoxModel
    module: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    x: torch.Tensor
    y: torch.Tensor
    gen: torch.Generator
    epoch: int = 0
    steps: int = 0
    stop: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._norm = self.model.spec.normalisation(device=self.x.device)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def spec(self) -> InputSpec:
        return self.model.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training-mode logits of an input-space batch (normalised as the model's spec says)."""
        if self._norm is not None:
            x = (x - self._norm[0]) / self._norm[1]
        return self.module(x)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` augmented as the config says (unchanged when augmentation is off)."""
        if not self.config.augment:
            return x
        c = self.config
        return augment_batch(x, self.spec, shift=c.augment_shift, noise=c.augment_noise, gen=self.gen)

    def draw_seed(self) -> int:
        """A seed for one random component (an attack), drawn from the run's generator."""
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))


class Recipe:
    """Base of the training recipes. Subclasses override the hooks they need.

    Class attributes a subclass may set: ``adversarial`` (robustness is then measured after
    training, by AutoAttack at the recipe's budget), ``config_defaults`` (TrainConfig values
    this recipe works best with; a caller's explicit values win). ``name`` is set by
    :func:`register_recipe`.
    """

    name: ClassVar[str] = "recipe"
    adversarial: ClassVar[bool] = False
    config_defaults: ClassVar[dict[str, Any]] = {}

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_names(cls) -> list[str]:
        """The keyword-only hyperparameters this recipe takes."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @classmethod
    def required_params(cls) -> list[str]:
        """The hyperparameters without a default (a recipe cannot be built without them)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [
            p.name
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        ]

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters this recipe was built with."""
        return {n: getattr(self, n) for n in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def default_config(self, **overrides: Any) -> TrainConfig:
        """A :class:`TrainConfig` with this recipe's defaults, then ``overrides``."""
        unknown = sorted(set(overrides) - set(TrainConfig.field_names()))
        if unknown:
            raise UsageError(f"unknown training option(s): {', '.join(unknown)}")
        return TrainConfig(**{**self.config_defaults, **overrides})

    # ------------------------------------------------------------------ set-up
    def default_arch(self, spec: InputSpec) -> tuple[str, dict[str, Any]] | None:
        """The architecture to use when the caller names none (``None``: the data's default)."""
        return None

    def input_spec(self, train_set: Dataset) -> InputSpec:
        """The spec the trained model carries: by default normalised with the training split's
        per-channel (images) or per-feature (tabular) mean and standard deviation."""
        return fit_normalisation(train_set)

    def check(self, model: WhiteBoxModel, n_train: int, config: TrainConfig) -> None:
        """Refuse a model, data size or config this recipe cannot train (``UsageError``)."""

    def prepare(self, state: TrainState) -> None:
        """Called once before the first epoch (or before resuming)."""

    def cleanup(self, state: TrainState) -> None:
        """Called once after training, even when it failed: undo what :meth:`prepare` did."""

    # ------------------------------------------------------------------ one epoch
    def batches(self, state: TrainState) -> Iterator[torch.Tensor]:
        """Index batches for one epoch: a fresh shuffle, cut into ``batch_size`` pieces."""
        order = torch.randperm(state.n, generator=state.gen).to(state.x.device)
        for start in range(0, state.n, state.config.batch_size):
            yield order[start : start + state.config.batch_size]

    def train_step(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimisation step on a batch; returns the summed loss and the correct count."""
        loss, logits = self.loss(state, state.augment(x), y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        return float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum())

    def loss(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's training loss and the logits its accuracy is counted on."""
        logits = state.forward(x)
        return F.cross_entropy(logits, y, label_smoothing=state.config.label_smoothing), logits

    def validation_score(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
        """What early stopping maximises on the validation split (clean accuracy here)."""
        return float((state.model.logits(x).argmax(1) == y).float().mean())

    def end_epoch(self, state: TrainState) -> dict[str, float]:
        """Called after each epoch; returns extra statistics and may set ``state.stop``."""
        return {}

    # ------------------------------------------------------------------ records
    def state_dict(self, state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The recipe's own state for a checkpoint: tensors and JSON-serialisable values."""
        return {}, {}

    def load_state_dict(
        self, state: TrainState, tensors: dict[str, torch.Tensor], values: dict[str, Any]
    ) -> None:
        """Restore what :meth:`state_dict` saved."""

    def summary(self, state: TrainState) -> dict[str, Any]:
        """Sections for the training card (e.g. ``privacy``), after training."""
        return {}


@register_recipe("standard")
class Standard(Recipe):
    """Empirical risk minimisation: cross-entropy with the shared regularisation options.

    Weight decay, label smoothing, dropout, augmentation and early stopping live in
    :class:`~dlsec.train.TrainConfig`, so every recipe can use them.

    Example:
        >>> from dlsec.core import load_dataset
        >>> from dlsec.train import TrainConfig, train
        >>> result = train(load_dataset("builtin:breast-cancer"), recipe=Standard(),
        ...                config=TrainConfig(epochs=5, augment=True))  # doctest: +SKIP
    """

    def __init__(self) -> None:
        pass
