"""Every report lists what did not run; the verdict is partial; `complete: true` gates fail."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import xmlschema

from dlsec.assess import run_assessment
from dlsec.assess.campaign import Campaign
from dlsec.core import load_dataset, load_model

SARIF_SCHEMA = Path(__file__).parent.parent / "schemas" / "sarif-schema-2.1.0.json"


def _campaign(access: str, *, require_complete: bool = True) -> Campaign:
    gates: list[dict] = [{"metric": "clean_accuracy", "min": 0.0}]
    if require_complete:
        gates.insert(0, {"name": "all ran", "complete": True})
    return Campaign.model_validate(
        {
            "threat_model": {"access": access, "norms": {"linf": [0.05]}},
            "attacks": ["fgsm", "square"],
            "attack_params": {"square": {"n_queries": 20}},
            "minimal": ["deepfool"],
            "masking_checks": True,
            "examples": 20,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            "gates": gates,
        }
    )


def _run(tmp_path: Path, access: str, model_file: Path | None, *, require_complete: bool = True):
    model = load_model("zoo:breast-cancer-mlp", device="cpu")
    _, test = load_dataset("builtin:breast-cancer").split(test_size=0.25, seed=0)
    return run_assessment(
        model,
        test,
        _campaign(access, require_complete=require_complete),
        tmp_path / f"{access}-{require_complete}",
        model_ref="zoo:breast-cancer-mlp",
        model_sha256="x",
        model_file=model_file,
    )


def test_a_score_access_campaign_names_what_did_not_run(tmp_path: Path) -> None:
    result = _run(tmp_path, "score", None)
    report = result.report
    checks = {item["check"]: item["reason"] for item in report["not_run"]}
    assert "needs white-box access" in checks["evasion fgsm (linf)"]
    assert checks["minimal perturbation deepfool"] == "needs white-box access"
    assert "gradient-masking checks" in checks and "model-file scan" in checks
    assert "evasion square (linf)" not in checks  # square runs on scores
    # With `complete: true` among the gates, the campaign fails naming what did not run.
    assert report["complete"] is False and report["verdict"] == "fail"
    gate = next(g for g in report["gates"] if g["name"] == "all ran")
    assert not gate["passed"] and "evasion fgsm (linf)" in gate["reason"]
    assert not result.passed
    out = tmp_path / "score-True"
    sarif = json.loads((out / "report.sarif").read_text())
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(sarif)
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert len(notes) == len(report["not_run"])
    assert all(n["message"]["text"].startswith("not run: ") for n in notes)
    junit = (out / "junit.xml").read_text()
    xmlschema.XMLSchema(Path(__file__).with_name("junit.xsd")).validate(junit)
    assert f'skipped="{len(report["not_run"])}"' in junit
    html = (out / "report.html").read_text()
    assert "Not run" in html and "needs white-box access" in html
    assert json.loads((out / "report.json").read_text())["not_run"] == report["not_run"]


def test_a_white_box_campaign_that_runs_everything_is_complete(tmp_path: Path) -> None:
    from dlsec.zoo import model_file

    path = model_file("zoo:breast-cancer-mlp")
    result = _run(tmp_path, "white-box", path)
    report = result.report
    assert report["not_run"] == [] and report["complete"] and report["verdict"] == "pass"
    assert all(g["passed"] for g in report["gates"]) and result.passed


def test_without_a_completeness_gate_the_verdict_is_partial_not_pass(tmp_path: Path) -> None:
    result = _run(tmp_path, "score", None, require_complete=False)
    assert result.passed  # every gate passed ...
    assert result.report["verdict"] == "partial" and result.report["not_run"]  # ... but not all ran


def test_the_completeness_gate_fails_closed_and_is_validated() -> None:
    import pytest
    from pydantic import ValidationError

    from dlsec.assess.campaign import GateSpec
    from dlsec.assess.gates import Complete, build_gate

    assert not Complete().check({}).passed  # a report that does not say what ran
    assert Complete().check({"not_run": []}).passed
    failed = build_gate(GateSpec(complete=True)).check({"not_run": [{"check": "x", "reason": "y"}]})
    assert not failed.passed and failed.reason == "not run: x (y)"
    for bad in ({"complete": False}, {"complete": True, "metric": "clean_accuracy", "min": 0.5}):
        with pytest.raises(ValidationError):
            GateSpec.model_validate(bad)
