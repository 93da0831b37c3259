"""Compliance evidence: the model card, the ML bill of materials and the control maps, in one run.

:func:`build_compliance` gathers what dlsec holds about a model (:func:`collect_evidence`,
each item checked now: the signature verified, the files scanned, the audit log replayed), builds
the model card (Mitchell et al. 2019) and a CycloneDX 1.6 ML-BOM validated against its schema,
and maps each control of the chosen frameworks (:data:`FRAMEWORKS`: GDPR, CCPA, HIPAA, the EU
AI Act, the NIST AI RMF, ISO/IEC 42001) to that evidence. A control with no evidence is a gap;
one whose evidence was checked and does not hold is failing. :meth:`ComplianceRun.write` writes
``compliance.json``, ``compliance.html``, ``compliance.sarif``, ``model-card.json``,
``model-card.html`` and ``bom.cdx.json`` (what ``dlsec comply`` does).

This is engineering evidence for the people who decide compliance, not legal advice.

Example:
    >>> run = build_compliance("digits@2", frameworks=["gdpr"], registry=reg)  # doctest: +SKIP
    >>> [r.control.ref for r in run.maps[0].gaps]                            # doctest: +SKIP
    ['Art. 17', 'Art. 33']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsec.comply._bom import BomInvalidError, build_bom
from dlsec.comply._controls import (
    FRAMEWORKS,
    STATUSES,
    ComplianceMap,
    Control,
    ControlResult,
    Framework,
    load_framework,
    map_controls,
    status_of,
)
from dlsec.comply._evidence import KINDS, Evidence, EvidenceItem, collect_evidence
from dlsec.comply._modelcard import MODEL_CARD_SCHEMA, SECTIONS, build_model_card

if TYPE_CHECKING:
    from dlsec.store import Registry

__all__ = [
    "COMPLIANCE_SCHEMA",
    "FRAMEWORKS",
    "KINDS",
    "MODEL_CARD_SCHEMA",
    "SECTIONS",
    "STATUSES",
    "BomInvalidError",
    "ComplianceMap",
    "ComplianceRun",
    "Control",
    "ControlResult",
    "Evidence",
    "EvidenceItem",
    "Framework",
    "build_bom",
    "build_compliance",
    "build_model_card",
    "collect_evidence",
    "compliance_sarif",
    "load_framework",
    "map_controls",
    "status_of",
]

COMPLIANCE_SCHEMA = "dlsec.compliance/1"
DISCLAIMER = "Engineering evidence for the people who decide compliance; not legal advice."
_LEVEL = {"failing": "error", "gap": "warning", "partial": "warning", "attested": "note"}


@dataclass
class ComplianceRun:
    """The evidence, the model card, the ML-BOM and one map per framework."""

    evidence: Evidence
    maps: list[ComplianceMap]
    model_card: dict[str, Any] | None
    bom: str | None

    @property
    def gaps(self) -> int:
        return sum(len(m.gaps) for m in self.maps)

    @property
    def failing(self) -> int:
        return sum(len(m.failing) for m in self.maps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COMPLIANCE_SCHEMA,
            "disclaimer": DISCLAIMER,
            "model": self.evidence.model,
            "evidence": self.evidence.to_dict(),
            "frameworks": [m.to_dict() for m in self.maps],
            "gaps": self.gaps,
            "failing": self.failing,
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write every artefact under ``out`` (each atomically); returns name -> path."""
        from dlsec.fsutil import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {
            "compliance.json": json.dumps(self.to_dict(), indent=2) + "\n",
            "compliance.sarif": json.dumps(compliance_sarif(self), indent=2) + "\n",
            "compliance.html": _render("compliance.html", run=self.to_dict(), kinds=KINDS),
        }
        if self.model_card is not None:
            files["model-card.json"] = json.dumps(self.model_card, indent=2) + "\n"
            files["model-card.html"] = _render("model-card.html", card=self.model_card, sections=SECTIONS)
        if self.bom is not None:
            files["bom.cdx.json"] = self.bom
        return {name: atomic_write_text(out / name, text) for name, text in files.items()}


def _render(template: str, **context: Any) -> str:
    import jinja2

    def load(name: str) -> str:
        return resources.files("dlsec.comply").joinpath("templates", name).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["pretty"] = lambda v: json.dumps(v, indent=1) if isinstance(v, (dict, list)) else str(v)
    return env.get_template(template).render(disclaimer=DISCLAIMER, **context)


def compliance_sarif(run: ComplianceRun) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one result per control that is not met (failing, gap, partial, attested)."""
    import dlsec

    rules: dict[str, dict[str, Any]] = {}
    results = []
    uri = str(run.evidence.model or "model")
    for m in run.maps:
        for r in m.results:
            if r.status == "met":
                continue
            rule_id = f"{m.framework.id}/{r.control.id}"
            rules.setdefault(
                rule_id,
                {
                    "id": rule_id,
                    "name": f"{m.framework.id} {r.control.ref}",
                    "shortDescription": {"text": f"{r.control.ref} {r.control.title}"},
                    "fullDescription": {"text": r.control.requirement},
                    "properties": {"framework": m.framework.title, "evidence": list(r.control.evidence)},
                },
            )
            missing = f"; no evidence of {', '.join(r.missing)}" if r.missing else ""
            bad = [k for k, s in r.states.items() if s in ("failing", "partial", "attested")]
            states = f"; {', '.join(f'{k} is {r.states[k]}' for k in bad)}" if bad else ""
            results.append(
                {
                    "ruleId": rule_id,
                    "level": _LEVEL[r.status],
                    "message": {"text": f"{r.control.ref} {r.control.title}: {r.status}{missing}{states}"},
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                    "properties": {"status": r.status, "evidence": r.states},
                }
            )
    notifications = [
        {"level": "warning", "message": {"text": f"no evidence of {n['kind']}: {n['reason']}"}}
        for n in run.evidence.not_run
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dlsec-comply",
                        "version": dlsec.__version__,
                        "informationUri": "https://github.com/dlsec/dlsec",
                        "rules": list(rules.values()),
                    }
                },
                "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
                "results": results,
            }
        ],
    }


def build_compliance(
    model: str | Path | None,
    *,
    frameworks: Sequence[str] = FRAMEWORKS,
    registry: Registry | None = None,
    keys: str | Path | None = None,
    report: str | Path | None = None,
    pii: str | Path | None = None,
    fairness: str | Path | None = None,
    monitor: str | Path | None = None,
    playbooks: str | Path | None = None,
    attached: Mapping[str, str | Path] | None = None,
    intended_use: str | None = None,
) -> ComplianceRun:
    """Gather the evidence for ``model``, build its model card and ML-BOM, and map ``frameworks``.

    See :func:`collect_evidence` for the arguments. The model card and the ML-BOM are evidence
    themselves (``model-card``, ``ml-bom``) once built; the BOM is built only when it validates.

    Raises:
        UsageError: an unknown framework or evidence kind, a missing or malformed input file.
    """
    maps_for = [load_framework(f) for f in frameworks]  # an unknown framework fails before any work
    ev = collect_evidence(
        model,
        registry=registry,
        keys=keys,
        report=report,
        pii=pii,
        fairness=fairness,
        monitor=monitor,
        playbooks=playbooks,
        attached=attached,
    )
    card = bom = None
    if model is not None:
        card = build_model_card(ev, intended_use=intended_use)
        ev.add("model-card", "ok", "built from the training card, report and registry", "model-card.json")
        bom = build_bom(ev)
        ev.add("ml-bom", "ok", "CycloneDX 1.6, validated against the schema", "bom.cdx.json")
    return ComplianceRun(ev, [map_controls(f, ev) for f in maps_for], card, bom)
