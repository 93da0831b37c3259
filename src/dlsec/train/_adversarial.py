"""Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), fast AT (Wong
et al. 2020). Training examples come from dlsec's own attacks."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dlsec.attacks import PGD, Attack
from dlsec.attacks.evasion.base import Oracle
from dlsec.attacks.evasion.gradient import Objective
from dlsec.core.recipe import Recipe, TrainState, register_recipe
from dlsec.core.seeding import torch_generator
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["PGDAT", "TRADES", "FastAT"]

_NORMS = ("linf", "l2")


def _budget(eps: Any, norm: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise UsageError(f"eps must be a positive number, got {eps!r}")
    if norm not in _NORMS:
        raise UsageError(f"norm must be one of {', '.join(_NORMS)} for adversarial training, got {norm!r}")


def _optional_positive(name: str, value: Any) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UsageError(f"{name} must be a positive number, got {value!r}")


class _Adversarial(Recipe):
    """Shared parts: the budget, validation by PGD accuracy, and attack seeds from the run."""

    adversarial: ClassVar[bool] = True
    eps: float
    norm: str
    steps: int

    def validation_score(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
        """PGD accuracy on the validation split (Rice et al. 2020: stop on robust, not clean)."""
        attack = PGD(eps=self.eps, norm=self.norm, steps=max(10, self.steps), seed=state.config.seed)
        return attack(state.model, x, y).robust_accuracy


@register_recipe("pgd-at")
class PGDAT(_Adversarial):
    """PGD adversarial training (Madry et al. 2018): minimise the loss at PGD's adversarial point.

    Each batch is attacked by :class:`dlsec.attacks.PGD` (random start, ``steps`` steps of
    ``step_size``, default ``2.5 * eps / steps``) with the model in eval mode, then the model
    takes a step on the cross-entropy of the adversarial batch. dlsec's PGD returns, for an
    example it fools, the first iterate that fooled the model (the rest run all steps), so
    the training points are early-stopped PGD points, as in friendly adversarial training
    (Zhang et al. 2020): misclassified, but no further from the data than needed.

    Args:
        eps: perturbation budget (in input space).
        norm: ``linf`` or ``l2``.
        steps: PGD iterations per batch.
        step_size: PGD step length (default ``2.5 * eps / steps``).

    Example:
        >>> from dlsec.core import load_dataset
        >>> from dlsec.train import TrainConfig, train
        >>> result = train(load_dataset("builtin:digits"), recipe=PGDAT(eps=0.1, steps=10),
        ...                config=TrainConfig(epochs=20))             # doctest: +SKIP
        >>> result.robustness["robust_accuracy"]                      # doctest: +SKIP
    """

    def __init__(
        self, *, eps: float, norm: str = "linf", steps: int = 10, step_size: float | None = None
    ) -> None:
        _budget(eps, norm)
        positive_int("steps", steps)
        _optional_positive("step_size", step_size)
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.step_size = step_size

    def attack(self, seed: int) -> Attack:
        """The training attack for one batch."""
        return PGD(
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            step_size=self.step_size,
            random_start=True,
            seed=seed,
        )

    def loss(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.attack(state.draw_seed())(state.model, x, y).x_adv.detach()
        logits = state.forward(x_adv)
        return F.cross_entropy(logits, y, label_smoothing=state.config.label_smoothing), logits


def _kl_from_clean(model: Oracle, x: torch.Tensor, labels: torch.Tensor) -> Objective:
    """TRADES' inner loss: ``KL(f(x) || f(x'))`` per example, the clean prediction held fixed."""
    with torch.no_grad():
        p_clean = torch.softmax(model(x), dim=1)
    return lambda logits: F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="none").sum(1)


class _TradesPGD(PGD):
    """TRADES' inner maximisation: PGD on ``KL(f(x) || f(x'))``, from ``x + 0.001 N(0, I)``.

    The divergence and its gradient vanish at ``x`` itself, hence the small Gaussian start
    (Zhang et al.'s code) rather than a uniform point of the ball. It has no goal to reach:
    every step is taken and the last iterate returned, where PGD keeps the first misclassified
    one. Not registered as an evasion attack; the base class projects the result onto the
    budget and bounds.
    """

    norms: ClassVar[tuple[str, ...]] = _NORMS

    def __init__(
        self,
        *,
        eps: float,
        steps: int,
        step_size: float,
        norm: str = "linf",
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(
            eps=eps,
            steps=steps,
            step_size=step_size,
            norm=norm,
            loss=_kl_from_clean,
            seed=seed,
            batch_size=batch_size,
        )

    def _start(
        self, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype)
        return torch.clamp(x + 0.001 * noise, lower, upper)

    def _reached(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)


@register_recipe("trades")
class TRADES(_Adversarial):
    """TRADES (Zhang et al. 2019): clean cross-entropy plus ``beta`` times the KL divergence
    between the clean and the adversarial prediction.

    The adversarial point maximises that KL divergence: dlsec's :class:`~dlsec.attacks.PGD` on
    the KL loss (``steps`` steps of ``step_size``, default ``eps / 4`` as in the paper's
    ``0.007`` for ``0.031``, from ``x`` plus a ``0.001``-scaled Gaussian start, every step
    taken). ``beta`` trades clean accuracy for robustness (6 in the
    paper; 1 gives more clean accuracy).

    Args:
        eps: perturbation budget.
        norm: ``linf`` or ``l2``.
        steps: inner-maximisation iterations per batch.
        step_size: inner step length (default ``eps / 4``).
        beta: weight of the robustness term.

    Example:
        >>> recipe = TRADES(eps=0.1, beta=6.0)
        >>> recipe.beta
        6.0
    """

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        steps: int = 10,
        step_size: float | None = None,
        beta: float = 6.0,
    ) -> None:
        _budget(eps, norm)
        positive_int("steps", steps)
        _optional_positive("step_size", step_size)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
            raise UsageError(f"beta must be a number >= 0, got {beta!r}")
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.step_size = step_size
        self.beta = beta

    def attack(self, seed: int) -> Attack:
        """The inner maximisation for one batch: PGD on the KL divergence (see the class)."""
        alpha = self.step_size if self.step_size is not None else self.eps / 4
        return _TradesPGD(eps=self.eps, norm=self.norm, steps=self.steps, step_size=alpha, seed=seed)

    def loss(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.attack(state.draw_seed())(state.model, x, y).x_adv.detach()
        logits = state.forward(x)
        logits_adv = state.forward(x_adv)
        natural = F.cross_entropy(logits, y, label_smoothing=state.config.label_smoothing)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return natural + self.beta * robust, logits


@register_recipe("fast-at")
class FastAT(_Adversarial):
    """Fast adversarial training (Wong et al. 2020): FGSM from a random start, with a guard
    against catastrophic overfitting.

    Each batch is attacked by one PGD step of ``alpha`` (default ``1.25 * eps``) from a
    uniform random point of the eps-ball (dlsec's :class:`~dlsec.attacks.PGD` with
    ``steps=1``). FGSM training can collapse in one epoch: the model learns to defeat the
    single step while multi-step PGD accuracy drops to zero. After every epoch the guard
    measures PGD accuracy (``guard_steps`` steps, a different attack from the training one)
    on a fixed batch of ``guard_n`` training rows; when it falls more than ``guard_drop``
    below its best, training stops and the weights roll back to the best epoch (the card
    records it).

    Args:
        eps: perturbation budget.
        norm: ``linf`` or ``l2``.
        alpha: FGSM step (default ``1.25 * eps``).
        guard_steps: PGD steps of the guard.
        guard_n: rows in the guard batch.
        guard_drop: the fall in guard accuracy (absolute) that counts as a collapse.

    Example:
        >>> FastAT(eps=0.1).alpha is None
        True
    """

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        alpha: float | None = None,
        guard_steps: int = 10,
        guard_n: int = 256,
        guard_drop: float = 0.2,
    ) -> None:
        _budget(eps, norm)
        _optional_positive("alpha", alpha)
        positive_int("guard_steps", guard_steps)
        positive_int("guard_n", guard_n)
        if isinstance(guard_drop, bool) or not isinstance(guard_drop, int | float) or not 0 < guard_drop <= 1:
            raise UsageError(f"guard_drop must be in (0, 1], got {guard_drop!r}")
        self.eps = eps
        self.norm = norm
        self.alpha = alpha
        self.guard_steps = guard_steps
        self.guard_n = guard_n
        self.guard_drop = guard_drop

    @property
    def steps(self) -> int:  # type: ignore[override]  # fast AT fixes PGD's steps attribute to 1, read-only
        return 1

    def loss(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha if self.alpha is not None else 1.25 * self.eps
        fgsm = PGD(
            eps=self.eps, norm=self.norm, steps=1, step_size=alpha, random_start=True, seed=state.draw_seed()
        )
        x_adv = fgsm(state.model, x, y).x_adv.detach()
        logits = state.forward(x_adv)
        return F.cross_entropy(logits, y, label_smoothing=state.config.label_smoothing), logits

    def prepare(self, state: TrainState) -> None:
        order = torch.randperm(state.n, generator=torch_generator(state.config.seed))
        rows = order[: self.guard_n].to(state.x.device)
        state.extra["guard"] = {"x": state.x[rows], "y": state.y[rows], "best": -1.0, "best_epoch": 0}
        state.extra["guard_weights"] = None
        state.extra["collapse"] = None

    def _guard_accuracy(self, state: TrainState) -> float:
        guard = state.extra["guard"]
        attack = PGD(
            eps=self.eps,
            norm=self.norm,
            steps=self.guard_steps,
            step_size=2.5 * self.eps / self.guard_steps,
            random_start=True,
            seed=state.config.seed,
        )
        return attack(state.model, guard["x"], guard["y"]).robust_accuracy

    def end_epoch(self, state: TrainState) -> dict[str, float]:
        guard = state.extra["guard"]
        acc = self._guard_accuracy(state)
        epoch = state.epoch + 1
        if acc > guard["best"]:
            guard["best"], guard["best_epoch"] = acc, epoch
            state.extra["guard_weights"] = {
                k: v.detach().clone() for k, v in state.model.module.state_dict().items()
            }
        elif acc < guard["best"] - self.guard_drop:
            state.model.module.load_state_dict(state.extra["guard_weights"])
            state.extra["collapse"] = {"epoch": epoch, "guard_pgd_accuracy": acc}
            state.stop = (
                f"catastrophic overfitting at epoch {epoch}: guard PGD accuracy fell from "
                f"{guard['best']:.3f} to {acc:.3f}; rolled back to epoch {guard['best_epoch']}"
            )
        return {"guard_pgd_accuracy": acc}

    def state_dict(self, state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights = state.extra["guard_weights"] or {}
        guard = state.extra["guard"]
        values = {
            "best": guard["best"],
            "best_epoch": guard["best_epoch"],
            "collapse": state.extra["collapse"],
        }
        return {f"guard.{k}": v for k, v in weights.items()}, values

    def load_state_dict(
        self, state: TrainState, tensors: dict[str, torch.Tensor], values: dict[str, Any]
    ) -> None:
        weights = {k.removeprefix("guard."): v for k, v in tensors.items() if k.startswith("guard.")}
        state.extra["guard_weights"] = weights or None
        state.extra["guard"].update(best=values["best"], best_epoch=values["best_epoch"])
        state.extra["collapse"] = values["collapse"]

    def summary(self, state: TrainState) -> dict[str, Any]:
        guard = state.extra["guard"]
        return {
            "overfitting_guard": {
                "attack": f"pgd {self.guard_steps} steps",
                "rows": len(guard["y"]),
                "best_epoch": guard["best_epoch"],
                "best_pgd_accuracy": guard["best"],
                "collapse": state.extra["collapse"],
            }
        }
