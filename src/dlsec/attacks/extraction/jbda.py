"""Jacobian-based dataset augmentation (Papernot et al. 2017), with reservoir sampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlsec.attacks.extraction.base import ExtractionAttack, RunContext, register_extraction_attack
from dlsec.core.model import WhiteBoxModel
from dlsec.errors import UsageError

__all__ = ["JacobianAugmentation"]


@register_extraction_attack("jbda")
class JacobianAugmentation(ExtractionAttack):
    """JBDA: grow a synthetic training set along the substitute's Jacobian, labelled by the target.

    Substitute training round ``rho`` (the paper's Algorithm 1): label the set ``S_rho`` with the
    target, train the substitute ``F`` from scratch on everything labelled so far, then
    ``S_rho+1 = S_rho + {x + lambda_rho * sign(dF_O(x)/dx)}`` with ``O(x)`` the target's label,
    clipped to the input bounds. The step flips sign every ``tau`` rounds
    (``lambda_rho = lambda * (-1)^floor(rho / tau)``). Reservoir sampling (the paper's section
    on reducing queries): after ``sigma`` rounds only ``kappa`` points, drawn uniformly from the
    set so far, are augmented per round. The last round is cut to what the budget leaves.

    At score access the substitute trains on the target's probabilities (JBDA with soft
    labels, as evaluated in PRADA); at decision access on its labels, as in the paper.

    Args:
        seeds: size of the initial seed set, drawn from the pool (problem-domain samples).
        lam: the augmentation step ``lambda`` (input units).
        tau: the period of the step's sign flip, in rounds.
        sigma: rounds of full augmentation before reservoir sampling starts.
        kappa: points augmented per round once reservoir sampling has started.

    Example:
        >>> seeds = train.x                                                     # doctest: +SKIP
        >>> JacobianAugmentation(budget=2000)(model, seeds, test=test).agreement  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        seeds: int = 150,
        lam: float = 0.1,
        tau: int = 3,
        sigma: int = 3,
        kappa: int = 400,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        for pname, value in (("seeds", seeds), ("tau", tau), ("kappa", kappa)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{pname} must be a positive integer, got {value!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, int) or sigma < 0:
            raise UsageError(f"sigma must be a non-negative integer, got {sigma!r}")
        if not lam > 0:
            raise UsageError(f"lam must be positive, got {lam!r}")
        self.seeds = seeds
        self.lam = float(lam)
        self.tau = tau
        self.sigma = sigma
        self.kappa = kappa

    def run(self, ctx: RunContext) -> WhiteBoxModel:
        k = ctx.spec.num_classes
        n0 = min(self.seeds, len(ctx.pool), ctx.remaining)
        x = ctx.pool.x[ctx.rng.permutation(len(ctx.pool))[:n0]]
        answer = ctx.query(x, stats={"round": 0.0})
        xs, labels, ts = [x], [answer.labels], [answer.targets(k)]
        sub = ctx.new_clone()
        ctx.fit(sub, x, ts[0])
        lower = ctx.spec.lower_tensor(device=sub.device)
        upper = ctx.spec.upper_tensor(device=sub.device)
        rho, sizes = 0, [n0]
        while ctx.remaining > 0:
            all_x, all_labels = np.concatenate(xs), np.concatenate(labels)
            if rho < self.sigma:
                parents = np.arange(len(all_x))
            else:
                parents = ctx.rng.choice(len(all_x), size=min(self.kappa, len(all_x)), replace=False)
            parents = parents[: ctx.remaining]
            step = self.lam * (-1.0) ** (rho // self.tau)
            new = self._augment(sub, all_x[parents], all_labels[parents], step, lower, upper)
            answer = ctx.query(new, stats={"round": float(rho + 1)})
            xs.append(new)
            labels.append(answer.labels)
            ts.append(answer.targets(k))
            sub = ctx.new_clone()
            ctx.fit(sub, np.concatenate(xs), np.concatenate(ts))
            rho += 1
            sizes.append(len(new))
        ctx.extras["_history"] = (np.concatenate(xs), np.concatenate(ts))
        ctx.extras["rounds"] = rho
        ctx.extras["round_sizes"] = sizes
        return sub

    @staticmethod
    def _augment(
        sub: WhiteBoxModel,
        x: np.ndarray,
        labels: np.ndarray,
        step: float,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> np.ndarray:
        """``x + step * sign(d F_label / dx)``, clipped to the bounds, in batches."""
        out = []
        for start in range(0, len(x), 512):
            xb = torch.from_numpy(x[start : start + 512]).to(sub.device).requires_grad_(True)
            lb = torch.from_numpy(labels[start : start + 512]).to(sub.device)
            logits = sub(xb)
            (grad,) = torch.autograd.grad(logits.gather(1, lb[:, None]).sum(), xb)
            adv = torch.clamp(xb.detach() + step * grad.sign(), lower, upper)
            out.append(adv.cpu().numpy().astype(np.float32))
        return np.concatenate(out)
