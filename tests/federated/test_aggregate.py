"""Aggregation rules: known answers on hand-made updates, Krum against brute force, f = 0 on
honest clients, and Flower's own strategies on the same inputs."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from dlsec.errors import UsageError
from dlsec.federated import (
    AGGREGATORS,
    Bulyan,
    FLTrust,
    FoolsGold,
    Krum,
    Median,
    MultiKrum,
    NormClipDP,
    TrimmedMean,
    build_aggregator,
    krum_scores,
)
from dlsec.federated import FedAvg as OurFedAvg


def test_median_known_answers():
    u = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, -100.0]])
    assert Median()(u).update.tolist() == [2.0, 10.0]
    even = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    assert Median()(even).update.tolist() == [2.5]  # the mean of the middle two, as NumPy


def test_trimmed_mean_cuts_the_extremes_and_names_them():
    u = torch.tensor([[1.0, -5.0], [2.0, 2.0], [3.0, 3.0], [100.0, 100.0]])
    result = TrimmedMean(beta=0.25)(u)
    assert result.update.tolist() == [2.5, 2.5]
    assert result.excluded == {0, 3}


def test_krum_picks_the_centre_of_the_cluster():
    u = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, -0.1], [5.0, 5.0], [6.0, 6.0]])
    result = Krum(num_malicious=2)(u)
    assert result.update.tolist() == [0.0, 0.0]
    assert result.excluded == {1, 2, 3, 4, 5, 6}
    multi = MultiKrum(num_malicious=2)(u)
    assert multi.excluded == {5, 6}
    assert torch.allclose(multi.update, u[:5].mean(0))


def test_krum_score_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(9, 6, generator=g, dtype=torch.float64)
    f = 2
    brute = []
    for i in range(9):
        d = sorted(float(((u[i] - u[j]) ** 2).sum()) for j in range(9) if j != i)
        brute.append(sum(d[: 9 - f - 2]))
    assert np.allclose(krum_scores(u, f).numpy(), brute, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_rule_returns_the_mean_of_identical_honest_clients(name):
    g = torch.Generator().manual_seed(0)
    centre = torch.linspace(-1, 1, 40)
    u = centre + 0.001 * torch.randn(12, 40, generator=g)
    rule = build_aggregator(name, num_clients=12, malicious_fraction=0.0)
    result = rule(u, reference=centre)
    assert torch.allclose(result.update, u.mean(0), atol=0.02), name
    assert result.excluded <= set(range(12))


@pytest.mark.parametrize(
    "name", ["median", "trimmed-mean", "krum", "multi-krum", "bulyan", "fltrust", "flame"]
)
def test_robust_rules_resist_a_large_outlier_that_breaks_fedavg(name):
    g = torch.Generator().manual_seed(2)
    u = torch.ones(12, 20) + 0.05 * torch.randn(12, 20, generator=g)
    u[:2] = -50.0 + torch.randn(2, 20, generator=g)
    rule = build_aggregator(name, num_clients=12, malicious_fraction=2 / 12)
    assert float((OurFedAvg()(u).update - 1).abs().max()) > 5
    assert float((rule(u, reference=torch.ones(20)).update - 1).abs().max()) < 0.3, name


def test_fltrust_excludes_updates_pointing_away_from_the_root_update():
    u = torch.tensor([[1.0, 0.0], [2.0, 0.1], [-1.0, 0.0]])
    result = FLTrust()(u, reference=torch.tensor([1.0, 0.0]))
    assert result.excluded == {2}
    assert float(result.update.norm()) <= 1.0 + 1e-6  # rescaled to the root update's norm


def test_foolsgold_down_weights_sybils_that_repeat_each_other():
    g = torch.Generator().manual_seed(3)
    honest = torch.randn(6, 30, generator=g)
    sybil = torch.ones(30) + 0.01 * torch.randn(3, 30, generator=g)
    u = torch.cat([honest, sybil])
    result = FoolsGold()(u)
    assert {6, 7, 8} <= result.excluded
    assert float(result.weights[6:].sum()) == 0.0


def test_norm_clipping_bounds_each_contribution():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.6, 0.8]])
    result = NormClipDP(clip=1.0, noise=0.0)(u)
    assert result.excluded == {0}  # clipped, hence down-weighted
    assert torch.allclose(result.update, torch.tensor([(0.6 + 0.3 + 0.6) / 3, (0.8 + 0.4 + 0.8) / 3]))


def test_non_finite_updates_are_excluded_not_averaged():
    u = torch.ones(5, 3)
    u[1, 0] = float("nan")
    result = OurFedAvg()(u, client_ids=[10, 11, 12, 13, 14])
    assert result.excluded == {11}
    assert result.update.tolist() == [1.0, 1.0, 1.0]
    assert float(result.weights[1]) == 0.0


@pytest.mark.parametrize(
    "name, n, fraction, message",
    [
        ("krum", 10, 0.4, "at least 11 clients"),
        ("bulyan", 10, 0.2, "at least 11 clients"),
        ("median", 10, 0.5, "honest majority"),
        ("krum", 10, -0.1, "[0, 1)"),
        ("no-such-rule", 10, 0.1, "unknown defence"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(name, n, fraction, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(")", r"\)")) as info:
        build_aggregator(name, num_clients=n, malicious_fraction=fraction)
    assert "\n" not in str(info.value)


def test_krum_refuses_too_few_clients_at_aggregation_time():
    with pytest.raises(UsageError, match="at least 7"):
        Krum(num_malicious=2)(torch.ones(6, 3))


# ----------------------------------------------------------------------------- Flower's strategies


def _replies(weights: list[list[np.ndarray]], counts: list[int]) -> list[Message]:
    out = []
    for i, (arrays, count) in enumerate(zip(weights, counts, strict=True)):
        meta = Metadata(
            run_id=1,
            message_id=f"m{i}",
            src_node_id=i + 1,
            dst_node_id=0,
            reply_to_message_id="x",
            group_id="1",
            created_at=time.time(),
            ttl=60.0,
            message_type="train",
        )
        content = RecordDict(
            {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": count})}
        )
        out.append(Message(content=content, metadata=meta))
    return out


def _flower(strategy, base, updates, counts):
    layers = [base[:6].reshape(2, 3), base[6:]]
    weights = []
    for u in updates.numpy():
        w = base + u
        weights.append([w[:6].reshape(2, 3).astype(np.float32), w[6:].astype(np.float32)])
    arrays, _ = strategy.aggregate_train(1, _replies(weights, counts))
    assert [a.shape for a in arrays.to_numpy_ndarrays()] == [layer.shape for layer in layers]
    flat = np.concatenate([a.ravel() for a in arrays.to_numpy_ndarrays()])
    return torch.from_numpy(flat - base)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(4)
    base = np.linspace(-1, 1, 10).astype(np.float64)
    updates = torch.randn(11, 10, generator=g) * 0.1
    updates[0] += 3.0  # two outliers, far from each other too
    updates[1] -= 3.0
    return base, updates


@pytest.mark.parametrize(
    "ours, theirs, counts",
    [
        (OurFedAvg(), flwr_strategy.FedAvg(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (Median(), flwr_strategy.FedMedian(), [1] * 11),
        (TrimmedMean(beta=0.2), flwr_strategy.FedTrimmedAvg(beta=0.2), [1] * 11),
        (Krum(num_malicious=2), flwr_strategy.Krum(num_malicious_nodes=2), [5] * 11),
        # Flower weights Multi-Krum's mean by example counts; with equal counts both are the paper's
        (
            MultiKrum(num_malicious=2, num_selected=5),
            flwr_strategy.MultiKrum(num_malicious_nodes=2, num_nodes_to_select=5),
            [5] * 11,
        ),
    ],
    ids=["fedavg", "median", "trimmed-mean", "krum", "multi-krum"],
)
def test_flower_strategies_agree_with_ours(inputs, ours, theirs, counts):
    base, updates = inputs
    expected = _flower(theirs, base, updates, counts)
    got = ours(updates, weights=counts).update
    assert torch.allclose(got.double(), expected.double(), atol=1e-5)


def test_flower_multikrum_differs_from_the_paper_with_unequal_counts(inputs):
    base, updates = inputs
    counts = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 50]
    theirs = _flower(
        flwr_strategy.MultiKrum(num_malicious_nodes=2, num_nodes_to_select=5), base, updates, counts
    )
    ours = MultiKrum(num_malicious=2, num_selected=5)(updates, weights=counts).update
    selected = sorted(set(range(11)) - MultiKrum(num_malicious=2, num_selected=5)(updates).excluded)
    assert torch.allclose(ours, updates[selected].mean(0))
    if 10 in selected:
        assert not torch.allclose(ours.double(), theirs.double(), atol=1e-5)


def test_permuting_clients_does_not_change_coordinate_rules(inputs):
    _, updates = inputs
    perm = torch.tensor(list(itertools.islice(itertools.cycle(range(10, -1, -1)), 11)))
    # (not Bulyan: late in its recursion Krum scores by one neighbour, and two mutual nearest
    # neighbours tie exactly, so the pick follows the order)
    for rule in (Median(), TrimmedMean(beta=0.2), Krum(num_malicious=2)):
        assert torch.allclose(rule(updates).update, rule(updates[perm]).update, atol=1e-6)


def test_bulyan_agrees_with_flower_when_the_selection_is_clear():
    """A tight cluster of n - 2f honest updates, two looser honest ones and two outliers: both
    selections pick the cluster, and the trimmed mean around the median is the same."""
    g = torch.Generator().manual_seed(6)
    base = np.linspace(-1, 1, 10)
    updates = torch.cat(
        [
            0.01 * torch.randn(7, 10, generator=g),
            torch.randn(2, 10, generator=g),
            torch.stack([torch.full((10,), 4.0), torch.full((10,), -4.0)]),
        ]
    )
    ours = Bulyan(num_malicious=2)(updates)
    theirs = _flower(flwr_strategy.Bulyan(num_malicious_nodes=2), base, updates, [1] * 11)
    assert ours.excluded == {7, 8, 9, 10}
    assert torch.allclose(ours.update.double(), theirs.double(), atol=1e-5)


def test_bulyan_selects_recursively_unlike_flowers_one_shot_ranking():
    """Two colluding outliers: the paper's recursive Krum, re-scored on the shrinking set, picks
    them last (Flower's one-shot ranking never does); the per-coordinate trimming around the
    median then still keeps them out of the aggregate."""
    g = torch.Generator().manual_seed(5)
    base = np.linspace(-1, 1, 10)
    updates = torch.randn(11, 10, generator=g) * 0.1
    updates[:2] = 3.0 + 0.01 * torch.randn(2, 10, generator=g)
    ours = Bulyan(num_malicious=2)(updates)
    theirs = _flower(flwr_strategy.Bulyan(num_malicious_nodes=2), base, updates, [1] * 11)
    assert not {0, 1} <= ours.excluded
    assert float((ours.update - updates[2:].mean(0)).abs().max()) < 0.15
    assert float((theirs.float() - updates[2:].mean(0)).abs().max()) < 0.15
