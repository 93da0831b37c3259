"""Alert rules (``monitor.yaml``): detectors, windows and severities, composed like gates.

A rule is either one detector (``detector``, its ``params``, ``features: inputs|embeddings`` for
input-drift detectors, and optional ``window`` / ``stride`` / ``ert`` overriding the file's
defaults) or a composition (``all_of`` / ``any_of`` of rules; an empty list is an error, never
a pass). Top-level rules carry a ``severity`` (low, medium, high, critical). Every field is
checked; errors name the YAML line and the field, e.g.
``monitor.yaml:6: rules.0.any_of.1.params: unknown setting 'alpah' for ks (known: alpha, ...)``.

.. code-block:: yaml

    version: 1
    window: 200          # examples per window (online use)
    stride: 50           # new examples between checks
    ert: 10000           # expected examples between false alarms, per rule leaf
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

from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import UsageError
from dlsec.monitor._base import DETECTORS, Detector, DetectorResult, Window, settable_params
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
    all_of: list[RuleSpec] | None = None
    any_of: list[RuleSpec] | None = None

    @field_validator("detector")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        _ensure_registered()
        if value is not None and value not in DETECTORS:
            raise ValueError(f"unknown detector {value!r}; known: {', '.join(sorted(DETECTORS))}")
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
    (the default) the detectors' p-values are Holm-adjusted together, so the check fires on
    same-distribution data with probability at most ``alpha`` whatever their dependence. With
    ``correction: none`` each detector decides at its own ``alpha`` (the pre-0.2 behaviour: a
    check of nine detectors then fires on about a quarter of clean splits).
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
    """The rules ``dlsec monitor check`` runs without a config, for what the model offers."""
    rules: list[dict[str, Any]] = [
        {
            "name": "input drift",
            "severity": "high",
            "any_of": [
                {"detector": "ks", "params": {"correction": "fdr"}},
                {"detector": "mmd", "params": {"n_permutations": 500}},
                {"detector": "classifier"},
            ],
        }
    ]
    if model is not None:
        if isinstance(model, WhiteBoxModel):
            rules.append(
                {
                    "name": "embedding drift",
                    "severity": "high",
                    "detector": "mmd",
                    "features": "embeddings",
                    "params": {"n_permutations": 500},
                }
            )
        rules.append(
            {
                "name": "prediction drift",
                "severity": "medium",
                "any_of": [{"detector": "label"}, {"detector": "confidence"}],
            }
        )
        rules.append({"name": "accuracy drop", "severity": "high", "detector": "performance"})
        adversarial: list[dict[str, Any]] = []
        if hasattr(model, "probs"):
            adversarial.append({"detector": "squeezing"})
        if isinstance(model, WhiteBoxModel):
            adversarial.append({"detector": "mahalanobis"})
        if adversarial:
            rules.append({"name": "adversarial inputs", "severity": "critical", "any_of": adversarial})
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
            raise UsageError(f"detector {spec.detector} needs a model: pass --model")
        params["model"] = model
    if spec.features == "embeddings":
        if model is None:
            raise UsageError(f"{spec.detector} on embeddings needs a model: pass --model")
        params["feature_fn"] = embedding_fn(model, layer=spec.layer)
    if cls.requires != ("x",) and model is None:
        raise UsageError(f"detector {spec.detector} reads the model's predictions: pass --model")
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


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    With ``m`` p-values sorted ascending, the ``i``-th (from 1) is adjusted to
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted value is below
    ``alpha`` controls the family-wise error at ``alpha`` under any dependence (Holm 1979).

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class CheckReport:
    """The outcome of an offline check: every detector's result and every rule's verdict.

    Each detector's entry has its raw ``p_value``, its Holm-adjusted ``p_adjusted`` and the
    ``drift`` decided from the latter at the config's ``alpha``; ``drift_raw`` is the detector's
    own decision. Detectors without a p-value (PSI) cannot join the correction: they decide by
    their own threshold and are listed in ``uncalibrated``.
    """

    results: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    alpha: float = 0.05
    correction: str = "holm"
    uncalibrated: list[str] = field(default_factory=list)

    @property
    def fired(self) -> bool:
        return any(r["fired"] for r in self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fired": self.fired,
            "alpha": self.alpha,
            "correction": self.correction,
            "uncalibrated": list(self.uncalibrated),
            "rules": self.rules,
            "detectors": self.results,
        }


def check(
    config: MonitorConfig, reference: Window, current: Window, *, model: Model | None = None
) -> CheckReport:
    """Fit every rule's detectors on ``reference`` and score ``current`` as one window.

    The p-values of all detectors are Holm-adjusted together (``config.correction``), so the
    check as a whole, and so each rule, fires on same-distribution data with probability at
    most ``config.alpha``; rules combine the adjusted verdicts. Online windows and ERT do not
    apply to a single offline comparison.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> cfg = MonitorConfig.model_validate({"rules": [{"detector": "ks"}]})
        >>> check(cfg, Window(x=rng.normal(size=(200, 2))), Window(x=rng.normal(2, 1, size=(100, 2)))).fired
        True
    """
    scored: list[tuple[RuleSpec, dict[str, Any]]] = []
    for i, rule in enumerate(config.rules):
        for leaf in rule.leaves():
            det = build_detector(leaf, model=model)
            det.fit(reference)
            res: DetectorResult = det.score(current)
            name = leaf.detector if leaf.features == "inputs" else f"{leaf.detector} (embeddings)"
            entry = {"rule": rule.label(), "rule_index": i, "name": name, **res.to_dict()}
            entry["drift_raw"] = entry["drift"]
            scored.append((leaf, entry))
    with_p = [entry for _, entry in scored if entry["p_value"] is not None]
    if config.correction == "holm":
        for entry, adjusted in zip(with_p, holm_adjust([e["p_value"] for e in with_p]), strict=True):
            entry["p_adjusted"] = adjusted
            entry["drift"] = adjusted < config.alpha
    uncalibrated = [entry["name"] for _, entry in scored if entry["p_value"] is None]
    verdicts = {id(leaf): bool(entry["drift"]) for leaf, entry in scored}
    results = [entry for _, entry in scored]
    rules = [
        {
            "name": r.label(),
            "severity": r.severity,
            "fired": _evaluate(r, verdicts),
            "detectors": [leaf.label() for leaf in r.leaves()],
        }
        for r in config.rules
    ]
    return CheckReport(results, rules, config.alpha, config.correction, uncalibrated)


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
    """

    config: MonitorConfig
    model: Model | None = None
    leaves: list[_Leaf] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fit(self, reference: Window) -> Monitor:
        """Fit and calibrate every leaf on the reference (probabilities added from the model)."""
        if reference.probs is None and self.model is not None and reference.x is not None:
            reference = make_window(reference.x, model=self.model, y=reference.y)
        self.leaves = []
        for rule in self.config.rules:
            for leaf in rule.leaves():
                mon = OnlineMonitor(
                    build_detector(leaf, model=self.model),
                    window=leaf.window or self.config.window,
                    stride=leaf.stride or self.config.stride,
                    ert=leaf.ert or self.config.ert,
                    n_simulations=self.config.n_simulations,
                    seed=self.config.seed,
                    name=leaf.label(),
                )
                self.leaves.append(_Leaf(leaf, mon.fit(reference)))
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
