"""Membership-inference metrics as the field reports them (Carlini et al. 2022).

ROC curve (kept for log-log plots), AUC, balanced accuracy, and the true positive rate at low
false positive rates (1%, 0.1%, 0.001%), each with a confidence interval: Clopper-Pearson for
the TPR at the chosen threshold, bootstrap (members and non-members resampled separately)
for the AUC and for the TPR at a fixed FPR. A TPR at FPR ``a`` is measurable only with at
least ``ceil(1 / a)`` non-members (else the threshold allows no false positive at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlsec.errors import UsageError

__all__ = [
    "DEFAULT_FPRS",
    "MembershipMetrics",
    "clopper_pearson",
    "membership_metrics",
    "min_non_members",
    "roc_curve",
    "tpr_at_fpr",
]

#: The false positive rates reported by default (those the non-members allow).
DEFAULT_FPRS = (0.01, 0.001, 0.00001)
_ROC_POINTS = 200


def min_non_members(fpr: float) -> int:
    """Non-members needed to measure a TPR at false positive rate ``fpr`` (one false positive)."""
    if not 0 < fpr < 1:
        raise UsageError(f"a false positive rate must be in (0, 1), got {fpr}")
    return math.ceil(1 / fpr - 1e-9)


def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided Clopper-Pearson interval of a binomial proportion ``k / n``.

    Example:
        >>> lo, hi = clopper_pearson(0, 100)
        >>> lo, round(hi, 4)
        (0.0, 0.0362)
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise UsageError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def roc_curve(member_scores: np.ndarray, non_member_scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(fpr, tpr, thresholds)`` over every threshold; a score above the threshold says member."""
    from sklearn.metrics import roc_curve as sk_roc

    scores, labels = _stack(member_scores, non_member_scores)
    fpr, tpr, thr = sk_roc(labels, scores, drop_intermediate=False)
    return fpr, tpr, thr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR over thresholds whose FPR is at most ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _stack(member_scores: np.ndarray, non_member_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    o = np.asarray(non_member_scores, dtype=np.float64).reshape(-1)
    if m.size == 0 or o.size == 0:
        raise UsageError("membership metrics need at least one member and one non-member")
    if not (np.isfinite(m).all() and np.isfinite(o).all()):
        raise UsageError("membership scores must be finite")
    return np.concatenate([m, o]), np.concatenate([np.ones(m.size), np.zeros(o.size)])


def _auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores, labels = _stack(member_scores, non_member_scores)
    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class MembershipMetrics:
    """What a membership-inference attack achieved.

    Attributes:
        auc: area under the ROC curve (0.5: no better than a coin).
        auc_ci: bootstrap confidence interval of the AUC.
        balanced_accuracy: the best over thresholds of ``(TPR + TNR) / 2``.
        tpr_at_fpr: per false positive rate (``"0.01"``...): ``tpr``, ``threshold``,
            ``false_positives``, ``ci`` (Clopper-Pearson over the members at that threshold),
            ``bootstrap_ci``, and ``measurable`` (enough non-members).
        roc: ``fpr`` and ``tpr`` (about 200 points spaced for a log-log plot).
        n_members, n_non_members: how many of each were scored.
        confidence: the level of every interval.
    """

    auc: float
    auc_ci: tuple[float, float]
    balanced_accuracy: float
    tpr_at_fpr: dict[str, dict[str, Any]]
    roc: dict[str, list[float]]
    n_members: int
    n_non_members: int
    confidence: float = 0.95
    notes: list[str] = field(default_factory=list)

    def tpr(self, fpr: float) -> float | None:
        """The TPR at ``fpr`` (``None`` when it was not measured)."""
        row = self.tpr_at_fpr.get(_key(fpr))
        return None if row is None else float(row["tpr"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "balanced_accuracy": self.balanced_accuracy,
            "tpr_at_fpr": self.tpr_at_fpr,
            "roc": self.roc,
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
            "confidence": self.confidence,
            "notes": self.notes,
        }


def _key(fpr: float) -> str:
    return f"{fpr:g}"


def _log_spaced_roc(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, list[float]]:
    """About ``_ROC_POINTS`` points of the ROC, log-spaced in FPR (each the best TPR at that FPR)."""
    positive = fpr[fpr > 0]
    lowest = positive.min() if positive.size else 1.0
    grid = np.unique(np.concatenate([[0.0], np.geomspace(lowest, 1.0, _ROC_POINTS)]))
    idx = np.searchsorted(fpr, grid, side="right") - 1
    idx = np.clip(idx, 0, len(fpr) - 1)
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist()}


def membership_metrics(
    member_scores: np.ndarray,
    non_member_scores: np.ndarray,
    *,
    fprs: tuple[float, ...] | None = None,
    confidence: float = 0.95,
    bootstrap: int = 200,
    seed: int = 0,
) -> MembershipMetrics:
    """ROC, AUC and TPR at low FPR of membership scores (higher means "member").

    Args:
        member_scores: scores of rows the model was trained on.
        non_member_scores: scores of rows it was not trained on.
        fprs: false positive rates to report. ``None`` reports those of :data:`DEFAULT_FPRS`
            the non-members can measure (at least ``ceil(1 / fpr)`` of them). Rates given
            explicitly must be measurable, else :class:`~dlsec.errors.UsageError`.
        confidence: level of the intervals.
        bootstrap: resamples for the bootstrap intervals (0: none).
        seed: seeds the bootstrap.

    Example:
        >>> m = membership_metrics(np.array([3.0, 2.0, 1.5]), np.array([0.0, 1.0, 0.5]), fprs=(0.5,))
        >>> m.auc, m.tpr(0.5)
        (1.0, 1.0)
    """
    members = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    others = np.asarray(non_member_scores, dtype=np.float64).reshape(-1)
    fpr, tpr, thr = roc_curve(members, others)
    n_out = others.size
    notes: list[str] = []
    if fprs is None:
        chosen = tuple(a for a in DEFAULT_FPRS if n_out >= min_non_members(a))
        skipped = [a for a in DEFAULT_FPRS if a not in chosen]
        if skipped:
            notes.append(
                f"TPR at FPR {', '.join(f'{a:g}' for a in skipped)} not reported: {n_out} non-members "
                f"(needs {min_non_members(skipped[0])})"
            )
    else:
        chosen = tuple(fprs)
        for a in chosen:
            if n_out < min_non_members(a):
                raise UsageError(
                    f"a TPR at FPR {a:g} needs at least {min_non_members(a)} non-members, got {n_out}; "
                    "give more non-members or a higher --fpr"
                )
    rng = np.random.default_rng(seed)
    boot_auc: list[float] = []
    boot_tpr: dict[float, list[float]] = {a: [] for a in chosen}
    for _ in range(bootstrap):
        bm = members[rng.integers(0, members.size, members.size)]
        bo = others[rng.integers(0, n_out, n_out)]
        if np.unique(np.concatenate([bm, bo])).size < 2:
            continue
        bf, bt, _ = roc_curve(bm, bo)
        boot_auc.append(_auc(bm, bo))
        for a in chosen:
            boot_tpr[a].append(tpr_at_fpr(bf, bt, a))
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def interval(values: list[float], point: float) -> tuple[float, float]:
        if not values:
            return (point, point)
        return (float(np.quantile(values, lo_q)), float(np.quantile(values, hi_q)))

    auc = _auc(members, others)
    rows: dict[str, dict[str, Any]] = {}
    for a in chosen:
        ok = np.nonzero(fpr <= a + 1e-12)[0]
        best = int(ok[np.argmax(tpr[ok])])
        k = int(round(tpr[best] * members.size))
        rows[_key(a)] = {
            "fpr": a,
            "tpr": float(tpr[best]),
            "threshold": float(thr[best]) if np.isfinite(thr[best]) else None,
            "false_positives": int(round(fpr[best] * n_out)),
            "ci": list(clopper_pearson(k, members.size, confidence=confidence)),
            "bootstrap_ci": list(interval(boot_tpr[a], float(tpr[best]))),
            "measurable": n_out >= min_non_members(a),
        }
    return MembershipMetrics(
        auc=auc,
        auc_ci=interval(boot_auc, auc),
        balanced_accuracy=float(np.max((tpr + 1 - fpr) / 2)),
        tpr_at_fpr=rows,
        roc=_log_spaced_roc(fpr, tpr),
        n_members=int(members.size),
        n_non_members=int(n_out),
        confidence=confidence,
        notes=notes,
    )
