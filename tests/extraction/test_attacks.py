"""Extraction attacks: agreement within the budget, strict budget accounting, each method's mechanics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlsec.attacks.extraction import (
    EXTRACTION_ATTACKS,
    MIN_POOL,
    BudgetExceededError,
    Copycat,
    JacobianAugmentation,
    KnockoffNets,
    QueryOracle,
    attacker_pool,
    get_extraction_attack,
    mixed_pool,
    out_of_domain_pool,
)
from dlsec.core import InputSpec
from dlsec.errors import UsageError

FAST = {"epochs": 2, "min_steps": 20}


def test_registry_lists_the_three_methods():
    assert set(EXTRACTION_ATTACKS) == {"knockoff", "jbda", "copycat"}
    assert isinstance(get_extraction_attack("JBDA", budget=10), JacobianAugmentation)
    with pytest.raises(UsageError, match="unknown extraction method"):
        get_extraction_attack("nope", budget=10)


# Each method reaches good agreement with the digits CNN within a small budget, and spends
# exactly that budget (never more).
CASES = [
    ("copycat, problem-domain data, labels", lambda: Copycat(budget=300, seed=0), "pd", "decision", 0.9),
    ("knockoff random, mixed transfer set", lambda: KnockoffNets(budget=300, seed=0), "mixed", "score", 0.9),
    (
        "knockoff adaptive, mixed transfer set",
        lambda: KnockoffNets(budget=300, strategy="adaptive", seed=0),
        "mixed",
        "score",
        0.9,
    ),
    ("jbda, 100 seeds", lambda: JacobianAugmentation(budget=300, seeds=100, seed=0), "pd", "score", 0.85),
]


@pytest.mark.parametrize(("label", "make", "data", "access", "level"), CASES, ids=[c[0] for c in CASES])
def test_attack_reaches_agreement_within_budget(target, splits, ood_pool, label, make, data, access, level):
    train, test = splits
    pool = train.x if data == "pd" else mixed_pool(train.x, ood_pool)
    sent = []
    result = make()(target, pool, access=access, test=test, on_query=lambda x, a: sent.append(len(x)))
    assert result.queries == sum(sent) == 300
    assert result.access == access
    assert result.agreement >= level, (label, result.agreement)
    # The clone is scored against the target's own predictions on held-out rows.
    target_pred = target.predict(torch.from_numpy(test.x)).numpy()
    clone_pred = result.clone.predict(torch.from_numpy(test.x)).numpy()
    assert result.agreement == pytest.approx((clone_pred == target_pred).mean())
    assert result.accuracy == pytest.approx((clone_pred == test.y).mean())
    assert result.target_accuracy == pytest.approx((target_pred == test.y).mean())


@pytest.mark.parametrize("method", sorted(EXTRACTION_ATTACKS))
@pytest.mark.parametrize("budget", [1, 57, 257])
def test_budget_is_never_exceeded_through_a_plain_callable(target, splits, method, budget):
    """A query callable (what a gateway client looks like) sees at most ``budget`` rows in total."""
    seen = []

    def fn(x: np.ndarray) -> np.ndarray:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
        seen.append(len(x))
        return target.predict(torch.from_numpy(x)).numpy()

    params = {"seeds": 20, "kappa": 30} if method == "jbda" else {}
    if method == "knockoff":
        params = {"strategy": "adaptive", "round_size": 16}
    attack = get_extraction_attack(method, budget=budget, query_batch=40, **FAST, **params)
    pool = mixed_pool(splits[0].x[:300], out_of_domain_pool(target.spec, 200, seed=0))
    result = attack(fn, pool, spec=target.spec, access="decision")
    assert sum(seen) == result.queries == budget
    assert max(seen) <= 40


def test_oracle_refuses_past_the_budget_before_sending(target, splits):
    calls = []
    oracle = QueryOracle(
        lambda x: calls.append(len(x)) or np.zeros(len(x), np.int64),
        budget=10,
        spec=target.spec,
        access="decision",
    )
    oracle.query(splits[1].x[:6])
    with pytest.raises(BudgetExceededError, match="4 of the budget of 10 left"):
        oracle.query(splits[1].x[:5])
    assert calls == [6] and oracle.queries == 6 and oracle.remaining == 4


def test_oracle_checks_answers_and_access(target, splits):
    x = splits[1].x[:4]
    labels_only = QueryOracle(lambda q: np.zeros(len(q), np.int64), budget=10, spec=target.spec)
    with pytest.raises(UsageError, match="access='decision'"):
        labels_only.query(x)
    not_probs = QueryOracle(lambda q: np.ones((len(q), 10)), budget=10, spec=target.spec)
    with pytest.raises(UsageError, match="probabilities"):
        not_probs.query(x)
    with pytest.raises(UsageError, match="needs spec"):
        QueryOracle(lambda q: q, budget=10)
    with pytest.raises(UsageError, match="decision access, not score"):
        QueryOracle(target.as_decision(), budget=10, access="score")
    with pytest.raises(UsageError, match="budget"):
        QueryOracle(target, budget=0)
    # Decision access hides the probabilities even when the target has them.
    answer = QueryOracle(target, budget=10, access="decision").query(x)
    assert answer.probs is None and answer.labels.tolist() == target.predict(torch.from_numpy(x)).tolist()
    with pytest.raises(UsageError, match="outside the input bounds"):
        QueryOracle(target, budget=10).query(x + 2.0)


def test_pool_and_hyperparameters_are_validated(target):
    with pytest.raises(UsageError, match="empty"):
        Copycat(budget=5)(target, np.empty((0, 1, 8, 8), np.float32))
    with pytest.raises(UsageError, match="query pool"):
        Copycat(budget=5)(target, np.zeros((3, 64), np.float32))
    with pytest.raises(UsageError, match="checkpoints"):
        Copycat(budget=5, checkpoints=[10])
    with pytest.raises(UsageError, match="strategy"):
        KnockoffNets(budget=5, strategy="greedy")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="budget"):
        JacobianAugmentation(budget=0)


def test_same_seed_same_clone(target, splits):
    runs = [Copycat(budget=60, seed=3, **FAST)(target, splits[0].x, test=splits[1]) for _ in range(2)]
    assert runs[0].agreement == runs[1].agreement
    for a, b in zip(runs[0].clone.parameters(), runs[1].clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_copycat_trains_on_top1_labels_even_at_score_access(target, splits):
    """Two targets with the same top-1 but different probabilities give the same copycat clone."""
    sharp = target.as_score()

    def flat(x: np.ndarray) -> np.ndarray:
        labels = target.predict(torch.from_numpy(x)).numpy()
        p = np.full((len(x), 10), 0.05)
        p[np.arange(len(x)), labels] = 0.55
        return p

    a = Copycat(budget=50, seed=0, **FAST)(sharp, splits[0].x)
    b = Copycat(budget=50, seed=0, **FAST)(flat, splits[0].x, spec=target.spec)
    for pa, pb in zip(a.clone.parameters(), b.clone.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_agreement_curve_uses_clones_trained_on_query_prefixes(target, splits):
    result = Copycat(budget=200, seed=0, checkpoints=[50, 200])(target, splits[0].x, test=splits[1])
    assert [p["queries"] for p in result.curve] == [50, 200]
    # The last checkpoint is the whole budget: the same data, seed and schedule as the final clone.
    assert result.curve[-1]["agreement"] == pytest.approx(result.agreement)
    assert result.curve[0]["agreement"] < result.curve[-1]["agreement"]
    assert result.queries_to(result.curve[-1]["agreement"]) in (50, 200)
    assert result.queries_to(1.01) is None


def test_jbda_rounds_double_then_follow_the_reservoir(target, splits):
    sent: list[np.ndarray] = []
    attack = JacobianAugmentation(budget=200, seeds=10, sigma=2, kappa=25, lam=0.1, query_batch=1000, **FAST)
    result = attack(target, splits[0].x, on_query=lambda x, a: sent.append(x))
    assert result.extras["round_sizes"] == [10, 10, 20, 25, 25, 25, 25, 25, 25, 10]
    assert sum(result.extras["round_sizes"]) == result.queries == 200
    # Every synthetic point is an earlier point moved by exactly lambda (or clipped to a bound).
    history = sent[0]
    for batch in sent[1:]:
        child = batch.reshape(len(batch), 1, -1)
        step = np.abs(child - history.reshape(1, len(history), -1))
        clipped = ((child == 0.0) | (child == 1.0)) & (step <= 0.1 + 1e-6)
        at_lambda = (np.isclose(step, 0.1, atol=1e-6) | (step < 1e-6) | clipped).all(axis=2)
        assert at_lambda.any(axis=1).all()
        history = np.concatenate([history, batch])


def test_knockoff_adaptive_learns_to_prefer_the_informative_arm(target, splits, ood_pool):
    pool = mixed_pool(splits[0].x, ood_pool)
    result = KnockoffNets(budget=400, strategy="adaptive", round_size=25, seed=0, **FAST)(target, pool)
    arms = result.extras["arms"]
    assert sum(arms.values()) == 400
    assert arms["problem-domain"] == max(arms.values())
    assert arms["problem-domain"] > 400 / len(arms)


def test_out_of_domain_pool_is_within_bounds_and_grouped():
    spec = InputSpec(shape=(3, 16, 16), num_classes=4, lower=-1.0, upper=2.0)
    pool = out_of_domain_pool(spec, 41, seed=0)
    assert pool.x.shape == (41, 3, 16, 16) and pool.x.dtype == np.float32
    spec.check_batch(pool.x)
    assert np.bincount(pool.groups).tolist() == [11, 10, 10, 10]
    tab = out_of_domain_pool(InputSpec(shape=(5,), num_classes=2, kind="tabular"), 10, seed=0)
    assert tab.names == ("gaussian", "noise") and tab.x.shape == (10, 5)  # photo sources fall back
    with pytest.raises(UsageError, match="unknown pool source"):
        out_of_domain_pool(spec, 10, sources=("webcam",))


@pytest.mark.parametrize(
    ("method", "source", "budget", "kind", "ood_rows"),
    [
        ("knockoff", None, 150, "mixed", 2000),  # each method's own data by default
        ("copycat", None, 1500, "ood", 3000),  # twice the budget above the floor
        ("jbda", None, 150, "pd", 0),
        ("jbda", "ood", 10, "ood", 2000),  # the caller's choice wins
    ],
)
def test_attacker_pool_is_one_rule_for_every_caller(method, source, budget, kind, ood_rows):
    spec = InputSpec(shape=(5,), num_classes=2, kind="tabular")
    pd = np.random.default_rng(0).random((30, 5)).astype(np.float32)
    pool = attacker_pool(method, pd, spec, budget=budget, source=source, seed=1)
    assert pool.source == kind
    assert len(pool) == ood_rows + (len(pd) if kind != "ood" else 0)
    assert MIN_POOL == 2000
    with pytest.raises(UsageError, match="query data must be one of"):
        attacker_pool(method, pd, spec, budget=budget, source="web")
    with pytest.raises(UsageError, match="unknown extraction method"):
        attacker_pool("steal", pd, spec, budget=budget)
