"""One constructor for the findings every assessment section reports (the report schema's shape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FINDING_SEVERITIES", "certification_finding", "finding"]

# The severities the report, its SARIF export and the gates understand, weakest first.
FINDING_SEVERITIES = ("info", "low", "medium", "high")


def finding(
    code: str, severity: str, title: str, detail: str, evidence: dict[str, Any], *, owasp: str, atlas: str
) -> dict[str, Any]:
    """A finding as the report stores it; an unknown severity is a programming error, refused."""
    if severity not in FINDING_SEVERITIES:
        raise ValueError(
            f"unknown finding severity {severity!r}; choose from {', '.join(FINDING_SEVERITIES)}"
        )
    return {
        "code": code,
        "severity": severity,
        "title": title,
        "detail": detail,
        "evidence": evidence,
        "owasp": owasp,
        "atlas": atlas,
    }


def certification_finding(
    code: str,
    cert: dict[str, Any] | None,
    *,
    subject: Callable[[Any], str],
    method: Callable[[dict[str, Any]], str],
    atlas: str,
) -> dict[str, Any] | None:
    """The ``info`` finding of a certification whose certified accuracy at its first positive radius
    (``cert["radii"][1]``) is under one half, else ``None``.

    ``subject(radius)`` names that radius (``"Certified accuracy at L2 radius 0.25"``);
    ``method(cert)`` says how the certificates were computed, for the detail.
    """
    if not cert or len(cert["radii"]) < 2 or cert["certified_accuracy"][1] >= 0.5:
        return None
    return finding(
        code,
        "info",
        f"{subject(cert['radii'][1])} is {cert['certified_accuracy'][1]:.1%}",
        f"{method(cert)}; few predictions carry a certificate at this radius",
        {k: cert[k] for k in ("radii", "certified_accuracy", "abstain_rate")},
        owasp="ML01 Input Manipulation Attack",
        atlas=atlas,
    )
