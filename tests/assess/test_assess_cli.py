"""dlsec assess end to end: reports, gates, JUnit and SARIF, resume, bad campaigns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlsec.assess import load_campaign, run_assessment
from dlsec.core import load_dataset, load_model
from tests.cli.test_cli import assert_user_error, run

BC = ["-m", "zoo:breast-cancer-mlp", "-d", "builtin:breast-cancer"]

CAMPAIGN = """
threat_model:
  access: white-box
  norms:
    linf: [0.05, 0.1]
attacks: [pgd, apgd-ce]
attack_params:
  pgd: {steps: 10}
  apgd-ce: {steps: 20}
examples: 60
minimal: [deepfool]
corruptions:
  severities: [1, 5]
certification: {n0: 50, n: 200, examples: 30, sigma: 0.1, radii: [0.0, 0.05, 0.1]}
gates:
  - name: clean accuracy
    metric: clean_accuracy
    min: 0.9
  - name: robust at 0.1
    metric: robust_accuracy
    norm: linf
    eps: 0.1
    min: 0.99
"""


@pytest.fixture
def campaign(tmp_path) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return path


def test_failing_gate_exits_1_and_every_report_says_why(capsys, tmp_path, campaign):
    out = tmp_path / "out"
    code, stdout, _ = run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(campaign),
        "-o",
        str(out),
        "--json",
    )
    assert code == 1
    summary = json.loads(stdout)
    assert summary["passed"] is False
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "dlsec.report/1"
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["clean accuracy"]["passed"] and not gates["robust at 0.1"]["passed"]
    assert "below the minimum" in gates["robust at 0.1"]["reason"]
    # Worst case over the attacks is no better than any single attack.
    curve = report["robustness"]["curves"]["linf"]
    for accs in curve["per_attack"].values():
        assert all(w <= a for w, a in zip(curve["robust_accuracy"], accs, strict=True))
    assert report["certification"]["radii"] == [0.0, 0.05, 0.1]
    assert report["model_file"]["verdict"] == "safe" and report["model_file"]["format"] == "safetensors"

    import xmlschema

    junit = out / "junit.xml"
    xmlschema.XMLSchema(Path(__file__).with_name("junit.xsd")).validate(junit)
    text = junit.read_text()
    assert 'name="robust at 0.1"' in text and "<failure" in text and text.count("<failure") == 1

    import sarif_pydantic

    raw = json.loads((out / "report.sarif").read_text())
    log = sarif_pydantic.Sarif.model_validate(raw)
    assert log.version == "2.1.0" and raw["$schema"].endswith("sarif-2.1.0.json")
    results = raw["runs"][0]["results"]
    rule_ids = {r["id"] for r in raw["runs"][0]["tool"]["driver"]["rules"]}
    assert len(results) == len(report["findings"]) + 1 and len(report["findings"]) > 0
    gate_results = [r for r in results if r["ruleId"] == "dlsec/gate-failed"]
    assert len(gate_results) == 1 and "robust at 0.1" in gate_results[0]["message"]["text"]
    assert all(
        r["ruleId"] in rule_ids and r["level"] in {"error", "warning", "note", "none"} for r in results
    )
    assert all(r["message"]["text"] for r in results)


def test_passing_gates_exit_0(capsys, tmp_path, campaign):
    campaign.write_text(CAMPAIGN.replace("min: 0.99", "min: 0.0"))
    code, _, err = run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(campaign),
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 0, err


def test_interrupted_campaign_resumes_without_redoing_units(tmp_path, campaign):
    model = load_model("zoo:breast-cancer-mlp", device="cpu")
    _, test = load_dataset("builtin:breast-cancer").split(test_size=0.25, seed=0)
    plan = load_campaign(campaign)
    out = tmp_path / "out"

    class Stop(Exception):
        pass

    def interrupt(done, total, stats):
        if done == 4:
            raise Stop

    with pytest.raises(Stop):
        run_assessment(
            model, test, plan, out, model_ref="zoo:breast-cancer-mlp", model_sha256="x", progress=interrupt
        )
    finished = sorted(p.name for p in (out / ".dlsec-units").glob("*.json") if p.name != "fingerprint.json")
    assert len(finished) == 4 and not (out / "report.json").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / ".dlsec-units").glob("*.json")}
    resumed = run_assessment(model, test, plan, out, model_ref="zoo:breast-cancer-mlp", model_sha256="x")
    assert resumed.report["reproducibility"]["units_reused"] == 4
    for path, mtime in mtimes.items():
        if path.name != "fingerprint.json":
            assert path.stat().st_mtime_ns == mtime  # finished units were not recomputed
    fresh = run_assessment(
        model, test, plan, tmp_path / "fresh", model_ref="zoo:breast-cancer-mlp", model_sha256="x"
    )
    for key in ("clean", "robustness", "corruptions", "certification", "gates"):
        assert resumed.report[key] == fresh.report[key]
    # A different model fingerprint discards the stale units instead of trusting them.
    other = run_assessment(model, test, plan, out, model_ref="zoo:breast-cancer-mlp", model_sha256="y")
    assert other.report["reproducibility"]["units_reused"] == 0


def test_malformed_campaign_and_bad_usage_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("threat_model:\n  norms:\n    linf: [0.1]\nexamples: -3\n")
    code, _, err = run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(bad),
        "-o",
        str(tmp_path / "o"),
    )
    assert_user_error(code, err, "bad.yaml:4: examples")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("attacks: [telepathy]\n")
    code, _, err = run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(unknown),
        "-o",
        str(tmp_path / "o"),
    )
    assert_user_error(code, err, "unknown attack")


def test_score_access_runs_only_gradient_free_attacks(capsys, tmp_path):
    campaign = tmp_path / "c.yaml"
    campaign.write_text("""
threat_model: {access: score, norms: {linf: [0.1]}}
attacks: [square, apgd-ce]
attack_params: {square: {n_queries: 100}}
examples: 20
corruptions: {enabled: false}
certification: {enabled: false}
""")
    out = tmp_path / "o"
    code, _, err = run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(campaign),
        "-o",
        str(out),
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["access"] == "score"
    assert report["robustness"]["curves"]["linf"]["attacks"] == ["square"]
    assert "gradient_masking" not in report["robustness"]


def test_report_numbers_match_dlsec_attack(capsys, tmp_path, campaign):
    out = tmp_path / "out"
    run(
        capsys,
        "assess",
        *BC,
        "-c",
        str(campaign),
        "-o",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    code, stdout, _ = run(
        capsys,
        "attack",
        *BC,
        "--attack",
        "apgd-ce",
        "--eps",
        "0.1",
        "-p",
        "steps=20",
        "--n",
        "60",
        "--json",
    )
    assert code == 0
    attacked = json.loads(stdout)
    curve = report["robustness"]["curves"]["linf"]
    assert curve["per_attack"]["apgd-ce"][curve["eps"].index(0.1)] == attacked["robust_accuracy"]
    assert report["clean"]["accuracy"] == attacked["clean_accuracy"]
    assert torch.__version__ == report["reproducibility"]["torch"]
