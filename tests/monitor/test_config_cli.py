"""monitor.yaml: validation with line and field, composition, online rules; `dlsec monitor`."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from dlsec.monitor import MonitorConfig, MonitorConfigError, Window, build_monitor, check, load_monitor_config
from tests.cli.test_cli import assert_user_error, run, run_json

GOOD = """\
version: 1
window: 40
stride: 40
ert: 2000
rules:
  - name: input drift
    severity: high
    any_of:
      - {detector: ks, params: {correction: fdr}}
      - {detector: mmd, params: {n_permutations: 50}}
  - name: both
    severity: critical
    all_of:
      - {detector: ks}
      - {detector: mmd, window: 20, params: {n_permutations: 50}}
"""


def _write(tmp_path, text: str):
    path = tmp_path / "monitor.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_config_loads_and_composes_like_gates(tmp_path):
    cfg = load_monitor_config(_write(tmp_path, GOOD))
    assert [r.severity for r in cfg.rules] == ["high", "critical"]
    assert [leaf.detector for leaf in cfg.rules[1].leaves()] == ["ks", "mmd"]
    rng = np.random.default_rng(0)
    ref = Window(x=rng.normal(size=(300, 3)))
    one_feature = rng.normal(size=(100, 3))
    one_feature[:, 0] += 0.8
    report = check(cfg, ref, Window(x=one_feature))
    by_name = {r["name"]: r for r in report.rules}
    ks_fired = next(d["drift"] for d in report.results if d["rule_index"] == 1 and d["name"] == "ks")
    mmd_fired = next(d["drift"] for d in report.results if d["rule_index"] == 1 and d["name"] == "mmd")
    assert by_name["both"]["fired"] == (ks_fired and mmd_fired)
    assert by_name["input drift"]["fired"]
    # (each leaf tests at alpha 0.05; this seed draws a window where none fires by chance)
    assert not check(cfg, ref, Window(x=np.random.default_rng(12).normal(size=(100, 3)))).fired


def test_the_online_monitor_raises_rule_alerts_with_their_severity(tmp_path):
    cfg = load_monitor_config(_write(tmp_path, GOOD))
    rng = np.random.default_rng(1)
    monitor = build_monitor(cfg).fit(Window(x=rng.normal(size=(600, 3))))
    quiet = [a for _ in range(5) for a in monitor.update(rng.normal(size=(40, 3)))]
    loud = [a for _ in range(3) for a in monitor.update(rng.normal(2.0, 1.0, size=(40, 3)))]
    assert len(quiet) <= 1  # ert 2000 at stride 40: 1 false alarm in 50 checks per leaf
    assert {"input drift", "both"} <= {a.rule for a in loud}
    assert {a.severity for a in loud if a.rule == "both"} == {"critical"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rules:\n  - {detector: kss}\n", "monitor.yaml:2: rules.0.detector: unknown detector 'kss'"),
        (
            "rules:\n  - name: x\n    detector: ks\n    params: {alpah: 0.1}\n",
            "monitor.yaml:4: rules.0.params: unknown setting 'alpah' for ks",
        ),
        (
            "rules:\n  - name: x\n    any_of: []\n",
            "monitor.yaml:3: rules.0.any_of: any_of needs at least one rule",
        ),
        ("rules:\n  - {detector: ks, severity: urgent}\n", "monitor.yaml:2: rules.0.severity"),
        ("window: 1\nrules:\n  - {detector: ks}\n", "monitor.yaml:1: window"),
        ("rules: []\n", "monitor.yaml:1: rules: give at least one rule"),
        (
            "rules:\n  - {detector: label, features: embeddings}\n",
            "rules.0.features: label reads probs, not embeddings",
        ),
        ("rules:\n  - {detector: ks\n", "monitor.yaml:3: not valid YAML"),
        ("- just a list\n", "monitor.yaml:1: a monitor config is a mapping"),
        ("verison: 1\nrules:\n  - {detector: ks}\n", "monitor.yaml:1: verison"),
    ],
)
def test_malformed_configs_exit_2_naming_the_line_and_field(capsys, tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(MonitorConfigError):
        load_monitor_config(path)
    code, _, err = run(
        capsys,
        "monitor",
        "check",
        "-r",
        "builtin:breast-cancer",
        "-c",
        "builtin:breast-cancer",
        "--config",
        str(path),
    )
    assert_user_error(code, err, fragment)


def test_check_is_quiet_on_the_same_data_and_fires_on_a_shift(capsys, tmp_path):
    clean = run_json(capsys, "monitor", "check", "-r", "builtin:breast-cancer", "-c", "builtin:breast-cancer")
    assert clean["fired"] is False and clean["verdict"] == "partial"  # no --model: listed, not run
    assert [d["name"] for d in clean["detectors"]] == ["ks", "mmd", "classifier"]
    assert {item["check"] for item in clean["not_run"]} >= {"label", "performance", "mahalanobis"}
    shifted = tmp_path / "shifted.npz"
    made = run_json(
        capsys, "monitor", "shift", "-d", "builtin:breast-cancer", "--kind", "pattern", "-o", str(shifted)
    )
    assert made["rows"] == 143 and shifted.is_file()
    code, out, _ = run(
        capsys,
        "monitor",
        "check",
        "-r",
        "builtin:breast-cancer",
        "-c",
        str(shifted),
        "--json",
        "--sarif",
        str(tmp_path / "check.sarif"),
    )
    assert code == 1
    import json

    payload = json.loads(out)
    assert payload["fired"] and any(d["drift"] for d in payload["detectors"] if d["detector"] == "ks")
    [run_log] = json.loads((tmp_path / "check.sarif").read_text())["runs"]
    [invocation] = run_log["invocations"]
    assert invocation["properties"]["verdict"] == "fail"
    assert len(invocation["toolExecutionNotifications"]) == len(payload["not_run"])


def test_check_with_a_model_reports_every_detector(capsys, tmp_path):
    shifted = tmp_path / "prior.npz"
    run_json(
        capsys,
        "monitor",
        "shift",
        "-d",
        "builtin:digits",
        "--kind",
        "prior",
        "--severity",
        "4",
        "-o",
        str(shifted),
    )
    code, out, _ = run(
        capsys, "monitor", "check", "-r", "builtin:digits", "-c", str(shifted), "-m", "zoo:digits-cnn"
    )
    assert code == 1
    assert "prediction drift" in out and "FIRED" in out and "mahalanobis" in out


def test_bad_input_exits_2(capsys, tmp_path):
    code, _, err = run(
        capsys, "monitor", "shift", "-d", "builtin:digits", "--kind", "fog", "-o", str(tmp_path / "x.npz")
    )
    assert_user_error(code, err, "unknown shift 'fog'")
    code, _, err = run(capsys, "monitor", "check", "-r", "builtin:digits", "-c", "builtin:breast-cancer")
    assert_user_error(code, err, "compare data of the same kind")
    code, _, err = run(
        capsys, "monitor", "shift", "-d", "builtin:digits", "--kind", "noise", "-o", str(tmp_path / "x.csv")
    )
    assert_user_error(code, err, "--out must name a .npz")


def test_a_detector_that_needs_a_model_is_not_run_without_one():
    cfg = MonitorConfig.model_validate({"rules": [{"detector": "squeezing"}]})
    report = check(cfg, Window(x=np.zeros((20, 2))), Window(x=np.zeros((20, 2))))
    [item] = report.not_run
    assert item["check"] == "squeezing" and "needs a model" in item["reason"]
    assert report.verdict == "partial" and not report.results
