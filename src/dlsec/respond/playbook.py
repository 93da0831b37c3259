"""Playbooks, the responder that runs them, and the incident store (see the package docstring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlsec.core.config import load_yaml_model
from dlsec.errors import Error, RegistryError, UsageError
from dlsec.store import SEVERITIES, Incident, IncidentStore, KeyStore, QueryLog, Registry, now, parse_rate

__all__ = ["ACTIONS", "Playbook", "PlaybookRule", "Responder", "load_playbook"]

ACTIONS = ("snapshot", "quarantine", "rollback", "throttle_key", "revoke_key", "webhook")
Severity = Literal["low", "medium", "high", "critical"]
ActionName = Literal["snapshot", "quarantine", "rollback", "throttle_key", "revoke_key", "webhook"]
ACTOR = "dlsec-respond"
RETRY_AFTER = timedelta(seconds=60)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Which alerts a rule answers; every given condition must hold."""

    source: Literal["extraction", "monitor", "any"] = "any"
    signal: list[str] | None = Field(None, description="extraction signals or monitor rule names")
    min_severity: Severity = "low"
    model: str | None = None

    @field_validator("signal", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def matches(self, alert: dict[str, Any]) -> bool:
        if self.source != "any" and alert.get("source") != self.source:
            return False
        names = {str(alert.get("signal")), str(alert.get("rule"))}
        if self.signal is not None and not names & set(self.signal):
            return False
        severity = alert.get("severity", "low")
        if SEVERITIES.index(severity if severity in SEVERITIES else "low") < SEVERITIES.index(
            self.min_severity
        ):
            return False
        return self.model is None or alert.get("model") == self.model


class PlaybookRule(_Strict):
    name: str = Field(min_length=1)
    when: Match = Field(default_factory=Match)
    actions: list[ActionName] = Field(min_length=1)
    rate: str = "1/minute"
    url: str | None = None
    recent_queries: int = Field(50, ge=0, le=10_000)

    @field_validator("actions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an action is listed twice")
        return value

    def model_post_init(self, _context: Any) -> None:
        if "webhook" in self.actions and not self.url:
            raise ValueError("the webhook action needs url:")

        try:
            parse_rate(self.rate)
        except UsageError as exc:
            raise ValueError(str(exc)) from None


class Playbook(_Strict):
    version: Literal[1] = 1
    rules: list[PlaybookRule] = Field(min_length=1)


def load_playbook(path: str | Path) -> Playbook:
    """Read ``respond.yaml``; errors name the line and the field (exit 2)."""

    return load_yaml_model(
        path, Playbook, error=UsageError, what="playbook", hint="rules: [{name, when, actions}]"
    )


class Responder:
    """Runs a playbook on alerts against a registry (and the gateway's keys and query log).

    Args:
        playbook: the rules.
        registry: the registry whose models and keys the actions touch.
        alias: the alias the gateway serves (what quarantine and rollback act on).
    """

    def __init__(self, playbook: Playbook, registry: Registry, *, alias: str = "production") -> None:
        self.playbook = playbook
        self.registry = registry
        self.db = registry.db
        self.alias = alias
        self.store = IncidentStore(self.db, registry.audit)

    def plan(self, alert: dict[str, Any]) -> list[dict[str, Any]]:
        """What :meth:`handle` would do for ``alert`` (the dry run): rules, incidents, actions."""
        out = []
        for rule in self.playbook.rules:
            if not rule.when.matches(alert):
                continue
            open_incident = self._open(rule.name, _subject(alert))
            done = {
                a["action"] for a in (open_incident.actions if open_incident else []) if a["status"] == "done"
            }
            out.append(
                {
                    "rule": rule.name,
                    "incident": open_incident.id if open_incident else "new",
                    "actions": [
                        {
                            "action": a,
                            "would": "skip (already done)" if a in done else self._describe(a, rule, alert),
                        }
                        for a in rule.actions
                    ],
                }
            )
        return out

    def handle(self, alert: dict[str, Any]) -> list[Incident]:
        """Open or join an incident for each matching rule and run its actions that are not done yet."""
        handled = []
        for rule in self.playbook.rules:
            if rule.when.matches(alert):
                handled.append(self._run(rule, alert))
        return handled

    # -- internals --------------------------------------------------------------------------

    def _open(self, rule: str, subject: str) -> Incident | None:
        return self.store.find_open(rule, subject)

    def _run(self, rule: PlaybookRule, alert: dict[str, Any]) -> Incident:
        incident_id = self.store.open_or_join(
            rule.name, _subject(alert), alert,
            model=alert.get("model"), severity=str(alert.get("severity", "low")), actor=ACTOR,
        )  # fmt: skip
        incident = self.store.get(incident_id)
        done = {a["action"] for a in incident.actions if a["status"] == "done"}
        cutoff = datetime.now(UTC) - RETRY_AFTER
        failed_lately = {
            a["action"]
            for a in incident.actions
            if a["status"] == "failed" and datetime.fromisoformat(a["at"]) > cutoff
        }
        for action in rule.actions:
            if action in done or action in failed_lately:  # an alert storm retries a failure once a minute
                continue
            try:
                status, detail, evidence = self._act(action, rule, alert, incident)
            except Error as exc:
                status, detail, evidence = "failed", str(exc), None
            except Exception as exc:  # noqa: BLE001 - one failing action must not stop the others
                status, detail, evidence = "failed", f"{type(exc).__name__}: {exc}"[:300], None
            self._record(incident_id, action, status, detail, evidence)
        return self.store.get(incident_id)

    def _record(
        self, incident_id: int, action: str, status: str, detail: str, evidence: dict[str, Any] | None
    ) -> None:
        self.store.record_action(incident_id, action, status, detail, evidence, actor=ACTOR)

    def _serving(self, model: str) -> tuple[int, str, str] | None:
        return self.registry.serving(model, self.alias)

    def _describe(self, action: str, rule: PlaybookRule, alert: dict[str, Any]) -> str:
        model, key_id = _model(alert), _key_id(alert)
        serving = self._serving(model) if model else None
        if action in ("quarantine", "rollback"):
            if serving is None:
                return "skip (the alert names no served model)"
            verb = "quarantine" if action == "quarantine" else "roll back from"
            return f"{verb} {model}@{serving[0]} ({self.alias})"
        if action in ("throttle_key", "revoke_key"):
            if key_id is None:
                return "skip (the alert names no API key)"
            return (
                f"revoke key {key_id}" if action == "revoke_key" else f"throttle key {key_id} to {rule.rate}"
            )
        if action == "webhook":
            return f"POST the incident to {rule.url}"
        return "record the alert, recent queries and the serving version's hash"

    def _act(
        self, action: str, rule: PlaybookRule, alert: dict[str, Any], incident: Incident
    ) -> tuple[str, str, dict[str, Any] | None]:
        model, key_id = _model(alert), _key_id(alert)
        if action == "snapshot":
            return (
                "done",
                "evidence recorded",
                {"snapshot": self._snapshot(model, key_id, rule.recent_queries)},
            )
        if action == "quarantine":
            serving = self._serving(model) if model else None
            if serving is None or model is None:
                return "skipped", "the alert names no served model", None
            version, status, _ = serving
            if status == "quarantined":
                return "done", f"{model}@{version} was already quarantined", {"quarantined": version}
            self.registry.quarantine(
                model, version, reason=f"incident {incident.id}: {rule.name}", actor=ACTOR
            )
            return "done", f"{model}@{version} quarantined", {"quarantined": version}
        if action == "rollback":
            serving = self._serving(model) if model else None
            if serving is None or model is None:
                return "skipped", "the alert names no served model", None
            version, status, _ = serving
            quarantined = self.store.get(incident.id).evidence.get("quarantined")
            if status == "registered" and version != quarantined:
                return "done", f"{model}@{self.alias} already serves good version {version}", None
            # The roll-back half of Registry.quarantine_and_rollback (the quarantine action did
            # the other half, recorded as its own step).
            done = self.registry.rollback_from(model, version, aliases=[self.alias], actor=ACTOR)
            done.raise_failure()
            if self.alias not in done.rolled_back:
                raise RegistryError(f"{model}@{self.alias} moved off version {version} meanwhile")
            target = done.rolled_back[self.alias]
            return "done", f"{model}@{self.alias}: {version} -> {target}", {"rolled_back_to": target}
        if action in ("throttle_key", "revoke_key"):
            if key_id is None:
                return "skipped", "the alert names no API key", None
            store = KeyStore(self.db)
            if action == "revoke_key":
                store.revoke(key_id, actor=ACTOR)
                return "done", f"key {key_id} revoked", None
            store.set_rate(key_id, rule.rate, actor=ACTOR)
            return "done", f"key {key_id} throttled to {rule.rate}", None
        if action == "webhook":
            import httpx

            assert rule.url is not None
            payload = self.store.get(incident.id).to_dict()
            try:
                r = httpx.post(rule.url, json=payload, timeout=5.0)
            except httpx.HTTPError as exc:
                return "failed", f"webhook {rule.url}: {exc}", None
            if r.status_code >= 300:
                return "failed", f"webhook {rule.url}: HTTP {r.status_code}", None
            return "done", f"webhook {rule.url}: HTTP {r.status_code}", None
        raise UsageError(f"unknown action {action!r}")

    def _snapshot(self, model: str | None, key_id: str | None, limit: int) -> dict[str, Any]:
        out: dict[str, Any] = {"taken_at": now()}
        log = QueryLog(self.db)
        if model is not None:
            out["recent_queries_by_model"] = log.recent(model=model, limit=limit)
        if key_id is not None:
            out["recent_queries_by_key"] = log.recent(key_id=key_id, limit=limit)
            key = KeyStore(self.db).get(key_id)
            out["key"] = {"id": key_id, "role": key.role, "used": key.used} if key else {"id": key_id}
        if model is not None:
            serving = self._serving(model)
            if serving is not None:
                out["serving"] = {
                    "model": model,
                    "version": serving[0],
                    "status": serving[1],
                    "root_digest": serving[2],
                }
        return out


def _subject(alert: dict[str, Any]) -> str:
    return str(alert.get("subject") or (f"model:{alert['model']}" if alert.get("model") else "unknown"))


def _model(alert: dict[str, Any]) -> str | None:
    value = alert.get("model")
    return str(value) if value else None


def _key_id(alert: dict[str, Any]) -> str | None:
    if alert.get("key_id"):
        return str(alert["key_id"])
    subject = str(alert.get("subject", ""))
    return subject.removeprefix("apikey:") if subject.startswith("apikey:") else None
