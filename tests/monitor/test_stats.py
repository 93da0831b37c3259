"""Known answers: KS p-values against SciPy, MMD against a naive computation, PSI and ECE by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dlsec.errors import NotFittedError, UsageError
from dlsec.monitor import (
    ConfidenceDrift,
    KSDrift,
    LabelDrift,
    MMDDrift,
    PerformanceDrift,
    PSIDrift,
    Window,
    expected_calibration_error,
    population_stability_index,
    register_detector,
)
from dlsec.monitor.drift import combine_pvalues, median_heuristic_gamma, mmd2_permutation_test, mmd2_unbiased


@pytest.mark.parametrize("method", ["exact", "asymp", "auto"])
def test_ks_p_values_agree_with_scipy(method):
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(120, 4)), rng.normal(0.3, 1.2, size=(45, 4))
    result = KSDrift(method=method, correction="bonferroni").fit(ref).score(cur)
    expected = [stats.ks_2samp(ref[:, f], cur[:, f], method=method) for f in range(4)]
    assert result.details["p_values"] == pytest.approx([e.pvalue for e in expected], rel=1e-12)
    assert result.details["statistics"] == pytest.approx([e.statistic for e in expected])
    assert result.p_value == pytest.approx(min(1.0, 4 * min(e.pvalue for e in expected)))
    # The cheap statistic used for online calibration is the same largest KS distance.
    assert KSDrift().fit(ref).statistic(cur) == pytest.approx(max(e.statistic for e in expected))


def test_multiple_testing_corrections_by_hand():
    p = np.array([0.5, 0.02, 0.01, 0.03])
    assert combine_pvalues(p, "bonferroni") == pytest.approx(0.04)
    assert combine_pvalues(p, "fdr") == pytest.approx(0.04)  # 4*0.01/1, 4*0.02/2, 4*0.03/3
    p = np.array([0.04, 0.001, 0.045])
    assert combine_pvalues(p, "bonferroni") == pytest.approx(0.003)
    assert combine_pvalues(np.array([0.02, 0.021, 0.022]), "fdr") == pytest.approx(0.022)
    assert combine_pvalues(np.array([0.02, 0.021, 0.022]), "bonferroni") == pytest.approx(0.06)
    with pytest.raises(UsageError):
        combine_pvalues(p, "holm")  # type: ignore[arg-type]


def _naive_mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    def k(a, b):
        return math.exp(-gamma * float(((a - b) ** 2).sum()))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_statistic_and_permutations_match_a_naive_computation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 3)), rng.normal(0.5, 1.0, size=(11, 3))
    gamma = 0.3
    xt, yt = torch.tensor(x), torch.tensor(y)
    assert mmd2_unbiased(xt, yt, gamma) == pytest.approx(_naive_mmd2(x, y, gamma), rel=1e-9)
    observed, p_value, perms = mmd2_permutation_test(xt, yt, gamma, n_permutations=30, seed=5)
    assert observed == pytest.approx(_naive_mmd2(x, y, gamma), rel=1e-9)
    # Re-draw the same permutations and score each split naively.
    z = np.concatenate([x, y])
    ranks = torch.rand(30, len(z), generator=torch.Generator().manual_seed(5)).argsort(dim=1).numpy()
    naive = [_naive_mmd2(z[r[:15]], z[np.sort(r[15:])], gamma) for r in ranks]
    assert perms.numpy() == pytest.approx(np.array(naive), rel=1e-7, abs=1e-12)
    assert p_value == pytest.approx((1 + sum(v >= observed - 1e-12 for v in naive)) / 31)


def test_median_heuristic_and_detector_statistic():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(40, 3))
    d2 = ((ref[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    median = np.median(d2[~np.eye(40, dtype=bool)])
    assert median_heuristic_gamma(torch.tensor(ref)) == pytest.approx(1 / median, rel=1e-6)
    det = MMDDrift(device="cpu", max_reference=None).fit(ref)
    assert det.gamma_ == pytest.approx(1 / median, rel=1e-5)
    cur = rng.normal(0.2, 1.0, size=(12, 3))
    assert det.statistic(cur) == pytest.approx(_naive_mmd2(ref, cur, det.gamma_), rel=1e-4, abs=1e-6)
    assert det.score(cur).statistic == pytest.approx(det.statistic(cur), rel=1e-4, abs=1e-6)


def test_psi_and_ece_by_hand():
    expected = np.array([0.25, 0.25, 0.5])
    actual = np.array([0.3, 0.3, 0.4])
    hand = 2 * 0.05 * math.log(0.3 / 0.25) + (-0.1) * math.log(0.4 / 0.5)
    assert population_stability_index(expected, actual) == pytest.approx(hand)  # 0.040546
    assert population_stability_index(np.array([50, 50, 100]), np.array([30, 30, 40])) == pytest.approx(hand)
    assert population_stability_index(expected, expected) == 0.0
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    # bins of width 0.1: 0.9 -> right, 0.8 -> wrong, 0.7 -> right, 0.55 -> right
    hand_ece = 0.25 * abs(1 - 0.9) + 0.25 * abs(0 - 0.8) + 0.25 * abs(1 - 0.7) + 0.25 * abs(1 - 0.55)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(hand_ece)


def _probs(labels: np.ndarray, k: int, confidence: float) -> np.ndarray:
    p = np.full((len(labels), k), (1 - confidence) / (k - 1))
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_prediction_detectors_fire_on_shifted_predictions_only():
    rng = np.random.default_rng(3)
    ref_labels = rng.integers(0, 4, 400)
    ref = Window(probs=_probs(ref_labels, 4, 0.9), y=ref_labels)
    same_labels = rng.integers(0, 4, 200)
    same = Window(probs=_probs(same_labels, 4, 0.9), y=same_labels)
    skewed_labels = rng.choice(4, 200, p=[0.7, 0.1, 0.1, 0.1])
    skewed = Window(probs=_probs(skewed_labels, 4, 0.9), y=skewed_labels)
    unsure = Window(probs=_probs(same_labels, 4, 0.5), y=same_labels)
    wrong = Window(probs=_probs((same_labels + (rng.random(200) < 0.3)) % 4, 4, 0.9), y=same_labels)
    for det, fires_on in [
        (LabelDrift(), skewed),
        (PSIDrift(threshold=0.1), skewed),
        (ConfidenceDrift(), unsure),
        (PerformanceDrift(), wrong),
    ]:
        det.fit(ref)
        assert not det.score(same).drift, det
        assert det.score(fires_on).drift, det
    result = LabelDrift().fit(ref).score(skewed)
    assert result.details["psi"] == pytest.approx(
        population_stability_index(
            np.bincount(ref_labels, minlength=4), np.bincount(skewed_labels, minlength=4)
        )
    )


def test_detectors_refuse_to_score_before_fit_and_duplicates():
    with pytest.raises(NotFittedError):
        KSDrift().score(np.zeros((3, 2)))
    with pytest.raises(UsageError, match="needs labels"):
        PerformanceDrift().fit(Window(probs=np.eye(2)[[0, 1, 0]]))
    with pytest.raises(UsageError, match="already registered"):
        register_detector("ks")(KSDrift)
