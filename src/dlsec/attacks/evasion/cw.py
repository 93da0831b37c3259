"""Carlini & Wagner L2 attack (IEEE S&P 2017)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from dlsec.attacks.evasion._losses import margin_loss
from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["CarliniWagnerL2"]

# Keeps atanh finite for inputs sitting exactly on a bound.
_ATANH_CLIP = 1.0 - 1e-6


@register_attack("cw")
class CarliniWagnerL2(Attack):
    """Carlini & Wagner L2 (Carlini & Wagner, "Towards evaluating the robustness of neural
    networks", IEEE S&P 2017): a minimal-L2 attack by penalised optimisation.

    The change of variables ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` keeps ``x'`` within the
    spec's bounds. Adam minimises ``||x' - x||_2^2 + c * f(x')`` over ``w``, where
    ``f = max(z_y - max_{i != y} z_i, -kappa)`` (untargeted) or
    ``f = max(max_{i != t} z_i - z_t, -kappa)`` (targeted), the paper's objective ``f_6``. A
    binary search over ``c`` per example starts at ``initial_const``, multiplies ``c`` by 10
    while no success has been found and bisects once one has. Across all constants the
    smallest successful perturbation of each example is kept (success means the margin
    exceeds ``kappa``); examples never fooled come back unchanged.

    Args:
        norm: ``l2`` only (kept for a uniform signature).
        eps: optional budget; ``None`` (default) is unbounded. When given, the result is
            projected onto the eps-ball and scored there.
        confidence: ``kappa``, the margin required beyond the boundary.
        steps: Adam iterations per constant (the paper uses up to 10,000).
        lr: Adam learning rate (0.01 in the paper).
        binary_search_steps: number of constants tried per example (9 in the paper).
        initial_const: first value of ``c`` (1e-3 in the paper).
        abort_early: stop a constant's optimisation when the loss has not decreased by 0.01%
            over a tenth of ``steps``.
        targeted: aim at ``target`` instead of leaving ``y``.
        seed: unused (the attack is deterministic); kept for a uniform signature.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.cw import CarliniWagnerL2
        >>> attack = CarliniWagnerL2(confidence=0.0, steps=1000, lr=0.01)
        >>> result = attack(model, x, y)                      # doctest: +SKIP
        >>> result.summary()["perturbation_norms"]["median"]  # doctest: +SKIP
    """

    norms: ClassVar[tuple[str, ...]] = ("l2",)
    minimal: ClassVar[bool] = True
    randomised: ClassVar[bool] = False

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        confidence: float = 0.0,
        steps: int = 1000,
        lr: float = 0.01,
        binary_search_steps: int = 9,
        initial_const: float = 1e-3,
        abort_early: bool = True,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        if not _is_number(confidence) or confidence < 0:
            raise UsageError(f"confidence must be a finite number >= 0, got {confidence!r}")
        positive_int("steps", steps)
        if not _is_number(lr) or lr <= 0:
            raise UsageError(f"lr must be a positive number, got {lr!r}")
        positive_int("binary_search_steps", binary_search_steps)
        if not _is_number(initial_const) or initial_const <= 0:
            raise UsageError(f"initial_const must be a positive number, got {initial_const!r}")
        if not isinstance(abort_early, bool):
            raise UsageError(f"abort_early must be True or False, got {abort_early!r}")
        self.confidence = confidence
        self.steps = steps
        self.lr = lr
        self.binary_search_steps = binary_search_steps
        self.initial_const = initial_const
        self.abort_early = abort_early

    # ------------------------------------------------------------------ the objective
    def _margin(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """How far past the boundary each example is (positive once the goal holds)."""
        if target is not None:
            return -margin_loss(logits, target)  # z_t - max_{i != t} z_i
        return margin_loss(logits, y)  # max_{i != y} z_i - z_y

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n = x.shape[0]
        best_adv = x.clone()
        if n == 0:
            return best_adv
        lower = model.spec.lower_tensor(device=x.device).expand_as(x)
        upper = model.spec.upper_tensor(device=x.device).expand_as(x)
        width = (upper - lower).clamp_min(1e-12)

        def to_input(w: torch.Tensor) -> torch.Tensor:
            return lower + width * (torch.tanh(w) + 1) / 2

        w0 = torch.atanh(((x - lower) / width * 2 - 1).clamp(-_ATANH_CLIP, _ATANH_CLIP))
        kappa = float(self.confidence)
        const = torch.full((n,), float(self.initial_const), device=x.device)
        lo_c = torch.zeros(n, device=x.device)
        hi_c = torch.full((n,), math.inf, device=x.device)
        best_l2 = torch.full((n,), math.inf, device=x.device)
        check_every = max(self.steps // 10, 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            prev_loss = math.inf
            for i in range(self.steps):
                x_new = to_input(w)
                logits = model(x_new)
                l2sq = (x_new - x).flatten(1).pow(2).sum(1)
                margin = self._margin(logits, y, target)
                loss = (l2sq + const * torch.clamp(-margin, min=-kappa)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    hit = margin.detach() > kappa
                    l2 = l2sq.detach().sqrt()
                    better = hit & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_adv[better] = x_new.detach()[better]
                    succeeded |= hit
                if self.abort_early and i % check_every == 0:
                    value = float(loss.detach())
                    if value > prev_loss * 0.9999:
                        break
                    prev_loss = value
            # Binary search on c: bisect once successful, else grow tenfold.
            hi_c = torch.where(succeeded, torch.minimum(hi_c, const), hi_c)
            lo_c = torch.where(succeeded, lo_c, torch.maximum(lo_c, const))
            bounded = torch.isfinite(hi_c)
            const = torch.where(bounded, (lo_c + hi_c) / 2, const * 10)
        return best_adv


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
