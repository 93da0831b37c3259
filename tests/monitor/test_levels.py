"""False-alarm rates match the configured level; clearly shifted data makes the detectors fire."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import stats

from dlsec.monitor import ClassifierDrift, KSDrift, MMDDrift, OnlineMonitor, PSIDrift, Window


def _interval(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.999, method="exact")
    return ci.low, ci.high


def test_mmd_permutation_test_rejects_at_its_level_on_reference_data():
    rng = np.random.default_rng(1)
    windows, alpha = 300, 0.1
    rejections = sum(
        MMDDrift(alpha=alpha, n_permutations=99, seed=i, device="cpu")
        .fit(rng.normal(size=(100, 4)))
        .score(rng.normal(size=(30, 4)))
        .drift
        for i in range(windows)
    )
    low, high = _interval(rejections, windows)
    assert low <= alpha <= high, rejections


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_ks_never_rejects_above_its_level(correction):
    # KS on a discrete statistic is conservative: the level is an upper bound.
    rng = np.random.default_rng(2)
    windows, alpha = 300, 0.1
    rejections = sum(
        KSDrift(alpha=alpha, correction=correction, method="exact")
        .fit(rng.normal(size=(100, 4)))
        .score(rng.normal(size=(30, 4)))
        .drift
        for _ in range(windows)
    )
    low, _ = _interval(rejections, windows)
    assert low <= alpha, rejections
    assert rejections > 0.3 * alpha * windows  # not vacuous either


def test_the_classifier_test_never_rejects_above_its_level():
    # pooled out-of-fold predictions gave an anti-conservative binomial p-value (about 0.12 at 0.05)
    rng = np.random.default_rng(3)
    windows, alpha = 400, 0.1
    rejections = sum(
        ClassifierDrift(alpha=alpha, seed=i)
        .fit(rng.normal(size=(100, 4)))
        .score(rng.normal(size=(60, 4)))
        .drift
        for i in range(windows)
    )
    low, _ = _interval(rejections, windows)
    assert low <= alpha, rejections
    shifted = rng.normal(size=(60, 4))
    shifted[:, 0] += 2.0
    assert ClassifierDrift().fit(rng.normal(size=(100, 4))).score(shifted).drift


@pytest.mark.parametrize("make", [lambda: KSDrift(), lambda: MMDDrift(device="cpu")])
def test_online_false_alarm_rate_matches_the_stated_run_length(make):
    """Non-overlapping windows (stride == window): checks are independent, so the number of
    false alarms over many windows is binomial with p = stride / ert."""
    rng = np.random.default_rng(3)
    monitor = OnlineMonitor(make(), window=50, stride=50, ert=500, n_simulations=3000, seed=0)
    monitor.fit(rng.normal(size=(2000, 3)))
    assert monitor.alpha_window_ == pytest.approx(0.1)
    checks = 400
    alarms = sum(len(monitor.update(rng.normal(size=(50, 3)))) for _ in range(checks))
    assert monitor.n_checks_ == checks
    low, high = _interval(alarms, checks)
    assert low <= 0.1 <= high, alarms


def test_online_monitor_alarms_soon_after_a_shift_and_counts_every_example():
    rng = np.random.default_rng(4)
    monitor = OnlineMonitor(MMDDrift(device="cpu"), window=40, stride=10, ert=2000, seed=1)
    monitor.fit(rng.normal(size=(800, 2)))
    assert monitor.alpha_window_ == pytest.approx(10 / 2000)
    quiet = sum(len(monitor.update(rng.normal(size=(10, 2)))) for _ in range(20))
    alerts = []
    for _ in range(10):
        alerts += monitor.update(rng.normal(1.5, 1.0, size=(10, 2)))
    assert quiet == 0 and alerts
    assert alerts[0].statistic > alerts[0].threshold and alerts[0].severity == "medium"
    assert monitor.n_seen_ == 300


def test_online_monitor_is_safe_to_feed_from_several_threads():
    rng = np.random.default_rng(5)
    monitor = OnlineMonitor(KSDrift(), window=20, stride=5, ert=200, seed=0).fit(rng.normal(size=(400, 2)))
    batches = [rng.normal(size=(7, 2)) for _ in range(80)]
    errors: list[BaseException] = []

    def feed(part: list[np.ndarray]) -> None:
        try:
            for b in part:
                monitor.update(b)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(batches[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and monitor.n_seen_ == 7 * 80


def test_online_monitor_refuses_a_reference_too_small_to_calibrate():
    from dlsec.errors import UsageError

    with pytest.raises(UsageError, match="reference has"):
        OnlineMonitor(KSDrift(), window=100).fit(np.zeros((150, 2)))
    with pytest.raises(UsageError, match="n_simulations"):
        OnlineMonitor(KSDrift(), window=10, stride=1, ert=10_000, n_simulations=100).fit(np.ones((400, 2)))


@pytest.mark.parametrize(
    "detector",
    [KSDrift(correction="fdr"), MMDDrift(device="cpu"), ClassifierDrift()],
    ids=["ks", "mmd", "classifier"],
)
def test_input_drift_detectors_fire_on_shifted_data_only(detector):
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(300, 5))
    detector.fit(ref)
    assert not detector.score(rng.normal(size=(100, 5))).drift
    shifted = rng.normal(size=(100, 5))
    shifted[:, 2] += 1.0
    assert detector.score(shifted).drift


def test_psi_online_threshold_is_calibrated_not_fixed():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 1000)
    monitor = OnlineMonitor(PSIDrift(), window=30, stride=30, ert=300, seed=0)
    monitor.fit(Window(probs=np.eye(3)[labels]))
    # With 30 predictions a window's PSI is noisy: the calibrated threshold is well above zero.
    assert monitor.threshold_ > 0.01
    assert monitor.update(None, preds=np.eye(3)[np.zeros(30, dtype=int)])
