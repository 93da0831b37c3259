"""Membership metrics against answers computed by hand (the mutation run of _metrics.py found
survivors in the ROC resampling, the report dictionary and the input checks)."""

from __future__ import annotations

import numpy as np
import pytest

from dlsec.attacks.privacy import membership_metrics
from dlsec.attacks.privacy._metrics import _log_spaced_roc, _stack, clopper_pearson, tpr_at_fpr
from dlsec.errors import UsageError

# Sorted by score: .9 M, .8 M, .7 N, .6 N, .3 M, .2 M, .1 N, .05 N (M member, N non-member).
MEMBERS = np.array([0.9, 0.8, 0.3, 0.2])
OTHERS = np.array([0.7, 0.6, 0.1, 0.05])


def test_auc_balanced_accuracy_and_tpr_rows_by_hand() -> None:
    m = membership_metrics(MEMBERS, OTHERS, fprs=(0.25, 0.5), bootstrap=0)
    assert m.auc == pytest.approx(12 / 16)  # member-above-non-member pairs: 4 + 4 + 2 + 2
    assert m.auc_ci == (m.auc, m.auc)  # no resamples: the point itself
    assert m.balanced_accuracy == pytest.approx(0.75)  # (0.5 + 1 - 0) / 2 at threshold 0.8
    quarter, half = m.tpr_at_fpr["0.25"], m.tpr_at_fpr["0.5"]
    assert (quarter["tpr"], quarter["threshold"], quarter["false_positives"]) == (0.5, 0.8, 0)
    assert quarter["ci"] == list(clopper_pearson(2, 4)) and quarter["bootstrap_ci"] == [0.5, 0.5]
    assert (half["tpr"], half["threshold"], half["false_positives"]) == (1.0, 0.2, 2)
    assert half["ci"] == list(clopper_pearson(4, 4)) and half["ci"][1] == 1.0
    assert quarter["measurable"] is True and quarter["fpr"] == 0.25
    assert m.tpr(0.25) == 0.5 and m.tpr(0.5) == 1.0 and m.tpr(0.3) is None
    assert (m.n_members, m.n_non_members, m.notes) == (4, 4, [])


def test_to_dict_holds_every_field() -> None:
    m = membership_metrics(MEMBERS, OTHERS, fprs=(0.25,), bootstrap=20, confidence=0.9)
    d = m.to_dict()
    assert d == {
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "balanced_accuracy": m.balanced_accuracy,
        "tpr_at_fpr": m.tpr_at_fpr,
        "roc": m.roc,
        "n_members": 4,
        "n_non_members": 4,
        "confidence": 0.9,
        "notes": [],
    }
    lo, hi = m.auc_ci
    assert 0.0 <= lo <= m.auc <= hi <= 1.0 and lo < hi  # resampled: a real interval


def test_unmeasurable_rates_are_noted_or_refused() -> None:
    m = membership_metrics(MEMBERS, OTHERS, bootstrap=0)
    assert m.tpr_at_fpr == {}
    assert m.notes == ["TPR at FPR 0.01, 0.001, 1e-05 not reported: 4 non-members (needs 100)"]
    with pytest.raises(UsageError, match="a TPR at FPR 0.2 needs at least 5 non-members, got 4"):
        membership_metrics(MEMBERS, OTHERS, fprs=(0.2,))


def test_tpr_at_fpr_takes_the_best_within_the_rate() -> None:
    fpr, tpr = np.array([0.0, 0.1, 0.2]), np.array([0.3, 0.6, 0.9])
    assert tpr_at_fpr(fpr, tpr, 0.1) == 0.6
    assert tpr_at_fpr(fpr, tpr, 0.1 - 1e-13) == 0.6  # within the tolerance
    assert tpr_at_fpr(fpr, tpr, 0.05) == 0.3
    assert tpr_at_fpr(fpr, tpr, 0.2) == 0.9
    assert tpr_at_fpr(fpr, tpr, -1.0) == 0.0  # no threshold allowed


def test_stack_labels_members_one_and_refuses_bad_scores() -> None:
    scores, labels = _stack(np.array([[1.0], [2.0]]), np.array([3.0]))
    assert scores.tolist() == [1.0, 2.0, 3.0] and labels.tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(UsageError, match="at least one member and one non-member"):
        _stack(np.array([]), np.array([1.0]))
    with pytest.raises(UsageError, match="at least one member and one non-member"):
        _stack(np.array([1.0]), np.array([]))
    with pytest.raises(UsageError, match="finite"):
        _stack(np.array([1.0, np.nan]), np.array([1.0]))
    with pytest.raises(UsageError, match="finite"):
        _stack(np.array([1.0]), np.array([np.inf]))


def test_log_spaced_roc_by_hand() -> None:
    # grid: 0, then 200 points from 0.25 to 1 in geometric steps (ratio 4^(1/199)): points 0-99
    # lie below 0.5 (4^(99/199) < 2), 100-198 between 0.5 and 1, the last is 1.
    roc = _log_spaced_roc(np.array([0.0, 0.25, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0]))
    assert roc["fpr"] == [0.0] + [0.25] * 100 + [0.5] * 99 + [1.0]
    assert roc["tpr"] == [0.0] + [0.5] * 100 + [1.0] * 100
    # no positive FPR: the grid is just 0 and 1, and both read the last point at FPR 0
    flat = _log_spaced_roc(np.array([0.0, 0.0]), np.array([0.0, 1.0]))
    assert flat == {"fpr": [0.0, 0.0], "tpr": [1.0, 1.0]}
