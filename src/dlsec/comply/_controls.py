"""Control mappings: each framework's controls, the evidence kinds each needs, and the verdict.

The tables are data files (``frameworks/<id>.yaml``), one row per article, section or clause,
its number in ``ref``. A row's status comes from the states of the evidence it names:

* ``failing``: some evidence was checked and does not hold (an unsafe scan, a failed gate);
* ``gap``: no evidence of any kind it names;
* ``met``: every kind it names is there and holds, checked by dlsec;
* ``attested``: every kind is there, some only as files a person attached;
* ``partial``: some kinds are missing or hold only in part.

This is engineering evidence for a reviewer, not legal advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from dlsec.comply._evidence import KINDS, Evidence
from dlsec.errors import UsageError

__all__ = [
    "FRAMEWORKS",
    "ComplianceMap",
    "Control",
    "ControlResult",
    "Framework",
    "load_framework",
    "map_controls",
]

FRAMEWORKS = ("gdpr", "ccpa", "hipaa", "eu-ai-act", "nist-ai-rmf", "iso-42001")
STATUSES = ("met", "attested", "partial", "gap", "failing")


@dataclass(frozen=True)
class Control:
    id: str
    ref: str
    title: str
    requirement: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    source: str
    controls: tuple[Control, ...]


@cache
def load_framework(name: str) -> Framework:
    """The control table of framework ``name`` (one of :data:`FRAMEWORKS`).

    Raises:
        UsageError: an unknown framework.
        ValueError: a malformed table (a bug in dlsec's data files; tests load every one).
    """
    if name not in FRAMEWORKS:
        raise UsageError(f"unknown framework {name!r}; choose one of {', '.join(FRAMEWORKS)}")
    import yaml

    text = resources.files("dlsec.comply").joinpath("frameworks", f"{name}.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    controls = []
    seen: set[str] = set()
    for row in doc["controls"]:
        kinds = tuple(row["evidence"])
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds or row["id"] in seen or not str(row["ref"]).strip():
            raise ValueError(
                f"frameworks/{name}.yaml: bad row {row.get('id')!r} ({unknown or 'id/ref/evidence'})"
            )
        seen.add(row["id"])
        controls.append(Control(row["id"], str(row["ref"]), row["title"], row["requirement"], kinds))
    if doc["id"] != name:
        raise ValueError(f"frameworks/{name}.yaml: id {doc['id']!r} is not its file name")
    return Framework(doc["id"], doc["title"], doc["source"], tuple(controls))


@dataclass(frozen=True)
class ControlResult:
    control: Control
    status: str
    states: dict[str, str]

    @property
    def missing(self) -> list[str]:
        return [k for k, s in self.states.items() if s == "absent"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.control.id,
            "ref": self.control.ref,
            "title": self.control.title,
            "requirement": self.control.requirement,
            "status": self.status,
            "evidence": self.states,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class ComplianceMap:
    framework: Framework
    results: tuple[ControlResult, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    @property
    def gaps(self) -> list[ControlResult]:
        return [r for r in self.results if r.status == "gap"]

    @property
    def failing(self) -> list[ControlResult]:
        return [r for r in self.results if r.status == "failing"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "framework": self.framework.id,
            "title": self.framework.title,
            "source": self.framework.source,
            "counts": self.counts,
            "controls": [r.to_dict() for r in self.results],
        }


def status_of(states: dict[str, str]) -> str:
    """A control's status from the states of the evidence kinds it names (see the module doc)."""
    values = list(states.values())
    if "failing" in values:
        return "failing"
    if all(v == "absent" for v in values):
        return "gap"
    if all(v == "ok" for v in values):
        return "met"
    if all(v in ("ok", "attested") for v in values):
        return "attested"
    return "partial"


def map_controls(framework: Framework | str, evidence: Evidence) -> ComplianceMap:
    """Each control of ``framework`` with its status from ``evidence``."""
    fw = load_framework(framework) if isinstance(framework, str) else framework
    results = []
    for control in fw.controls:
        states = {k: evidence.state(k) for k in control.evidence}
        results.append(ControlResult(control, status_of(states), states))
    return ComplianceMap(fw, tuple(results))
