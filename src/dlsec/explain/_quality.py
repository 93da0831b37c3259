"""Checks of an explanation: is it faithful to the model, stable, and about the model at all?

* :func:`infidelity` and :func:`sensitivity` are Captum's metrics (Yeh et al. 2019), with
  perturbations kept within the input bounds and seeded.
* :func:`deletion_curve` and :func:`insertion_curve` (Petsiuk et al. 2018, RISE): remove (or
  insert) units in the order the attributions rank them, replacing them with the baseline,
  and follow the target class's probability. A faithful ranking makes the deletion curve fall
  fast (low AUC) and the insertion curve rise fast (high AUC); each is reported beside the
  same curve for a random order.
* :func:`randomisation_check`: the model-parameter randomisation test (Adebayo et al. 2018).
  Re-initialise the weights layer by layer from the output down (or all at once), explain
  again, and compare with the Spearman rank correlation; an explanation that stays the same
  when the model is destroyed does not explain the model, and is flagged.
* :func:`agreement`: rank correlation and top-k intersection between two explanations.

A unit is a pixel (its channels together) for images and one value otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.core.model import Model, ScoreModel, WhiteBoxModel
from dlsec.core.seeding import seeded_draws, torch_generator
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError
from dlsec.explain._explanation import (
    Baseline,
    Explanation,
    as_inputs,
    check_method,
    device_of,
    forward_of,
    resolve_baseline,
    resolve_targets,
    run_method,
    unit_scores,
)
from dlsec.explain._methods import AttributionMethod, get_method, quiet

__all__ = [
    "CHECKS",
    "Agreement",
    "Curve",
    "QualityReport",
    "RandomisationResult",
    "agreement",
    "check_explanation",
    "deletion_curve",
    "infidelity",
    "insertion_curve",
    "randomisation_check",
    "rank_correlation",
    "sensitivity",
]

#: The checks :func:`check_explanation` runs, in order.
CHECKS = ("infidelity", "sensitivity", "deletion", "insertion", "randomisation")

#: ``explainer(model, x, targets) -> attributions``: any explanation, for the randomisation check.
Explainer = Callable[[WhiteBoxModel, torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int, dict[str, float]], None]


# --------------------------------------------------------------------------- rank statistics


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (ties averaged).

    Two constant rows correlate 1; a constant row and a varying one, 0.
    """
    from scipy.stats import rankdata

    ra = rankdata(a.detach().double().cpu().reshape(a.shape[0], -1).numpy(), axis=1)
    rb = rankdata(b.detach().double().cpu().reshape(b.shape[0], -1).numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    na, nb = np.linalg.norm(ra, axis=1), np.linalg.norm(rb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / (na * nb)
    rho = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, rho))
    return torch.from_numpy(np.clip(rho, -1.0, 1.0))


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    # stable order: among equal scores the first unit wins, so results do not depend on the sort
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@dataclass(frozen=True)
class Agreement:
    """How much two explanations of the same batch agree.

    Attributes:
        methods: the two methods' names.
        rank_correlation: mean Spearman correlation of absolute unit attributions.
        top_k_intersection: mean fraction of the ``k`` most important units the two share.
        k: units compared in the top-k intersection.
    """

    methods: tuple[str, str]
    rank_correlation: float
    top_k_intersection: float
    k: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "rank_correlation": self.rank_correlation,
            "top_k_intersection": self.top_k_intersection,
            "k": self.k,
        }


def agreement(a: Explanation, b: Explanation, *, k: int | None = None) -> Agreement:
    """Rank correlation and top-k intersection of two explanations of the same inputs.

    Args:
        a: one explanation.
        b: another of the same inputs and targets.
        k: units in the top-k intersection (default: a tenth of the units, at least 1).
    """
    if a.inputs.shape != b.inputs.shape or not torch.equal(a.inputs, b.inputs):
        raise UsageError("agreement compares explanations of the same inputs")
    sa, sb = a.unit_scores(absolute=True), b.unit_scores(absolute=True)
    units = sa.shape[1]
    k = max(1, math.ceil(units / 10)) if k is None else min(positive_int("k", k), units)
    ta, tb = _top_k(sa, k), _top_k(sb, k)
    shared = torch.tensor([len(set(ta[i].tolist()) & set(tb[i].tolist())) / k for i in range(len(ta))])
    return Agreement(
        methods=(a.method, b.method),
        rank_correlation=float(rank_correlation(sa, sb).mean()),
        top_k_intersection=float(shared.mean()),
        k=k,
    )


# --------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: the target probability as units are removed or inserted.

    Attributes:
        kind: ``deletion`` or ``insertion``.
        fractions: fraction of units removed (inserted) at each point, from 0 to 1.
        scores: ``(N, points)`` target-class probability at each point.
        auc: ``(N,)`` area under each example's curve (trapezoid rule over the fractions).
    """

    kind: str
    fractions: list[float]
    scores: torch.Tensor
    auc: torch.Tensor

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "auc": self.mean_auc,
            "fractions": self.fractions,
            "mean_curve": self.scores.mean(0).tolist(),
        }


def deletion_curve(
    model: Model,
    x: torch.Tensor | np.ndarray,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    baseline: Baseline = "lower",
    steps: int = 20,
) -> Curve:
    """Remove units, most positive attribution first, by setting them to the baseline.

    The lower the area under the target probability, the better the ranking.

    Args:
        model: a white-box or score-based model.
        x: the explained batch.
        attributions: attributions shaped like ``x``.
        targets: the class followed for each example.
        baseline: the value a removed unit takes (as in :func:`dlsec.explain.explain`).
        steps: points on the curve after the start.
    """
    return _curve(model, x, attributions, targets, baseline=baseline, steps=steps, insert=False)


def insertion_curve(
    model: Model,
    x: torch.Tensor | np.ndarray,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    baseline: Baseline = "lower",
    steps: int = 20,
) -> Curve:
    """Start from the baseline and insert the input's units, most positive attribution first.

    The higher the area under the target probability, the better the ranking. Arguments as
    :func:`deletion_curve`.
    """
    return _curve(model, x, attributions, targets, baseline=baseline, steps=steps, insert=True)


def _curve(
    model: Model,
    x: torch.Tensor | np.ndarray,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    baseline: Baseline,
    steps: int,
    insert: bool,
) -> Curve:
    steps = positive_int("steps", steps)
    xb = as_inputs(model, x)
    if tuple(attributions.shape) != tuple(xb.shape):
        raise UsageError(f"attributions of shape {tuple(attributions.shape)} for inputs {tuple(xb.shape)}")
    t = resolve_targets(model, xb, torch.as_tensor(targets)).cpu()
    rows, _ = resolve_baseline(model, xb, baseline)
    base = rows.expand_as(xb)
    kind = model.spec.kind
    scores = unit_scores(attributions.to(xb.device).float(), kind)
    n, units = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(units, device=order.device).expand(n, -1).contiguous())
    counts = sorted({round(i * units / steps) for i in range(steps + 1)})
    probs = []
    for count in counts:
        chosen = _expand_units(rank < count, xb, kind)  # the units moved so far
        moved = torch.where(chosen, xb, base) if insert else torch.where(chosen, base, xb)
        p = _probs(model, moved).cpu()
        probs.append(p.gather(1, t[:, None])[:, 0])
    curve = torch.stack(probs, dim=1).double()
    fractions = [c / units for c in counts]
    widths = torch.tensor(np.diff(fractions), dtype=torch.float64)
    auc = ((curve[:, 1:] + curve[:, :-1]) / 2 * widths).sum(1)  # the trapezoid rule
    return Curve("insertion" if insert else "deletion", fractions, curve.float(), auc.float())


def _probs(model: Model, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(model, WhiteBoxModel | ScoreModel):
        raise UsageError("the curves need scores: a white-box or score-based model")
    return model.probs(x)


def _expand_units(mask: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "image" and x.ndim == 4:
        return mask.reshape(x.shape[0], 1, *x.shape[2:]).expand_as(x)
    return mask.reshape(x.shape)


def _random_attributions(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch_generator(seed)
    return torch.rand(x.shape, generator=g)


# --------------------------------------------------------------------------- Captum's metrics


def infidelity(
    model: Model, explanation: Explanation, *, noise: float = 0.05, samples: int = 10, seed: int = 0
) -> torch.Tensor:
    """Captum's infidelity per example (lower is better), with attributions rescaled optimally.

    The perturbations are Gaussian with standard deviation ``noise`` times the input range,
    clipped so that the perturbed inputs stay within the bounds.
    """
    from captum.metrics import infidelity as captum_infidelity

    samples = positive_int("samples", samples)
    x = explanation.inputs.to(device_of(model))
    spec = model.spec
    lower = spec.lower_tensor(device=x.device)
    upper = spec.upper_tensor(device=x.device)
    scale = noise * float((upper - lower).float().mean())
    g = torch_generator(seed, x.device)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = torch.clamp(
            inputs - scale * torch.randn(inputs.shape, generator=g, device=inputs.device), lower, upper
        )
        return inputs - noisy, noisy

    with quiet(), torch.no_grad():
        out = captum_infidelity(
            forward_of(model),
            perturb,
            x,
            explanation.attributions.to(x.device),
            target=explanation.targets.to(x.device),
            n_perturb_samples=samples,
            normalize=True,
        )
    return out.detach().float().cpu()


def sensitivity(
    model: Model, explanation: Explanation, *, radius: float = 0.02, samples: int = 5, seed: int = 0
) -> torch.Tensor:
    """Captum's max-sensitivity per example (lower is better): how much the explanation moves
    under perturbations of the input within an L-inf ball of ``radius`` times the input range.

    It runs the explanation's method again ``samples`` times on perturbed copies (and once on
    the inputs), with the same parameters, baseline and seed.
    """
    from captum.metrics import sensitivity_max

    samples = positive_int("samples", samples)
    method = explanation.attribution_method
    x = explanation.inputs.to(device_of(model))
    spec = model.spec
    lower = spec.lower_tensor(device=x.device)
    upper = spec.upper_tensor(device=x.device)
    r = radius * float((upper - lower).float().mean())
    g = torch_generator(seed, x.device)

    def perturb(inputs: torch.Tensor) -> torch.Tensor:
        u = torch.rand(inputs.shape, generator=g, device=inputs.device) * 2 - 1
        return torch.clamp(inputs + r * u, lower, upper)

    def explanation_func(inputs: Any, target: torch.Tensor, baselines: Any) -> Any:
        # Captum passes a tensor or a one-tensor tuple (and wants the same form back), with the
        # targets and baselines repeated to match
        batch = inputs[0] if isinstance(inputs, tuple) else inputs
        rows = baselines[0] if isinstance(baselines, tuple) else baselines
        out, _ = run_method(model, method, batch, target, rows, seed=explanation.seed)
        return (out.detach(),) if isinstance(inputs, tuple) else out.detach()

    baselines = explanation.baseline_rows.to(x.device).expand_as(x).contiguous()
    with quiet():
        out = sensitivity_max(
            explanation_func,
            x,
            perturb_func=perturb,
            n_perturb_samples=samples,
            target=explanation.targets.to(x.device),
            baselines=baselines,
        )
    return out.detach().float().cpu()


# --------------------------------------------------------------------------- model randomisation


@dataclass(frozen=True)
class RandomisationResult:
    """The model-parameter randomisation test (Adebayo et al. 2018).

    Attributes:
        mode: ``cascade`` (layers re-initialised one by one from the output down) or ``full``.
        layers: the layer added at each step (cumulative, output layer first) in ``cascade``
            mode; ``["all"]`` in ``full`` mode.
        correlation: mean Spearman correlation of the signed attributions with the original
            ones after each step; the last is the fully randomised model.
        abs_correlation: the same for absolute attributions.
        threshold: the correlation at or above which the explanation is flagged.
        flagged: the explanation of the fully randomised model still ranks the units like the
            original: it does not depend on what the model learned.
    """

    mode: str
    layers: list[str]
    correlation: list[float]
    abs_correlation: list[float]
    threshold: float
    flagged: bool

    @property
    def final_correlation(self) -> float:
        return self.correlation[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "layers": self.layers,
            "correlation": self.correlation,
            "abs_correlation": self.abs_correlation,
            "final_correlation": self.final_correlation,
            "threshold": self.threshold,
            "flagged": self.flagged,
        }


def randomisation_check(
    model: WhiteBoxModel,
    x: torch.Tensor | np.ndarray,
    method: str | AttributionMethod | Explainer = "ig",
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    baseline: Baseline = "lower",
    mode: str = "cascade",
    threshold: float = 0.5,
    seed: int = 0,
    **params: Any,
) -> RandomisationResult:
    """Does the explanation change when the model's learned weights are destroyed?

    Layers with parameters are re-initialised (their own ``reset_parameters``, else Gaussian
    noise of the same scale) on a copy of the model; ``model`` is not touched. The targets stay
    the original ones. The verdict uses the signed rank correlation of the fully randomised
    model: ``flagged`` when it is at least ``threshold``. The correlation of absolute values is
    reported beside it but does not decide: for methods that multiply by the input (IG,
    DeepLIFT, occlusion against a black baseline) it stays high on images with a constant
    background, since zero pixels get zero attribution under any weights (the effect Adebayo
    et al. describe for these methods), while the signs, which come from the weights, do not
    survive the randomisation.

    Args:
        model: a white-box model.
        x: the batch to explain.
        method: a registered name, a configured method, or any ``explainer(model, x, targets)``
            returning attributions (to test an explanation that is not a registered method).
        target: as in :func:`dlsec.explain.explain`.
        baseline: as in :func:`dlsec.explain.explain`.
        mode: ``cascade`` (one layer more at each step, output layer first) or ``full``.
        threshold: the rank correlation that flags the explanation.
        seed: seed of the re-initialisation and of the method's draws.
        **params: the method's parameters, when ``method`` is a name.

    Example:
        >>> result = randomisation_check(model, x, "saliency")   # doctest: +SKIP
        >>> result.flagged                                         # doctest: +SKIP
        False
    """
    if not isinstance(model, WhiteBoxModel):
        raise UsageError("the randomisation check re-initialises weights: it needs a white-box model")
    if mode not in ("cascade", "full"):
        raise UsageError(f"mode must be cascade or full, got {mode!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1 <= threshold <= 1:
        raise UsageError(f"threshold must be a correlation in [-1, 1], got {threshold!r}")
    xb = as_inputs(model, x)
    targets = resolve_targets(model, xb, target)
    explainer = _as_explainer(model, xb, method, baseline=baseline, seed=seed, params=params)
    original = explainer(model, xb, targets).detach()
    return _randomise(
        model, xb, targets, explainer, original, mode=mode, threshold=float(threshold), seed=seed
    )


def _as_explainer(
    model: WhiteBoxModel,
    x: torch.Tensor,
    method: str | AttributionMethod | Explainer,
    *,
    baseline: Baseline,
    seed: int,
    params: dict[str, Any],
) -> Explainer:
    if isinstance(method, str):
        method = get_method(method, **params)
    elif params:
        raise UsageError("parameters go with a method name, not with a method object or function")
    if not isinstance(method, AttributionMethod):
        if not callable(method):
            raise UsageError(f"method must be a name, an AttributionMethod or a function, got {method!r}")
        return method
    check_method(model, method)
    rows, _ = resolve_baseline(model, x, baseline)
    chosen = method

    def run(m: WhiteBoxModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return run_method(m, chosen, inputs, targets, rows, seed=seed)[0]

    return run


def _parametrised_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def _reinitialise(layer: nn.Module, g: torch.Generator) -> None:
    reset = getattr(layer, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            scale = float(p.float().std()) if p.numel() > 1 else 1.0
            p.copy_(torch.randn(p.shape, generator=g).to(p) * (scale or 1.0))


def _randomise(
    model: WhiteBoxModel,
    x: torch.Tensor,
    targets: torch.Tensor,
    explainer: Explainer,
    original: torch.Tensor,
    *,
    mode: str,
    threshold: float,
    seed: int,
) -> RandomisationResult:
    copy_ = copy.deepcopy(model)
    layers = _parametrised_layers(copy_.module)
    if not layers:
        raise UsageError("the model has no parameters to randomise")
    steps = [layers] if mode == "full" else [layers[len(layers) - i - 1 :] for i in range(len(layers))]
    kind = model.spec.kind
    base_signed = unit_scores(original.cpu().float(), kind)
    base_abs = unit_scores(original.cpu().float(), kind, absolute=True)
    g = torch_generator(seed)
    names: list[str] = []
    signed: list[float] = []
    absolute: list[float] = []
    done: set[str] = set()
    with seeded_draws(seed, x.device):
        for step in steps:
            for name, layer in step:
                if name not in done:
                    _reinitialise(layer, g)
                    done.add(name)
            attr = explainer(copy_, x, targets).detach().cpu().float()
            signed.append(float(rank_correlation(base_signed, unit_scores(attr, kind)).mean()))
            absolute.append(float(rank_correlation(base_abs, unit_scores(attr, kind, absolute=True)).mean()))
            names.append(step[0][0] if mode == "cascade" else "all")
    return RandomisationResult(
        mode=mode,
        layers=names,
        correlation=signed,
        abs_correlation=absolute,
        threshold=threshold,
        flagged=signed[-1] >= threshold,
    )


def _randomise_explanation(
    model: WhiteBoxModel, explanation: Explanation, *, mode: str, threshold: float, seed: int
) -> RandomisationResult:
    """The randomisation test of an explanation: its method run again, same baseline and seed."""
    method = explanation.attribution_method
    check_method(model, method)
    rows = explanation.baseline_rows

    def rerun(m: WhiteBoxModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return run_method(m, method, inputs, targets, rows, seed=explanation.seed)[0]

    x = explanation.inputs.to(model.device)
    t = explanation.targets.to(model.device)
    return _randomise(model, x, t, rerun, explanation.attributions, mode=mode, threshold=threshold, seed=seed)


# --------------------------------------------------------------------------- all together


@dataclass(frozen=True)
class QualityReport:
    """The quality checks of one explanation; checks that could not run are named with the reason.

    Attributes:
        method: the explanation's method.
        infidelity: mean infidelity (lower is better).
        sensitivity: mean max-sensitivity (lower is better).
        deletion: the deletion curve (lower AUC is better) and ``deletion_random``, the same
            for a random order.
        insertion: the insertion curve (higher AUC is better) and ``insertion_random``.
        randomisation: the model-randomisation test.
        skipped: check name -> why it did not run.
    """

    method: str
    infidelity: float | None = None
    sensitivity: float | None = None
    deletion: Curve | None = None
    deletion_random: Curve | None = None
    insertion: Curve | None = None
    insertion_random: Curve | None = None
    randomisation: RandomisationResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What the checks found wrong with the explanation, one sentence each."""
        out = []
        if self.randomisation is not None and self.randomisation.flagged:
            rho = self.randomisation.final_correlation
            out.append(
                f"{self.method}: the explanation barely changes when the model's weights are randomised "
                f"(rank correlation {rho:.2f}): it does not explain the model"
            )
        if self.deletion and self.deletion_random and self.deletion.mean_auc >= self.deletion_random.mean_auc:
            out.append(f"{self.method}: deleting the top-ranked features hurts no more than a random order")
        if (
            self.insertion
            and self.insertion_random
            and self.insertion.mean_auc <= self.insertion_random.mean_auc
        ):
            out.append(f"{self.method}: inserting the top-ranked features helps no more than a random order")
        return out

    def to_dict(self) -> dict[str, Any]:
        def curve(c: Curve | None) -> dict[str, Any] | None:
            return c.to_dict() if c is not None else None

        return {
            "method": self.method,
            "infidelity": self.infidelity,
            "sensitivity": self.sensitivity,
            "deletion": curve(self.deletion),
            "deletion_random": curve(self.deletion_random),
            "insertion": curve(self.insertion),
            "insertion_random": curve(self.insertion_random),
            "randomisation": self.randomisation.to_dict() if self.randomisation else None,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def check_explanation(
    model: Model,
    explanation: Explanation,
    *,
    checks: Sequence[str] = CHECKS,
    steps: int = 20,
    samples: int = 5,
    randomise: str = "cascade",
    threshold: float = 0.5,
    seed: int = 0,
    progress: Progress | None = None,
) -> QualityReport:
    """Run the quality checks on an explanation of ``model``.

    Args:
        model: the model explained.
        explanation: what :func:`dlsec.explain.explain` returned for it.
        checks: which of :data:`CHECKS` to run.
        steps: points of the deletion and insertion curves.
        samples: perturbed copies for infidelity and sensitivity.
        randomise: the randomisation test's mode, ``cascade`` or ``full``.
        threshold: the randomisation test's flagging correlation.
        seed: seed of every perturbation.
        progress: called after each check with ``(done, total, {})``.

    Example:
        >>> report = check_explanation(model, explain(model, x, method="ig"))   # doctest: +SKIP
        >>> report.warnings                                                     # doctest: +SKIP
        []
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise UsageError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if randomise not in ("cascade", "full"):
        raise UsageError(f"randomise must be cascade or full, got {randomise!r}")
    found: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    x, t = explanation.inputs, explanation.targets
    baseline = explanation.baseline_rows
    wanted = [c for c in CHECKS if c in checks]
    for i, name in enumerate(wanted):
        if name == "infidelity":
            found["infidelity"] = float(infidelity(model, explanation, samples=samples, seed=seed).mean())
        elif name == "sensitivity":
            found["sensitivity"] = float(sensitivity(model, explanation, samples=samples, seed=seed).mean())
        elif name in ("deletion", "insertion"):
            run = deletion_curve if name == "deletion" else insertion_curve
            found[name] = run(model, x, explanation.attributions, t, baseline=baseline, steps=steps)
            found[f"{name}_random"] = run(
                model, x, _random_attributions(x, seed), t, baseline=baseline, steps=steps
            )
        elif name == "randomisation":
            if not isinstance(model, WhiteBoxModel):
                skipped[name] = "needs the model's weights (a white-box model)"
            else:
                found[name] = _randomise_explanation(
                    model, explanation, mode=randomise, threshold=threshold, seed=seed
                )
        if progress is not None:
            progress(i + 1, len(wanted), {})
    return QualityReport(method=explanation.method, skipped=skipped, **found)
