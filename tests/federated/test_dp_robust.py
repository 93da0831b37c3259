"""Client-level DP on robust rules: clip, aggregate robustly, add noise at the rule's sensitivity;
the accounting stays Opacus's RDP accountant; rules it cannot cover are refused in one line."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dlsec.cli import main
from dlsec.errors import UsageError
from dlsec.federated import (
    AGGREGATORS,
    FLConfig,
    RobustDP,
    build_aggregator,
    clip_updates,
    epsilon_for,
    simulate,
)

BOUNDED = sorted(set(AGGREGATORS) - {"flame"})


def _rule(name: str, n: int = 11):
    return build_aggregator(name, num_clients=n, malicious_fraction=0.1 if name != "bulyan" else 0.0)


@pytest.mark.parametrize("name", BOUNDED)
def test_no_output_of_a_rule_exceeds_its_bound(name):
    """Random and adversarial (few-coordinate, aligned) updates clipped to C: the rule's output
    norm (its own data-independent noise off) never exceeds output_bound."""
    rule = _rule(name)
    if hasattr(rule, "noise"):
        rule.noise = 0.0
    g = torch.Generator().manual_seed(0)
    c = 0.7
    n = 11
    reference = torch.randn(6, generator=g)
    for trial in range(40):
        if trial % 2:
            raw = torch.randn(n, 6, generator=g)
        else:  # mass on a few coordinates shared by most clients: what pushes a median outward
            raw = (torch.rand(n, 6, generator=g) < 0.6).float() * torch.rand(n, 6, generator=g)
        clipped, _ = clip_updates(raw, c)
        out = rule(clipped, client_ids=list(range(n)), reference=reference).update
        bound = rule.output_bound(n, c, reference)
        assert bound is not None
        assert float(out.norm()) <= bound + 1e-6


def test_the_median_bound_is_reached():
    """n = 3 rows (1,1,0), (1,0,1), (0,1,1) / sqrt 2: every coordinate's median is 1/sqrt 2, so the
    output's norm is sqrt(3/2) = sqrt(n / ceil(n/2)), the bound."""
    rows = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) / math.sqrt(2)
    median = _rule("median", 3)
    out = median(rows).update
    assert float(out.norm()) == pytest.approx(math.sqrt(1.5))
    assert median.output_bound(3, 1.0, None) == pytest.approx(math.sqrt(1.5))
    assert median.output_bound(4, 1.0, None) == pytest.approx(math.sqrt(2))


def test_one_round_is_the_rule_on_clipped_updates_plus_seeded_noise_at_its_sensitivity():
    g = torch.Generator().manual_seed(1)
    updates = torch.randn(10, 50, generator=g) * 3
    rule = _rule("trimmed-mean", 10)  # beta 0.1: k = int(0.1 n) trimmed each side: 0 of 9, 1 of 10 and 11
    dp = RobustDP(noise_multiplier=0.8, clipping_norm=0.5, sample_rate=0.5, delta=1e-5, seed=3, rule=rule)
    out = dp(updates, client_ids=list(range(10)))
    clipped, _ = clip_updates(updates, 0.5)
    plain = rule(clipped).update
    delta = 2 * 0.5 * max(1.0, math.sqrt(10 / 8), math.sqrt(11 / 9))
    assert dp.sensitivities == [pytest.approx(delta)]
    assert dp.noise_stds == [pytest.approx(0.8 * delta)]
    assert torch.allclose(out.update, plain + dp.noise(1, 50, 0.8 * delta), atol=1e-6)
    # the accountant is the same as DP-FedAvg's: one step of the sampled Gaussian at z, q
    assert dp.epsilons[0] == pytest.approx(epsilon_for(0.8, sample_rate=0.5, rounds=1, delta=1e-5))
    # no robust rule has the mean's C/m: the noise here is 2 * 1.12 * m times DP-FedAvg's
    assert dp.noise_stds[0] / (0.8 * 0.5 / 10) > 20


def test_rules_the_accountant_cannot_cover_are_refused_in_one_line():
    with pytest.raises(UsageError, match="cannot combine with flame: its own noise"):
        RobustDP(noise_multiplier=1.0, clipping_norm=1.0, rule=_rule("flame"))
    with pytest.raises(UsageError, match="with client sampling cannot combine with foolsgold"):
        RobustDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.5, rule=_rule("foolsgold"))
    RobustDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=1.0, rule=_rule("foolsgold"))
    with pytest.raises(UsageError, match="with client sampling cannot combine with foolsgold"):
        simulate(FLConfig(engine="local", dp="fixed", defense="foolsgold", clients_per_round=5))


def test_a_simulation_with_dp_on_the_median_reports_the_accountants_epsilon():
    config = FLConfig(
        num_clients=6,
        malicious_fraction=1 / 6,
        attack="sign-flip",
        defense="median",
        rounds=2,
        hidden=(16,),
        root_size=50,
        engine="local",
        dp="fixed",
        noise_multiplier=1.0,
        clipping_norm=1.0,
    )
    result = simulate(config)
    assert result.privacy is not None
    assert result.privacy["mechanism"].startswith("clipped median")
    expected = epsilon_for(1.0, sample_rate=1.0, rounds=2, delta=6**-1.1)
    assert result.privacy["epsilon"] == pytest.approx(expected)
    assert result.privacy["sensitivities"] == [pytest.approx(2 * math.sqrt(2))] * 2  # m=5,6,7: sqrt 2 max
    # the same seed gives the same run; the median's excluded set is empty, a subset of the clients
    again = simulate(config)
    assert [r.accuracy for r in again.rounds] == [r.accuracy for r in result.rounds]
    # the FLTrust reference flows through: its bound is the server's update norm
    fltrust = simulate(dataclasses.replace(config, defense="fltrust", rounds=1))
    assert fltrust.privacy is not None and fltrust.privacy["sensitivities"][0] > 0


def test_cli_dp_with_krum_runs_and_flame_exits_2(capsys):
    argv = ["fl", "simulate", "--clients", "5", "--rounds", "1", "--defense", "krum", "--dp", "fixed"]
    assert main([*argv, "--engine", "local", "--json"]) == 0
    capsys.readouterr()
    argv = ["fl", "simulate", "--clients", "5", "--rounds", "1", "--defense", "flame", "--dp", "fixed"]
    assert main([*argv, "--engine", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: client-level DP cannot combine with flame") and "\n" not in err
