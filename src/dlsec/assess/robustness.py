"""Robustness measurements that reports are built from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dlsec.attacks import Attack, AutoAttack, check_gradient_masking, get_attack
from dlsec.core.model import WhiteBoxModel

__all__ = ["robustness_curve", "evasion_section"]

Progress = Callable[[int, int, dict[str, float]], None]


def robustness_curve(
    model: WhiteBoxModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    budgets: Sequence[float],
    attack: str = "pgd",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Robust accuracy of ``model`` against ``attack`` at each budget (same seed throughout)."""
    accuracies = []
    for i, eps in enumerate(budgets):
        result = get_attack(attack, eps=eps, norm=norm, seed=seed, **(params or {}))(model, x, y)
        accuracies.append(result.robust_accuracy)
        if progress is not None:
            progress(i + 1, len(budgets), {"eps": eps, "robust_accuracy": result.robust_accuracy})
    return {
        "attack": attack,
        "norm": norm,
        "eps": list(budgets),
        "robust_accuracy": accuracies,
        "params": params or {},
        "seed": seed,
        "n": len(y),
    }


def evasion_section(
    model: WhiteBoxModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    budgets: Sequence[float] | None = None,
    autoattack_n: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], torch.Tensor]:
    """The evasion part of a report: a PGD curve, AutoAttack at ``eps`` and the masking checks.

    Returns the section (JSON-serialisable), its findings, and AutoAttack's adversarial
    examples for the first ``autoattack_n`` rows (for a gallery).
    """
    budgets = list(budgets or [eps / 4, eps / 2, eps, 2 * eps])
    curve = robustness_curve(
        model, x, y, norm=norm, budgets=budgets, params={"steps": 40}, seed=seed, progress=progress
    )
    n = min(autoattack_n, len(y))
    aa: Attack = AutoAttack(eps=eps, norm=norm, seed=seed)
    result = aa(model, x[:n], y[:n])
    masking = check_gradient_masking(
        model, x[: min(64, len(y))], y[: min(64, len(y))], eps=eps, norm=norm, seed=seed
    )
    findings = [f.to_dict() for f in masking.findings]
    if result.robust_accuracy < result.clean_accuracy:
        drop = result.clean_accuracy - result.robust_accuracy
        findings.insert(
            0,
            {
                "code": "evasion",
                "title": f"Evasion: AutoAttack at {norm} eps={eps:g} lowers accuracy by {drop:.1%}",
                "severity": "high" if result.robust_accuracy < 0.5 else "medium",
                "detail": f"clean accuracy {result.clean_accuracy:.2%}, robust accuracy "
                f"{result.robust_accuracy:.2%} on {n} examples; consider adversarial training",
                "evidence": result.summary(),
                "owasp": "ML01 Input Manipulation Attack",
                "atlas": "AML.T0015 Evade AI Model",
            },
        )
    section = {
        "curve": curve,
        "autoattack": {**result.summary(), "fooled_by": result.extras["fooled_by"]},
        "gradient_masking": masking.to_dict(),
    }
    return section, findings, result.x_adv
