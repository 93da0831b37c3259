"""Compliance evidence: control tables, evidence checked now, the model card, the ML-BOM, SARIF, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from dlsec.comply.evidence import (
    FRAMEWORKS,
    KINDS,
    build_bom,
    build_compliance,
    collect_evidence,
    compliance_sarif,
    load_framework,
    status_of,
)
from dlsec.errors import UsageError
from dlsec.store import KeyStore, Registry
from tests.cli.test_cli import assert_user_error, run
from tests.release.test_registry import _signed_model, home  # noqa: F401  (home is a fixture)

SARIF_SCHEMA = Path(__file__).parents[1] / "schemas" / "sarif-schema-2.1.0.json"


def _report(path: Path, *, passed: bool = True, not_run: list[dict[str, str]] | None = None) -> Path:
    report = {
        "schema": "dlsec.report/1",
        "model": {"ref": "m", "access": "white-box", "sha256": "0" * 64},
        "data": {"ref": "builtin:iris[test]", "sha256": "a" * 64, "rows": 38, "kind": "tabular"},
        "clean": {"accuracy": 0.9, "per_class_accuracy": [1.0, 0.8, 0.9], "class_names": ["a", "b", "c"]},
        "robustness": {"curves": {"linf": {"eps": [0.1], "robust_accuracy": [0.5], "attacks": ["apgd-ce"]}}},
        "findings": [
            {"code": "evasion-linf", "severity": "high", "title": "Evasion", "detail": "train with PGD"}
        ],
        "gates": [{"name": "robust", "passed": passed, "value": 0.5, "reason": "r"}],
        "passed": passed,
        "not_run": not_run or [],
        "verdict": "fail" if not passed else ("partial" if not_run else "pass"),
    }
    path.write_text(json.dumps(report))
    return path


def test_every_framework_table_loads_with_numbered_rows_and_known_kinds():
    for name in FRAMEWORKS:
        fw = load_framework(name)
        assert fw.id == name and len(fw.controls) >= 6
        assert len({c.id for c in fw.controls}) == len(fw.controls)
        assert all(c.ref.strip() and set(c.evidence) <= set(KINDS) for c in fw.controls)
    gdpr = {c.ref: c for c in load_framework("gdpr").controls}
    assert gdpr["Art. 17"].evidence == ("erasure",)
    hipaa = {c.ref: c for c in load_framework("hipaa").controls}
    assert hipaa["45 CFR 164.312(b)"].evidence == ("audit-log",)
    with pytest.raises(UsageError, match="unknown framework 'sox'"):
        load_framework("sox")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"a": "ok", "b": "ok"}, "met"),
        ({"a": "ok", "b": "attested"}, "attested"),
        ({"a": "ok", "b": "absent"}, "partial"),
        ({"a": "partial"}, "partial"),
        ({"a": "absent", "b": "absent"}, "gap"),
        ({"a": "ok", "b": "failing"}, "failing"),
        ({"a": "absent", "b": "failing"}, "failing"),
    ],
)
def test_control_status_from_evidence_states(states, expected):
    assert status_of(states) == expected


def test_registry_version_evidence_is_checked_now_and_tampering_fails_the_controls(home):  # noqa: F811
    reg = Registry.open(home=home)
    report = _report(home / "report.json")
    reg.add(_signed_model(home, "a", 1), "clf", report=report)
    run_ = build_compliance("clf@1", frameworks=["gdpr", "hipaa"], registry=reg, keys=home / "keys")
    ev = run_.evidence
    for kind in (
        "signature",
        "scan",
        "audit-log",
        "assessment",
        "gates",
        "robustness",
        "model-card",
        "ml-bom",
    ):
        assert ev.state(kind) == "ok", (kind, ev.to_dict())
    assert ev.state("access-control") == "absent"
    gdpr = {r.control.ref: r for r in run_.maps[0].results}
    # Art. 32(1) needs signature, scan, access control and an assessment: one is missing
    assert gdpr["Art. 32(1)"].status == "partial" and gdpr["Art. 32(1)"].missing == ["access-control"]
    assert gdpr["Art. 17"].status == "gap"

    KeyStore(reg.db).create(role="client", models=["clf"])
    again = build_compliance("clf@1", frameworks=["gdpr"], registry=reg, keys=home / "keys")
    assert {r.control.ref: r.status for r in again.maps[0].results}["Art. 32(1)"] == "met"

    stored = reg.get("clf@1").path / "model.safetensors"
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    tampered = build_compliance("clf@1", frameworks=["gdpr"], registry=reg, keys=home / "keys")
    assert tampered.evidence.state("signature") == "failing"
    by_ref = {r.control.ref: r.status for r in tampered.maps[0].results}
    assert by_ref["Art. 5(1)(f)"] == by_ref["Art. 32(1)"] == "failing" and tampered.failing >= 2
    reg.close()


def test_a_failed_gate_and_a_partial_assessment_are_not_passes(tmp_path, home):  # noqa: F811
    model = _signed_model(home, "b", 2)
    failed = collect_evidence(model, report=_report(tmp_path / "f.json", passed=False), keys=home / "keys")
    assert failed.state("assessment") == failed.state("gates") == "failing"
    partial = collect_evidence(
        model,
        report=_report(tmp_path / "p.json", not_run=[{"check": "apgd-eot", "reason": "no gradients"}]),
        keys=home / "keys",
    )
    assert partial.state("assessment") == "partial" and "apgd-eot" in partial.of("assessment")[0].summary
    (model / "model.sig").unlink()
    unsigned = collect_evidence(model, keys=home / "keys")
    assert unsigned.state("signature") == "absent"
    assert [n["kind"] for n in unsigned.not_run if "unsigned" in n["reason"]] == ["signature"]


def test_ml_bom_validates_against_cyclonedx_and_carries_the_hashes(home):  # noqa: F811
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "c", 3), "bom", report=_report(home / "r.json"))
    record = reg.get("bom@1")
    ev = collect_evidence("bom@1", registry=reg, keys=home / "keys", report=home / "r.json")
    text = build_bom(ev)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["specVersion"] == "1.6"
    model = doc["metadata"]["component"]
    assert model["type"] == "machine-learning-model" and model["version"] == "1"
    files = {c["name"]: c["hashes"][0]["content"] for c in model["components"]}
    assert files == record.manifest
    assert any(
        p["name"] == "dlsec:root-digest" and p["value"] == record.root_digest for p in model["properties"]
    )
    metrics = model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "robust accuracy", "value": "0.5000", "slice": "linf eps=0.1"} in metrics
    eval_data = [c for c in doc["components"] if c["bom-ref"] == "data:evaluation"]
    assert eval_data[0]["hashes"][0]["content"] == "a" * 64
    torch_pkg = [c for c in doc["components"] if c["name"] == "torch"]
    assert torch_pkg and torch_pkg[0]["purl"].startswith("pkg:pypi/torch@")
    reg.close()


def test_sarif_validates_and_names_every_control_that_is_not_met(tmp_path, home):  # noqa: F811
    model = _signed_model(home, "d", 4)
    run_ = build_compliance(
        model, frameworks=["eu-ai-act"], report=_report(tmp_path / "r.json"), keys=home / "keys"
    )
    log = compliance_sarif(run_)
    jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))
    not_met = [r for r in run_.maps[0].results if r.status != "met"]
    results = log["runs"][0]["results"]
    assert len(results) == len(not_met) > 0
    assert {r["ruleId"] for r in results} == {f"eu-ai-act/{r.control.id}" for r in not_met}
    gaps = [r for r in results if r["properties"]["status"] == "gap"]
    assert all(r["level"] == "warning" for r in gaps)


def test_cli_writes_every_artefact_and_exits_by_the_verdict(capsys, tmp_path, home):  # noqa: F811
    model = _signed_model(home, "e", 5)
    report = _report(tmp_path / "r.json")
    out = tmp_path / "out"
    args = ["comply", "-f", "gdpr", "--model", str(model), "--report", str(report), "--out", str(out)]
    args += ["--pub", str(home / "keys")]
    code, stdout, err = run(capsys, *args)
    assert code == 1, err  # gaps (no erasure record, no PII scan, ...)
    assert {p.name for p in out.iterdir()} == {
        "compliance.json",
        "compliance.html",
        "compliance.sarif",
        "model-card.json",
        "model-card.html",
        "bom.cdx.json",
    }
    html = (out / "compliance.html").read_text()
    assert all(c.ref in html for c in load_framework("gdpr").controls)
    card = json.loads((out / "model-card.json").read_text())
    assert "intended_use" in card["missing"] and card["metrics"]["clean_accuracy"] == 0.9
    code, _, err = run(capsys, *args, "--allow-gaps")
    assert code == 0, err
    attest = tmp_path / "tls.txt"
    attest.write_text("TLS 1.3 terminates at the load balancer")
    code, stdout, _ = run(
        capsys, "comply", "-f", "hipaa", "--evidence", f"encryption={attest}", "--out", str(out), "--json"
    )
    doc = json.loads(stdout)
    rows = {c["ref"]: c for c in doc["frameworks"][0]["controls"]}
    assert rows["45 CFR 164.312(e)(1)"]["status"] == "attested"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-f", "sox"], "--framework 'sox': unknown"),
        (["-f", "gdpr", "--evidence", "vibes=x.txt"], "unknown kind"),
        (["-f", "gdpr", "--evidence", "nonsense"], "KIND=FILE"),
        (["-f", "gdpr", "--report", "missing.json"], "no such file"),
        (["-f", "gdpr", "--model", "nosuch@1"], "nosuch"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, fragment):
    code, _, err = run(capsys, "comply", *args, "--out", str(tmp_path / "o"))
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o" / "compliance.json").exists()


def test_a_pii_scan_from_dlsec_data_pii_is_evidence_and_pii_found_fails_the_control(capsys, tmp_path):
    dirty, clean = tmp_path / "dirty.csv", tmp_path / "clean.csv"
    dirty.write_text("id,note\n1,write to alice.smith@example.com\n2,nothing here\n")
    clean.write_text("id,note\n1,blue\n2,green\n")
    for csv, expected_code in ((dirty, 1), (clean, 0)):
        code, stdout, err = run(capsys, "data", "pii", str(csv), "--json")
        assert code == expected_code, err
        (tmp_path / f"{csv.stem}.json").write_text(stdout)
    found = collect_evidence(pii=tmp_path / "dirty.json")
    assert found.state("pii-scan") == "failing" and "EMAIL_ADDRESS 1" in found.of("pii-scan")[0].summary
    none = build_compliance(None, frameworks=["gdpr"], pii=tmp_path / "clean.json")
    assert none.evidence.state("pii-scan") == "ok"
    assert {r.control.ref: r.status for r in none.maps[0].results}["Art. 5(1)(c)"] == "met"
    with pytest.raises(UsageError, match="not a `dlsec data pii --json` report"):
        collect_evidence(pii=_report(tmp_path / "r.json"))


def test_fairness_from_dlsec_fairness_is_evidence_and_a_failed_gate_fails_the_control(capsys, tmp_path):
    model = tmp_path / "credit"
    assert run(capsys, "train", "--data", "builtin:credit-bias", "--epochs", "3", "--out", str(model))[0] == 0
    common = ["fairness", "-m", str(model), "-d", "builtin:credit-bias", "--protected", "group", "--json"]
    for name, limit in (("loose", "1"), ("strict", "0.0001")):
        code, stdout, err = run(capsys, *common, "--max-dp-diff", limit)
        assert code == (0 if name == "loose" else 1), err
        (tmp_path / f"{name}.json").write_text(stdout)
    loose = build_compliance(None, frameworks=["nist-ai-rmf"], fairness=tmp_path / "loose.json")
    assert {r.control.ref: r.status for r in loose.maps[0].results}["MEASURE 2.11"] == "met"
    assert "protected attribute group" in loose.evidence.of("fairness")[0].summary
    strict = collect_evidence(fairness=tmp_path / "strict.json")
    assert strict.state("fairness") == "failing" and "gates failed" in strict.of("fairness")[0].summary


def test_erasure_records_in_the_audit_log_are_evidence_and_a_failed_one_stays_failing_until_redone(home):  # noqa: F811
    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "f", 6), "clf")
    verified = {"verified": True, "auc": 0.51, "auc_ci": [0.42, 0.6]}
    failed = {"verified": False, "reason": "AUC 0.71 above chance"}

    def states() -> list[tuple[str, str]]:
        ev = collect_evidence("clf@1", registry=reg, keys=home / "keys")
        return [(i.state, i.summary) for i in ev.of("erasure")]

    assert states() == []
    reg.audit.append("erasure.failed", "clf", {"row_sha256": ["r1", "r2"], "verification": failed})
    assert [s for s, _ in states()] == ["failing"]
    reg.audit.append(
        "erasure.record", "clf@2", {"method": "sisa", "row_sha256": ["r1"], "verification": verified}
    )
    got = states()  # r2 is still in the model: the failed request stays failing for that row
    assert sorted(s for s, _ in got) == ["failing", "ok"]
    assert any("LiRA AUC on them 0.510, CI [0.420, 0.600]" in summary for _, summary in got)
    assert any("erasure of 1 row(s)" in summary for s, summary in got if s == "failing")
    reg.audit.append(
        "erasure.record", "clf@3", {"method": "sisa", "row_sha256": ["r2"], "verification": verified}
    )
    assert [s for s, _ in states()] == ["ok", "ok"]
    reg.close()
