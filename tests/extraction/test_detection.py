"""The extraction detector: PRADA against its definition and scipy, each signal, safety properties."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.stats
import torch
from pydantic import ValidationError

from dlsec.attacks.extraction import Copycat, KnockoffNets, mixed_pool
from dlsec.errors import UsageError
from dlsec.monitor.extraction import (
    CoverageConfig,
    DetectorConfig,
    DistributionConfig,
    ExtractionDetector,
    PradaConfig,
    VolumeConfig,
    shapiro_w,
)

PRADA_ONLY = DetectorConfig(
    volume=VolumeConfig(enabled=False),
    coverage=CoverageConfig(enabled=False),
    distribution=DistributionConfig(enabled=False),
)


def stream(detector: ExtractionDetector, client: str, x: np.ndarray, answers: np.ndarray, batch: int = 1):
    """Feed a stream batch by batch; return the query index at which each signal first alerted."""
    first: dict[str, int] = {}
    for start in range(0, len(x), batch):
        for alert in detector.observe(client, x[start : start + batch], answers[start : start + batch]):
            first.setdefault(alert.signal, alert.query_index)
    return first


@pytest.mark.filterwarnings("ignore:scipy.stats.shapiro")
@pytest.mark.parametrize("n", [3, 20, 150, 2000, 6000])
def test_shapiro_w_is_scipys_statistic(n):
    rng = np.random.default_rng(n)
    values = rng.gamma(2.0, size=n)
    within = values[np.abs(values - values.mean()) <= 3 * values.std()]
    assert shapiro_w(values) == pytest.approx(scipy.stats.shapiro(within).statistic, rel=1e-12)


def test_shapiro_w_drops_outliers_beyond_three_std_before_testing():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=300), [40.0]])
    assert shapiro_w(values) == pytest.approx(scipy.stats.shapiro(values[:-1]).statistic)
    assert shapiro_w(values) > 0.98 > scipy.stats.shapiro(values).statistic
    assert shapiro_w(np.ones(50)) == 1.0 and shapiro_w(np.array([1.0, 2.0])) == 1.0


def test_prada_growing_set_and_distances_follow_the_algorithm():
    """A hand-checked 1-D stream: which queries join the growing set and what D holds."""
    det = ExtractionDetector(PRADA_ONLY.model_copy(update={"prada": PradaConfig(min_distances=20)}))
    xs = np.array([[0.0], [1.0], [3.0], [3.5], [10.0]], dtype=np.float32)
    for x in xs:
        det.observe("c", x[None], np.array([0]))
    client = det._clients["c"]
    # 0 starts G; 1 (d=1 > T=0) joins; 3 (d=2 > T=mean-std of {1}=1) joins; 3.5 (d=0.5 < T of {1,2}
    # = 1.5-0.5=1) does not; 10 (d=7 to 3) joins.
    assert list(client.distances) == [1.0, 2.0, 0.5, 7.0]
    assert client.growing_n[0] == 4
    assert client.growing[0][:4, 0].tolist() == [0.0, 1.0, 3.0, 10.0]
    # Another class starts its own growing set and adds no distance.
    det.observe("c", np.array([[0.2]], np.float32), np.array([1]))
    assert len(client.distances) == 4 and client.growing_n[1] == 1


def test_prada_flags_a_jbda_stream_and_not_the_natural_test_set(target, splits, jbda_stream):
    train, test = splits
    natural = ExtractionDetector(PRADA_ONLY)
    assert stream(natural, "benign", test.x, target.predict(torch.from_numpy(test.x)).numpy()) == {}
    w_natural = natural.stats("benign")["prada_w"]
    attacker = ExtractionDetector(PRADA_ONLY)
    x, answers = jbda_stream
    first = stream(attacker, "jbda", x, answers)
    assert "prada" in first and first["prada"] <= 200
    assert attacker.stats("jbda")["prada_w"] < PradaConfig().delta < w_natural
    assert attacker.action("jbda") == "block" and natural.action("benign") == "allow"


def test_full_detector_flags_each_attack_early_and_never_the_test_set(target, splits, ood_pool, jbda_stream):
    train, test = splits
    benign = ExtractionDetector().fit(train.x)
    probs = target.probs(torch.from_numpy(test.x)).numpy()
    assert stream(benign, "benign", test.x, probs, batch=7) == {}
    assert benign.action("benign") == "allow"
    # The same client sending the test set again (exact repeats) stays unflagged: repeats tell an
    # attacker nothing new and are not samples of PRADA's distance distribution.
    assert stream(benign, "benign", test.x, probs, batch=7) == {}
    assert benign.stats("benign")["prada_w"] > 0.95

    streams = {"jbda": jbda_stream}
    for name, attack, pool in (
        ("copycat", Copycat(budget=150, epochs=1, min_steps=1), ood_pool),
        (
            "knockoff",
            KnockoffNets(budget=150, strategy="adaptive", epochs=1, min_steps=1, online_epochs=1),
            mixed_pool(train.x, ood_pool),
        ),
    ):
        log: list[tuple[np.ndarray, np.ndarray]] = []
        attack(target, pool, on_query=lambda x, a, log=log: log.append((x, a)))
        streams[name] = (np.concatenate([x for x, _ in log]), np.concatenate([a for _, a in log]))
    for name, (x, answers) in streams.items():
        det = ExtractionDetector().fit(train.x)
        first = stream(det, name, x, answers, batch=10)
        assert first and min(first.values()) <= 60, (name, first)
        assert det.action(name) == "block"


def test_volume_throttles_within_the_window_and_clears_after_it():
    now = [0.0]
    det = ExtractionDetector(
        DetectorConfig(volume=VolumeConfig(window_seconds=10, max_queries=5)), clock=lambda: now[0]
    )
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    labels = np.arange(8) % 3
    assert det.observe("k", x[:5], labels[:5]) == []
    (alert,) = det.observe("k", x[5:6], labels[5:6])
    assert (alert.signal, alert.action, alert.query_index, alert.value) == ("volume", "throttle", 6, 6.0)
    assert det.action("k") == "throttle" and det.observe("k", x[6:7], labels[6:7]) == []  # one alert per trip
    now[0] = 11.0
    det.observe("k", x[7:8], labels[7:8])
    assert det.action("k") == "allow" and det.action("someone-else") == "allow"


def test_coverage_alerts_on_a_stream_sent_to_one_class():
    det = ExtractionDetector(
        DetectorConfig(coverage=CoverageConfig(min_queries=20, window=40), num_classes=10)
    )
    x = np.random.default_rng(0).random((30, 6)).astype(np.float32)
    alerts = det.observe("k", x, np.zeros(30, dtype=np.int64))
    coverage = [a for a in alerts if a.signal == "coverage"]
    assert len(coverage) == 1 and coverage[0].query_index == 20 and coverage[0].value == 0.0
    uniform = ExtractionDetector(
        DetectorConfig(coverage=CoverageConfig(min_queries=20, window=40), num_classes=10)
    )
    uniform.observe("k", x, np.arange(30) % 10)
    assert uniform.stats("k")["coverage_entropy"] == pytest.approx(1.0)


def test_block_is_sticky_until_reset():
    det = ExtractionDetector(
        DetectorConfig(volume=VolumeConfig(max_queries=2, action="block")), clock=lambda: 0.0
    )
    x = np.zeros((3, 2), np.float32) + np.arange(3, dtype=np.float32)[:, None]
    det.observe("k", x, np.array([0, 1, 0]))
    assert det.action("k") == "block"
    det.config = det.config.model_copy(update={"volume": VolumeConfig(max_queries=100, action="block")})
    det.observe("k", x[:1] + 5, np.array([1]))
    assert det.stats("k")["tripped"] == [] and det.action("k") == "block"
    det.reset("k")
    assert det.action("k") == "allow"


def test_memory_stays_bounded():
    cfg = DetectorConfig(
        prada=PradaConfig(max_growing_per_class=8, max_distances=50, min_distances=20),
        volume=VolumeConfig(max_queries=30),
        max_clients=3,
    )
    det = ExtractionDetector(cfg, clock=lambda: 0.0)
    rng = np.random.default_rng(0)
    det.observe("a", rng.random((400, 5)).astype(np.float32) * 10, rng.integers(0, 3, 400))
    client = det._clients["a"]
    assert max(client.growing_n.values()) <= 8 and all(g.shape[0] == 8 for g in client.growing.values())
    assert len(client.distances) == 50 and len(client.times) == 31
    for name in ("b", "c", "d"):
        det.observe(name, rng.random((2, 5)).astype(np.float32), np.array([0, 1]))
    assert det.clients == 3 and det.stats("a")["queries"] == 0  # the least recently seen is forgotten


def test_large_inputs_are_projected_to_project_dim():
    det = ExtractionDetector(DetectorConfig(project_dim=16))
    det.observe("k", np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32), np.array([0, 0, 0]))
    assert det._clients["k"].growing[0].shape[1] == 16


def test_concurrent_observations_are_all_counted():
    det = ExtractionDetector()
    rng = np.random.default_rng(0)
    x = rng.random((200, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 200)

    def worker() -> None:
        for i in range(0, 200, 5):
            det.observe("shared", x[i : i + 5], labels[i : i + 5])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert det.stats("shared")["queries"] == 800


def test_config_and_inputs_are_validated():
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"prada": {"delta": 1.5}})
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"prada": {"unknown": 1}})
    assert DetectorConfig.model_validate({"volume": {"action": "block"}}).volume.action == "block"
    det = ExtractionDetector()
    with pytest.raises(UsageError, match="predictions"):
        det.observe("k", np.zeros((3, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(UsageError, match="NaN"):
        det.observe("k", np.full((1, 4), np.nan, np.float32), np.zeros(1, np.int64))
    det.observe("k", np.zeros((1, 4), np.float32), np.zeros(1, np.int64))
    with pytest.raises(UsageError, match="inputs of 4"):
        det.observe("k", np.zeros((1, 5), np.float32), np.zeros(1, np.int64))
    with pytest.raises(UsageError, match="at least 10"):
        ExtractionDetector().fit(np.zeros((3, 4), np.float32))


def test_distribution_flags_small_steps_from_earlier_queries_but_not_exact_repeats(splits):
    train, test = splits
    only = DetectorConfig(
        prada=PradaConfig(enabled=False),
        volume=VolumeConfig(enabled=False),
        coverage=CoverageConfig(enabled=False),
    )
    det = ExtractionDetector(only).fit(train.x)
    low, high = det.reference_thresholds_
    assert 0 < low < high
    natural = test.x[:40]
    labels = np.arange(40) % 10
    assert det.observe("k", natural, labels) == []
    assert det.observe("k", natural, labels) == []  # a retry of the same rows: nothing new
    steps = np.clip(natural + np.float32(low / 16), 0.0, 1.0)  # L2 step below the natural 1% quantile
    alerts = det.observe("k", steps, labels)
    assert [a.signal for a in alerts] == ["distribution"] and det.action("k") == "block"


def test_candidate_distances_equal_the_direct_computation_repeats_included():
    from dlsec.monitor.extraction import _exact_distances

    rng = np.random.default_rng(3)
    rows = rng.random((500, 64), dtype=np.float32) * 16
    v = rows[17].copy()  # an exact repeat: distance 0 must survive the norm shortcut
    sq = (rows * rows).sum(axis=1)
    direct = np.sqrt(((rows - v) ** 2).sum(axis=1))
    nearest = _exact_distances(rows, sq, v, float(v @ v), None)
    assert nearest.min() == 0.0 == direct.min()
    w = rng.random(64, dtype=np.float32) * 16
    d = np.sqrt(((rows - w) ** 2).sum(axis=1))
    assert _exact_distances(rows, sq, w, float(w @ w), None).min() == d.min()
    bound = float(np.quantile(d, 0.1))
    within = _exact_distances(rows, sq, w, float(w @ w), bound * bound)
    assert set(d[d <= bound].tolist()) <= set(within.tolist())
