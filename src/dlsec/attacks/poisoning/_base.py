"""The poisoning contract: an attack turns a clean training set into a poisoned one.

Every poisoning attack is configured by keyword-only hyperparameters and called as
``attack.poison(data)``; it returns a :class:`PoisonResult` holding the poisoned copy (the
input is never modified), the indices of the rows it touched and what is needed to score it
(:meth:`PoisonResult.evaluate`: attack success rate and clean accuracy of a model trained on
the poisoned rows). Attacks register by name (:func:`register_poisoning`); a duplicate name
is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from dlsec.core.arch import build_architecture, default_arch_for
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel, default_device
from dlsec.core.registration import register_in
from dlsec.errors import UsageError

__all__ = [
    "POISONINGS",
    "PoisonResult",
    "PoisoningAttack",
    "get_poisoning",
    "register_poisoning",
    "retrain_head",
    "train_victim",
]

POISONINGS: dict[str, type[PoisoningAttack]] = {}
Progress = Callable[[int, int, dict[str, float]], None]


def register_poisoning(name: str) -> Callable[[type[PoisoningAttack]], type[PoisoningAttack]]:
    """Class decorator: register a poisoning attack under ``name``; duplicates raise ``UsageError``."""

    return register_in(POISONINGS, name, "poisoning attack")


def get_poisoning(name: str, **params: Any) -> PoisoningAttack:
    """Build the registered poisoning attack ``name`` with ``params``.

    Example:
        >>> get_poisoning("badnets", rate=0.1, target=0).name
        'badnets'
    """
    if name not in POISONINGS:
        raise UsageError(f"unknown poisoning attack {name!r}; choose one of: {', '.join(sorted(POISONINGS))}")
    cls = POISONINGS[name]
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UsageError(f"{name} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"{name}: {exc}") from None


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < float(rate) < 1.0:
        raise UsageError(f"poisoning rate must be a fraction strictly between 0 and 1, got {rate!r}")
    return float(rate)


def check_class(name: str, value: int | None, data: Dataset) -> None:
    if value is not None and not 0 <= int(value) < data.spec.num_classes:
        raise UsageError(
            f"{name} class {value} is not a class of {data.name} (0..{data.spec.num_classes - 1})"
        )


@dataclass(frozen=True)
class PoisonResult:
    """A poisoned copy of a training set.

    Attributes:
        data: the poisoned rows (same length and order as the clean input).
        poison_index: sorted indices of the rows the attack changed.
        attack: the attack's registered name; ``params`` its hyperparameters.
        target: the class the attacker wants (``None`` for untargeted attacks).
        source: the class whose rows are attacked (``None``: any other class).
        apply_trigger: for backdoors, stamps the trigger on a batch (what the attacker does
            at test time); ``None`` for attacks without a trigger.
        targets: for targeted poisoning of chosen test inputs (feature collision), the
            inputs the attacker wants misclassified as ``target``.
    """

    data: Dataset
    poison_index: np.ndarray
    attack: str
    params: dict[str, Any]
    target: int | None = None
    source: int | None = None
    apply_trigger: Callable[[np.ndarray], np.ndarray] | None = None
    targets: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return float(len(self.poison_index) / max(len(self.data), 1))

    def mask(self) -> np.ndarray:
        """Boolean mask of the poisoned rows."""
        out = np.zeros(len(self.data), dtype=bool)
        out[self.poison_index] = True
        return out

    def success_rate(self, model: WhiteBoxModel, test: Dataset) -> float:
        """The attack success rate of ``model`` (trained on :attr:`data`) on clean ``test`` rows.

        Backdoors: the fraction of triggered test rows of other classes than the target that the
        model assigns to the target. Feature collision: the fraction of the attacker's target
        inputs classified as ``target``. Targeted label flipping: the fraction of ``source`` test
        rows classified as ``target``. Random label flipping: the test error rate.
        """
        if self.apply_trigger is not None and self.target is not None:
            keep = test.y != self.target if self.source is None else test.y == self.source
            if not keep.any():
                raise UsageError("the test rows hold no example of another class than the target")
            pred = model.predict(self.apply_trigger(test.x[keep])).numpy()
            return float((pred == self.target).mean())
        if self.targets is not None and self.target is not None:
            pred = model.predict(self.targets).numpy()
            return float((pred == self.target).mean())
        if self.target is not None and self.source is not None:
            keep = test.y == self.source
            pred = model.predict(test.x[keep]).numpy()
            return float((pred == self.target).mean())
        return float((model.predict(test.x).numpy() != test.y).mean())

    def evaluate(self, model: WhiteBoxModel, test: Dataset) -> dict[str, float]:
        """``attack_success_rate`` and ``clean_accuracy`` of ``model`` on ``test``."""
        acc = float((model.predict(test.x).numpy() == test.y).mean())
        return {"attack_success_rate": self.success_rate(model, test), "clean_accuracy": acc}


class PoisoningAttack:
    """Base of the poisoning attacks: hyperparameters in ``__init__``, work in :meth:`poison`."""

    name: ClassVar[str] = "poisoning"

    def poison(self, data: Dataset) -> PoisonResult:
        """A poisoned copy of ``data`` (``data`` itself is left unchanged)."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        return {n: _plain(getattr(self, n)) for n in names}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    return value


def fresh_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with every layer's parameters re-initialised (same architecture)."""
    import copy

    out = copy.deepcopy(module)
    for sub in out.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return out


def victim_architecture(data: Dataset) -> tuple[str, dict[str, Any]]:
    """The architecture dlsec trains for poisoning experiments (the zoo's, for 8x8 digits)."""
    arch, kwargs = default_arch_for(data.spec.kind, data.spec.shape, data.spec.num_classes)
    if arch == "cnn":
        kwargs.update(width=16, hidden=64)
    return arch, kwargs


def train_victim(
    data: Dataset,
    *,
    epochs: int = 30,
    seed: int = 0,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    lr: float = 1e-3,
    module: torch.nn.Module | None = None,
) -> WhiteBoxModel:
    """Train a fresh classifier on every row of ``data`` with the standard recipe.

    The victim of a poisoning experiment, and the model the data audit trains when none is
    given. The architecture defaults to the data's (the zoo's small CNN for 8x8 images);
    ``module`` gives a fresh (untrained) module instead. ``progress`` is called after every
    epoch with ``(epoch, epochs, stats)``; the model is complete by then, so a callback may
    score it (the data audit records per-row losses this way).

    Example:
        >>> model = train_victim(result.data, epochs=30)          # doctest: +SKIP
        >>> result.evaluate(model, test)["attack_success_rate"]   # doctest: +SKIP
    """
    from dlsec.core.loop import fit, fit_normalisation
    from dlsec.core.trainconfig import TrainConfig

    if arch is None:
        arch, kwargs = victim_architecture(data)
        kwargs.update(arch_kwargs or {})
    else:
        kwargs = dict(arch_kwargs or {})
    target = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        module = build_architecture(arch, kwargs) if module is None else fresh_copy(module)
        module = module.to(target)
    model = WhiteBoxModel(module, fit_normalisation(data), device=target)
    fit(model, data, TrainConfig(epochs=epochs, seed=seed, lr=lr), progress=progress)
    return model


def retrain_head(model: WhiteBoxModel, data: Dataset, *, epochs: int = 30, seed: int = 0) -> WhiteBoxModel:
    """Transfer learning: a copy of ``model`` whose last linear layer alone is re-trained on ``data``.

    The setting of feature-collision poisoning (Shafahi et al. 2018): the feature extractor is
    frozen, the classifier head is learned again from the (poisoned) training set.
    """
    import copy

    from dlsec.attacks.poisoning._features import last_linear
    from dlsec.core.loop import fit
    from dlsec.core.trainconfig import TrainConfig

    out = copy.deepcopy(model)
    head = last_linear(out)
    for param in out.module.parameters():
        param.requires_grad_(False)
    with torch.random.fork_rng(devices=[out.device] if out.device.type == "cuda" else []):
        torch.manual_seed(seed)
        head.reset_parameters()
    for param in head.parameters():
        param.requires_grad_(True)
    fit(out, data, TrainConfig(epochs=epochs, seed=seed))
    return out
