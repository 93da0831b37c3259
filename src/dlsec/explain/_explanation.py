"""``explain``: one call from a model and a batch to attributions, and what it returns."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlsec.core.model import Access, Model, ScoreModel, WhiteBoxModel
from dlsec.core.seeding import seeded_draws
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError
from dlsec.explain._methods import AttributionContext, AttributionMethod, get_method, quiet

__all__ = ["Explanation", "RankedFeature", "explain"]

#: How a baseline may be given: ``"lower"`` (the spec's lower bound), ``"zeros"``, a number, or
#: a tensor of one input's shape, of shape ``(1, *shape)`` or one row per example.
Baseline = str | float | int | torch.Tensor | np.ndarray


@dataclass(frozen=True)
class RankedFeature:
    """One feature in a ranking: its name, rank (1 = most important) and attribution statistics.

    Attributes:
        rank: 1 for the feature with the largest mean absolute attribution.
        name: the feature's name.
        importance: mean absolute attribution over the explained examples.
        mean_attribution: mean signed attribution (positive: pushes towards the targets).
    """

    rank: int
    name: str
    importance: float
    mean_attribution: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "name": self.name,
            "importance": self.importance,
            "mean_attribution": self.mean_attribution,
        }


@dataclass(frozen=True)
class Explanation:
    """Attributions for a batch, with everything needed to read, check or reproduce them.

    Attributes:
        attributions: CPU float tensor, the shape of ``inputs``.
        inputs: the explained batch (CPU, input space).
        targets: the class explained for each example (CPU int64).
        method: the method's registered name.
        params: the method's parameters (with what it resolved by itself, such as Grad-CAM's
            layer).
        output: ``logit`` (white-box models) or ``probability`` (score-based models): what the
            attributions explain.
        baseline: how the baseline was given (``lower``, ``zeros``, a number or ``tensor``);
            ``None`` for methods that use none.
        seed: the seed of the method's random draws.
        kind: the spec's kind (``image`` or ``tabular``).
        attribution_method: the configured method (to run it again, as the quality checks do).
        baseline_rows: the baseline as a ``(1 or N, *shape)`` CPU tensor.
    """

    attributions: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    method: str
    params: dict[str, Any]
    output: str
    baseline: str | float | None
    seed: int
    kind: str
    attribution_method: AttributionMethod = field(repr=False, compare=False)
    baseline_rows: torch.Tensor = field(repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def unit_scores(self, *, absolute: bool = False) -> torch.Tensor:
        """Attributions per unit, ``(N, U)``: per pixel (summed over channels) for images, else per value."""
        return unit_scores(self.attributions, self.kind, absolute=absolute)

    def ranking(self, feature_names: Sequence[str] | None = None) -> list[RankedFeature]:
        """Features by mean absolute attribution over the batch, most important first.

        Args:
            feature_names: one name per value of an input (default ``feature_0``, ...).

        Raises:
            UsageError: the number of names differs from the number of features.
        """
        flat = self.attributions.reshape(len(self), -1).double()
        n = flat.shape[1]
        names = list(feature_names) if feature_names is not None else [f"feature_{i}" for i in range(n)]
        if len(names) != n:
            raise UsageError(f"ranking needs {n} feature names, got {len(names)}")
        importance = flat.abs().mean(0)
        signed = flat.mean(0)
        order = sorted(range(n), key=lambda i: (-float(importance[i]), i))
        return [
            RankedFeature(rank + 1, str(names[i]), float(importance[i]), float(signed[i]))
            for rank, i in enumerate(order)
        ]

    def to_dict(self, *, attributions: bool = False) -> dict[str, Any]:
        """A JSON-serialisable summary; ``attributions=True`` adds the values themselves."""
        out: dict[str, Any] = {
            "method": self.method,
            "params": _jsonable(self.params),
            "output": self.output,
            "baseline": self.baseline,
            "seed": self.seed,
            "n": len(self),
            "targets": self.targets.tolist(),
        }
        if attributions:
            out["attributions"] = self.attributions.tolist()
        return out


def unit_scores(attributions: torch.Tensor, kind: str, *, absolute: bool = False) -> torch.Tensor:
    """``(N, U)`` scores per unit: per pixel over channels for ``(N, C, H, W)`` images, else per value."""
    a = attributions.abs() if absolute else attributions
    if kind == "image" and a.ndim == 4:
        return a.sum(1).reshape(a.shape[0], -1)
    return a.reshape(a.shape[0], -1)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, str | int | float | bool | type(None)) else str(v)) for k, v in params.items()
    }


# --------------------------------------------------------------------------- the verb


def explain(
    model: Model,
    x: torch.Tensor | np.ndarray,
    target: int | Sequence[int] | torch.Tensor | None = None,
    method: str | AttributionMethod = "ig",
    *,
    baseline: Baseline = "lower",
    seed: int = 0,
    **params: Any,
) -> Explanation:
    """Attribute each example's target output to its input features, with a Captum method.

    White-box models are explained on their logits, score-based models on their
    probabilities (only the gradient-free methods, ``occlusion`` and ``kernel-shap``, apply to
    them). Inputs are in the model's input space; a :class:`~dlsec.core.WhiteBoxModel`
    applies its normalisation inside its forward pass.

    Args:
        model: a white-box or score-based dlsec model.
        x: a batch ``(N, *spec.shape)`` within the spec's bounds.
        target: the class to explain: one for all, one per example, or ``None`` for each
            example's predicted class.
        method: a registered name (``saliency``, ``ig``, ``smoothgrad``, ``deeplift``,
            ``gradient-shap``, ``occlusion``, ``gradcam``, ``kernel-shap``) or a configured
            :class:`AttributionMethod`.
        baseline: the reference input of the methods that use one: ``"lower"`` (default: the
            spec's lower bound, i.e. a black image or each feature at its minimum),
            ``"zeros"``, a number, or a tensor (one input, or one row per example).
        seed: seed of the random draws (SmoothGrad's noise, Kernel SHAP's coalitions, ...);
            the caller's random state is left as it was.
        **params: the method's parameters (e.g. ``n_steps=100`` for ``ig``, ``layer="features.2"``
            for ``gradcam``).

    Returns:
        The :class:`Explanation`, attributions shaped like ``x``.

    Raises:
        UsageError: an unknown method or parameter, a gradient method on a score-based
            model, a decision-only model, a target out of range, a bad baseline or layer.

    Example:
        >>> spec = InputSpec(shape=(4,), num_classes=3, kind="tabular")
        >>> model = WhiteBoxModel(torch.nn.Linear(4, 3), spec)
        >>> e = explain(model, torch.rand(2, 4), method="ig")   # doctest: +SKIP
        >>> e.attributions.shape                                  # doctest: +SKIP
        torch.Size([2, 4])
    """
    if isinstance(method, AttributionMethod):
        if params:
            raise UsageError("give parameters to the method object, not to explain(), when passing one")
        chosen = method
    else:
        chosen = get_method(method, **params)
    check_method(model, chosen)
    xb = as_inputs(model, x)
    targets = resolve_targets(model, xb, target)
    rows, description = resolve_baseline(model, xb, baseline)
    attributions, notes = run_method(model, chosen, xb, targets, rows, seed=seed)
    return Explanation(
        attributions=attributions.detach().float().cpu(),
        inputs=xb.detach().cpu(),
        targets=targets.cpu(),
        method=chosen.name,
        params={**chosen.get_params(), **notes},
        output=output_of(model),
        baseline=description if chosen.uses_baseline else None,
        seed=seed,
        kind=model.spec.kind,
        attribution_method=chosen,
        baseline_rows=rows.detach().cpu(),
    )


def check_method(model: Model, method: AttributionMethod) -> None:
    """Raise :class:`UsageError` unless ``method`` can explain ``model`` (access, layers, data kind)."""
    if model.access < Access.SCORE:
        raise UsageError(
            "the model gives labels only; explanations need scores (a score-based or white-box model)"
        )
    if method.needs_gradients and not isinstance(model, WhiteBoxModel):
        raise UsageError(f"method {method.name} needs gradients (white-box); use occlusion or kernel-shap")
    method.check(model)


def output_of(model: Model) -> str:
    return "logit" if isinstance(model, WhiteBoxModel) else "probability"


def forward_of(model: Model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The explained output as a function of an input batch: logits, or probabilities."""
    if isinstance(model, WhiteBoxModel):
        return model
    if isinstance(model, ScoreModel):
        return model.probs
    raise UsageError("explanations need a white-box or score-based model")  # pragma: no cover


def device_of(model: Model) -> torch.device:
    return model.device if isinstance(model, WhiteBoxModel) else torch.device("cpu")


def as_inputs(model: Model, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a float32 batch on the model's device, checked against the spec."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    spec = model.spec
    if t.shape[0] == 0 and tuple(t.shape[1:]) == spec.shape:
        raise UsageError("nothing to explain: the batch is empty")
    if not _within_scalar_bounds(t, spec):
        spec.check_batch(t)  # the full check, and its message
    return t.detach().to(device=device_of(model), dtype=torch.float32)


def _within_scalar_bounds(t: torch.Tensor, spec: InputSpec) -> bool:
    """The common case in two reductions: the right shape, finite, within scalar bounds."""
    if tuple(t.shape[1:]) != spec.shape or isinstance(spec.lower, tuple) or isinstance(spec.upper, tuple):
        return False
    low, high = torch.aminmax(t.detach())  # NaN propagates; infinities show at an end
    tol = 1e-6
    return bool(spec.lower - tol <= float(low) and float(high) <= spec.upper + tol)


def resolve_targets(
    model: Model, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None
) -> torch.Tensor:
    """One class per example (on ``x``'s device): the given ones, checked, or the predicted ones."""
    n, k = x.shape[0], model.spec.num_classes
    if target is None:
        return model.predict(x).to(x.device)
    if isinstance(target, bool):
        raise UsageError(f"target must be a class index, got {target!r}")
    if isinstance(target, int | np.integer):
        t = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor) and target.dtype == torch.long and target.shape == (n,):
        t = target  # the common case, kept cheap
    else:
        try:
            arr = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
        except (TypeError, ValueError):
            raise UsageError(
                f"target must be a class index or one per example, got {type(target).__name__}"
            ) from None
        if arr.is_floating_point() or arr.dtype == torch.bool:
            raise UsageError("targets must be integer class indices")
        t = arr.reshape(-1).long().cpu()
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.shape[0] != n:
            raise UsageError(f"got {t.shape[0]} targets for {n} examples")
    low, high = t.aminmax()
    if int(low) < 0 or int(high) >= k:
        bad = int(low) if int(low) < 0 else int(high)
        raise UsageError(f"target class {bad} is out of range: the model has classes 0..{k - 1}")
    return t.to(x.device)


def resolve_baseline(model: Model, x: torch.Tensor, baseline: Baseline) -> tuple[torch.Tensor, str | float]:
    """The baseline as ``(1 or N, *shape)`` rows on ``x``'s device, and how it was given."""
    spec = model.spec
    shape = (1, *spec.shape)
    description: str | float
    if isinstance(baseline, str):
        if baseline == "lower" and not isinstance(spec.lower, tuple):
            rows = torch.full(shape, spec.lower, device=x.device)
        elif baseline == "lower":
            rows = spec.lower_tensor(device=x.device).expand(shape)
        elif baseline == "zeros":
            rows = torch.zeros(shape, device=x.device)
        else:
            raise UsageError(f"baseline must be 'lower', 'zeros', a number or a tensor, got {baseline!r}")
        description = baseline
    elif isinstance(baseline, int | float) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise UsageError(f"baseline must be finite, got {baseline!r}")
        rows = torch.full(shape, float(baseline), device=x.device)
        description = float(baseline)
    elif isinstance(baseline, torch.Tensor | np.ndarray):
        t = torch.as_tensor(baseline).float().to(x.device)
        if tuple(t.shape) == spec.shape:
            t = t.reshape(shape)
        if t.shape[1:] != x.shape[1:] or t.shape[0] not in (1, x.shape[0]):
            raise UsageError(
                f"a baseline tensor must have shape {spec.shape}, (1, ...) or one row per example; "
                f"got {tuple(t.shape)}"
            )
        rows = t
        description = "tensor"
    else:
        raise UsageError(
            f"baseline must be 'lower', 'zeros', a number or a tensor, got {type(baseline).__name__}"
        )
    if description != "lower":  # the lower bound is within the bounds by construction
        spec.check_batch(rows, what="baseline")
    return rows, description


def run_method(
    model: Model,
    method: AttributionMethod,
    x: torch.Tensor,
    targets: torch.Tensor,
    baseline_rows: torch.Tensor,
    *,
    seed: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run ``method`` once: seeded, quiet, with the shape of what it returns checked."""
    ctx = AttributionContext(
        model=model,
        forward=forward_of(model),
        baseline=baseline_rows.to(x.device).expand_as(x),
        baseline_rows=baseline_rows.to(x.device),
    )
    if method.needs_gradients:  # Captum would set the flag itself, with a warning
        x = x.detach().requires_grad_(True)
    with quiet(), seeded_draws(seed, x.device) if method.random else contextlib.nullcontext():
        out = method.attribute(ctx, x, targets.to(x.device))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"method {method.name} returned attributions of shape {got} for inputs {tuple(x.shape)}"
        )
    return out, ctx.notes
