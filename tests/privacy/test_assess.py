"""The privacy section of dlsec assess: off by default, on when the campaign asks."""

import pytest

from dlsec.assess import Campaign, default_campaign, run_assessment
from dlsec.assess.campaign import Certification, Corruptions
from dlsec.assess.privacy import Privacy, inversion_findings, membership_findings, roc_svg
from dlsec.core import load_dataset
from dlsec.zoo import load_zoo_model, zoo_card, zoo_path


def test_privacy_is_off_by_default():
    assert Campaign().privacy.enabled is False
    assert default_campaign(kind="image").privacy.enabled is False


def test_assessment_with_privacy_section(tmp_path):
    model = load_zoo_model("digits-mlp")
    card = zoo_card("digits-mlp")
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    campaign = Campaign(
        attacks=[],
        examples=50,
        corruptions=Corruptions(enabled=False),
        certification=Certification(enabled=False),
        masking_checks=False,
        privacy=Privacy(enabled=True, attacks=["loss", "label-only"], bootstrap=20, inversion_steps=100),
    )
    result = run_assessment(
        model,
        test,
        campaign,
        tmp_path,
        model_ref="zoo:digits-mlp",
        model_sha256=card["weights"]["sha256"],
        model_file=zoo_path("digits-mlp") / "model.safetensors",
    )
    section = result.report["privacy"]
    assert section["membership"]["members"] == 1347 and section["membership"]["non_members"] == 450
    assert set(section["membership"]["attacks"]) == {"loss", "label-only"}
    inv = section["inversion"]
    # MI-Face on the seeded digits MLP: an independent classifier recognises every class.
    assert len(inv["gallery"]) == 10 and inv["recognition_rate"] >= 0.8
    # The loss and label-only attacks do not separate members here (AUC near 0.5), so the one
    # finding is the inversion, high because the rate is at least 0.8, with its mappings.
    # (membership findings and their mappings: test_membership_finding_severity below.)
    assert section["membership"]["attacks"]["loss"]["auc"] < 0.6
    findings = {f["code"]: f for f in result.report["findings"]}
    assert set(findings) == {"model-inversion"}
    inversion = findings["model-inversion"]
    assert inversion["severity"] == "high"
    assert inversion["owasp"].startswith("ML03") and inversion["atlas"].startswith("AML.T0024.001")
    assert inversion["evidence"]["recognition_rate"] == inv["recognition_rate"]
    html = (tmp_path / "report.html").read_text()
    assert 'id="privacy"' in html and "Membership inference" in html and "MI-Face" in html
    assert html.count("data:image/png") >= 10


def test_roc_chart_is_log_log():
    roc = {"fpr": [0.0, 0.001, 0.01, 0.1, 1.0], "tpr": [0.0, 0.1, 0.3, 0.7, 1.0]}
    attacks = {"a": {"auc": 0.9, "roc": roc}}
    svg = roc_svg(attacks)
    assert svg.startswith("<svg") and "0.001" in svg and "polyline" in svg


def _section(auc, auc_ci, rows, skipped=None):
    tpr = {str(fpr): {"fpr": fpr, "tpr": ci_low, "ci": [ci_low, 1.0]} for fpr, ci_low in rows}
    return {
        "best": "loss",
        "attacks": {"loss": {"auc": auc, "auc_ci": list(auc_ci), "tpr_at_fpr": tpr}},
        "skipped": skipped or {},
    }


# (AUC, its CI, [(FPR, lower CI of the TPR there)], expected severity or None): every threshold
# on both sides. The lowest FPR decides (rows listed highest first to show the sort).
_SEVERITY = [
    (0.50, (0.45, 0.55), [(0.01, 0.0)], None),
    (0.56, (0.5501, 0.6), [(0.01, 0.0)], "medium"),
    (0.7499, (0.50, 0.8), [], None),
    (0.75, (0.50, 0.8), [], "high"),
    (0.50, (0.45, 0.55), [(0.01, 0.02)], None),
    (0.50, (0.45, 0.55), [(0.01, 0.0201)], "medium"),
    (0.50, (0.45, 0.55), [(0.01, 0.1)], "medium"),
    (0.50, (0.45, 0.55), [(0.01, 0.1001)], "high"),
    (0.50, (0.45, 0.55), [(0.1, 0.9), (0.001, 0.0)], None),
    (0.50, (0.45, 0.55), [(0.1, 0.0), (0.001, 0.0021)], "medium"),
    (0.60, (0.56, 0.64), [(0.01, 0.2)], "high"),
    (0.80, (0.70, 0.90), [(0.01, 0.03)], "high"),
]


@pytest.mark.parametrize(("auc", "auc_ci", "rows", "severity"), _SEVERITY)
def test_membership_finding_severity(auc, auc_ci, rows, severity):
    findings = membership_findings(_section(auc, auc_ci, rows))
    if severity is None:
        assert findings == []
        return
    (finding,) = findings
    assert finding["code"] == "membership-inference" and finding["severity"] == severity
    assert finding["owasp"].startswith("ML04") and finding["atlas"].startswith("AML.T0024.000")
    assert finding["evidence"]["auc"] == auc
    assert [r["fpr"] for r in finding["evidence"]["tpr_at_fpr"]] == sorted(fpr for fpr, _ in rows)


def test_a_partial_membership_audit_is_a_medium_finding_beside_the_leak():
    skipped = {"rmia": "needs reference models"}
    findings = membership_findings(_section(0.80, (0.7, 0.9), [], skipped))
    assert [(f["code"], f["severity"]) for f in findings] == [
        ("membership-inference", "high"),
        ("membership-audit-partial", "medium"),
    ]
    partial = findings[1]
    assert partial["evidence"] == {"skipped": skipped, "best": "loss"} and "rmia" in partial["title"]
    quiet = membership_findings(_section(0.5, (0.45, 0.55), [], skipped))
    assert [f["code"] for f in quiet] == ["membership-audit-partial"]


@pytest.mark.parametrize(
    ("rate", "severity"), [(0.49, None), (0.5, "medium"), (0.79, "medium"), (0.8, "high")]
)
def test_inversion_finding_severity(rate, severity):
    findings = inversion_findings({"recognition_rate": rate, "closer_to_own_class": 0.5})
    assert [f["severity"] for f in findings] == ([] if severity is None else [severity])
