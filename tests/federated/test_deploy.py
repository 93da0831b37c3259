"""A real Flower deployment: a SuperLink and SuperNodes as separate processes on loopback, the
run submitted with ``flwr run``; its numbers equal the simulation's for the same seed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli

from dlsec.cli import main
from dlsec.errors import UsageError
from dlsec.federated import FLConfig, _deploy, deploy, simulate

SMALL = FLConfig(
    num_clients=3,
    malicious_fraction=1 / 3,
    attack="alie",
    defense="median",
    rounds=2,
    hidden=(16,),
    root_size=50,
    seed=1,
)


def _flower_processes_under_us() -> list[str]:
    """Command lines of Flower processes this test process started, at any depth."""
    found = []
    for pid in _deploy._family([os.getpid()]):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "flower-" in cmd or "flwr" in cmd:
            found.append(cmd)
    return found


def test_the_generated_app_passes_flowers_own_checks_and_loads_our_apps(tmp_path):
    """The Flower App ``flwr run`` submits: valid for Flower, components that are dlsec's apps,
    and a run config that gives back the configuration."""
    from flwr.common.config import validate_config
    from flwr.supercore.object_ref import load_app

    _deploy._write_app(tmp_path / "app", SMALL, tmp_path / "out")
    config = tomli.loads((tmp_path / "app" / "pyproject.toml").read_text())
    valid, errors, warnings = validate_config(config, check_module=True, project_dir=tmp_path / "app")
    assert valid and not errors and not warnings
    components = config["tool"]["flwr"]["app"]["components"]
    assert load_app(components["serverapp"], ValueError, tmp_path / "app") is _deploy.server_app
    assert load_app(components["clientapp"], ValueError, tmp_path / "app") is _deploy.client_app
    run_config = config["tool"]["flwr"]["app"]["config"]
    from dlsec.federated._simulate import config_from_dict

    assert config_from_dict(json.loads(run_config["dlsec-config"])) == dataclasses.replace(SMALL)
    assert run_config["dlsec-out"] == str(tmp_path / "out")


def test_bad_input_is_refused_before_any_process_starts():
    with pytest.raises(UsageError, match="krum tolerates f=1 malicious of 3 clients"):
        deploy(dataclasses.replace(SMALL, defense="krum"))
    with pytest.raises(UsageError, match="Ray address needs the flower engine"):
        deploy(dataclasses.replace(SMALL, ray_address="127.0.0.1:6379"))
    with pytest.raises(UsageError, match="cannot take a dataset object"):
        from dlsec.core import load_dataset

        simulate(dataclasses.replace(SMALL, engine="deployment"), data=load_dataset("builtin:digits"))
    assert _flower_processes_under_us() == []


def test_stop_ends_a_process_and_the_detached_children_it_started():
    """Flower's SuperLink starts its SuperExec in a session of its own; _stop still ends it."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not _deploy._family([proc.pid]) and time.monotonic() < deadline:
            time.sleep(0.05)
        family = _deploy._family([proc.pid])
        assert len(family) == 1  # the detached grandchild
    finally:
        _deploy._stop([proc])
    assert proc.poll() is not None
    (child,) = family
    time.sleep(0.3)
    assert child not in _deploy._proc_table() or _deploy._proc_table()[child][1] != family[child]


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = _deploy._free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_a_deployment_on_loopback_equals_the_simulation(capsys):
    """3 SuperNodes (one malicious, ALIE) under the median for 2 rounds through ``dlsec fl
    simulate --engine deployment``: every round's accuracy, backdoor success, malicious set and
    per-client distances equal Flower's simulation and the local engine exactly (the same
    seeded client and server code, float32 weights sent unchanged), and no Flower process
    outlives the run."""
    argv = ["fl", "simulate", "--clients", "3", "--malicious", str(1 / 3), "--attack", "alie"]
    argv += ["--defense", "median", "--rounds", "2", "--seed", "1", "--engine", "deployment", "--json"]
    # the CLI's MLP is the default (64, 32) and root set 100: compare with the same configuration
    config = FLConfig(
        num_clients=3, malicious_fraction=1 / 3, attack="alie", defense="median", rounds=2, seed=1
    )
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert _flower_processes_under_us() == []
    assert payload["config"]["engine"] == "deployment"
    deployed = payload["rounds"]
    for engine in ("local", "flower"):
        other = simulate(dataclasses.replace(config, engine=engine))
        assert len(deployed) == len(other.rounds) == 3
        for a, b in zip(deployed, other.rounds, strict=True):
            assert a["accuracy"] == b.accuracy
            assert a["backdoor_success"] == b.backdoor_success
            assert a["malicious"] == b.malicious
            assert {int(k): v for k, v in a["distances"].items()} == b.distances
    assert deployed[1]["malicious"] == [1] and deployed[2]["accuracy"] > deployed[0]["accuracy"] + 0.3


@pytest.mark.slow
def test_a_failing_deployment_stops_every_process_and_says_why():
    """A run that cannot finish in time: one line, and no process left behind."""
    with pytest.raises(UsageError, match="did not finish within 3 s|did not submit|did not listen"):
        deploy(SMALL, timeout=3)
    assert _flower_processes_under_us() == []


@pytest.mark.slow
def test_secure_aggregation_in_a_deployment_equals_its_simulation():
    """SecAgg+ across processes: the masks cancel exactly and each client seeds the stochastic
    rounding of its quantisation, so the deployment's rounds equal Flower's simulation."""
    config = dataclasses.replace(SMALL, malicious_fraction=0.0, attack="none", defense="fedavg")
    config = dataclasses.replace(config, secure_aggregation=True)
    deployed = deploy(config, timeout=500)
    assert _flower_processes_under_us() == []
    simulated = simulate(config)
    assert [r.accuracy for r in deployed.rounds] == [r.accuracy for r in simulated.rounds]
    assert all(r.distances == {} for r in deployed.rounds)  # the server saw no single update
    assert deployed.rounds[2].accuracy > deployed.rounds[0].accuracy + 0.3
