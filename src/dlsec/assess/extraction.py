"""The extraction section of an assessment: how cheaply the model can be cloned through its API.

Disabled by default (a campaign turns it on with ``extraction: {enabled: true}``): it trains a
clone per method, which takes longer than the rest of a small assessment. Each method
(Knockoff Nets, JBDA, Copycat) spends at most ``budget`` queries on the model at the
campaign's access level (white-box is queried for scores). The assessed rows are split in two:
the first half is the attacker's unlabelled problem-domain data (mixed with generated
out-of-domain data where the method asks for it), the second half scores the clone (agreement
with the model, accuracy). Each attack's query stream also goes through the gateway's
extraction detector (fitted on the attacker-side half, as a gateway would be on natural data),
so the report says when it would have been flagged. Findings carry OWASP ML05 (Model Theft)
and MITRE ATLAS AML.T0024.002 (Extract AI Model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dlsec.core.data import Dataset
from dlsec.core.model import Access, Model, restrict_access
from dlsec.errors import UsageError

__all__ = ["ATLAS_EXTRACTION", "OWASP_EXTRACTION", "Extraction", "run_extraction", "unit_keys"]

OWASP_EXTRACTION = "ML05 Model Theft"
ATLAS_EXTRACTION = "AML.T0024.002 Extract AI Model"

Method = Literal["knockoff", "jbda", "copycat"]
Step = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


def _all_methods() -> list[Method]:
    return ["knockoff", "copycat", "jbda"]


class Extraction(BaseModel):
    """Campaign settings of the extraction section (off by default).

    ``methods`` run in turn, each within ``budget`` queries; ``queries`` chooses each method's
    data (``pd``: the attacker half of the assessed rows, ``ood``: generated natural photos
    and noise, ``mixed``: both; default knockoff ``mixed``, copycat ``ood``, jbda ``pd``), as
    ``dlsec extract`` does (``dlsec.attacks.extraction.attacker_pool``).
    ``params`` passes hyperparameters per method (e.g. ``{jbda: {seeds: 20}}``). A clone that
    agrees with the model on at least ``high`` (``medium``) of the held-out rows is a
    high-severity (medium-severity) finding.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    methods: list[Method] = Field(default_factory=lambda: _all_methods(), min_length=1)
    budget: int = Field(1000, ge=10)
    access: Literal["score", "decision"] | None = None
    queries: dict[Method, Literal["pd", "ood", "mixed"]] = Field(default_factory=dict)
    params: dict[Method, dict[str, Any]] = Field(default_factory=dict)
    checkpoints: list[int] | None = None
    detection: bool = True
    high: float = Field(0.9, gt=0, le=1)
    medium: float = Field(0.7, gt=0, le=1)


def unit_keys(config: Extraction) -> list[str]:
    """The runner's unit keys of this section, in the order they run."""
    return [f"extraction-{m}" for m in dict.fromkeys(config.methods)]


def run_extraction(
    model: Model,
    data: Dataset,
    config: Extraction,
    *,
    step: Step,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run each configured method against ``model``; return the report section and the findings.

    Args:
        model: the model under test (queried at ``config.access``, else at score access when it
            offers scores, else labels).
        data: the assessed rows: the first half is the attacker's, the second half scores.
        config: the section's settings.
        step: the runner's unit mechanism (each method is one resumable unit).
        seed: the campaign seed.
    """
    from dlsec.attacks.extraction import attacker_pool, get_extraction_attack
    from dlsec.monitor.extraction import ExtractionDetector

    if len(data) < 20:
        raise UsageError(
            f"extraction needs at least 20 assessed rows (half to query, half to score), got {len(data)}"
        )
    access = config.access or ("score" if model.access >= Access.SCORE else "decision")
    target = restrict_access(model, access)
    half = len(data) // 2
    attacker_x = data.x[:half]
    scoring = data.subset(np.arange(half, len(data)), name=f"{data.name}[extraction scoring half]")
    checkpoints = [
        c for c in (config.checkpoints or _default_checkpoints(config.budget)) if c <= config.budget
    ]
    section: dict[str, Any] = {
        "budget": config.budget,
        "access": access,
        "attacker_rows": half,
        "methods": {},
    }
    findings = []
    for method in dict.fromkeys(config.methods):

        def compute(method: Method = method) -> dict[str, Any]:
            pool = attacker_pool(
                method,
                attacker_x,
                target.spec,
                budget=config.budget,
                source=config.queries.get(method),
                seed=seed,
            )
            params = {**config.params.get(method, {}), "budget": config.budget, "seed": seed}
            try:
                attack = get_extraction_attack(method, checkpoints=checkpoints, **params)
            except TypeError as exc:
                raise UsageError(f"campaign: extraction.params.{method}: {exc}") from None
            detector = ExtractionDetector().fit(attacker_x) if config.detection else None
            flagged: dict[str, int] = {}

            def watch(x: np.ndarray, answer: np.ndarray) -> None:
                if detector is not None:
                    for alert in detector.observe("assessment", x, answer):
                        flagged.setdefault(alert.signal, alert.query_index)

            result = attack(target, pool, test=scoring, on_query=watch)
            summary = result.summary()
            summary.update(
                queries_from=pool.source, detected=flagged, detected_at=min(flagged.values(), default=None)
            )
            summary["queries_to_high"] = result.queries_to(config.high)
            return summary

        unit = step(f"extraction-{method}", compute)
        section["methods"][method] = unit
        finding = _finding(method, unit, config)
        if finding is not None:
            findings.append(finding)
    return section, findings


def _default_checkpoints(budget: int) -> list[int]:
    return sorted({max(1, round(budget * f)) for f in (0.1, 0.2, 0.3, 0.5, 0.75)})


def _finding(method: str, unit: dict[str, Any], config: Extraction) -> dict[str, Any] | None:
    agreement = unit.get("agreement")
    if agreement is None or agreement < config.medium:
        return None
    severity = "high" if agreement >= config.high else "medium"
    detected = unit.get("detected_at")
    detection = (
        f"dlsec's extraction detector would flag the stream after {detected} queries"
        if detected is not None
        else "dlsec's extraction detector did not flag the stream"
    )
    reach = unit.get("queries_to_high")
    reached = f"; {config.high:.0%} agreement after {reach} queries" if reach is not None else ""
    return {
        "code": f"extraction-{method}",
        "severity": severity,
        "title": f"Extraction: a {method} clone agrees with the model on {agreement:.1%} of held-out inputs "
        f"after {unit['queries']} queries",
        "detail": f"{method} at {unit['access']} access, queries from {unit['queries_from']}{reached}; "
        f"{detection}. Serve the model behind the gateway with per-key budgets, label-only or rounded "
        "outputs and extraction detection",
        "evidence": {
            k: unit.get(k)
            for k in (
                "agreement",
                "clone_accuracy",
                "target_accuracy",
                "queries",
                "budget",
                "curve",
                "detected",
            )
        },
        "owasp": OWASP_EXTRACTION,
        "atlas": ATLAS_EXTRACTION,
    }
