"""Explanations under attack: keep the prediction, move the explanation.

:func:`attack_explanation` is the top-k attack of Ghorbani, Abid and Zou ("Interpretation of
Neural Networks is Fragile", AAAI 2019) with the smoothing of Dombrowski et al. ("Explanations
can be manipulated and geometry is to blame", NeurIPS 2019): within an L-inf budget it lowers
the share of the saliency map that falls on the clean map's top-k units, by signed gradient
steps, keeping only steps after which the model still predicts the clean class.

The saliency of a ReLU network is piecewise constant in its input, so its gradient is zero;
the attack differentiates the saliency of a copy whose ReLUs are softplus(beta) (Dombrowski et
al.'s beta-smoothing) and keeps every step honest on the real model. This differentiable
saliency exists only inside the attack (Captum's attributions are not differentiable with
respect to the input); the fragility is then *measured* with Captum, through
:func:`~dlsec.explain.explain`: the top-k intersection between the clean and the attacked
explanation of the real model (1: the explanation did not move; 0: its top-k changed entirely).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from dlsec.core.model import WhiteBoxModel
from dlsec.errors import UsageError

__all__ = ["FragilityResult", "attack_explanation", "topk_intersection"]


@dataclass(frozen=True)
class FragilityResult:
    """The attacked inputs and how far their explanations moved.

    Attributes:
        x_adv: the attacked inputs (CPU), within ``eps`` of the clean ones (L-inf) and the bounds.
        prediction_kept: per example, whether the model still predicts the clean class (always
            true: a step that changed it was not taken).
        topk_intersection: per example, the share of the clean explanation's top-``k`` units
            still in the attacked explanation's top-``k`` (Captum's ``method``).
        k: units compared; method: the attribution method measured; eps, steps: the budget.
    """

    x_adv: torch.Tensor
    prediction_kept: torch.Tensor
    topk_intersection: torch.Tensor
    k: int
    method: str
    eps: float
    steps: int
    seed: int = 0
    targets: torch.Tensor | None = field(default=None, repr=False, compare=False)
    clean_units: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def intersection_under(self, model: WhiteBoxModel, x_other: torch.Tensor) -> torch.Tensor:
        """Per example, the top-``k`` intersection between the clean explanation and that of
        ``x_other`` (e.g. random noise of the same size), measured the same way as the attack's."""
        from dlsec.explain._explanation import explain

        if self.clean_units is None or self.targets is None:
            raise UsageError("this result keeps no clean explanation to compare with")
        other = explain(model, x_other.cpu(), target=self.targets, method=self.method, seed=self.seed)
        return topk_intersection(self.clean_units, other.unit_scores(absolute=True), self.k)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "eps": self.eps,
            "steps": self.steps,
            "k": self.k,
            "n": len(self.topk_intersection),
            "prediction_kept": float(self.prediction_kept.float().mean()),
            "topk_intersection_mean": float(self.topk_intersection.mean()),
            "topk_intersection_median": float(self.topk_intersection.median()),
        }


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of two ``(N, U)`` score tables, the share of ``a``'s top-``k`` units in ``b``'s top-``k``."""
    k = min(k, a.shape[1])
    top_a = a.topk(k, dim=1).indices
    top_b = b.topk(k, dim=1).indices
    hits = (top_a.unsqueeze(2) == top_b.unsqueeze(1)).any(2).sum(1)
    return hits.double() / k


def _smoothed(model: WhiteBoxModel, beta: float) -> WhiteBoxModel:
    smooth = copy.deepcopy(model)
    for parent in smooth.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    smooth.eval()
    return smooth


def _saliency_units(model: nn.Module, x: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``(N, U)`` |d logit_target / dx|, per pixel over channels for images; differentiable in ``x``."""
    logits = model(x)
    picked = logits.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(picked, x, create_graph=True)
    g = grad.abs()
    if kind == "image" and g.ndim == 4:
        g = g.sum(1)
    return g.reshape(g.shape[0], -1)


def attack_explanation(
    model: WhiteBoxModel,
    x: torch.Tensor,
    *,
    eps: float,
    steps: int = 50,
    step_size: float | None = None,
    k: int | None = None,
    method: str = "saliency",
    beta: float = 10.0,
    seed: int = 0,
) -> FragilityResult:
    """Move ``x``'s explanations within an L-inf ball of radius ``eps`` while keeping each prediction.

    Args:
        model: a white-box dlsec model.
        x: the clean batch (input space).
        eps: the L-inf budget; steps, step_size: signed-gradient steps (default step ``eps/10``).
        k: the top units compared (default: 10% of an input's units, at least 1).
        method: the Captum method the fragility is measured with (``saliency``, ``ig``, ...).
        beta: the softplus sharpness of the smoothed copy the attack differentiates.
        seed: seed of the measuring method's random draws.

    Raises:
        UsageError: not a white-box model, a non-positive budget or step count.
    """
    from dlsec.explain._explanation import explain

    if not isinstance(model, WhiteBoxModel):
        raise UsageError("the explanation attack needs a white-box model (it differentiates the saliency)")
    if eps <= 0 or steps < 1:
        raise UsageError(
            f"the explanation attack needs eps > 0 and steps >= 1 (got eps={eps}, steps={steps})"
        )
    kind = model.spec.kind
    lower = model.spec.lower_tensor(device=model.device)
    upper = model.spec.upper_tensor(device=model.device)
    x = torch.as_tensor(x, dtype=torch.float32).to(model.device)
    alpha = step_size if step_size is not None else eps / 10
    with torch.no_grad():
        y0 = model(x).argmax(1)
    smooth = _smoothed(model, beta)
    x_req = x.clone().requires_grad_(True)
    clean_units = _saliency_units(smooth, x_req, y0, kind).detach()
    units = clean_units.shape[1]
    k = k if k is not None else max(1, units // 10)
    top = clean_units.topk(min(k, units), dim=1).indices
    mask = torch.zeros_like(clean_units).scatter_(1, top, 1.0)
    best = x.clone()
    best_mass = torch.full((len(x),), float("inf"), device=model.device)
    current = x.clone()
    for _ in range(steps):
        current.requires_grad_(True)
        sal = _saliency_units(smooth, current, y0, kind)
        mass = (sal * mask).sum(1) / sal.sum(1).clamp_min(1e-12)
        # a model whose saliency does not depend on the input (linear) has no gradient here
        (grad,) = torch.autograd.grad(mass.sum(), current, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(current)
        with torch.no_grad():
            stepped = current - alpha * grad.sign()
            stepped = torch.max(torch.min(stepped, x + eps), x - eps)
            stepped = torch.max(torch.min(stepped, upper), lower)
            kept = model(stepped).argmax(1) == y0
            current = torch.where(kept.view(-1, *[1] * (x.ndim - 1)), stepped, current.detach())
            new_mass = mass.detach()
            better = kept & (new_mass < best_mass)
            best[better] = current[better]
            best_mass = torch.where(better, new_mass, best_mass)
    with torch.no_grad():
        kept_final = model(best).argmax(1) == y0
    before = explain(model, x.cpu(), target=y0.cpu(), method=method, seed=seed)
    result = FragilityResult(
        best.detach().cpu(),
        kept_final.cpu(),
        torch.empty(0),
        k,
        method,
        float(eps),
        steps,
        seed=seed,
        targets=y0.cpu(),
        clean_units=before.unit_scores(absolute=True),
    )
    return replace(result, topk_intersection=result.intersection_under(model, best))
