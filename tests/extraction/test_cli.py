"""``dlsec extract`` and the extraction section of ``dlsec assess``."""

from __future__ import annotations

import json

import pytest

from dlsec.assess import load_campaign
from tests.cli.test_cli import assert_user_error, run, run_json

DIGITS = ["-m", "zoo:digits-cnn", "-d", "builtin:digits"]
FAST = ["--param", "epochs=5", "--param", "min_steps=60"]


def test_extract_json_saves_a_clone_that_dlsec_eval_loads(capsys, tmp_path):
    out = tmp_path / "clone.safetensors"
    summary = run_json(
        capsys,
        "extract",
        *DIGITS,
        "--method",
        "copycat",
        "--queries",
        "pd",
        "--budget",
        "150",
        "--access",
        "decision",
        "--checkpoints",
        "50,150",
        "--out",
        str(out),
        *FAST,
    )
    assert summary["method"] == "copycat" and summary["access"] == "decision"
    assert summary["queries"] == summary["budget"] == 150 and summary["test_rows"] == 450
    assert [p["queries"] for p in summary["curve"]] == [50, 150]
    assert out.is_file() and summary["out"] == str(out)
    evaluated = run_json(capsys, "eval", "-m", str(out), "-d", "builtin:digits")
    assert evaluated["accuracy"] == pytest.approx(summary["clone_accuracy"])
    code, _, err = run(capsys, "extract", *DIGITS, "--budget", "10", "--out", str(out))
    assert_user_error(code, err, "--force")


def test_extract_human_output(capsys):
    code, out, _ = run(
        capsys, "extract", *DIGITS, "--method", "jbda", "--budget", "60", "--param", "seeds=20", *FAST
    )
    assert code == 0
    assert "agreement with the target" in out and "60 (60)" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--method", "steal"], "--method must be one of"),
        (["--budget", "0"], "--budget"),
        (["--access", "white-box"], "--access must be score or decision"),
        (["--queries", "web"], "--queries must be one of"),
        (["--out", "clone.pt"], ".safetensors"),
        (["--method", "copycat", "--strategy", "adaptive"], "--strategy applies"),
        (["--strategy", "greedy"], "strategy must be random or adaptive"),
        (["--budget", "10", "--checkpoints", "5,50"], "checkpoints must lie"),
        (["--checkpoints", "a,b"], "--checkpoints"),
        (["--param", "bogus=1"], "bogus"),
        (["--clone-arch", "nope"], "unknown architecture"),
    ],
)
def test_extract_bad_inputs_exit_2(capsys, args, fragment):
    code, _, err = run(capsys, "extract", *DIGITS, *args)
    assert_user_error(code, err, fragment)


def test_extract_refuses_data_of_another_shape(capsys):
    code, _, err = run(capsys, "extract", "-m", "zoo:digits-cnn", "-d", "builtin:breast-cancer")
    assert_user_error(code, err, "shape")


CAMPAIGN = """
threat_model: {access: score, norms: {linf: [0.1]}}
attacks: []
examples: 40
corruptions: {enabled: false}
certification: {enabled: false}
masking_checks: false
extraction:
  enabled: true
  methods: [copycat, jbda]
  budget: 150
  queries: {copycat: pd}
  params: {copycat: {epochs: 5}, jbda: {seeds: 20, epochs: 5}}
  checkpoints: [50, 150]
gates:
  - {name: no high findings, metric: findings, severity: high, max: 0}
"""


def test_campaigns_leave_extraction_off_by_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("examples: 10\n")
    assert load_campaign(path).extraction.enabled is False
    path.write_text("extraction: {enabled: true, methods: [steal]}\n")
    with pytest.raises(Exception, match="c.yaml:1: extraction.methods.0"):
        load_campaign(path)


def test_assessment_reports_extraction_with_owasp_and_atlas(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN)
    out = tmp_path / "run"
    code, _, err = run(capsys, "assess", *DIGITS, "--campaign", str(path), "--out", str(out), "--json")
    assert code == 1, err  # the copycat clone agrees on more than 90%: a high finding fails the gate
    report = json.loads((out / "report.json").read_text())
    section = report["extraction"]
    assert section["budget"] == 150 and section["attacker_rows"] == 225
    assert set(section["methods"]) == {"copycat", "jbda"}
    copycat = section["methods"]["copycat"]
    assert copycat["queries"] == 150 and copycat["agreement"] >= 0.9
    assert section["methods"]["jbda"]["detected_at"] is not None  # the gateway's detector sees JBDA
    finding = next(f for f in report["findings"] if f["code"] == "extraction-copycat")
    assert finding["severity"] == "high"
    assert finding["owasp"] == "ML05 Model Theft" and finding["atlas"] == "AML.T0024.002 Extract AI Model"
    html = (out / "report.html").read_text()
    assert 'id="extraction"' in html and "AML.T0024.002" in html
    sarif = (out / "report.sarif").read_text()
    assert "ML05" in sarif
