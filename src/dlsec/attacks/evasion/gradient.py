"""Gradient attacks: FGSM, PGD (L-inf, L2, L1) and momentum iterative (MI-FGSM)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from dlsec.attacks.evasion._losses import ce_loss
from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["PGD", "FGSM", "MIFGSM", "Loss", "Objective", "cross_entropy"]

#: The per-example function of the logits that PGD ascends.
Objective = Callable[[torch.Tensor], torch.Tensor]
#: A loss for PGD: ``loss(model, x, labels)`` sees the clean batch (and the oracle, to ask for
#: its clean prediction) once per run, and returns the objective at any point near ``x``.
#: ``labels`` are the true classes, or the targets of a targeted attack.
Loss = Callable[[Oracle, torch.Tensor, torch.Tensor], Objective]


def cross_entropy(model: Oracle, x: torch.Tensor, labels: torch.Tensor) -> Objective:
    """PGD's default loss: the cross-entropy of ``labels``."""
    return lambda logits: ce_loss(logits, labels)


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf, L2 or L1.

    From a random point of the eps-ball (or ``x``), take ``steps`` steps of size ``step_size``
    along the steepest-ascent direction of the loss (the cross-entropy by default; the target's
    loss, descending, when targeted), projecting back onto the ball and the input bounds after
    each. With ``restarts > 1`` the attack restarts only on examples not yet fooled. For each
    example the first adversarial iterate found is kept.

    Args:
        eps: budget in the chosen norm.
        steps: iterations per restart.
        step_size: step length; default ``2.5 * eps / steps`` (Madry et al.).
        norm: ``linf``, ``l2`` or ``l1``.
        loss: what to ascend (a :data:`Loss`); default :func:`cross_entropy`. TRADES ascends
            the KL divergence from the clean prediction.
        random_start: start from a uniform point of the ball.
        restarts: independent runs; examples fooled in one are not attacked again.
        targeted: minimise the loss of ``target`` instead of maximising that of ``y``.
        seed: seeds the random starts.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks import PGD
        >>> attack = PGD(eps=0.1, steps=40, step_size=0.01, norm="linf", random_start=True,
        ...              restarts=1, seed=0)
        >>> result = attack(model, x, y)                     # doctest: +SKIP
        >>> result.robust_accuracy                           # doctest: +SKIP
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 40,
        step_size: float | None = None,
        norm: str = "linf",
        loss: Loss = cross_entropy,
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        positive_int("steps", steps)
        if step_size is not None and not step_size > 0:
            raise UsageError(f"step_size must be positive, got {step_size!r}")
        if not callable(loss):
            raise UsageError(f"loss must be a function loss(model, x, labels), got {loss!r}")
        positive_int("restarts", restarts)
        self.steps = steps
        self.step_size = step_size
        self.loss = loss
        self.random_start = random_start
        self.restarts = restarts

    def _step_size(self) -> float:
        assert self.eps is not None
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        best = x.clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            tgt = None if target is None else target[idx]
            adv, fooled = self._attack_once(model, x[idx], y[idx], tgt, gen)
            best[idx] = adv
            todo[idx[fooled]] = False
        return best

    def _attack_once(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.eps is not None
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        norm, eps, alpha = self._norm, self.eps, self._step_size()
        objective = self.loss(model, x, target if target is not None else y)
        adv = self._start(x, lower, upper, gen)
        found = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        step = -alpha if target is not None else alpha
        expand = (-1,) + (1,) * (x.ndim - 1)
        # For L-inf the ball and the box intersect in a box: one clamp projects onto both.
        box = (torch.maximum(lower, x - eps), torch.minimum(upper, x + eps)) if norm.name == "linf" else None
        for _ in range(self.steps):
            adv.requires_grad_(True)
            logits = model(adv)
            (grad,) = torch.autograd.grad(objective(logits).sum(), adv)
            with torch.no_grad():
                adv = adv.detach()
                new = self._reached(logits, y, target) & ~fooled
                if bool(new.any()):
                    found = torch.where(new.reshape(expand), adv, found)
                    fooled |= new
                if box is not None:
                    adv = torch.clamp(adv + step * grad.sign(), box[0], box[1])
                    continue
                # Coordinates pinned at a bound and pushed outward cannot move: leave them out
                # of the step so the whole step length goes to coordinates that can.
                push = step * grad
                blocked = ((adv >= upper) & (push > 0)) | ((adv <= lower) & (push < 0))
                delta = adv - x + step * norm.ascent(torch.where(blocked, 0.0, grad))
                adv = torch.clamp(x + norm.project(delta, eps), lower, upper)
        return torch.where(fooled.reshape(expand), found, adv), fooled

    def _start(
        self, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """The first iterate: a uniform point of the ball (``random_start``), or ``x``."""
        assert self.eps is not None
        if not self.random_start:
            return x.clone()
        delta = self._norm.random(x.shape, self.eps, gen, device=x.device, dtype=x.dtype)
        return torch.clamp(x + delta, lower, upper)

    def _reached(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per example, whether the goal holds at the iterate with these logits."""
        pred = logits.argmax(1)
        return (pred == target) if target is not None else (pred != y)


@register_attack("fgsm")
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): PGD with one full step, no random start.

    Args:
        eps: budget (the step is ``eps``).
        norm: ``linf`` (the sign step) or ``l2`` (fast gradient method).
        targeted, seed, batch_size: as for every attack.
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(
        self, *, eps: float, norm: str = "linf", targeted: bool = False, seed: int = 0, batch_size: int = 512
    ) -> None:
        super().__init__(
            eps=eps,
            steps=1,
            step_size=eps if eps else None,
            norm=norm,
            random_start=False,
            restarts=1,
            targeted=targeted,
            seed=seed,
            batch_size=batch_size,
        )

    def _step_size(self) -> float:
        assert self.eps is not None
        return self.eps


@register_attack("mifgsm")
class MIFGSM(Attack):
    """Momentum iterative FGSM (Dong et al. 2018).

    Accumulates ``g = decay * g + grad / ||grad||_1`` and steps along its ascent direction.

    Args:
        eps: budget.
        steps: iterations.
        step_size: default ``eps / steps``.
        decay: momentum factor (``mu``, 1.0 in the paper).
        norm: ``linf`` or ``l2``.
        targeted, seed, batch_size: as for every attack.
    """

    norms = ("linf", "l2")
    randomised = False

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        decay: float = 1.0,
        norm: str = "linf",
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        positive_int("steps", steps)
        if decay < 0:
            raise UsageError(f"decay must be >= 0, got {decay}")
        self.steps = steps
        self.step_size = step_size
        self.decay = decay

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        assert self.eps is not None
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        alpha = self.step_size if self.step_size is not None else self.eps / self.steps
        labels = target if target is not None else y
        sign = -1.0 if target is not None else 1.0
        momentum = torch.zeros_like(x)
        adv = x.clone()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            loss = ce_loss(model(adv), labels).sum()
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                l1 = grad.abs().reshape(len(x), -1).sum(1).reshape(-1, *([1] * (x.ndim - 1)))
                momentum = self.decay * momentum + grad / (l1 + 1e-12)
                adv = adv + sign * alpha * self._norm.ascent(momentum)
                adv = torch.clamp(x + self._norm.project(adv - x, self.eps), lower, upper)
        return adv.detach()
