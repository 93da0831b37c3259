"""Empirical lower bounds on epsilon from a membership test's outcomes.

Two ways, both exact (no normal approximations):

* **Hypothesis-test bound** (Kairouz et al. 2015; Jagielski et al. 2020; Nasr et al. 2021): a
  mechanism that is ``(epsilon, delta)``-DP admits no test with
  ``TPR > e^epsilon * FPR + delta`` or ``1 - FPR > e^epsilon * (1 - TPR) + delta``. With
  Clopper-Pearson bounds on TPR (lower) and FPR (upper), each at one-sided level
  ``(1 - confidence) / 2``, the epsilon they imply is a lower bound at ``confidence``. The
  trials must be independent: one training run per trial, or (the usual shortcut) many
  canaries in one run, which is a heuristic, not a proof.
* **One-run audit** (Steinke, Nasr & Jagielski 2023): ``m`` canaries, each included
  independently with probability 1/2, one training run; the auditor guesses "in" for the
  ``k+`` highest scores and "out" for the ``k-`` lowest, abstaining on the rest. Under
  ``(epsilon, delta)``-DP the number of correct guesses ``v`` out of ``r`` has a p-value at most
  ``P[Binomial(r, q) >= v] + 2 m delta alpha`` with ``q = e^epsilon / (1 + e^epsilon)``
  (their Theorem 5.2 and Algorithm); the bound is the largest epsilon rejected at ``1 -
  confidence``. Valid from a single run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlsec.attacks.privacy._metrics import clopper_pearson
from dlsec.errors import UsageError

__all__ = [
    "EpsilonBound",
    "epsilon_from_rates",
    "epsilon_lower_bound",
    "one_run_epsilon",
    "one_run_p_value",
]


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise UsageError(f"delta must be in [0, 1), got {delta}")


def epsilon_from_rates(tpr: float, fpr: float, *, delta: float = 0.0) -> float:
    """The epsilon a test with rates ``(tpr, fpr)`` proves (0 when it proves nothing).

    Example:
        >>> round(epsilon_from_rates(0.6, 0.1), 4)     # log(0.6 / 0.1)
        1.7918
    """
    _check_delta(delta)
    best = 0.0
    if fpr > 0 and tpr - delta > 0:
        best = max(best, math.log((tpr - delta) / fpr))
    elif fpr == 0 and tpr - delta > 0:
        return math.inf
    if tpr < 1 and 1 - delta - fpr > 0:
        best = max(best, math.log((1 - delta - fpr) / (1 - tpr)))
    elif tpr == 1 and 1 - delta - fpr > 0:
        return math.inf
    return best


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical epsilon lower bound with what it came from."""

    epsilon_lower: float
    epsilon_point: float
    tpr: float
    fpr: float
    tpr_lower: float
    fpr_upper: float
    counts: dict[str, int]
    delta: float
    confidence: float
    method: str = "clopper-pearson"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "epsilon_lower": self.epsilon_lower,
            "epsilon_point": None if math.isinf(self.epsilon_point) else self.epsilon_point,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "tpr_lower": self.tpr_lower,
            "fpr_upper": self.fpr_upper,
            "counts": self.counts,
            "delta": self.delta,
            "confidence": self.confidence,
        }


def epsilon_lower_bound(
    tp: int, fn: int, fp: int, tn: int, *, delta: float = 0.0, confidence: float = 0.95
) -> EpsilonBound:
    """Epsilon lower bound from confusion counts of a membership test, Clopper-Pearson exact.

    Args:
        tp, fn: members said "in" / "out".
        fp, tn: non-members said "in" / "out".
        delta: the delta of the claim being audited.
        confidence: the bound holds with this probability (split over the two rates).

    Example:
        >>> b = epsilon_lower_bound(100, 0, 0, 100)    # perfect test on 100 + 100 trials
        >>> round(b.epsilon_lower, 4)                  # log(0.025^(1/100) / (1 - 0.025^(1/100)))
        3.2814
    """
    _check_delta(delta)
    for name, v in (("tp", tp), ("fn", fn), ("fp", fp), ("tn", tn)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise UsageError(f"{name} must be a count >= 0, got {v!r}")
    if tp + fn < 1 or fp + tn < 1:
        raise UsageError("an epsilon bound needs at least one member and one non-member trial")
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must be in (0, 1), got {confidence}")
    n_in, n_out = int(tp + fn), int(fp + tn)
    # Two-sided intervals at 1 - 2a give one-sided bounds at 1 - a each; a union bound over the
    # two rates gives ``confidence`` overall.
    one_sided = 1 - (1 - confidence) / 2
    two_sided = 1 - 2 * (1 - one_sided)
    tpr_lo = clopper_pearson(int(tp), n_in, confidence=two_sided)[0]
    fpr_hi = clopper_pearson(int(fp), n_out, confidence=two_sided)[1]
    tpr, fpr = tp / n_in, fp / n_out
    return EpsilonBound(
        epsilon_lower=epsilon_from_rates(tpr_lo, fpr_hi, delta=delta),
        epsilon_point=epsilon_from_rates(tpr, fpr, delta=delta),
        tpr=tpr,
        fpr=fpr,
        tpr_lower=tpr_lo,
        fpr_upper=fpr_hi,
        counts={"tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn)},
        delta=delta,
        confidence=confidence,
    )


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P-value of ``v`` or more correct guesses out of ``r`` under ``(epsilon, delta)``-DP.

    ``m`` canaries, each included with probability 1/2 (Steinke et al. 2023, Algorithm 2).
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise UsageError(f"need 0 <= correct <= guesses <= canaries, got {v}, {r}, {m}")
    if epsilon < 0:
        raise UsageError(f"epsilon must be >= 0, got {epsilon}")
    _check_delta(delta)
    q = 1 / (1 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))
    alpha = 0.0
    if delta > 0 and v > 0:
        # alpha = max over i of P[v > Binomial(r, q) >= v - i] / i.
        pmf = binom.pmf(np.arange(v - 1, -1, -1), r, q)
        cumulative = np.cumsum(pmf)
        alpha = float(np.max(cumulative / np.arange(1, v + 1)))
    return min(1.0, beta + alpha * delta * 2 * m)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest epsilon that ``v`` correct guesses out of ``r`` reject at ``confidence``.

    Example:
        >>> round(one_run_epsilon(1000, 100, 100), 3)  # all right: q^100 = 0.05
        3.493
    """
    p = 1 - confidence
    if not 0 < p < 1:
        raise UsageError(f"confidence must be in (0, 1), got {confidence}")
    if one_run_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < p:
        hi *= 2
        if hi > 1e3:
            return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo
