"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), minimal L2 and L-inf."""

from __future__ import annotations

from typing import ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["DeepFool"]

_TINY = 1e-12


def _class_gradients(logits: torch.Tensor, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Gradients of selected logits with respect to ``x``, one backward pass per column.

    Examples in a batch are independent, so the gradient of the summed column ``j`` gives every
    example's own Jacobian row. The loop runs over the ``C`` columns, never over examples.

    Args:
        logits: ``(N, K)`` logits computed from ``x`` (graph kept).
        x: the ``(N, *shape)`` input that requires grad.
        classes: ``(N, C)`` class index per example and column.

    Returns:
        ``(N, C, *shape)``: ``grad[n, j] = d logits[n, classes[n, j]] / d x[n]``.
    """
    cols = classes.shape[1]
    rows = []
    for j in range(cols):
        picked = logits.gather(1, classes[:, j : j + 1]).sum()
        (g,) = torch.autograd.grad(picked, x, retain_graph=j < cols - 1)
        rows.append(g)
    return torch.stack(rows, dim=1)


def _dual_norm(w: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row dual norm of ``w`` (shape ``(..., D)``): L1 for L-inf, L2 for L2, L-inf for L1."""
    if norm == "linf":
        return w.abs().sum(dim=-1)
    if norm == "l2":
        return w.norm(dim=-1)
    return w.abs().amax(dim=-1)


@register_attack("deepfool")
class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep
    neural networks", CVPR 2016): a minimal-norm attack by iterated linearisation.

    At each step the classifier is linearised around the current point; for each candidate
    class ``k`` the distance to the linearised boundary between the true class ``y`` and ``k``
    is ``|f_k| / ||w_k||_q`` with ``f_k = z_k - z_y``, ``w_k = grad z_k - grad z_y`` and ``q``
    the dual norm. The attack steps onto the closest such hyperplane (the exact projection for
    L2, its L-inf analogue ``|f| / ||w||_1 * sign(w)``, Sec. 3.2 of the paper), accumulates
    the steps in ``r_tot`` and evaluates ``x + (1 + overshoot) * r_tot`` (clipped to the
    bounds). Each example stops as soon as it is misclassified.

    Only the ``candidates`` classes with the largest clean logits (the true class included)
    are considered, as in the paper's experiments. Targeted mode (an extension) considers only
    the boundary between the current top class and the target. The attack is deterministic.

    Args:
        norm: ``l2`` (default, as in the paper) or ``linf``.
        eps: optional budget; ``None`` (default) is unbounded. When given, the result is
            projected onto the eps-ball and scored there.
        steps: maximum number of linearisation steps.
        overshoot: relative overshoot past the boundary (0.02 in the paper).
        candidates: number of top-scoring classes considered (10 in the paper), at least 2.
        targeted: aim at ``target`` instead of leaving ``y``.
        seed: unused (the attack is deterministic); kept for a uniform signature.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.deepfool import DeepFool
        >>> attack = DeepFool(norm="l2", steps=50, overshoot=0.02)
        >>> result = attack(model, x, y)                      # doctest: +SKIP
        >>> result.summary()["perturbation_norms"]["median"]  # doctest: +SKIP
    """

    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")
    minimal: ClassVar[bool] = True
    randomised: ClassVar[bool] = False

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        positive_int("steps", steps)
        if not isinstance(overshoot, int | float) or isinstance(overshoot, bool) or not overshoot >= 0:
            raise UsageError(f"overshoot must be a number >= 0, got {overshoot!r}")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2:
            raise UsageError(f"candidates must be an integer >= 2, got {candidates!r}")
        self.steps = steps
        self.overshoot = overshoot
        self.candidates = candidates

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        n = x.shape[0]
        x_adv = x.clone()
        if n == 0:
            return x_adv
        r_tot = torch.zeros_like(x)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        others: torch.Tensor | None = None  # (N, C - 1) candidate classes, untargeted only
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xa = x_adv[idx].clone().requires_grad_(True)
            logits = model(xa)
            pred = logits.detach().argmax(1)
            if target is not None:
                fooled = pred == target[idx]
            else:
                fooled = pred != y[idx]
                if others is None:
                    # Candidates from the clean logits (the first pass is at x itself).
                    k = min(self.candidates, logits.shape[1])
                    masked = logits.detach().scatter(1, y[:, None], -torch.inf)
                    others = masked.topk(k - 1, dim=1).indices
            active[idx[fooled]] = False
            keep = ~fooled
            if not bool(keep.any()):
                break
            # Origin class: the true label, or (targeted) the current top class.
            if target is not None:
                classes = torch.stack([pred, target[idx]], dim=1)
            else:
                assert others is not None
                classes = torch.cat([y[idx, None], others[idx]], dim=1)
            grads = _class_gradients(logits, xa, classes).detach()
            with torch.no_grad():
                z = logits.detach().gather(1, classes)
                f = (z[:, 1:] - z[:, :1])[keep]  # (M, C-1), <= 0
                w = (grads[:, 1:] - grads[:, :1])[keep].flatten(2)  # (M, C-1, D)
                dist = (f.abs() + 1e-4) / (_dual_norm(w, self._norm.name) + _TINY)
                best = dist.argmin(dim=1)
                rows = torch.arange(len(best), device=x.device)
                w_best = w[rows, best].reshape(-1, *x.shape[1:])
                step = dist[rows, best].reshape(-1, *([1] * (x.ndim - 1))) * self._norm.ascent(w_best)
                sel = idx[keep]
                r_tot[sel] = r_tot[sel] + step
                x_adv[sel] = torch.clamp(x[sel] + (1 + self.overshoot) * r_tot[sel], lower, upper)
        return x_adv
