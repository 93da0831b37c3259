"""Malicious clients: the papers' formulas, and one table of attacks x defences driving the
shared properties (seeded reproducibility, excluded clients a subset of the clients)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dlsec.errors import UsageError
from dlsec.federated import (
    AGGREGATORS,
    ALIE,
    ATTACKS,
    DBA,
    IPM,
    Backdoor,
    FLConfig,
    MinMax,
    MinSum,
    RoundContext,
    alie_z,
    build_aggregator,
    build_attack,
    malicious_clients,
    stamp_trigger,
)
from dlsec.federated._simulate import _prepare

CTX = RoundContext(num_clients=20, num_malicious=4, rank=0, seed=1)


@pytest.fixture
def benign():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 30, generator=g) * 0.1 + 0.5


@pytest.mark.parametrize("n, m", [(50, 12), (100, 20), (20, 4), (10, 1)])
def test_alie_z_is_the_papers_formula(n, m):
    s = np.floor(n / 2 + 1) - m
    assert alie_z(n, m) == pytest.approx(norm.ppf((n - s) / n), abs=1e-9)


def test_alie_sends_mean_minus_z_std(benign):
    crafted = ALIE().craft(benign[0], benign, CTX)
    z = alie_z(20, 4)
    assert torch.allclose(crafted, benign.mean(0) - z * benign.std(0), atol=1e-6)


def test_ipm_points_against_the_benign_mean(benign):
    crafted = IPM(epsilon=0.5).craft(benign[0], benign, CTX)
    assert float(crafted @ benign.mean(0)) < 0
    assert torch.allclose(crafted, -0.5 * benign.mean(0))


@pytest.mark.parametrize("attack", [MinMax(), MinSum()])
def test_min_max_and_min_sum_take_the_largest_gamma_their_constraint_allows(attack, benign):
    crafted = attack.craft(benign[0], benign, CTX).double()
    b = benign.double()
    mu, std = b.mean(0), b.std(0)
    gamma = float(((mu - crafted) / std).mean())
    assert gamma > 0.1
    pair = torch.cdist(b, b)
    assert attack.accept(crafted, b, pair)
    assert not attack.accept(mu - (gamma + 0.01) * std, b, pair)


def test_model_replacement_boosts_by_n_over_m_and_poisons_with_the_trigger():
    x = np.zeros((5, 1, 8, 8), dtype=np.float32)
    y = np.arange(5, dtype=np.int64)
    px, py = Backdoor(target=3).poison(x, y, num_classes=10, ctx=CTX)
    assert len(px) == 10 and (py[5:] == 3).all() and (py[:5] == y).all()
    assert px[5:, 0, :2, :4].min() == 1.0 and px[:5].max() == 0.0
    own = torch.ones(3)
    assert torch.equal(Backdoor().craft(own, own[None], CTX), own * 5.0)


def test_dba_local_triggers_partition_the_global_trigger():
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    parts = [stamp_trigger(x, part=k) for k in range(4)]
    assert all(p.sum() == 2 for p in parts)
    assert np.array_equal(np.maximum.reduce(parts), stamp_trigger(x))
    ctx = RoundContext(num_clients=20, num_malicious=4, rank=2, seed=0)
    px, _ = DBA().poison(x, np.zeros(1, dtype=np.int64), num_classes=10, ctx=ctx)
    assert np.array_equal(px[1], parts[2][0])


def test_malicious_clients_fixed_or_per_round_and_seeded():
    fixed = malicious_clients(20, 0.2, seed=3)
    assert len(fixed) == 4 and fixed == malicious_clients(20, 0.2, seed=3)
    rounds = {tuple(malicious_clients(20, 0.2, seed=3, server_round=r)) for r in range(1, 6)}
    assert len(rounds) > 1
    assert malicious_clients(20, 0.0, seed=3) == []
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        malicious_clients(20, 1.0, seed=3)


@pytest.mark.parametrize("per_round", [False, True])
def test_in_a_round_the_drawn_malicious_clients_send_alie_of_their_own_benign_updates(per_round):
    """The wiring of a simulation round: exactly that round's malicious clients send ALIE's
    ``mu - z * std`` of the benign updates of that round's malicious set (n = 10, m = 2), and
    every other client sends its own honest update."""
    n = 10
    honest = FLConfig(
        num_clients=n, malicious_fraction=0.2, engine="local", hidden=(8,), root_size=50, per_round=per_round
    )
    plan_alie, _, _, _ = _prepare(dataclasses.replace(honest, attack="alie"))
    plan_none, _, _, _ = _prepare(honest)
    torch.manual_seed(0)
    base = torch.randn(sum(p.numel() for p in plan_alie.model().state_dict().values())) * 0.1
    drawn = []
    for rnd in (1, 2):
        bad = plan_alie.malicious(rnd)
        drawn.append(bad)
        assert len(bad) == 2
        clean = torch.stack([plan_none.client_update(c, rnd, base)[0] for c in range(n)])
        sent = torch.stack([plan_alie.client_update(c, rnd, base)[0] for c in range(n)])
        expected = clean[bad].mean(0) - alie_z(n, 2) * clean[bad].std(0)
        for c in range(n):
            target = expected if c in bad else clean[c]
            assert torch.allclose(sent[c], target, atol=1e-6), (rnd, c)
    assert (drawn[0] != drawn[1]) == per_round


def test_unknown_attack_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown attack 'nope'"):
        build_attack("nope")


# ------------------------------------------------------------------ the attack x defence table

N = 9  # 2 malicious of 9: every rule (Bulyan needs 4f + 3 = 11 > 9, so it runs with f = 1)


def _round_updates(attack: str) -> tuple[torch.Tensor, list[int]]:
    config = FLConfig(
        num_clients=N, malicious_fraction=2 / N, attack=attack, engine="local", hidden=(16,), root_size=50
    )
    plan, _, _, _ = _prepare(config)
    base = torch.zeros(sum(p.numel() for p in plan.model().state_dict().values()))
    torch.manual_seed(0)
    base = torch.randn(base.shape) * 0.1
    sent = [plan.client_update(cid, 1, base)[0] for cid in range(N)]
    return torch.stack(sent), plan.malicious(1)


@pytest.fixture(scope="module")
def updates_by_attack() -> dict[str, tuple[torch.Tensor, list[int]]]:
    torch.set_num_threads(1)
    return {name: _round_updates(name) for name in ATTACKS}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_are_reproducible_from_their_seed(attack, updates_by_attack):
    again, bad = _round_updates(attack)
    first, bad_first = updates_by_attack[attack]
    assert bad == bad_first and len(bad) == 2
    assert torch.equal(again, first)
    if attack != "none":  # the attack changes what the malicious clients send
        honest_run, _ = updates_by_attack["none"]
        assert not torch.allclose(first[bad], honest_run[bad])


@pytest.mark.parametrize("defense", sorted(AGGREGATORS))
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_defence_against_every_attack(attack, defense, updates_by_attack):
    updates, bad = updates_by_attack[attack]
    f = 1 / N if defense == "bulyan" else 2 / N
    ids = [100 + i for i in range(N)]
    reference = updates[[i for i in range(N) if i not in bad]].mean(0)
    results = [
        build_aggregator(defense, num_clients=N, malicious_fraction=f, seed=7)(
            updates, client_ids=ids, reference=reference, weights=[10.0] * N
        )
        for _ in range(2)
    ]
    assert torch.equal(results[0].update, results[1].update)
    assert results[0].excluded == results[1].excluded
    assert results[0].excluded <= set(ids)
    assert results[0].update.shape == updates.shape[1:]
    assert bool(torch.isfinite(results[0].update).all())
    assert results[0].weights.shape == (N,) and float(results[0].weights.min()) >= 0
