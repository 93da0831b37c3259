"""Gradient-masking diagnostics (Carlini et al. 2019 checklist; AutoAttack's flags).

An evaluation that reports high robust accuracy may only show that gradients are broken.
:func:`check_gradient_masking` runs the standard sanity checks and reports each red flag as a
:class:`Finding`; a check that cannot run is itself a finding (never a silent pass).

Checks:
  * randomness in the forward pass (the same input gives different logits): use EOT;
  * zero, vanishing or non-finite input gradients on correctly classified examples;
  * robust accuracy that rises as the budget grows, or stays above zero at an unbounded budget;
  * a black-box (score-based) attack beating the white-box one on the same points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from dlsec.attacks.evasion._losses import ce_loss
from dlsec.attacks.evasion.base import ATTACKS, Attack, get_attack
from dlsec.attacks.evasion.gradient import PGD
from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import UsageError

__all__ = ["Finding", "MaskingReport", "check_gradient_masking", "forward_is_random", "forward_spread"]

#: Logits of two passes on the same inputs further apart than this: the forward pass is random.
RANDOM_SPREAD = 1e-5

Severity = Literal["high", "medium", "low", "info"]


@dataclass(frozen=True)
class Finding:
    """One red flag, with the evidence behind it and its OWASP ML / MITRE ATLAS tags."""

    code: str
    title: str
    severity: Severity
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    owasp: str = "ML01 Input Manipulation Attack"
    atlas: str = "AML.T0043 Craft Adversarial Data"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MaskingReport:
    """Findings of :func:`check_gradient_masking` and the measurements they rest on."""

    findings: list[Finding]
    measurements: dict[str, Any]

    @property
    def masked(self) -> bool:
        """True if any check raised a flag (or could not run)."""
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "measurements": self.measurements}


def forward_spread(model: WhiteBoxModel, x: torch.Tensor) -> float:
    """The largest difference between the logits of two forward passes on the same inputs.

    Zero for a deterministic model; above :data:`RANDOM_SPREAD` the forward pass is random
    (noise, random transformations, test-time dropout) and attacks need EOT.
    """
    x = torch.as_tensor(x).float()
    if not len(x):
        return 0.0
    first, second = model.logits(x), model.logits(x)
    return float((first - second).abs().max())


def forward_is_random(model: WhiteBoxModel, x: torch.Tensor) -> bool:
    """Whether two forward passes on ``x`` differ (the ``stochastic-forward`` check).

    Example:
        >>> forward_is_random(digits_cnn, x)                       # doctest: +SKIP
        False
    """
    return forward_spread(model, x) > RANDOM_SPREAD


def _unbounded_eps(model: Model, norm: str) -> float:
    lo = model.spec.lower_tensor()
    hi = model.spec.upper_tensor()
    span = float((hi - lo).max())
    d = model.spec.num_features
    return {"linf": span, "l2": span * d**0.5, "l1": span * d}[norm]


def check_gradient_masking(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    white_box: Attack | None = None,
    black_box: Attack | None = None,
    eps_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
    seed: int = 0,
) -> MaskingReport:
    """Run the gradient-masking checklist on ``model`` around budget ``eps``.

    Args:
        model: a white-box model (the checks need gradients; other access levels yield a
            "could not run" finding).
        x, y: examples and labels (a few hundred suffice).
        eps: the budget under evaluation.
        norm: its norm.
        white_box: the white-box attack used for the sweeps; default PGD, 50 steps, random start.
        black_box: the score-based attack to compare with; default Square, 1,000 queries.
        eps_multipliers: budgets of the sweep, as multiples of ``eps``; an unbounded budget
            (the whole input range) is always added.
        seed: seed for every attack.

    Example:
        >>> report = check_gradient_masking(model, x, y, eps=0.1)     # doctest: +SKIP
        >>> [f.code for f in report.findings]                          # doctest: +SKIP
        []
    """
    if eps <= 0:
        raise UsageError(f"eps must be positive for the masking checks, got {eps}")
    findings: list[Finding] = []
    measured: dict[str, Any] = {"eps": eps, "norm": norm, "n": len(y)}
    if not isinstance(model, WhiteBoxModel):
        findings.append(
            Finding(
                "checks-not-run",
                "Gradient-masking checks could not run",
                "medium",
                f"the model offers {model.access.label} access; the checks need gradients (white-box)",
            )
        )
        return MaskingReport(findings, measured)
    x = torch.as_tensor(x).float()
    y = torch.as_tensor(y).long()
    model.spec.check_batch(x, what="x")

    # 1. Randomness in the forward pass.
    first, second = model.logits(x), model.logits(x)
    spread = float((first - second).abs().max())
    measured["forward_pass_max_difference"] = spread
    if spread > RANDOM_SPREAD:
        findings.append(
            Finding(
                "stochastic-forward",
                "The forward pass is random",
                "medium",
                f"two passes on the same inputs differ by up to {spread:.3g}; gradients of one pass "
                "mislead attacks: evaluate with EOT (expectation over transformation); AutoAttack "
                "runs its rand version on such models",
                {"max_difference": spread},
            )
        )

    # 2. Zero, vanishing or non-finite gradients where the model is right.
    correct = first.argmax(1).cpu() == y
    xg = x.to(model.device).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ce_loss(model(xg), y.to(model.device)).sum(), xg)
    gnorm = grad.reshape(len(x), -1).norm(dim=1).cpu()
    bad = (~torch.isfinite(gnorm)) | (gnorm < 1e-10)
    frac = float(bad[correct].float().mean()) if bool(correct.any()) else 0.0
    measured["zero_gradient_fraction"] = frac
    if frac > 0.05:
        findings.append(
            Finding(
                "vanishing-gradients",
                "Zero or non-finite input gradients",
                "high",
                f"{frac:.0%} of correctly classified examples have a zero or non-finite loss gradient; "
                "white-box results are unreliable (shattered or obfuscated gradients)",
                {"fraction": frac},
            )
        )

    # 3. Robust accuracy against the budget, up to an unbounded budget.
    wb = white_box or PGD(eps=eps, steps=50, norm=norm, random_start=True, seed=seed)
    budgets = [eps * m for m in eps_multipliers] + [_unbounded_eps(model, norm)]
    curve = []
    for b in budgets:
        curve.append(wb.replace(eps=b)(model, x, y).robust_accuracy)
    measured["eps_curve"] = {"eps": budgets, "robust_accuracy": curve}
    tol = 1.0 / max(len(y), 1) + 1e-9
    rises = [(budgets[i], budgets[i + 1]) for i in range(len(curve) - 1) if curve[i + 1] > curve[i] + tol]
    if rises:
        findings.append(
            Finding(
                "non-monotonic-budget",
                "Robust accuracy rises with the budget",
                "high",
                f"robust accuracy went up between budgets {rises[0][0]:.4g} and {rises[0][1]:.4g}; a larger "
                "budget can never help the model, so the attack is failing (masked gradients)",
                {"eps": budgets, "robust_accuracy": curve},
            )
        )
    if curve[-1] > 0.01:
        findings.append(
            Finding(
                "unbounded-attack-fails",
                "The attack fails at an unbounded budget",
                "high",
                f"at a budget covering the whole input range robust accuracy is still {curve[-1]:.2%}; "
                "an unbounded attack must succeed, so gradients are not guiding it",
                {"unbounded_eps": budgets[-1], "robust_accuracy": curve[-1]},
            )
        )

    # 4. Black-box against white-box at the budget under evaluation.
    white = wb.replace(eps=eps)(model, x, y)
    if black_box is None and "square" not in ATTACKS:
        findings.append(
            Finding(
                "checks-not-run",
                "Black-box comparison could not run",
                "medium",
                "no score-based attack is available to compare with the white-box one",
            )
        )
        return MaskingReport(findings, measured)
    bb = black_box or get_attack("square", eps=eps, norm=norm, n_queries=1000, seed=seed)
    black = bb(model.as_score(), x, y)
    only_black = int((black.success & ~white.success).sum())
    measured["white_box_robust_accuracy"] = white.robust_accuracy
    measured["black_box_robust_accuracy"] = black.robust_accuracy
    measured["fooled_only_by_black_box"] = only_black
    if black.robust_accuracy < white.robust_accuracy - max(0.02, tol):
        findings.append(
            Finding(
                "black-box-beats-white-box",
                "A black-box attack beats the white-box attack",
                "high",
                f"{bb.name} (score-based) reaches robust accuracy {black.robust_accuracy:.2%} against "
                f"{white.robust_accuracy:.2%} for {wb.name} (white-box); with working gradients the "
                "white-box attack should be at least as strong",
                {
                    "white_box": white.robust_accuracy,
                    "black_box": black.robust_accuracy,
                    "fooled_only_by_black_box": only_black,
                },
            )
        )
    return MaskingReport(findings, measured)
