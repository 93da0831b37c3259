"""Backdoor attacks: BadNets patches, blended triggers and the clean-label backdoor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from dlsec.attacks.backdoor._triggers import BlendTrigger, PatchTrigger, Trigger
from dlsec.attacks.poisoning._base import (
    PoisoningAttack,
    PoisonResult,
    check_class,
    check_rate,
    register_poisoning,
    train_victim,
)
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.errors import UsageError

__all__ = ["BackdoorAttack", "BadNets", "Blended", "CleanLabel"]


class BackdoorAttack(PoisoningAttack):
    """A dirty-label backdoor: stamp the trigger on ``rate`` of the rows and relabel them ``target``.

    Rows are drawn (seeded) from classes other than the target, or only from ``source`` when
    given. A subclass builds the trigger in :meth:`trigger`.
    """

    def __init__(
        self, *, rate: float = 0.1, target: int = 0, source: int | None = None, seed: int = 0
    ) -> None:
        self.rate = rate
        self.target = target
        self.source = source
        self.seed = seed

    def trigger(self, data: Dataset) -> Trigger:
        raise NotImplementedError

    def poison(self, data: Dataset) -> PoisonResult:
        rate = check_rate(self.rate)
        check_class("target", self.target, data)
        check_class("source", self.source, data)
        if self.source is not None and self.source == self.target:
            raise UsageError("the source class must differ from the target class")
        trigger = self.trigger(data)
        pool = np.flatnonzero(data.y != self.target if self.source is None else data.y == self.source)
        k = int(round(rate * len(data)))
        if k < 1 or k > len(pool):
            raise UsageError(
                f"rate {rate} asks for {k} poisoned rows but {len(pool)} rows can carry the trigger; "
                "choose a rate that leaves at least one and at most all of them"
            )
        rng = np.random.default_rng(self.seed)
        index = np.sort(rng.choice(pool, size=k, replace=False))
        x, y = data.x.copy(), data.y.copy()
        x[index] = trigger(x[index])
        y[index] = self.target
        poisoned = replace(data, x=x, y=y, name=f"{data.name}[{self.name}]")
        return PoisonResult(
            data=Dataset(poisoned.x, poisoned.y, data.spec, poisoned.name),
            poison_index=index,
            attack=self.name,
            params=self.get_params(),
            target=int(self.target),
            source=self.source,
            apply_trigger=trigger.apply,
        )


@register_poisoning("badnets")
class BadNets(BackdoorAttack):
    """BadNets (Gu et al. 2017): a small checkerboard patch in a corner, relabelled to the target.

    Args:
        rate: fraction of all rows poisoned.
        target: the class triggered inputs go to.
        source: attack only rows of this class (default: every other class).
        size: patch side in pixels (features, for tabular data).
        corner: ``bottom-right``, ``bottom-left``, ``top-right`` or ``top-left``.
        seed: seeds the choice of rows.

    Example:
        >>> result = BadNets(rate=0.1, target=0).poison(load_dataset("builtin:digits"))  # doctest: +SKIP
        >>> len(result.poison_index)                                                     # doctest: +SKIP
        180
    """

    def __init__(
        self,
        *,
        rate: float = 0.1,
        target: int = 0,
        source: int | None = None,
        size: int = 3,
        corner: str = "bottom-right",
        seed: int = 0,
    ) -> None:
        super().__init__(rate=rate, target=target, source=source, seed=seed)
        self.size = size
        self.corner = corner

    def trigger(self, data: Dataset) -> Trigger:
        return PatchTrigger(data.spec, size=self.size, corner=self.corner)


@register_poisoning("blended")
class Blended(BackdoorAttack):
    """Blended backdoor (Chen et al. 2017): ``(1 - alpha) x + alpha * noise``, relabelled.

    Args:
        rate: fraction of all rows poisoned.
        target: the class triggered inputs go to.
        source: attack only rows of this class (default: every other class).
        alpha: blend weight of the pattern (the trigger's visibility).
        pattern_seed: seeds the uniform-noise pattern.
        seed: seeds the choice of rows.
    """

    def __init__(
        self,
        *,
        rate: float = 0.1,
        target: int = 0,
        source: int | None = None,
        alpha: float = 0.2,
        pattern_seed: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(rate=rate, target=target, source=source, seed=seed)
        self.alpha = alpha
        self.pattern_seed = pattern_seed

    def trigger(self, data: Dataset) -> Trigger:
        return BlendTrigger(data.spec, alpha=self.alpha, seed=self.pattern_seed)


@register_poisoning("clean-label")
class CleanLabel(PoisoningAttack):
    """Clean-label backdoor (Turner et al. 2019): perturbed target-class images with the trigger.

    Labels are never changed. ``rate`` of all rows, drawn from the target class, are first
    pushed away from their class by full-budget PGD (dlsec's :class:`~dlsec.attacks.PGD` towards
    the runner-up class, never stopping early) on an ensemble of ``surrogates`` models trained on
    the clean rows (their averaged logits: perturbations that fool several models transfer to
    the victim far better than those of one), so that they are hard to learn from their
    content, then stamped with the patch trigger (at ``amplitude``; Turner et al. use a
    reduced-amplitude trigger while poisoning and the full one at test time), by default in all
    four corners as in the paper's improved attack. A model trained on them learns to rely on
    the trigger for the target class.

    Args:
        rate: fraction of all rows poisoned (at most the target class's share).
        target: the class triggered inputs go to.
        eps: L-inf budget of the adversarial perturbation.
        steps: PGD steps.
        size: patch side; ``corner``: where it is stamped (``all``: the four corners);
            ``amplitude``: patch strength on the poisoned rows (the test-time trigger is always
            the full patch).
        surrogate: the white-box model PGD runs on (default: an ensemble trained on ``data``).
        surrogates: how many models that default ensemble trains.
        seed: seeds the choice of rows, PGD and the surrogates' training.
    """

    def __init__(
        self,
        *,
        rate: float = 0.08,
        target: int = 0,
        eps: float = 0.3,
        steps: int = 40,
        size: int = 3,
        corner: str = "all",
        amplitude: float = 1.0,
        surrogate: WhiteBoxModel | None = None,
        surrogates: int = 4,
        seed: int = 0,
    ) -> None:
        self.rate = rate
        self.target = target
        self.eps = eps
        self.steps = steps
        self.size = size
        self.corner = corner
        self.amplitude = amplitude
        self.surrogate = surrogate
        self.surrogates = surrogates
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["surrogate"] = None if self.surrogate is None else "given"
        return params

    def poison(self, data: Dataset) -> PoisonResult:
        rate = check_rate(self.rate)
        check_class("target", self.target, data)
        if not self.eps > 0:
            raise UsageError(f"eps must be positive, got {self.eps}")
        pool = np.flatnonzero(data.y == self.target)
        k = int(round(rate * len(data)))
        if k < 1 or k > len(pool):
            raise UsageError(
                f"rate {rate} asks for {k} target-class rows but class {self.target} has {len(pool)}; "
                "a clean-label attack can only poison rows of the target class"
            )
        if isinstance(self.surrogates, bool) or not isinstance(self.surrogates, int) or self.surrogates < 1:
            raise UsageError(f"surrogates must be a positive integer, got {self.surrogates!r}")
        poison_trigger = PatchTrigger(data.spec, size=self.size, corner=self.corner, amplitude=self.amplitude)
        test_trigger = PatchTrigger(data.spec, size=self.size, corner=self.corner)
        rng = np.random.default_rng(self.seed)
        index = np.sort(rng.choice(pool, size=k, replace=False))
        surrogate = self.surrogate
        if surrogate is None:
            members = [train_victim(data, seed=self.seed + i) for i in range(self.surrogates)]
            surrogate = members[0] if len(members) == 1 else _ensemble(members)
        x_adv = _full_budget_pgd(surrogate, data.x[index], eps=self.eps, steps=self.steps, seed=self.seed)
        x = data.x.copy()
        x[index] = poison_trigger(x_adv)
        return PoisonResult(
            data=Dataset(x, data.y.copy(), data.spec, f"{data.name}[{self.name}]"),
            poison_index=index,
            attack=self.name,
            params=self.get_params(),
            target=int(self.target),
            apply_trigger=test_trigger.apply,
        )


class _MeanLogits(torch.nn.Module):
    """The averaged logits of several white-box models (each applies its own normalisation)."""

    def __init__(self, models: list[WhiteBoxModel]) -> None:
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(dim=0)


def _ensemble(models: list[WhiteBoxModel]) -> WhiteBoxModel:
    spec = replace(models[0].spec, mean=None, std=None)  # the members normalise themselves
    return WhiteBoxModel(_MeanLogits(models), spec, device=models[0].device)


class _NeverFooled(torch.nn.Module):
    """Logits plus one extra class that always wins, so a targeted attack never stops early.

    Minimising the cross-entropy of class ``t`` against this output is, up to the constant
    extra logit, maximising ``t``'s logit: PGD then spends its whole budget.
    """

    def __init__(self, model: WhiteBoxModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        extra = logits.max(dim=1, keepdim=True).values.detach() + 50.0
        return torch.cat([logits, extra], dim=1)


def _full_budget_pgd(model: WhiteBoxModel, x: np.ndarray, *, eps: float, steps: int, seed: int) -> np.ndarray:
    """dlsec's PGD (L-inf) pushing each row towards its most likely wrong class for all ``steps``.

    Turner et al. maximise the loss over the whole budget rather than stopping at the first
    misclassification (dlsec's PGD keeps the first adversarial iterate), so PGD runs against
    :class:`_NeverFooled`, targeted at the surrogate's runner-up class.
    """
    from dlsec.attacks.evasion import PGD

    xt = torch.from_numpy(x)
    logits = model.logits(xt).cpu()
    runner_up = logits.topk(2, dim=1).indices[:, 1]
    spec = replace(model.spec, num_classes=model.spec.num_classes + 1, class_names=None)
    wrapped = WhiteBoxModel(_NeverFooled(model), spec, device=model.device)
    pgd = PGD(eps=eps, steps=steps, norm="linf", random_start=True, targeted=True, seed=seed)
    out: np.ndarray = pgd(wrapped, xt, logits.argmax(1), target=runner_up).x_adv.numpy()
    return out
