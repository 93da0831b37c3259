"""The AGR-tailored attack (Shejwalkar and Houmansadr, NDSS 2021): gamma optimised against the
server's own rule, run on the attacker's simulated round."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dlsec.errors import UsageError
from dlsec.federated import FLConfig, RoundContext, build_aggregator, build_attack, simulate

N, M, D = 20, 4, 200


def _round() -> tuple[torch.Tensor, RoundContext]:
    """The colluders' benign updates and their context; the server's round is the attacker's
    own simulation of it (its colluders and the seeded stand-ins), so the known answers below
    are about what the attack optimises."""
    g = torch.Generator().manual_seed(0)
    colluders = torch.randn(M, D, generator=g) * 0.5 + 1.0
    return colluders, RoundContext(num_clients=N, num_malicious=M, rank=0, seed=1, shared_seed=5)


def _simulated_round(update: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    mu = colluders.mean(0)
    std = colluders.std(0, unbiased=True)
    g = torch.Generator().manual_seed(ctx.shared_seed)
    unseen = mu + std * torch.randn((N - 2 * M, D), generator=g)
    return torch.cat([update.expand(M, -1), colluders, unseen])


def _craft(attack: str, defense: str) -> torch.Tensor:
    colluders, ctx = _round()
    options = {"rule": build_aggregator(defense, num_clients=N, malicious_fraction=M / N)}
    return build_attack(attack, **(options if attack == "agr-tailored" else {})).craft(
        colluders[0], colluders, ctx
    )


@pytest.mark.parametrize("defense", ["krum", "multi-krum"])
def test_against_selection_rules_the_malicious_copies_are_selected(defense):
    colluders, ctx = _round()
    rule = build_aggregator(defense, num_clients=N, malicious_fraction=M / N)
    tailored = _craft("agr-tailored", defense)
    kept = set(range(N)) - rule(_simulated_round(tailored, colluders, ctx)).excluded
    assert len(kept & set(range(M))) == min(M, len(kept))
    # and it pushes further than min-max, which Krum rejects outright here
    mu = colluders.mean(0)
    assert (tailored - mu).norm() > (_craft("alie", defense) - mu).norm()


@pytest.mark.parametrize(
    ("defense", "strictly"), [("median", False), ("trimmed-mean", True), ("norm-clip", True)]
)
def test_against_coordinate_and_clipping_rules_it_moves_the_aggregate_further(defense, strictly):
    """At least as far as the defence-agnostic attacks; strictly further where the rule does
    not saturate (the median's output stops moving once the copies pass the honest range, so
    min-max already reaches its plateau there)."""
    colluders, ctx = _round()
    rule = build_aggregator(defense, num_clients=N, malicious_fraction=M / N)
    mu = colluders.mean(0)

    def deviation(attack: str) -> float:
        return float((rule(_simulated_round(_craft(attack, defense), colluders, ctx)).update - mu).norm())

    tailored = deviation("agr-tailored")
    agnostic = max(deviation("min-max"), deviation("min-sum"), deviation("alie"))
    assert tailored > agnostic if strictly else tailored >= agnostic


def test_all_colluders_send_the_same_update_and_a_rule_is_required():
    colluders, ctx = _round()
    attack = build_attack(
        "agr-tailored", rule=build_aggregator("median", num_clients=N, malicious_fraction=0.2)
    )
    other = dataclasses.replace(ctx, rank=3, seed=99)
    assert torch.equal(
        attack.craft(colluders[0], colluders, ctx), attack.craft(colluders[1], colluders, other)
    )
    with pytest.raises(UsageError, match="needs the server's rule"):
        build_attack("agr-tailored").craft(colluders[0], colluders, ctx)


def test_the_simulation_hands_the_attacker_its_own_copy_of_the_rule():
    config = FLConfig(
        num_clients=10,
        malicious_fraction=0.2,
        attack="agr-tailored",
        defense="krum",
        rounds=2,
        hidden=(16,),
        root_size=50,
        engine="local",
    )
    result = simulate(config)
    assert all(set(r.excluded) <= set(range(10)) for r in result.rounds)
    assert [r.accuracy for r in simulate(config).rounds] == [r.accuracy for r in result.rounds]
