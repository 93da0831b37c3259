"""Campaign files: what an assessment runs, validated against a schema.

A campaign states the threat model (access level, norms and budgets), the attacks, the number
of examples, the seed, the optional sections (minimal perturbations, corruptions, certified
robustness, gradient-masking checks) and the gates. Errors name the YAML line and the field.
Without a file, :func:`default_campaign` picks sensible settings for the data and access.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dlsec.assess.backdoor import Backdoor
from dlsec.assess.explain import ExplainSection
from dlsec.assess.extraction import Extraction
from dlsec.assess.federated import FederatedSection
from dlsec.assess.generative import GenerativeSection
from dlsec.assess.privacy import Privacy
from dlsec.assess.text import TextSection
from dlsec.core.config import load_yaml_model
from dlsec.errors import UsageError

__all__ = [
    "Campaign",
    "CampaignError",
    "Certification",
    "Corruptions",
    "GateSpec",
    "ThreatModel",
    "default_campaign",
    "load_campaign",
]

Access = Literal["white-box", "score", "decision"]
NormName = Literal["linf", "l2", "l1"]


class CampaignError(UsageError):
    """A campaign file is malformed; the message names the line and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_norms() -> dict[NormName, list[float]]:
    return {"linf": [0.025, 0.05, 0.1, 0.2]}


class ThreatModel(_Strict):
    """Who the attacker is: access level and budgets per norm."""

    access: Access = "white-box"
    norms: dict[NormName, list[float]] = Field(default_factory=lambda: _default_norms())

    @field_validator("norms")
    @classmethod
    def _budgets(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        if not value:
            raise ValueError("give at least one norm with budgets")
        for norm, budgets in value.items():
            if not budgets:
                raise ValueError(f"{norm}: give at least one budget")
            if any(not (b > 0) or b != b for b in budgets):
                raise ValueError(f"{norm}: budgets must be positive numbers")
        return {k: sorted(v) for k, v in value.items()}


class Corruptions(_Strict):
    """Common-corruption robustness: which corruptions, at which severities (1-5)."""

    enabled: bool = True
    names: list[str] | None = None
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5])

    @field_validator("severities")
    @classmethod
    def _severities(cls, value: list[int]) -> list[int]:
        if not value or any(s not in (1, 2, 3, 4, 5) for s in value):
            raise ValueError("severities must be integers from 1 to 5")
        return sorted(set(value))


class Certification(_Strict):
    """Randomised smoothing (Cohen et al. 2019) settings."""

    enabled: bool = True
    sigma: float = Field(0.25, gt=0)
    n0: int = Field(100, ge=1)
    n: int = Field(1000, ge=10)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    examples: int = Field(100, ge=1)
    radii: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])


class GateSpec(_Strict):
    """One threshold on a metric of the report, or a composition of gates.

    Metrics: ``clean_accuracy``; ``robust_accuracy`` (with ``norm`` and ``eps``, or, on text,
    ``max_change``: the worst text attack at that budget); ``certified_accuracy`` (with
    ``radius``: L2, or words substituted under SAFER on text); ``corruption_accuracy`` (mean over the matching
    ``corruption`` and ``severity``, both optional); ``findings`` (count, optionally of one
    ``severity``). Give ``min`` and/or ``max``. ``all_of`` / ``any_of`` compose gates.
    ``complete: true`` alone is a gate that passes only when every check of the campaign ran
    (the report's ``not_run`` is empty).
    """

    name: str | None = None
    metric: (
        Literal["clean_accuracy", "robust_accuracy", "certified_accuracy", "corruption_accuracy", "findings"]
        | None
    ) = None
    norm: NormName | None = None
    eps: float | None = None
    max_change: float | None = None
    radius: float | None = None
    corruption: str | None = None
    severity: Any = None
    min: float | None = None
    max: float | None = None
    all_of: list[GateSpec] | None = None
    any_of: list[GateSpec] | None = None
    complete: bool | None = None

    @model_validator(mode="after")
    def _shape(self) -> GateSpec:
        if self.complete is not None:
            others = [k for k in ("metric", "min", "max", "all_of", "any_of") if getattr(self, k) is not None]
            if others or not self.complete:
                raise ValueError("a completeness gate is `complete: true` alone (with an optional name)")
            return self
        composite = [k for k in ("all_of", "any_of") if getattr(self, k) is not None]
        if composite:
            if self.metric is not None or len(composite) > 1:
                raise ValueError("a gate is either a metric threshold or one of all_of / any_of")
            if not getattr(self, composite[0]):
                raise ValueError(f"{composite[0]} needs at least one gate (an empty list would always pass)")
            return self
        if self.metric is None:
            raise ValueError("a gate needs a metric (or all_of / any_of)")
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min or max")
        if self.metric == "robust_accuracy" and self.max_change is not None:
            if self.norm is not None or self.eps is not None:
                raise ValueError("a robust_accuracy gate takes norm and eps, or max_change (text), not both")
        elif self.metric == "robust_accuracy" and (self.norm is None or self.eps is None):
            raise ValueError("robust_accuracy gates need norm and eps (or max_change on text)")
        if self.metric == "certified_accuracy" and self.radius is None:
            raise ValueError("certified_accuracy gates need radius")
        return self


class Campaign(_Strict):
    """A whole assessment campaign (schema version 1)."""

    version: Literal[1] = 1
    threat_model: ThreatModel = Field(default_factory=ThreatModel)
    attacks: list[str] | None = None
    attack_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    examples: int = Field(200, ge=1)
    seed: int = 0
    minimal: list[str] | None = None
    corruptions: Corruptions = Field(default_factory=Corruptions)
    certification: Certification = Field(default_factory=Certification)
    masking_checks: bool = True
    # On a model whose forward pass is random, every evasion attack but AutoAttack (which picks
    # its rand version itself) runs under EOT with this many passes; 0 turns it off (and the
    # report says the numbers are single-pass, too kind).
    eot_samples: int = Field(20, ge=0)
    # Rows per evasion unit: each attack at each budget runs as shards of this many rows (units
    # that run in parallel on Ray). Unset: one unit per attack and budget. Part of the results
    # (a shard's attack draws its own random starts), so the same value gives the same report
    # wherever the units run.
    shard_size: int | None = Field(None, ge=1)
    privacy: Privacy = Field(default_factory=Privacy)  # off unless privacy.enabled
    extraction: Extraction = Field(default_factory=Extraction)  # off unless extraction.enabled
    backdoor: Backdoor = Field(default_factory=Backdoor)  # off unless backdoor.enabled
    federated: FederatedSection = Field(default_factory=FederatedSection)  # off unless federated.enabled
    explain: ExplainSection = Field(default_factory=ExplainSection)  # on unless explain.enabled: false
    text: TextSection = Field(default_factory=TextSection)  # runs when the model and data are text
    generative: GenerativeSection = Field(default_factory=GenerativeSection)  # runs on a built-in generator
    gates: list[GateSpec] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical campaign (what a resumed run must match)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def default_campaign(*, kind: str, access: str = "white-box", num_features: int = 64) -> Campaign:
    """Sensible defaults for the data kind (``image``/``tabular``/``text``) and the access level."""
    if kind == "text":
        return Campaign(threat_model=ThreatModel.model_validate({"access": access}))
    norms: dict[str, list[float]]
    if kind == "tabular":
        norms = {"linf": [0.02, 0.05, 0.1, 0.2], "l2": [0.1, 0.25, 0.5]}
        sigma = 0.1
        radii = [0.0, 0.05, 0.1, 0.2, 0.3]
    else:
        norms = {"linf": [0.025, 0.05, 0.1, 0.2], "l2": [0.25, 0.5, 1.0]}
        sigma = 0.25
        radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    attacks = {"white-box": ["apgd-ce", "apgd-t"], "score": ["square"], "decision": ["hsj"]}[access]
    minimal = ["deepfool", "fab", "cw"] if access == "white-box" else None
    return Campaign(
        threat_model=ThreatModel.model_validate({"access": access, "norms": norms}),
        attacks=attacks,
        attack_params={
            "apgd-t": {"n_target_classes": 3},
            "square": {"n_queries": 1000},
            "hsj": {"max_queries": 1000},
        },
        minimal=minimal,
        certification=Certification(sigma=sigma, radii=radii),
        masking_checks=access == "white-box",
    )


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign YAML file.

    Raises:
        CampaignError: unreadable YAML or a schema violation; the message names the line and
            the field, e.g. ``campaign.yaml:7: threat_model.norms.linf.1: budgets must be positive``.
    """
    return load_yaml_model(
        path, Campaign, error=CampaignError, what="campaign", hint="threat_model, attacks, gates, ..."
    )


ModelT = TypeVar("ModelT", bound=BaseModel)
