"""Incident records: opened by the responder, joined by repeated alerts, resolved by people."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import desc, select, update

from dlsec.errors import UsageError
from dlsec.store._audit import AuditLog, actor_name, now
from dlsec.store._db import Database, incidents

__all__ = ["SEVERITIES", "Incident", "IncidentStore"]

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Incident:
    id: int
    rule: str
    subject: str
    model: str | None
    severity: str
    status: str
    opened_at: str
    alerts: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    evidence: dict[str, Any]
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _incident(row: Any) -> Incident:
    return Incident(
        id=row.id,
        rule=row.rule,
        subject=row.subject,
        model=row.model,
        severity=row.severity,
        status=row.status,
        opened_at=row.opened_at,
        alerts=json.loads(row.alerts),
        actions=json.loads(row.actions),
        evidence=json.loads(row.evidence),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution=row.resolution,
    )


class IncidentStore:
    """Incident records in the dlsec database; every change is in the audit log.

    Example:
        >>> store = IncidentStore(db, audit)  # doctest: +SKIP
        >>> [i.id for i in store.list(status="open")]  # doctest: +SKIP
        [3]
    """

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self.db = db
        self.audit = audit if audit is not None else AuditLog(db)

    def list(self, *, status: str | None = None) -> list[Incident]:
        with self.db.read() as conn:
            query = select(incidents).order_by(incidents.c.id)
            if status is not None:
                query = query.where(incidents.c.status == status)
            return [_incident(r) for r in conn.execute(query)]

    def get(self, incident_id: int) -> Incident:
        with self.db.read() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise UsageError(f"no incident {incident_id}; see `dlsec incident list`")
        return _incident(row)

    def find_open(self, rule: str, subject: str) -> Incident | None:
        """The open incident of ``rule`` about ``subject``, if there is one."""
        with self.db.read() as conn:
            row = conn.execute(
                select(incidents)
                .where(incidents.c.rule == rule, incidents.c.subject == subject, incidents.c.status == "open")
                .order_by(desc(incidents.c.id))
            ).first()
        return _incident(row) if row is not None else None

    def open_or_join(
        self, rule: str, subject: str, alert: dict[str, Any], *, model: str | None, severity: str, actor: str
    ) -> int:
        """Add ``alert`` to the open incident of ``rule`` about ``subject``, or open one; its id."""
        with self.db.write() as conn:
            row = conn.execute(
                select(incidents).where(
                    incidents.c.rule == rule, incidents.c.subject == subject, incidents.c.status == "open"
                )
            ).first()
            if row is None:
                result = conn.execute(
                    incidents.insert().values(
                        rule=rule,
                        subject=subject,
                        model=model,
                        severity=severity if severity in SEVERITIES else "low",
                        status="open",
                        opened_at=now(),
                        alerts=json.dumps([alert], default=str),
                        actions="[]",
                        evidence="{}",
                    )
                )
                key = result.inserted_primary_key
                if key is None:  # pragma: no cover - every supported database returns it
                    raise UsageError("the database did not return the new incident's id")
                incident_id = int(key[0])
                self.audit.append(
                    "incident.open", f"incident:{incident_id}", {"rule": rule, "alert": alert},
                    actor=actor, conn=conn, publish=True,
                )  # fmt: skip
                return incident_id
            seen = json.loads(row.alerts)
            if alert not in seen:
                seen.append(alert)
                conn.execute(
                    update(incidents)
                    .where(incidents.c.id == row.id)
                    .values(alerts=json.dumps(seen, default=str))
                )
            return int(row.id)

    def record_action(
        self,
        incident_id: int,
        action: str,
        status: str,
        detail: str,
        evidence: dict[str, Any] | None,
        *,
        actor: str,
    ) -> None:
        """Append one action's outcome (and any evidence it gathered) to the incident."""
        with self.db.write() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).one()
            actions = json.loads(row.actions)
            actions.append({"action": action, "status": status, "detail": detail, "at": now()})
            values: dict[str, Any] = {"actions": json.dumps(actions)}
            if evidence is not None:
                values["evidence"] = json.dumps({**json.loads(row.evidence), **evidence}, default=str)
            conn.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
            self.audit.append(
                f"respond.{action}", f"incident:{incident_id}", {"status": status, "detail": detail},
                actor=actor, conn=conn, publish=True,
            )  # fmt: skip

    def resolve(self, incident_id: int, *, note: str | None, actor: str | None = None) -> Incident:
        who = actor or actor_name()
        with self.db.write() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).first()
            if row is None:
                raise UsageError(f"no incident {incident_id}; see `dlsec incident list`")
            if row.status != "resolved":
                conn.execute(
                    update(incidents)
                    .where(incidents.c.id == incident_id)
                    .values(status="resolved", resolved_at=now(), resolved_by=who, resolution=note)
                )
                self.audit.append(
                    "incident.resolve", f"incident:{incident_id}", {"note": note},
                    actor=who, conn=conn, publish=True,
                )  # fmt: skip
        return self.get(incident_id)
