"""The GitHub Action (action.yml): its wiring, and its script (ci/dlsec-action.sh) run locally."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import save_file

from dlsec.core import build_architecture, load_dataset, save_safetensors_model

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "action.yml"
SCRIPT = ROOT / "ci" / "dlsec-action.sh"
BIN = Path(sys.executable).parent


def malicious_pickle() -> bytes:
    """PROTO 2, GLOBAL os.system, the argument, TUPLE1, REDUCE, STOP: runs a shell when loaded."""
    command = b"touch PWNED"
    return b"\x80\x02" + b"cos\nsystem\n" + b"X" + struct.pack("<I", len(command)) + command + b"\x85R."


def action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def env_name(name: str) -> str:
    return "INPUT_" + name.upper().replace("-", "_")


def run_action(cwd: Path, **inputs: str) -> tuple[int, str, dict[str, str]]:
    """Run the script as the composite step does; return (status, output, $GITHUB_OUTPUT)."""
    outputs = cwd / "github-output"
    outputs.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update({env_name(k): v for k, v in inputs.items()})
    env.update(GITHUB_OUTPUT=str(outputs), PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    env.setdefault("INPUT_INSTALL", "false")
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return done.returncode, done.stdout + done.stderr, written


def test_a_composite_action_whose_step_runs_the_script_with_every_input() -> None:
    spec = action()
    assert spec["runs"]["using"] == "composite"
    steps = spec["runs"]["steps"]
    setup = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert len(setup) == 1 and setup[0]["with"]["python-version"] == "${{ inputs.python-version }}"
    [step] = [s for s in steps if "ci/dlsec-action.sh" in s.get("run", "")]
    assert step["shell"] == "bash" and "$GITHUB_ACTION_PATH/ci/dlsec-action.sh" in step["run"]
    # Composite actions export no INPUT_* variables: each input the script reads is passed.
    passed = {name: f"${{{{ inputs.{name} }}}}" for name in spec["inputs"] if name != "python-version"}
    assert step["env"] == {env_name(name): value for name, value in passed.items()}
    script = SCRIPT.read_text()
    assert all(env_name(name) in script for name in passed)
    assert spec["inputs"]["out"]["default"] == "dlsec-reports"
    assert spec["inputs"]["python-version"]["default"] == "3.11"
    assert spec["inputs"]["fail-on-unscannable"]["default"] == "true"
    assert spec["inputs"]["torch-spec"]["default"] == "torch --index-url https://download.pytorch.org/whl/cpu"
    for name, output in spec["outputs"].items():
        assert output["value"] == f"${{{{ steps.{step['id']}.outputs.{name} }}}}"
        assert re.search(rf"^\s*output {re.escape(name)} ", script, re.M), name
    assert os.access(SCRIPT, os.X_OK)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "evil.pkl").write_bytes(malicious_pickle())
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(folder / "clean.safetensors"))
    return folder


def test_a_malicious_pickle_fails_the_scan_with_outputs_written(tmp_path: Path, models: Path) -> None:
    status, output, written = run_action(tmp_path, paths="models\n")
    assert status == 1, output
    assert set(written) == set(action()["outputs"]), output
    assert written["verdict"] == "fail" and written["reports"] == "dlsec-reports"
    assert written["scan-sarif"] == "dlsec-reports/scan.sarif"
    assert not (tmp_path / "PWNED").exists()  # scanned, never loaded
    log = json.loads((tmp_path / written["scan-sarif"]).read_text())
    results = log["runs"][0]["results"]
    flagged = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r["message"]["text"]
        for r in results
        if r["level"] == "error"
    }
    assert set(flagged) == {"models/nested/evil.pkl"} and "os.system" in flagged["models/nested/evil.pkl"]
    # The log annotates the file for the pull request, naming what it would run.
    assert re.search(r"^::error file=models/nested/evil\.pkl,.*os\.system", output, re.M), output
    assert written["assess-sarif"] == "" and written["junit"] == ""

    # The clean file alone passes; an unscannable one fails (exit 3 of dlsec scan) unless
    # fail-on-unscannable is false.
    status, output, written = run_action(tmp_path, paths="models/clean.safetensors", out="clean")
    assert status == 0 and written["verdict"] == "pass", output
    (models / "junk.pt").write_bytes(b"\x00\x01 not a model")
    status, output, written = run_action(tmp_path, paths="models/junk.pt", out="junk")
    assert status == 1 and written["verdict"] == "fail", output
    status, output, written = run_action(
        tmp_path, paths="models/junk.pt", out="junk", **{"fail-on-unscannable": "false"}
    )
    assert status == 0 and written["verdict"] == "pass", output
    assert "::warning file=models/junk.pt" in output


@pytest.fixture
def constant_model(tmp_path: Path) -> Path:
    """An MLP with all weights zero: every logit ties, so it always answers class 0 (malignant)."""
    data = load_dataset("builtin:breast-cancer")
    kwargs = {"in_features": 30, "num_classes": 2, "hidden": [8]}
    net = build_architecture("mlp", kwargs)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
    return save_safetensors_model(
        net, data.spec, tmp_path / "model.safetensors", arch="mlp", arch_kwargs=kwargs
    )


CAMPAIGN = """
threat_model:
  norms: {linf: [0.1]}
attacks: [pgd]
attack_params:
  pgd: {steps: 5}
examples: 40
corruptions: {enabled: false}
certification: {enabled: false}
masking_checks: false
gates:
  - name: clean accuracy
    metric: clean_accuracy
    min: MIN
"""


def test_a_failed_gate_fails_the_action_after_the_reports_are_written(
    tmp_path: Path, constant_model: Path
) -> None:
    (tmp_path / "strict.yaml").write_text(CAMPAIGN.replace("MIN", "0.9"))
    (tmp_path / "lenient.yaml").write_text(CAMPAIGN.replace("MIN", "0.0"))
    inputs = {"model": constant_model.name, "data": "builtin:breast-cancer"}

    status, output, written = run_action(tmp_path, campaign="strict.yaml", out="strict", **inputs)
    assert status == 1 and written["verdict"] == "fail", output
    assert written["junit"] == "strict/assess/junit.xml" and written["scan-sarif"] == ""
    junit = (tmp_path / written["junit"]).read_text()
    assert 'name="clean accuracy"' in junit and junit.count("<failure") == 1
    sarif = json.loads((tmp_path / written["assess-sarif"]).read_text())
    assert any("clean accuracy" in r["message"]["text"] for r in sarif["runs"][0]["results"])
    assert (tmp_path / "strict" / "assess" / "report.json").is_file()

    status, output, written = run_action(tmp_path, campaign="lenient.yaml", out="lenient", **inputs)
    assert status == 0 and written["verdict"] == "pass", output
    assert "<failure" not in (tmp_path / written["junit"]).read_text()


def test_bad_inputs_are_errors_not_failures(tmp_path: Path) -> None:
    cases = [
        ({}, "nothing to do"),
        ({"campaign": "c.yaml", "model": "m.safetensors"}, "needs both the model and the data"),
        ({"paths": "m.pt", "fail-on-unscannable": "maybe"}, "must be true or false"),
        ({"paths": "missing.pt"}, "dlsec scan could not run"),
    ]
    for inputs, message in cases:
        status, output, written = run_action(tmp_path, **inputs)
        assert status == 2 and written["verdict"] == "error", (inputs, output)
        assert message in output, (inputs, output)


def test_install_puts_cpu_torch_first_then_this_checkout(tmp_path: Path) -> None:
    """With install on: pip twice, in order, then dlsec. Stand-ins record the calls (no network)."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    for name in ("python3", "dlsec"):
        (fake / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        (fake / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update(PATH=os.pathsep.join([str(fake), os.environ.get("PATH", "")]), INPUT_PATHS="m.pt")
    env.update(INPUT_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu")
    pip = "python3 -m pip install --disable-pip-version-check"
    scan = "dlsec scan --format sarif --output dlsec-reports/scan.sarif -- m.pt"
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert calls.read_text().splitlines() == [
        f"{pip} torch --index-url https://download.pytorch.org/whl/cpu",
        f"{pip} {ROOT}",
        "dlsec version",
        scan,
    ], done.stdout + done.stderr
    calls.unlink()
    env.update(INPUT_DLSEC_SPEC="dlsec==0.1.0", INPUT_TORCH_SPEC="")
    subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert calls.read_text().splitlines() == [f"{pip} dlsec==0.1.0", "dlsec version", scan]
