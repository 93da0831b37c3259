"""The findings every assessment section reports share one constructor."""

from __future__ import annotations

import pytest

from dlsec.assess._finding import FINDING_SEVERITIES, certification_finding, finding


def test_a_finding_has_the_report_schemas_keys_and_refuses_unknown_severities():
    f = finding("x", "high", "T", "D", {"n": 1}, owasp="ML01", atlas="AML.T0015")
    assert f == {
        "code": "x",
        "severity": "high",
        "title": "T",
        "detail": "D",
        "evidence": {"n": 1},
        "owasp": "ML01",
        "atlas": "AML.T0015",
    }
    assert FINDING_SEVERITIES == ("info", "low", "medium", "high")
    with pytest.raises(ValueError, match="unknown finding severity 'critical'"):
        finding("x", "critical", "T", "D", {}, owasp="ML01", atlas="AML.T0015")


CERT = {
    "radii": [0.0, 0.25, 0.5],
    "certified_accuracy": [0.9, 0.499, 0.1],
    "abstain_rate": 0.1,
    "examples": 7,
}


def _cert(cert):
    return certification_finding(
        "c",
        cert,
        subject=lambda r: f"Accuracy at radius {r:g}",
        method=lambda c: f"smoothing over {c['examples']} examples",
        atlas="A",
    )


def test_certification_finding_reads_the_first_positive_radius():
    f = _cert(CERT)
    assert f is not None and f["severity"] == "info"
    assert f["title"] == "Accuracy at radius 0.25 is 49.9%"
    assert f["detail"] == "smoothing over 7 examples; few predictions carry a certificate at this radius"
    assert f["evidence"] == {k: CERT[k] for k in ("radii", "certified_accuracy", "abstain_rate")}


def test_no_certification_finding_at_one_half_or_without_a_positive_radius():
    assert _cert({**CERT, "certified_accuracy": [0.9, 0.5, 0.1]}) is None
    assert _cert({**CERT, "radii": [0.0], "certified_accuracy": [0.9]}) is None
    assert _cert(None) is None
