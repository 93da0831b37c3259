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
    # the tolerance's edge is inside: an FPR of exactly target + 1e-12 counts
    assert tpr_at_fpr(np.array([0.0, 0.1 + 1e-12]), np.array([0.2, 0.7]), 0.1) == 0.7


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


def _pair_auc(m: np.ndarray, o: np.ndarray) -> float:
    """AUC as the share of member/non-member pairs ordered right (ties count half)."""
    wins = sum(float(a > b) + 0.5 * float(a == b) for a in m for b in o)
    return wins / (m.size * o.size)


def _best_tpr(m: np.ndarray, o: np.ndarray, rate: float) -> float:
    """Best TPR over thresholds "score >= t" whose FPR is at most ``rate``, by enumeration."""
    best = 0.0
    for t in [np.inf, *np.concatenate([m, o])]:
        if (o >= t).mean() <= rate + 1e-12:
            best = max(best, float((m >= t).mean()))
    return best


@pytest.mark.parametrize("seed", [11, 1])  # seed 1 draws a degenerate resample fourth
def test_bootstrap_intervals_match_a_resampling_done_by_hand(seed: int) -> None:
    # Ties and a degenerate draw possible (all four resampled scores 0.0): those are skipped.
    members, others = np.array([1.0, 0.0, 0.5]), np.array([0.0, 0.5])
    m = membership_metrics(members, others, fprs=(0.5,), bootstrap=60, seed=seed, confidence=0.8)
    rng = np.random.default_rng(seed)
    aucs, tprs, skipped = [], [], 0
    for _ in range(60):
        bm = members[rng.integers(0, 3, 3)]
        bo = others[rng.integers(0, 2, 2)]
        if np.unique(np.concatenate([bm, bo])).size < 2:
            skipped += 1
            continue
        aucs.append(_pair_auc(bm, bo))
        tprs.append(_best_tpr(bm, bo, 0.5))
    assert skipped > 0 and len(aucs) > 40  # the skip is exercised
    assert m.auc == _pair_auc(members, others) == pytest.approx(4 / 6)  # 2 + 0.5 + 1.5 of 6 pairs
    assert m.auc_ci == pytest.approx((np.quantile(aucs, 0.1), np.quantile(aucs, 0.9)), abs=1e-12)
    assert m.auc_ci[0] < m.auc_ci[1]
    row = m.tpr_at_fpr["0.5"]
    assert row["bootstrap_ci"] == pytest.approx([np.quantile(tprs, 0.1), np.quantile(tprs, 0.9)], abs=1e-12)
    assert row["tpr"] == _best_tpr(members, others, 0.5) == pytest.approx(2 / 3)
    k = 2
    assert row["ci"] == list(clopper_pearson(k, 3, confidence=0.8))
    assert m.confidence == 0.8


def test_another_seed_resamples_differently() -> None:
    members, others = np.array([1.0, 0.0, 0.5, 0.7]), np.array([0.0, 0.5, 0.6])
    a = membership_metrics(members, others, fprs=(0.5,), bootstrap=40, seed=1)
    b = membership_metrics(members, others, fprs=(0.5,), bootstrap=40, seed=2)
    assert a.auc == b.auc and a.auc_ci != b.auc_ci


def test_only_degenerate_resamples_give_the_point_as_interval() -> None:
    m = membership_metrics(np.array([2.0]), np.array([2.0, 2.0]), fprs=(0.5,), bootstrap=10)
    assert m.auc == 0.5 and m.auc_ci == (0.5, 0.5)
    assert m.tpr_at_fpr["0.5"]["bootstrap_ci"] == [0.0, 0.0]


def test_a_threshold_above_every_score_is_reported_as_none() -> None:
    # Every member scores below every non-member: at FPR 0 only the "nothing is a member"
    # threshold (infinite) is allowed, and it reports TPR 0.
    m = membership_metrics(np.array([0.1, 0.2]), np.array([0.8, 0.9]), fprs=(0.5,), bootstrap=0)
    row = m.tpr_at_fpr["0.5"]
    assert row == {
        "fpr": 0.5,
        "tpr": 0.0,
        "threshold": None,
        "false_positives": 0,
        "ci": list(clopper_pearson(0, 2)),
        "bootstrap_ci": [0.0, 0.0],
        "measurable": True,
    }
    assert m.auc == 0.0 and m.balanced_accuracy == 0.5


def test_balanced_accuracy_is_the_best_threshold_by_enumeration() -> None:
    members, others = np.array([0.9, 0.4, 0.35, 0.1]), np.array([0.8, 0.3, 0.2])
    m = membership_metrics(members, others, fprs=(0.5,), bootstrap=0)
    best = max(((members >= t).mean() + 1 - (others >= t).mean()) / 2 for t in [np.inf, *members, *others])
    assert m.balanced_accuracy == pytest.approx(best) == pytest.approx((0.75 + 2 / 3) / 2)
    assert m.auc == pytest.approx(_pair_auc(members, others))


def test_default_rates_are_those_the_non_members_measure() -> None:
    members = np.linspace(0.0, 1.0, 7)
    m = membership_metrics(members, np.linspace(0.0, 0.9, 100), bootstrap=0)
    assert list(m.tpr_at_fpr) == ["0.01"] and m.tpr_at_fpr["0.01"]["measurable"] is True
    assert m.notes == ["TPR at FPR 0.001, 1e-05 not reported: 100 non-members (needs 1000)"]
    m = membership_metrics(members, np.linspace(0.0, 0.9, 1000), bootstrap=0)
    assert list(m.tpr_at_fpr) == ["0.01", "0.001"]
    assert m.notes == ["TPR at FPR 1e-05 not reported: 1000 non-members (needs 100000)"]
    assert m.tpr(0.001) == m.tpr_at_fpr["0.001"]["tpr"] and m.tpr(0.00001) is None
    m = membership_metrics(members, np.linspace(0.0, 0.9, 99), bootstrap=0)
    assert m.tpr_at_fpr == {}
    assert m.notes == ["TPR at FPR 0.01, 0.001, 1e-05 not reported: 99 non-members (needs 100)"]


def test_explicit_rates_at_the_limit_are_measured() -> None:
    others = np.arange(5, dtype=float)
    m = membership_metrics(np.array([4.5, 3.5]), others, fprs=(0.2, 0.5), bootstrap=0)
    # 5 non-members measure FPR 0.2 (one false positive): 4.0 >= 3.5, and both members pass.
    assert m.tpr_at_fpr["0.2"]["measurable"] and m.tpr_at_fpr["0.2"]["false_positives"] == 1
    assert m.tpr_at_fpr["0.2"]["tpr"] == 1.0 and m.tpr_at_fpr["0.2"]["threshold"] == 3.5
    # the first threshold reaching the best TPR, not a later one with more false positives
    assert m.tpr_at_fpr["0.5"]["false_positives"] == 1 and m.tpr_at_fpr["0.5"]["threshold"] == 3.5
    low = membership_metrics(np.array([4.5, 3.5]), others, fprs=(0.2,), bootstrap=0)
    assert low.tpr_at_fpr["0.2"]["ci"] == list(clopper_pearson(2, 2))
    with pytest.raises(UsageError) as exc:
        membership_metrics(np.array([1.0]), others, fprs=(0.5, 0.1), bootstrap=0)
    assert str(exc.value) == (
        "a TPR at FPR 0.1 needs at least 10 non-members, got 5; give more non-members or a higher --fpr"
    )


@pytest.mark.parametrize(
    ("fpr", "need"),
    [(0.01, 100), (0.001, 1000), (1e-5, 100000), (0.3, 4), (0.5, 2), (1 / 49, 49), (0.99, 2)],
)
def test_min_non_members(fpr: float, need: int) -> None:
    from dlsec.attacks.privacy._metrics import min_non_members

    assert min_non_members(fpr) == need  # 1 / (1/49) is 49.00000000000001: still 49


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, 1.5])
def test_min_non_members_refuses_rates_outside_zero_one(fpr: float) -> None:
    from dlsec.attacks.privacy._metrics import min_non_members

    with pytest.raises(UsageError) as exc:
        min_non_members(fpr)
    assert str(exc.value) == f"a false positive rate must be in (0, 1), got {fpr}"


def test_clopper_pearson_closed_forms() -> None:
    # k = 0: upper a^(1/n) from 1; k = n: lower a^(1/n); k = 1, n = 2: Beta(1, 2) and Beta(2, 1).
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    lo, hi = clopper_pearson(1, 2, confidence=0.9)
    assert lo == pytest.approx(1 - 0.95**0.5, abs=1e-12) and hi == pytest.approx(0.95**0.5, abs=1e-12)
    assert clopper_pearson(0, 1) == (0.0, pytest.approx(0.975))
    assert clopper_pearson(1, 1) == (pytest.approx(0.025), 1.0)


@pytest.mark.parametrize(("k", "n"), [(0, 0), (-1, 5), (6, 5), (1, 0)])
def test_clopper_pearson_refuses_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(UsageError) as exc:
        clopper_pearson(k, n)
    assert str(exc.value) == f"need 0 <= k <= n and n >= 1, got k={k}, n={n}"


def test_roc_curve_and_auc_refuse_bad_scores_exactly() -> None:
    from dlsec.attacks.privacy._metrics import roc_curve

    fpr, tpr, thr = roc_curve(MEMBERS, OTHERS)
    assert fpr.tolist() == [0.0, 0.0, 0.0, 0.25, 0.5, 0.5, 0.5, 0.75, 1.0]
    assert tpr.tolist() == [0.0, 0.25, 0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert thr[1:].tolist() == [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.05]
    with pytest.raises(UsageError) as exc:
        membership_metrics(np.array([]), OTHERS)
    assert str(exc.value) == "membership metrics need at least one member and one non-member"
    with pytest.raises(UsageError) as exc:
        membership_metrics(MEMBERS, np.array([0.1, np.nan]))
    assert str(exc.value) == "membership scores must be finite"


def test_metrics_flatten_their_inputs() -> None:
    m = membership_metrics(MEMBERS.reshape(2, 2), OTHERS.reshape(4, 1), fprs=(0.25,), bootstrap=0)
    assert (m.n_members, m.n_non_members, m.auc) == (4, 4, pytest.approx(12 / 16))
    # the resampling draws rows of the flattened scores too
    flat = membership_metrics(MEMBERS, OTHERS, fprs=(0.25,), bootstrap=30)
    assert membership_metrics(MEMBERS.reshape(2, 2), OTHERS.reshape(2, 2), fprs=(0.25,), bootstrap=30) == flat
    assert membership_metrics(MEMBERS.reshape(4, 1), OTHERS.reshape(1, 4), fprs=(0.25,), bootstrap=30) == flat


def test_scores_are_read_as_numbers_everywhere() -> None:
    # "0.5" and "0.50" are one score: a resample holding only them and 0.5 is degenerate
    # (skipped), as it is for the same scores given as floats.
    members, others = ["1.0", "0.5", "0.50"], ["0.5", "0.50", "0.5"]
    want = membership_metrics(
        np.array([1.0, 0.5, 0.5]), np.array([0.5, 0.5, 0.5]), fprs=(0.5,), bootstrap=80, seed=3
    )
    got = membership_metrics(np.array(members), np.array(others), fprs=(0.5,), bootstrap=80, seed=3)
    assert got == want
    assert (
        membership_metrics(np.array(members), np.array([0.5, 0.5, 0.5]), fprs=(0.5,), bootstrap=80, seed=3)
        == want
    )
    assert (
        membership_metrics(np.array([1.0, 0.5, 0.5]), np.array(others), fprs=(0.5,), bootstrap=80, seed=3)
        == want
    )


def test_defaults_are_200_resamples_seed_0_at_95_percent() -> None:
    draw = np.random.default_rng(5)
    members, others = draw.normal(0.5, 1.0, 30), draw.normal(0.0, 1.0, 30)
    default = membership_metrics(members, others, fprs=(0.5,))
    explicit = membership_metrics(members, others, fprs=(0.5,), bootstrap=200, seed=0, confidence=0.95)
    assert default == explicit and default.confidence == 0.95
    assert default != membership_metrics(members, others, fprs=(0.5,), bootstrap=199, seed=0)
    assert default != membership_metrics(members, others, fprs=(0.5,), bootstrap=200, seed=1)


def test_a_rate_one_tolerance_below_an_fpr_reaches_it() -> None:
    # 0.25 - 1e-12 + 1e-12 is exactly 0.25 in floating point, which 2 of 8 non-members reach.
    others = np.array([0.9, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    rate = 0.25 - 1e-12
    m = membership_metrics(np.array([0.85, 0.75]), others, fprs=(rate,), bootstrap=0)
    row = m.tpr_at_fpr[f"{rate:g}"]
    assert (row["tpr"], row["threshold"], row["false_positives"]) == (1.0, 0.75, 2)


def test_log_spaced_roc_reads_the_first_point_below_the_curve() -> None:
    # A curve that starts above FPR 0: the grid's 0 lies before every point and reads the first.
    roc = _log_spaced_roc(np.array([0.5, 1.0]), np.array([0.3, 1.0]))
    assert roc["fpr"][0] == 0.5 and roc["tpr"][0] == 0.3
    assert roc["fpr"][1] == 0.5 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0


def test_bootstrap_quantiles_of_continuous_scores() -> None:
    # Scores without ties: every resampled AUC differs, so the interval's ends move with the
    # quantile levels themselves (5% and 95% at confidence 0.9).
    draw = np.random.default_rng(9)
    members, others = draw.normal(0.4, 1.0, 30), draw.normal(0.0, 1.0, 25)
    m = membership_metrics(members, others, fprs=(0.2,), bootstrap=50, seed=4, confidence=0.9)
    rng = np.random.default_rng(4)
    aucs, tprs = [], []
    for _ in range(50):
        bm = members[rng.integers(0, 30, 30)]
        bo = others[rng.integers(0, 25, 25)]
        aucs.append(float((bm[:, None] > bo[None, :]).mean() + 0.5 * (bm[:, None] == bo[None, :]).mean()))
        tprs.append(_best_tpr(bm, bo, 0.2))
    assert m.auc_ci == pytest.approx((np.quantile(aucs, 0.05), np.quantile(aucs, 0.95)), abs=1e-12)
    row = m.tpr_at_fpr["0.2"]
    assert row["bootstrap_ci"] == pytest.approx([np.quantile(tprs, 0.05), np.quantile(tprs, 0.95)], abs=1e-12)
    assert m.auc_ci != pytest.approx((np.quantile(aucs, 0.05), np.quantile(aucs, 1 - 0.1 / 3)), abs=1e-12)


def test_roc_curve_reads_text_and_shaped_scores_as_numbers() -> None:
    from dlsec.attacks.privacy._metrics import roc_curve

    want = roc_curve(MEMBERS, OTHERS)
    for got in (
        roc_curve(np.array([str(v) for v in MEMBERS]), np.array([str(v) for v in OTHERS])),
        roc_curve(MEMBERS.reshape(2, 2), OTHERS.reshape(2, 2)),
    ):
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a, b)


def test_the_reported_roc_is_the_log_spaced_curve() -> None:
    from dlsec.attacks.privacy._metrics import roc_curve

    m = membership_metrics(MEMBERS, OTHERS, fprs=(0.25,), bootstrap=0)
    fpr, tpr, _ = roc_curve(MEMBERS, OTHERS)
    assert m.roc == _log_spaced_roc(fpr, tpr) and len(m.roc["fpr"]) == 201
