"""Alert rules (``monitor.yaml``): detectors, windows and severities, composed like gates.

A rule is either one detector (``detector``, its ``params``, ``features: inputs|embeddings`` for
input-drift detectors, and optional ``window`` / ``stride`` / ``ert`` overriding the file's
defaults, and ``weight``, its share of the offline check's ``alpha``) or a composition
(``all_of`` / ``any_of`` of rules; an empty list is an error, never a pass). Top-level rules
carry a ``severity`` (low, medium, high, critical). Every field is checked; errors name the
YAML line and the field, e.g.
``monitor.yaml:6: rules.0.any_of.1.params: unknown setting 'alpah' for ks (known: alpha, ...)``.

.. code-block:: yaml

    version: 1
    window: 200          # examples per window (online use)
    stride: 50           # new examples between checks
    ert: 10000           # expected examples between false alarms of the whole monitor
    rules:
      - name: input drift
        severity: high
        any_of:
          - {detector: ks, params: {correction: fdr}}
          - {detector: mmd, features: embeddings}
      - {name: adversarial inputs, severity: critical, detector: squeezing, window: 100}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dlsec.core.model import Model
from dlsec.errors import UsageError
from dlsec.monitor._base import (
    DETECTORS,
    CannotRun,
    Detector,
    DetectorResult,
    Window,
    detector_class,
    settable_params,
)
from dlsec.monitor._features import embedding_fn, model_probs
from dlsec.monitor.online import Alert, OnlineMonitor, Severity

__all__ = [
    "CheckReport",
    "Monitor",
    "MonitorConfig",
    "MonitorConfigError",
    "RuleSpec",
    "build_detector",
    "build_monitor",
    "check",
    "holm_adjust",
    "leaf_ert",
    "default_monitor_config",
    "load_monitor_config",
    "make_window",
]

_INJECTED = ("model", "feature_fn")


class MonitorConfigError(UsageError):
    """A monitor config is malformed; the message names the line and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    """One alert rule: a detector with its settings, or ``all_of`` / ``any_of`` of rules."""

    name: str | None = None
    severity: Severity = "medium"
    detector: str | None = None
    features: Literal["inputs", "embeddings"] = "inputs"
    layer: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    window: int | None = Field(None, ge=2)
    stride: int | None = Field(None, ge=1)
    ert: float | None = Field(None, gt=0)
    weight: float | None = Field(None, gt=0)
    all_of: list[RuleSpec] | None = None
    any_of: list[RuleSpec] | None = None

    @field_validator("detector")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        _ensure_registered()
        if value is not None:
            try:
                detector_class(value)  # imports a detector declared by a package above monitor
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("features")
    @classmethod
    def _embeddable(cls, value: str, info: ValidationInfo) -> str:
        detector = info.data.get("detector")
        if (
            value == "embeddings"
            and detector is not None
            and "feature_fn" not in settable_params(DETECTORS[detector])
        ):
            reads = "/".join(DETECTORS[detector].requires)
            raise ValueError(f"{detector} reads {reads}, not embeddings: drop 'features'")
        return value

    @field_validator("params")
    @classmethod
    def _settings(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        detector = info.data.get("detector")
        if detector is None:
            if value:
                raise ValueError("params belong to a rule with a detector")
            return value
        known = [p for p in settable_params(DETECTORS[detector]) if p not in _INJECTED]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"unknown setting {unknown[0]!r} for {detector} (known: {', '.join(known) or 'none'})"
            )
        try:
            DETECTORS[detector].check_params(value)
        except UsageError as exc:
            raise ValueError(f"{detector}: {exc}") from None
        return value

    @field_validator("all_of", "any_of")
    @classmethod
    def _not_empty(cls, value: list[RuleSpec] | None, info: ValidationInfo) -> list[RuleSpec] | None:
        if value is not None and not value:
            raise ValueError(f"{info.field_name} needs at least one rule (an empty list never fires)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> RuleSpec:
        composite = [k for k in ("all_of", "any_of") if getattr(self, k) is not None]
        if composite:
            if self.detector is not None or len(composite) > 1:
                raise ValueError("a rule is either one detector or one of all_of / any_of")
            if self.weight is not None:
                raise ValueError("weight belongs to a rule with a detector (each detector has its own)")
            return self
        if self.detector is None:
            raise ValueError("a rule needs a detector (or all_of / any_of)")
        return self

    def leaves(self) -> list[RuleSpec]:
        if self.detector is not None:
            return [self]
        return [leaf for r in (self.all_of or self.any_of or []) for leaf in r.leaves()]

    def label(self) -> str:
        if self.name:
            return self.name
        if self.detector is not None:
            return self.detector if self.features == "inputs" else f"{self.detector} (embeddings)"
        kind = "all_of" if self.all_of is not None else "any_of"
        return f"{kind}({', '.join(r.label() for r in (self.all_of or self.any_of or []))})"


class MonitorConfig(_Strict):
    """A whole monitor config (schema version 1).

    ``alpha`` is the false-alarm rate of an offline check as a whole: with ``correction: holm``
    (the default) the detectors' p-values are Holm-adjusted together, weighted by each
    detector's ``weight`` (default 1: a detector of weight ``w`` among weights summing to ``W``
    gets ``alpha * w / W`` of the budget at the first step), so the check fires on
    same-distribution data with probability at most ``alpha`` whatever their dependence. With
    ``correction: none`` each detector decides at its own ``alpha`` (the pre-0.2 behaviour: a
    check of nine detectors then fires on about a quarter of clean splits).

    ``ert`` is the expected run length between false alarms of the online monitor as a whole
    (any rule): its leaves split it, each calibrated at ``ert * L`` for ``L`` leaves, so their
    false alarms add up to at most one per ``ert`` examples (linearity of expectation, whatever
    their dependence). A rule's own ``ert`` is split across that rule's leaves the same way and
    adds its alarms to the monitor's; :attr:`Monitor.ert_` reports the combined run length.
    """

    version: Literal[1] = 1
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["holm", "none"] = "holm"
    window: int = Field(200, ge=2)
    stride: int | None = Field(None, ge=1)
    ert: float = Field(10_000, gt=0)
    n_simulations: int | None = Field(None, ge=10)
    seed: int = 0
    rules: list[RuleSpec]

    @field_validator("rules")
    @classmethod
    def _some(cls, value: list[RuleSpec]) -> list[RuleSpec]:
        if not value:
            raise ValueError("give at least one rule")
        return value


def _ensure_registered() -> None:
    import dlsec.monitor.adversarial
    import dlsec.monitor.drift
    import dlsec.monitor.prediction  # noqa: F401


def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Read and validate a ``monitor.yaml``.

    Raises:
        MonitorConfigError: unreadable YAML or a schema violation, naming the line and field.
    """
    from dlsec.core.config import load_yaml_model

    return load_yaml_model(
        path, MonitorConfig, error=MonitorConfigError, what="monitor config", hint="rules, ..."
    )


def default_monitor_config(model: Model | None = None) -> MonitorConfig:
    """The rules ``dlsec monitor check`` runs without a config.

    Every rule is listed whatever the model offers: a detector the model (or its absence)
    rules out is reported in the check's ``not_run`` with the reason, and the verdict is
    ``partial``.

    Holm weights (out of 18 when all nine run): label 10, MMD on inputs 3, classifier, embedding
    MMD and squeezing 1 each, KS, confidence, accuracy and Mahalanobis 0.5 each. The label
    detector alone sees a change in the mix of predicted classes (first level 0.028 at alpha
    0.05); MMD on inputs is the most powerful of the input detectors, which test overlapping
    signs of one change in the inputs. The weights were chosen on benchmarks/monitor.py's
    digits shifts (equal weights lost 14 points of power on the class-prior shift); being fixed
    before the check's data, they keep Holm's family-wise guarantee on any data.
    ``model`` is accepted for compatibility; the rules do not depend on it.
    """
    del model
    rules: list[dict[str, Any]] = [
        {
            "name": "input drift",
            "severity": "high",
            "any_of": [
                {"detector": "ks", "weight": 0.5, "params": {"correction": "fdr"}},
                {"detector": "mmd", "weight": 3, "params": {"n_permutations": 500}},
                {"detector": "classifier"},
            ],
        },
        {
            "name": "embedding drift",
            "severity": "high",
            "detector": "mmd",
            "features": "embeddings",
            "params": {"n_permutations": 500},
        },
        {
            "name": "prediction drift",
            "severity": "medium",
            "any_of": [{"detector": "label", "weight": 10}, {"detector": "confidence", "weight": 0.5}],
        },
        {"name": "accuracy drop", "severity": "high", "detector": "performance", "weight": 0.5},
        {
            "name": "adversarial inputs",
            "severity": "critical",
            "any_of": [{"detector": "squeezing"}, {"detector": "mahalanobis", "weight": 0.5}],
        },
    ]
    return MonitorConfig.model_validate({"rules": rules})


def build_detector(spec: RuleSpec, *, model: Model | None = None) -> Detector:
    """The detector a rule leaf describes, with the model (or its embeddings) injected."""
    if spec.detector is None:
        raise UsageError("build_detector needs a rule with a detector")
    cls = DETECTORS[spec.detector]
    params = dict(spec.params)
    names = settable_params(cls)
    if "model" in names:
        if model is None:
            raise CannotRun(f"detector {spec.detector} needs a model: pass --model")
        params["model"] = model
    if spec.features == "embeddings":
        if model is None:
            raise CannotRun(f"{spec.detector} on embeddings needs a model: pass --model")
        params["feature_fn"] = embedding_fn(model, layer=spec.layer)
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"detector {spec.detector}: {exc}") from None


def make_window(
    x: np.ndarray | torch.Tensor, *, model: Model | None = None, y: np.ndarray | None = None
) -> Window:
    """A window of inputs, with the model's probabilities when a model is given."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    probs = model_probs(model, arr) if model is not None else None
    return Window(x=arr, probs=probs, y=None if y is None else np.asarray(y))


def _evaluate(spec: RuleSpec, verdicts: dict[int, bool]) -> bool:
    if spec.detector is not None:
        return verdicts.get(id(spec), False)
    children = [_evaluate(r, verdicts) for r in (spec.all_of or spec.any_of or [])]
    return all(children) if spec.all_of is not None else any(children)


def holm_adjust(p_values: list[float], weights: list[float] | None = None) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order, optionally weighted.

    Unweighted, with ``m`` p-values sorted ascending, the ``i``-th (from 1) is adjusted to
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. Weighted (Holm 1979, section 5), the p-values
    are ordered by ``p_i / w_i`` and the ``i``-th is adjusted to
    ``max_{j <= i} min(1, p_(j) W_j / w_(j))`` where ``W_j`` is the total weight of the
    hypotheses ranked ``j`` and later: a detector of weight ``w`` among weights summing to
    ``W`` first faces ``alpha * w / W`` instead of ``alpha / m``. Either way, rejecting where
    the adjusted value is below ``alpha`` controls the family-wise error at ``alpha`` under any
    dependence between the p-values, for weights fixed before the data are seen.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
        >>> holm_adjust([0.01, 0.04, 0.03], weights=[2, 1, 1])
        [0.02, 0.06, 0.06]
    """
    m = len(p_values)
    w = [1.0] * m if weights is None else [float(v) for v in weights]
    if len(w) != m or any(not v > 0 for v in w):
        raise UsageError(f"holm_adjust needs one positive weight per p-value, got {weights}")
    order = sorted(range(m), key=lambda i: p_values[i] / w[i])
    remaining = sum(w)
    adjusted = [0.0] * m
    running = 0.0
    for i in order:
        running = max(running, min(1.0, p_values[i] * remaining / w[i]))
        adjusted[i] = running
        remaining -= w[i]
    return adjusted


@dataclass
class CheckReport:
    """The outcome of an offline check: every detector's result and every rule's verdict.

    Each detector's entry has its raw ``p_value``, its Holm-adjusted ``p_adjusted`` and the
    ``drift`` decided from the latter at the config's ``alpha``; ``drift_raw`` is the detector's
    own decision. Detectors without a p-value (PSI) cannot join the correction: they decide by
    their own threshold and are listed in ``uncalibrated``. A detector that could not run (no
    model, a model of too little access, no labels) is in ``not_run`` with its reason; the
    verdict is then ``partial`` unless a rule fired (``fail``); ``pass`` needs every detector.
    """

    results: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    alpha: float = 0.05
    correction: str = "holm"
    uncalibrated: list[str] = field(default_factory=list)
    not_run: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fired(self) -> bool:
        return any(r["fired"] for r in self.rules)

    @property
    def complete(self) -> bool:
        return not self.not_run

    @property
    def verdict(self) -> Literal["pass", "partial", "fail"]:
        return "fail" if self.fired else "pass" if self.complete else "partial"

    def sarif(self, uri: str) -> dict[str, Any]:
        """A SARIF 2.1.0 log of the check on ``uri`` (the current data).

        One result per fired rule (level from its severity) and one per detector that found
        drift, each with its raw and adjusted p-values; every detector that did not run is a
        tool-execution notification, and the invocation's properties carry the verdict, so a
        code-scanning view shows a partial check as partial.
        """
        import dlsec

        level = {"low": "note", "medium": "warning", "high": "error", "critical": "error"}
        rules: dict[str, dict[str, Any]] = {}
        results: list[dict[str, Any]] = []
        location = [{"physicalLocation": {"artifactLocation": {"uri": uri}}}]

        def rule(rule_id: str, text: str) -> str:
            rules.setdefault(rule_id, {"id": rule_id, "shortDescription": {"text": text}})
            return rule_id

        for r in self.rules:
            if r["fired"]:
                results.append(
                    {
                        "ruleId": rule("dlsec/monitor-rule-fired", "A monitor rule fired"),
                        "level": level.get(r["severity"], "error"),
                        "message": {"text": f"rule '{r['name']}' fired ({r['severity']})"},
                        "locations": location,
                        "properties": {"rule": r["name"], "severity": r["severity"]},
                    }
                )
        for d in self.results:
            if d["drift"]:
                p, adjusted = d.get("p_value"), d.get("p_adjusted")
                shown = (
                    ""
                    if p is None
                    else f", p {p:.4g}" + ("" if adjusted is None else f", Holm p {adjusted:.4g}")
                )
                results.append(
                    {
                        "ruleId": rule("dlsec/monitor-drift", "A detector found a shift"),
                        "level": "warning",
                        "message": {
                            "text": f"{d['name']} (rule '{d['rule']}'): statistic {d['statistic']:.4g}{shown}"
                        },
                        "locations": location,
                        "properties": {"detector": d["name"], "p_value": p, "p_adjusted": adjusted},
                    }
                )
        notifications = [
            {
                "level": "warning",
                "message": {"text": f"not run: {n['check']} (rule '{n['rule']}'): {n['reason']}"},
            }
            for n in self.not_run
        ]
        return {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "dlsec-monitor",
                            "version": dlsec.__version__,
                            "rules": list(rules.values()),
                        }
                    },
                    "invocations": [
                        {
                            "executionSuccessful": True,
                            "toolExecutionNotifications": notifications,
                            "properties": {
                                "verdict": self.verdict,
                                "complete": self.complete,
                                "alpha": self.alpha,
                            },
                        }
                    ],
                    "results": results,
                }
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "fired": self.fired,
            "verdict": self.verdict,
            "complete": self.complete,
            "alpha": self.alpha,
            "correction": self.correction,
            "uncalibrated": list(self.uncalibrated),
            "not_run": list(self.not_run),
            "rules": self.rules,
            "detectors": self.results,
        }


def _check_name(leaf: RuleSpec) -> str:
    return f"{leaf.detector}" if leaf.features == "inputs" else f"{leaf.detector} (embeddings)"


def check(
    config: MonitorConfig, reference: Window, current: Window, *, model: Model | None = None
) -> CheckReport:
    """Fit every rule's detectors on ``reference`` and score ``current`` as one window.

    The p-values of all detectors are Holm-adjusted together (``config.correction``, weighted
    by each leaf's ``weight``), so the check as a whole, and so each rule, fires on
    same-distribution data with probability at most ``config.alpha``; rules combine the
    adjusted verdicts. Each detector's entry also has ``alpha_share``, the level it faces
    first (``alpha * w / W``). Online windows and ERT do not
    apply to a single offline comparison.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> cfg = MonitorConfig.model_validate({"rules": [{"detector": "ks"}]})
        >>> check(cfg, Window(x=rng.normal(size=(200, 2))), Window(x=rng.normal(2, 1, size=(100, 2)))).fired
        True
    """
    scored: list[tuple[RuleSpec, dict[str, Any]]] = []
    not_run: list[dict[str, Any]] = []
    skipped: set[int] = set()
    for i, rule in enumerate(config.rules):
        for leaf in rule.leaves():
            name = _check_name(leaf)
            try:
                det = build_detector(leaf, model=model)
                det.fit(reference)
                res: DetectorResult = det.score(current)
            except CannotRun as exc:
                not_run.append({"check": name, "rule": rule.label(), "reason": str(exc)})
                skipped.add(id(leaf))
                continue
            entry = {"rule": rule.label(), "rule_index": i, "name": name, **res.to_dict()}
            entry["drift_raw"] = entry["drift"]
            scored.append((leaf, entry))
    with_p = [(leaf, entry) for leaf, entry in scored if entry["p_value"] is not None]
    if config.correction == "holm":
        weights = [leaf.weight or 1.0 for leaf, _ in with_p]
        total = sum(weights)
        adjusted = holm_adjust([e["p_value"] for _, e in with_p], weights)
        for (_, entry), p_adj, w in zip(with_p, adjusted, weights, strict=True):
            entry["p_adjusted"] = p_adj
            entry["alpha_share"] = config.alpha * w / total
            entry["drift"] = p_adj < config.alpha
    uncalibrated = [entry["name"] for _, entry in scored if entry["p_value"] is None]
    verdicts = {id(leaf): bool(entry["drift"]) for leaf, entry in scored}
    results = [entry for _, entry in scored]
    rules = [
        {
            "name": r.label(),
            "severity": r.severity,
            "fired": _evaluate(r, verdicts),
            "detectors": [leaf.label() for leaf in r.leaves()],
            "not_run": [leaf.label() for leaf in r.leaves() if id(leaf) in skipped],
        }
        for r in config.rules
    ]
    return CheckReport(results, rules, config.alpha, config.correction, uncalibrated, not_run)


def leaf_ert(config: MonitorConfig) -> dict[int, float]:
    """Each leaf's expected run length (keyed by ``id(leaf)``) so that the combination keeps its own.

    A budget of ``E`` examples between false alarms shared by ``L`` leaves gives each leaf
    ``E * L``: every leaf then alarms falsely at ``1 / (E L)`` per example on average and the
    ``L`` together at ``1 / E`` whatever their dependence (a Bonferroni split of the rate). The
    budget is the nearest rule's own ``ert`` (a leaf's own ``ert`` is its alone), else the
    file's ``ert``, shared by every leaf without a rule budget.

    Example:
        >>> rules = [{"any_of": [{"detector": "ks"}, {"detector": "mmd"}]}, {"detector": "label"}]
        >>> cfg = MonitorConfig.model_validate({"ert": 1000, "rules": rules})
        >>> sorted(leaf_ert(cfg).values())
        [3000.0, 3000.0, 3000.0]
    """
    groups: dict[int, tuple[float, list[RuleSpec]]] = {}

    def walk(rule: RuleSpec, owner: RuleSpec | None) -> None:
        if rule.ert is not None:
            owner = rule
        if rule.detector is not None:
            budget = config.ert if owner is None or owner.ert is None else owner.ert
            groups.setdefault(id(owner), (budget, []))[1].append(rule)
        for child in rule.all_of or rule.any_of or []:
            walk(child, owner)

    for rule in config.rules:
        walk(rule, None)
    budgets: dict[int, float] = {}
    for budget, leaves in groups.values():
        for leaf in leaves:
            budgets[id(leaf)] = budget * len(leaves)
    return budgets


@dataclass
class _Leaf:
    spec: RuleSpec
    monitor: OnlineMonitor
    verdict: bool = False


@dataclass
class Monitor:
    """The online form of a config: one :class:`OnlineMonitor` per rule leaf, rules on top.

    ``update(x_batch, preds=None, labels=None)`` feeds every leaf; a top-level rule raises an
    :class:`Alert` (with its severity) when a leaf alarms and the rule's composition of the
    leaves' latest verdicts holds. Thread-safe (one lock around an update).

    The stated ``ert`` holds for the monitor as a whole, not per leaf: each leaf is calibrated
    at its share of the budget (:func:`leaf_ert`), and an alert needs a leaf alarm, so the
    expected number of false alerts in ``ert`` examples is at most one. ``ert_`` after
    :meth:`fit` is the combined run length (``1 / sum(1 / ert_leaf)``; ``config.ert`` unless
    rules state their own).

    A leaf that cannot run (no model, a model of too little access, no labels) is left out and
    named in ``not_run`` with its reason, as the offline check does; ``complete`` is then false.
    Its share of the run-length budget is not handed to the others, so the leaves that run stay
    calibrated at least as strictly. When no leaf can run, :meth:`fit` raises :class:`CannotRun`:
    a monitor that watches nothing is an error, never a quiet pass.
    """

    config: MonitorConfig
    model: Model | None = None
    leaves: list[_Leaf] = field(default_factory=list)
    ert_: float | None = None
    not_run: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def complete(self) -> bool:
        """Whether every leaf of the config runs (false until :meth:`fit`)."""
        return bool(self.leaves) and not self.not_run

    def fit(self, reference: Window) -> Monitor:
        """Fit and calibrate every leaf on the reference (probabilities added from the model)."""
        if reference.probs is None and self.model is not None and reference.x is not None:
            reference = make_window(reference.x, model=self.model, y=reference.y)
        leaves: list[_Leaf] = []
        not_run: list[dict[str, Any]] = []
        budgets = leaf_ert(self.config)
        for rule in self.config.rules:
            for leaf in rule.leaves():
                try:
                    mon = OnlineMonitor(
                        build_detector(leaf, model=self.model),
                        window=leaf.window or self.config.window,
                        stride=leaf.stride or self.config.stride,
                        ert=budgets[id(leaf)],
                        n_simulations=self.config.n_simulations,
                        seed=self.config.seed,
                        name=leaf.label(),
                    )
                    leaves.append(_Leaf(leaf, mon.fit(reference)))
                except CannotRun as exc:
                    not_run.append({"check": _check_name(leaf), "rule": rule.label(), "reason": str(exc)})
        if not leaves:
            reasons = "; ".join(f"{n['check']}: {n['reason']}" for n in not_run)
            raise CannotRun(f"no detector of the monitor config can run ({reasons})")
        self.leaves, self.not_run = leaves, not_run
        self.ert_ = 1.0 / sum(1.0 / leaf.monitor.ert for leaf in self.leaves)
        return self

    def update(
        self,
        x_batch: np.ndarray | torch.Tensor | None,
        preds: np.ndarray | torch.Tensor | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
    ) -> list[Alert]:
        """Feed a batch of traffic; returns the rule alerts it raised."""
        if not self.leaves:
            raise UsageError("the monitor is not fitted yet; call fit(reference) first")
        if preds is None and self.model is not None and x_batch is not None:
            preds = model_probs(self.model, x_batch)
        with self._lock:
            raised: dict[int, Alert] = {}
            for leaf in self.leaves:
                before = leaf.monitor.n_checks_
                alerts = leaf.monitor.update(x_batch, preds, labels)
                if leaf.monitor.n_checks_ > before:
                    leaf.verdict = bool(alerts)
                for a in alerts:
                    raised[id(leaf.spec)] = a
            verdicts = {id(leaf.spec): leaf.verdict for leaf in self.leaves}
            out = []
            for rule in self.config.rules:
                fired_leaves = [raised[id(leaf)] for leaf in rule.leaves() if id(leaf) in raised]
                if fired_leaves and _evaluate(rule, verdicts):
                    out.append(
                        Alert(
                            rule=rule.label(),
                            severity=rule.severity,
                            detectors=[a.rule for a in fired_leaves],
                            statistic=fired_leaves[0].statistic,
                            threshold=fired_leaves[0].threshold,
                            n_seen=fired_leaves[0].n_seen,
                            details={"leaves": [a.to_dict() for a in fired_leaves]},
                        )
                    )
            return out


def build_monitor(config: MonitorConfig, *, model: Model | None = None) -> Monitor:
    """An unfitted online :class:`Monitor` for ``config`` (call ``fit(reference)``)."""
    return Monitor(config, model)
