"""Metrics and epsilon lower bounds against values computed by hand (closed forms)."""

import math

import numpy as np
import pytest

from dlsec.attacks.privacy import (
    clopper_pearson,
    epsilon_from_rates,
    epsilon_lower_bound,
    membership_metrics,
    min_non_members,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)
from dlsec.errors import UsageError


def test_clopper_pearson_closed_forms():
    # With no successes the upper bound solves (1 - p)^n = alpha / 2; with all, p^n = alpha / 2.
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-9)
    lo, hi = clopper_pearson(50, 50, confidence=0.9)
    assert hi == 1.0 and lo == pytest.approx(0.05 ** (1 / 50), rel=1e-9)


@pytest.mark.parametrize(
    ("tpr", "fpr", "delta", "expected"),
    [
        (0.6, 0.1, 0.0, math.log(6.0)),  # TPR <= e^eps FPR
        (0.6, 0.1, 0.05, math.log(5.5)),  # (TPR - delta) / FPR
        (0.99, 0.5, 0.0, math.log(50.0)),  # the other side: (1 - FPR) / (1 - TPR)
        (0.3, 0.3, 0.0, 0.0),  # a coin proves nothing
        (0.2, 0.4, 0.0, 0.0),  # worse than a coin proves nothing either
    ],
)
def test_epsilon_from_rates_by_hand(tpr, fpr, delta, expected):
    assert epsilon_from_rates(tpr, fpr, delta=delta) == pytest.approx(expected, abs=1e-12)


def test_epsilon_lower_bound_from_counts_by_hand():
    # A perfect test on 100 + 100 trials: TPR >= 0.025^(1/100), FPR <= 1 - 0.025^(1/100).
    q = 0.025 ** (1 / 100)
    bound = epsilon_lower_bound(100, 0, 0, 100)
    assert bound.tpr_lower == pytest.approx(q, rel=1e-9)
    assert bound.fpr_upper == pytest.approx(1 - q, rel=1e-9)
    assert bound.epsilon_lower == pytest.approx(math.log(q / (1 - q)), rel=1e-9)
    assert bound.epsilon_lower == pytest.approx(3.2814, abs=1e-4)
    assert math.isinf(bound.epsilon_point)
    # With delta, the first form subtracts delta from the TPR bound.
    with_delta = epsilon_lower_bound(100, 0, 0, 100, delta=0.01)
    assert with_delta.epsilon_lower == pytest.approx(math.log((1 - 0.01 - (1 - q)) / (1 - q)), rel=1e-9)
    # Point estimate of 60/100 vs 10/100 is log 6; the bound lies below it.
    mixed = epsilon_lower_bound(60, 40, 10, 90)
    assert mixed.epsilon_point == pytest.approx(math.log(6.0))
    assert 0 < mixed.epsilon_lower < mixed.epsilon_point
    with pytest.raises(UsageError):
        epsilon_lower_bound(0, 0, 5, 5)


def test_one_run_bound_by_hand():
    # All r guesses right, delta 0: p-value q^r; the bound solves q^100 = 0.05.
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon(1000, 100, 100) == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    # delta > 0 (Steinke et al., Algorithm 2): r = 2, v = 2, m = 10, eps = 1, delta = 0.01.
    p = 1 / (1 + math.exp(-1))
    pmf1, pmf0 = 2 * p * (1 - p), (1 - p) ** 2
    alpha = max(pmf1 / 1, (pmf1 + pmf0) / 2)
    expected = p**2 + alpha * 0.01 * 2 * 10
    assert one_run_p_value(10, 2, 2, 1.0, 0.01) == pytest.approx(expected, rel=1e-12)
    # Half right proves nothing.
    assert one_run_epsilon(1000, 100, 50) == 0.0
    # The audit guesses on the ends of the score order.
    scores = np.arange(10.0)
    inclusion = scores >= 5
    result = one_run_audit(scores, inclusion, guesses=3, delta=0.0, confidence=0.95)
    assert result["guesses"] == 6 and result["correct"] == 6


def test_membership_metrics_known_answers():
    members, others = np.arange(100.0, 200.0), np.arange(0.0, 100.0)
    m = membership_metrics(members, others, fprs=(0.01,), bootstrap=20)
    assert m.auc == 1.0 and m.tpr(0.01) == 1.0 and m.balanced_accuracy == 1.0
    reverse = membership_metrics(others, members, fprs=(0.01,), bootstrap=0)
    assert reverse.auc == 0.0 and reverse.tpr(0.01) == 0.0
    # Ties everywhere: a coin.
    flat = membership_metrics(np.zeros(50), np.zeros(500), bootstrap=0)
    assert flat.auc == 0.5 and flat.tpr(0.01) == 0.0
    # Defaults report only what the non-members can measure, and say so.
    assert set(flat.tpr_at_fpr) == {"0.01"} and "needs 1000" in flat.notes[0]
    assert min_non_members(0.001) == 1000 and min_non_members(0.00001) == 100000
    with pytest.raises(UsageError, match="at least 1000 non-members"):
        membership_metrics(members, others, fprs=(0.001,))
    # 1% of 100 non-members allows one false positive above the members, not two.
    three = np.array([5.0, 4.0, 3.0])
    mixed = membership_metrics(three, np.array([10.0] + [0.0] * 99), fprs=(0.01,), bootstrap=0)
    assert mixed.tpr(0.01) == 1.0
    strict = membership_metrics(three, np.array([10.0, 9.0] + [0.0] * 98), fprs=(0.01,))
    assert strict.tpr(0.01) == 0.0
