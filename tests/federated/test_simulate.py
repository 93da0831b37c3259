"""Partitions, a simulation through Flower itself (ClientApp + ServerApp on the Ray backend),
its agreement with the in-process engine, the report and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dlsec.cli import main
from dlsec.core import load_dataset
from dlsec.errors import UsageError
from dlsec.federated import (
    AGGREGATORS,
    FLConfig,
    dirichlet_partition,
    iid_partition,
    partition,
    render_html,
    simulate,
    write_report,
)

TINY = FLConfig(
    num_clients=4,
    malicious_fraction=0.25,
    attack="alie",
    defense="median",
    rounds=2,
    hidden=(16,),
    lr=0.5,
    root_size=50,
    seed=1,
)


# ----------------------------------------------------------------------------- partitions


def test_iid_partition_deals_every_row_once():
    labels = np.arange(103) % 10
    parts = iid_partition(labels, 10, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(labels, 10, seed=0), strict=True))


def test_dirichlet_partition_is_seeded_and_skews_labels_as_alpha_falls():
    labels = load_dataset("builtin:digits").y

    def classes_per_client(alpha: float) -> float:
        parts = dirichlet_partition(labels, 20, alpha=alpha, seed=3)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
        return float(np.mean([len(np.unique(labels[p])) for p in parts]))

    again = dirichlet_partition(labels, 20, alpha=0.1, seed=3)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(again, dirichlet_partition(labels, 20, alpha=0.1, seed=3), strict=True)
    )
    assert classes_per_client(0.1) < 5 < classes_per_client(100.0)


def test_partition_of_a_dataset_and_its_bad_input():
    data = load_dataset("builtin:digits")
    parts = partition(data, 5, scheme="dirichlet", alpha=0.5, seed=0)
    assert sum(len(p) for p in parts) == len(data)
    with pytest.raises(UsageError, match="unknown partition scheme"):
        partition(data, 5, scheme="shards")
    with pytest.raises(UsageError, match="alpha must be positive"):
        partition(data, 5, scheme="dirichlet", alpha=0.0)
    with pytest.raises(UsageError, match="use fewer clients"):
        iid_partition(np.zeros(3), 4)


# ----------------------------------------------------------------------------- simulation


def test_a_simulation_through_flower_matches_the_local_engine():
    """The real thing: ClientApps in Ray actors, the ServerApp with RobustFedAvg, run_simulation."""
    flower = simulate(TINY)
    local = simulate(dataclasses.replace(TINY, engine="local"))
    assert [r.round for r in flower.rounds] == [0, 1, 2]
    assert flower.rounds[2].accuracy > flower.rounds[0].accuracy + 0.2  # it learns
    assert flower.rounds[1].malicious == local.rounds[1].malicious and len(flower.rounds[1].malicious) == 1
    for a, b in zip(flower.rounds, local.rounds, strict=True):
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-9)
        assert a.backdoor_success == pytest.approx(b.backdoor_success, abs=1e-9)
        assert a.distances.keys() == b.distances.keys()
        for cid in a.distances:
            assert a.distances[cid] == pytest.approx(b.distances[cid], rel=1e-5)


def test_exclusion_is_scored_against_the_malicious_set():
    config = dataclasses.replace(
        TINY, num_clients=8, malicious_fraction=0.25, attack="gaussian", defense="multi-krum", engine="local"
    )
    result = simulate(config)
    for record in result.rounds[1:]:
        assert len(record.malicious) == 2
        assert set(record.excluded) == set(record.malicious)  # far-off noise is all Multi-Krum drops
        assert record.precision == 1.0 and record.recall == 1.0
        assert set(record.distances) == set(range(8))
    assert result.rounds[0].precision is None  # round 0 is the initial model: nothing aggregated


def test_simulate_rejects_configurations_a_defence_cannot_hold():
    with pytest.raises(UsageError, match="krum tolerates f=2 malicious of 5 clients"):
        simulate(dataclasses.replace(TINY, num_clients=5, malicious_fraction=0.4, defense="krum"))
    with pytest.raises(UsageError, match="honest majority"):
        simulate(dataclasses.replace(TINY, malicious_fraction=0.5, defense="trimmed-mean"))
    with pytest.raises(UsageError, match="unknown engine"):
        simulate(dataclasses.replace(TINY, engine="spark"))


def test_report_files_are_written_with_curves(tmp_path):
    result = simulate(dataclasses.replace(TINY, engine="local", attack="backdoor", defense="fedavg"))
    json_path, html_path = write_report(result, tmp_path / "out")
    payload = json.loads(json_path.read_text())
    assert len(payload["rounds"]) == 3 and payload["config"]["attack"] == "backdoor"
    page = html_path.read_text()
    assert page.count("<svg") == 3 and "<polyline" in page and "<script" not in page
    assert render_html(result) == page


@pytest.mark.slow
def test_model_replacement_plants_the_backdoor_under_fedavg_and_norm_clipping_limits_it():
    base = FLConfig(num_clients=10, malicious_fraction=0.2, rounds=8, lr=0.5, engine="local", seed=2)
    clean = simulate(base)
    attacked = simulate(dataclasses.replace(base, attack="backdoor"))
    clipped = simulate(dataclasses.replace(base, attack="backdoor", defense="norm-clip"))
    assert attacked.final_backdoor_success > clean.final_backdoor_success + 0.5
    assert clipped.final_backdoor_success < attacked.final_backdoor_success


# ----------------------------------------------------------------------------- CLI


def test_cli_simulate_writes_json_and_report(tmp_path, capsys):
    out = tmp_path / "fl"
    argv = ["fl", "simulate", "--clients", "4", "--malicious", "0.25", "--attack", "sign-flip"]
    argv += ["--defense", "trimmed-mean", "--rounds", "1", "--engine", "local", "--json", "--out", str(out)]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["config"]["defense"] == "trimmed-mean" and len(payload["rounds"]) == 2
    assert (out / "report.html").is_file() and (out / "report.json").is_file()


def test_cli_bad_input_exits_2_with_one_line(capsys):
    argv = [
        "fl",
        "simulate",
        "--clients",
        "5",
        "--malicious",
        "0.4",
        "--defense",
        "krum",
        "--engine",
        "local",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: krum tolerates f=2") and "\n" not in err


@pytest.mark.parametrize(
    "defense",
    [
        pytest.param(d, marks=() if d in ("fltrust", "foolsgold") else pytest.mark.slow)
        for d in sorted(AGGREGATORS)
    ],
)
def test_every_defence_runs_a_round_of_the_simulation(defense):
    """FLTrust (the server's root-set update) and FoolsGold (client ids across rounds) by default."""
    config = dataclasses.replace(
        TINY, num_clients=7, malicious_fraction=1 / 7, defense=defense, rounds=2, engine="local"
    )
    result = simulate(config)
    assert all(set(r.excluded) <= set(range(7)) for r in result.rounds)
    assert result.rounds[2].accuracy > result.rounds[0].accuracy


def test_a_runtime_that_fails_to_start_is_one_error_and_leaves_no_waiting_server(monkeypatch):
    """Ray failing to start (as it does on an overloaded machine) must end the run with one
    UsageError, and the ServerApp thread, which polls for nodes that never come, must end too
    (it is not a daemon: left waiting, the process never exits)."""
    import threading
    import time

    from dlsec.federated import _simulate

    def broken(address):
        return {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"address": "local", "num_cpus": -1, "include_dashboard": False},
        }

    monkeypatch.setattr(_simulate, "_backend_config", broken)
    before = set(threading.enumerate())
    with pytest.raises(
        UsageError, match="the Flower simulation runtime failed: ValueError: Resource quantities"
    ):
        simulate(dataclasses.replace(TINY, engine="flower"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.2)
    assert not [t for t in set(threading.enumerate()) - before if not t.daemon]
