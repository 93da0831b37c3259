"""The privacy section of dlsec assess: off by default, on when the campaign asks."""

from dlsec.assess import Campaign, default_campaign, run_assessment
from dlsec.assess.campaign import Certification, Corruptions
from dlsec.assess.privacy import Privacy, roc_svg
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
    assert len(inv["gallery"]) == 10 and 0 <= inv["recognition_rate"] <= 1
    for f in result.report["findings"]:
        if f["code"] == "membership-inference":
            assert f["owasp"].startswith("ML04") and f["atlas"].startswith("AML.T0024.000")
        if f["code"] == "model-inversion":
            assert f["owasp"].startswith("ML03") and f["atlas"].startswith("AML.T0024.001")
    html = (tmp_path / "report.html").read_text()
    assert 'id="privacy"' in html and "Membership inference" in html and "MI-Face" in html
    assert html.count("data:image/png") >= 10


def test_roc_chart_is_log_log():
    roc = {"fpr": [0.0, 0.001, 0.01, 0.1, 1.0], "tpr": [0.0, 0.1, 0.3, 0.7, 1.0]}
    attacks = {"a": {"auc": 0.9, "roc": roc}}
    svg = roc_svg(attacks)
    assert svg.startswith("<svg") and "0.001" in svg and "polyline" in svg
