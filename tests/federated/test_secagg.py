"""Flower's SecAgg+ with FedAvg: the aggregate equals plain FedAvg's within the quantisation
error; robust rules and DP-FedAvg, which need each client's update, are refused."""

from __future__ import annotations

import dataclasses

import pytest

from dlsec.cli import main
from dlsec.errors import UsageError
from dlsec.federated import AGGREGATORS, FLConfig, simulate
from dlsec.federated._secagg import SECAGG_SETTINGS

SECURE = FLConfig(num_clients=4, rounds=1, hidden=(16,), root_size=50, seed=1, secure_aggregation=True)


@pytest.mark.parametrize("defense", sorted(set(AGGREGATORS) - {"fedavg"}))
def test_every_rule_that_needs_individual_updates_is_refused(defense):
    with pytest.raises(UsageError, match=f"cannot combine with {defense}: under SecAgg\\+ the server only"):
        simulate(dataclasses.replace(SECURE, defense=defense, num_clients=12))


def test_dp_and_the_local_engine_are_refused():
    with pytest.raises(UsageError, match="DP-FedAvg clips each client's update at the server"):
        simulate(dataclasses.replace(SECURE, dp="fixed"))
    with pytest.raises(UsageError, match="secure aggregation runs in Flower"):
        simulate(dataclasses.replace(SECURE, engine="local"))


def test_cli_secagg_with_a_robust_rule_exits_2_with_one_line(capsys):
    argv = ["fl", "simulate", "--clients", "5", "--secagg", "--defense", "krum", "--engine", "local"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("error: secure aggregation cannot combine with krum")
    assert "only sees the sum" in err


@pytest.mark.slow
def test_secagg_aggregate_equals_fedavg_within_the_quantisation_error():
    """One round from the same initial model through Flower's SecAggPlusWorkflow and
    secaggplus_mod: each client's weights are quantised to 2**22 levels over [-8, 8], so the
    weighted mean can differ from FedAvg's by at most n steps scaled by max_weight / total
    weight (plus the rounding of each client's weight ratio): small, but not zero."""
    secure = simulate(SECURE)
    plain = simulate(dataclasses.replace(SECURE, engine="local", secure_aggregation=False))
    assert secure.final_model is not None and plain.final_model is not None
    diff = (secure.final_model - plain.final_model).abs().max().item()
    step = 2 * SECAGG_SETTINGS["clipping_range"] / SECAGG_SETTINGS["quantization_range"]
    from dlsec.core import load_dataset
    from dlsec.federated._simulate import _prepare

    plan = _prepare(dataclasses.replace(SECURE, engine="flower"), load_dataset("builtin:digits"))[0]
    sizes = [len(y) for _, y in plan.parts]
    bound = SECURE.num_clients * step * max(sizes) / sum(sizes) + 1e-6
    assert 0 < diff <= bound
    assert secure.rounds[1].distances == {} and secure.rounds[1].excluded == []  # the server saw no update
    assert secure.rounds[1].accuracy == pytest.approx(plain.rounds[1].accuracy, abs=0.01)
    assert secure.rounds[1].accuracy > secure.rounds[0].accuracy + 0.3
