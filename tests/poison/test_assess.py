from dlsec.assess.backdoor import ATLAS_MODEL, OWASP_MODEL, Backdoor, run_backdoor
from dlsec.assess.campaign import Campaign
from dlsec.assess.report import render_html


def _step(key, compute):
    return compute()


def test_the_backdoor_section_is_off_by_default():
    assert Campaign().backdoor.enabled is False


def test_the_backdoor_section_reports_a_finding_with_owasp_and_atlas(digits_split, badnets_model):
    test = digits_split[1]
    section, findings = run_backdoor(
        badnets_model, test, Backdoor(enabled=True, examples=96), step=_step, seed=0
    )
    assert section["scan"]["backdoor"] and section["scan"]["target"] == 0
    assert section["scan"]["strip"]["detected"] >= 0.5
    loc = section["scan"]["localisation"]  # where the decision comes from, beside the scan's mask
    assert loc["target"] == 0 and loc["bbox"][0] >= 4 and loc["bbox"][2] >= 4
    assert "the decision comes from rows" in findings[0]["detail"]
    (finding,) = findings
    assert (
        finding["owasp"] == OWASP_MODEL and finding["atlas"] == ATLAS_MODEL and finding["severity"] == "high"
    )
    report = {
        "title": "t",
        "model": {"ref": "m", "access": "white-box", "sha256": "0"},
        "data": {"ref": "d", "sha256": "0", "rows": 1, "kind": "image"},
        "campaign": {},
        "clean": {
            "accuracy": 1.0,
            "n": 1,
            "confusion_matrix": [[1]],
            "per_class_accuracy": [1.0],
            "class_names": ["0"],
        },
        "findings": findings,
        "gates": [],
        "passed": True,
        "reproducibility": {},
        "backdoor": section,
    }
    html = render_html(report)
    assert "backdoor suspected, target class 0" in html
