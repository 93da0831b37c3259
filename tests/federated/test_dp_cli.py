"""`dlsec fl simulate --dp/--ray` and `dlsec fl invert --dp-epsilon`; DP-FedAvg through Flower."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dlsec.cli import main
from dlsec.core.cluster import check_ray_address
from dlsec.errors import UsageError
from dlsec.federated import FLConfig, epsilon_for, simulate
from dlsec.federated._simulate import _backend_config


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_ray_address_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fl", "simulate", "--clients", "4", "--rounds", "1", "--ray", f"127.0.0.1:{_closed_port()}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the Ray cluster at 127.0.0.1:") and "\n" not in err
    assert main(["fl", "simulate", "--ray", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert "give host:port" in err and "\n" not in err
    with pytest.raises(UsageError, match="flower engine"):
        simulate(FLConfig(engine="local", ray_address="127.0.0.1:6379"))


def test_a_reachable_address_passes_the_check_and_goes_to_ray_init_alone() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}")
        check_ray_address(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_ray_address("auto")
    config = _backend_config("10.0.0.5:6379")
    # ray.init refuses resource counts when it joins a cluster: only the address goes
    assert config["init_args"]["address"] == "10.0.0.5:6379"
    assert "num_cpus" not in config["init_args"]
    assert _backend_config(None)["init_args"]["num_cpus"] == 2


def test_cli_simulate_with_dp_reports_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fl", "simulate", "--clients", "4", "--rounds", "1", "--engine", "local", "--json"]
    argv += ["--dp", "fixed", "--noise-multiplier", "1.0", "--clients-per-round", "2", "--delta", "1e-3"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    privacy = payload["privacy"]
    assert privacy["sample_rate"] == 0.5 and privacy["accountant"] == "opacus.accountants.RDPAccountant"
    assert privacy["epsilon"] == epsilon_for(1.0, sample_rate=0.5, rounds=1, delta=1e-3)
    assert payload["rounds"][1]["epsilon"] == privacy["epsilon"]
    assert main([*argv[:-2], "--dp", "wobbly"]) == 2
    assert "dp mode" in capsys.readouterr().err


def test_cli_invert_under_dp_reports_the_mechanism(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fl", "invert", "--examples", "2", "--steps", "5", "--dp-epsilon", "8", "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    z = payload["privacy"]["noise_multiplier"]
    assert payload["privacy"]["epsilon"] == 8.0
    # the multiplier spends at most epsilon 8 (Opacus's search stops within its tolerance)
    assert 7.8 <= epsilon_for(z, sample_rate=1.0, rounds=1, delta=1e-5) <= 8.0
    assert main([*argv[:-2], "-1", "--json"]) == 2


@pytest.mark.slow
def test_dp_fedavg_through_flower_matches_the_local_engine() -> None:
    config = FLConfig(num_clients=4, rounds=2, hidden=(16,), root_size=50, dp="fixed", noise_multiplier=0.5)
    flower = simulate(config)
    local = simulate(dataclasses.replace(config, engine="local"))
    assert flower.privacy is not None and local.privacy is not None
    assert flower.privacy["epsilons"] == local.privacy["epsilons"]
    for a, b in zip(flower.rounds, local.rounds, strict=True):
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-9)


@pytest.mark.slow
def test_a_simulation_runs_on_an_existing_ray_cluster() -> None:
    """A Ray head started here as its own process (``ray start --block``, stopped by its pid)."""
    port = _closed_port()
    ray = Path(sys.executable).with_name("ray")
    # its own temp dir (short: Ray's socket paths must fit 107 bytes): `ray start` records its
    # address in TEMP/ray_current_cluster, and a stale record in the shared /tmp/ray would send
    # every later ray.init() on this machine to a cluster that is gone
    temp = tempfile.mkdtemp(prefix="dlsec-ray-", dir="/tmp")
    argv = [str(ray), "start", "--head", f"--port={port}", "--num-cpus=2", "--block", f"--temp-dir={temp}"]
    argv += ["--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                check_ray_address(f"127.0.0.1:{port}")
                break
            except UsageError:
                time.sleep(0.5)
        config = FLConfig(
            num_clients=3, rounds=1, hidden=(16,), root_size=50, ray_address=f"127.0.0.1:{port}"
        )
        result = simulate(config)
        local = simulate(dataclasses.replace(config, engine="local", ray_address=None))
        assert [r.round for r in result.rounds] == [0, 1]
        assert result.final_accuracy == pytest.approx(local.final_accuracy, abs=1e-9)
    finally:
        import ray as ray_api

        ray_api.shutdown()
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
