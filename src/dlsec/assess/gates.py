"""Gates: thresholds on a report's metrics that compose like policies.

``Threshold`` checks one metric; ``AllOf`` and ``AnyOf`` combine gates (``a & b``, ``a | b``);
an empty ``AllOf`` or ``AnyOf`` raises rather than passing. A metric the report lacks is a
failure with a reason (a check that cannot run never passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dlsec.assess.campaign import GateSpec
from dlsec.core.config import load_yaml_model
from dlsec.errors import UsageError

__all__ = [
    "AllOf",
    "AnyOf",
    "Complete",
    "Gate",
    "GateResult",
    "PromotionPolicy",
    "Threshold",
    "build_gate",
    "load_promotion_policy",
    "metric_value",
]


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate: its name, whether it passed, the value measured and why."""

    name: str
    passed: bool
    value: float | None
    reason: str
    children: list[GateResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "reason": self.reason,
            "children": [c.to_dict() for c in self.children],
        }


class Gate:
    """Base of gates. ``gate.check(report)`` returns a :class:`GateResult`."""

    name: str

    def check(self, report: dict[str, Any]) -> GateResult:
        raise NotImplementedError

    def __and__(self, other: Gate) -> AllOf:
        return AllOf([self, other])

    def __or__(self, other: Gate) -> AnyOf:
        return AnyOf([self, other])


def metric_value(report: dict[str, Any], spec: GateSpec) -> float | None:
    """Read the metric a gate names from a report, or ``None`` when the report lacks it."""
    if spec.metric == "clean_accuracy":
        return report.get("clean", {}).get("accuracy")
    if spec.metric == "robust_accuracy" and spec.max_change is not None:
        text_curve = (report.get("text") or {}).get("curve")
        if not text_curve:
            return None
        for budget, acc in zip(text_curve["max_change"], text_curve["robust_accuracy"], strict=True):
            if math.isclose(budget, spec.max_change, rel_tol=1e-9, abs_tol=1e-12):
                return float(acc)
        return None
    if spec.metric == "robust_accuracy":
        curve = report.get("robustness", {}).get("curves", {}).get(spec.norm or "")
        if not curve:
            return None
        for eps, acc in zip(curve["eps"], curve["robust_accuracy"], strict=True):
            if math.isclose(eps, spec.eps or -1.0, rel_tol=1e-9, abs_tol=1e-12):
                return float(acc)
        return None
    if spec.metric == "certified_accuracy":
        cert = report.get("certification") or (report.get("text") or {}).get("safer")
        if not cert:
            return None
        for r, acc in zip(cert["radii"], cert["certified_accuracy"], strict=True):
            if math.isclose(r, -1.0 if spec.radius is None else spec.radius, abs_tol=1e-12):
                return float(acc)
        return None
    if spec.metric == "corruption_accuracy":
        rows = [
            r
            for r in report.get("corruptions", {}).get("results", [])
            if (spec.corruption is None or r["corruption"] == spec.corruption)
            and (spec.severity is None or r["severity"] == spec.severity)
        ]
        return float(sum(r["accuracy"] for r in rows) / len(rows)) if rows else None
    if spec.metric == "findings":
        findings = report.get("findings", [])
        return float(sum(1 for f in findings if spec.severity is None or f.get("severity") == spec.severity))
    return None


class Threshold(Gate):
    """``min <= metric <= max`` for one metric of the report."""

    def __init__(self, spec: GateSpec) -> None:
        self.spec = spec
        self.name = spec.name or _describe(spec)

    def check(self, report: dict[str, Any]) -> GateResult:
        value = metric_value(report, self.spec)
        if value is None:
            return GateResult(self.name, False, None, "the report has no such measurement (section not run)")
        if self.spec.min is not None and value < self.spec.min:
            return GateResult(self.name, False, value, f"{value:.4g} is below the minimum {self.spec.min:g}")
        if self.spec.max is not None and value > self.spec.max:
            return GateResult(self.name, False, value, f"{value:.4g} is above the maximum {self.spec.max:g}")
        return GateResult(self.name, True, value, "within bounds")


class AllOf(Gate):
    """Passes when every gate passes. Empty is an error, never a pass."""

    def __init__(self, gates: list[Gate], *, name: str = "all of") -> None:
        if not gates:
            raise UsageError("AllOf needs at least one gate")
        self.gates = gates
        self.name = name

    def check(self, report: dict[str, Any]) -> GateResult:
        results = [g.check(report) for g in self.gates]
        failed = [r.name for r in results if not r.passed]
        reason = "all passed" if not failed else f"failed: {', '.join(failed)}"
        return GateResult(self.name, not failed, None, reason, results)


class AnyOf(Gate):
    """Passes when at least one gate passes. Empty is an error, never a pass."""

    def __init__(self, gates: list[Gate], *, name: str = "any of") -> None:
        if not gates:
            raise UsageError("AnyOf needs at least one gate")
        self.gates = gates
        self.name = name

    def check(self, report: dict[str, Any]) -> GateResult:
        results = [g.check(report) for g in self.gates]
        passed = [r.name for r in results if r.passed]
        reason = f"passed: {', '.join(passed)}" if passed else "none passed"
        return GateResult(self.name, bool(passed), None, reason, results)


class Complete(Gate):
    """Passes only when every check the campaign asked for ran (the report's ``not_run`` is empty)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "every check ran"

    def check(self, report: dict[str, Any]) -> GateResult:
        if "not_run" not in report:
            return GateResult(self.name, False, None, "the report does not say what ran (fails closed)")
        missing = report["not_run"]
        if not missing:
            return GateResult(self.name, True, 0.0, "every check ran")
        listed = "; ".join(f"{m['check']} ({m['reason']})" for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return GateResult(self.name, False, float(len(missing)), f"not run: {listed}{more}")


def build_gate(spec: GateSpec) -> Gate:
    """The gate object a campaign's gate spec describes."""
    if spec.complete:
        return Complete(spec.name)
    if spec.all_of is not None:
        return AllOf([build_gate(s) for s in spec.all_of], name=spec.name or "all of")
    if spec.any_of is not None:
        return AnyOf([build_gate(s) for s in spec.any_of], name=spec.name or "any of")
    return Threshold(spec)


class PromotionPolicy(BaseModel):
    """A promotion policy file: whether a report is required, and the gates it must pass.

    The registry takes :meth:`check` as a callable (``dlsec.store.Policy(gates=...)``), so it
    never needs to know what a gate is.
    """

    model_config = ConfigDict(extra="forbid")

    require_report: bool = False
    gates: list[GateSpec] = Field(default_factory=list)

    @property
    def requires_report(self) -> bool:
        return self.require_report or bool(self.gates)

    def check(self, report: dict[str, Any]) -> list[str]:
        """``NAME: REASON`` of each gate ``report`` fails (empty when all pass)."""
        failed = []
        for spec in self.gates:
            result = build_gate(spec).check(report)
            if not result.passed:
                failed.append(f"{result.name}: {result.reason}")
        return failed


def load_promotion_policy(path: str | Path) -> PromotionPolicy:
    """Read a policy YAML (``require_report``, ``gates``); errors name the line and field (exit 2).

    Example:
        >>> load_promotion_policy("policy.yaml").requires_report  # doctest: +SKIP
        True
    """
    return load_yaml_model(
        path, PromotionPolicy, error=UsageError, what="policy", hint="require_report: true, gates: [...]"
    )


def _describe(spec: GateSpec) -> str:
    where = []
    if spec.norm is not None:
        where.append(f"{spec.norm} eps={spec.eps:g}" if spec.eps is not None else spec.norm)
    if spec.max_change is not None:
        where.append(f"max_change={spec.max_change:g}")
    if spec.radius is not None:
        where.append(f"radius={spec.radius:g}")
    if spec.corruption is not None:
        where.append(spec.corruption)
    if spec.severity is not None:
        where.append(f"severity={spec.severity}")
    bounds = []
    if spec.min is not None:
        bounds.append(f">= {spec.min:g}")
    if spec.max is not None:
        bounds.append(f"<= {spec.max:g}")
    scope = f" ({', '.join(where)})" if where else ""
    return f"{spec.metric}{scope} {' and '.join(bounds)}"
