"""Gateway API keys: created once, stored only as salted hashes, scoped, revocable.

A key reads ``dlsec_<id>_<secret>``: the id (12 hex digits) finds the record, the secret (32
random bytes, URL-safe base64) is checked against ``SHA-256(salt || secret)`` in constant time.
A slow password hash is not needed: the secret has 256 bits of entropy, not a human's.

Roles, each including the ones before it: ``client`` (predict on its models), ``viewer`` (also
reads the dashboard: models, reports, the audit log, incidents; a client key cannot open it),
``operator`` (also alerts, quarantine and rollback), ``admin`` (also key management). A key may
be limited to some models, a request rate (``10/second``, ``600/minute``), a budget of
predictions (rows) and an output policy (``full``, ``top-K``, ``rounded-D``, ``label``).
Creating and revoking keys is in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from dlsec.errors import UsageError
from dlsec.store._audit import AuditLog, actor_name, now
from dlsec.store._db import Database, api_keys

__all__ = ["ApiKey", "KeyStore", "OutputPolicy", "Rate", "ROLES", "parse_output", "parse_rate"]

ROLES = ("client", "viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
_KEY = re.compile(r"^dlsec_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day|s|m|h|d)\s*$")
_PERIOD = {"second": 1, "s": 1, "minute": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400}


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``period`` seconds (a token bucket of ``count`` tokens)."""

    count: int
    period: float

    def __str__(self) -> str:
        unit = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(
            int(self.period), f"{self.period}s"
        )
        return f"{self.count}/{unit}"


def parse_rate(text: str | None) -> Rate | None:
    if text is None or text == "":
        return None
    m = _RATE.match(text)
    if not m or not 1 <= int(m.group(1)) <= 10**12:
        raise UsageError(
            f"bad rate {text!r}: use COUNT/second, /minute, /hour or /day (COUNT from 1 to 10^12), "
            "e.g. 10/second"
        )
    return Rate(int(m.group(1)), float(_PERIOD[m.group(2)]))


@dataclass(frozen=True)
class OutputPolicy:
    """What a prediction answer reveals: ``full`` probabilities, ``top-K``, ``rounded-D`` or ``label``."""

    kind: str
    k: int | None = None
    digits: int | None = None

    def __str__(self) -> str:
        if self.kind == "top":
            return f"top-{self.k}"
        if self.kind == "rounded":
            return f"rounded-{self.digits}"
        return self.kind


def parse_output(text: str) -> OutputPolicy:
    text = text.strip().lower()
    if text in ("full", "label"):
        return OutputPolicy(text)
    m = re.match(r"^(top|rounded)-(\d+)$", text)
    if m and 1 <= int(m.group(2)) <= 100:
        kind, n = m.group(1), int(m.group(2))
        return OutputPolicy("top", k=n) if kind == "top" else OutputPolicy("rounded", digits=n)
    raise UsageError(f"bad output policy {text!r}: use full, top-K, rounded-D or label")


@dataclass(frozen=True)
class ApiKey:
    """A key record (never the secret)."""

    id: str
    role: str
    models: tuple[str, ...] | None
    rate: Rate | None
    budget: int | None
    used: int
    output: OutputPolicy
    note: str | None
    created_at: str
    created_by: str
    revoked_at: str | None
    salt: str
    hash: str

    def may(self, role: str) -> bool:
        """Whether this key's role is at least ``role``."""
        return _RANK[self.role] >= _RANK[role]

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "models": list(self.models) if self.models is not None else None,
            "rate": str(self.rate) if self.rate else None,
            "budget": self.budget,
            "used": self.used,
            "output": str(self.output),
            "note": self.note,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked": self.revoked_at is not None,
            "revoked_at": self.revoked_at,
        }


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _record(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        role=row.role,
        models=tuple(json.loads(row.models)) if row.models is not None else None,
        rate=parse_rate(row.rate),
        budget=row.budget,
        used=row.used,
        output=parse_output(row.output),
        note=row.note,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        salt=row.salt,
        hash=row.hash,
    )


_MAX_BUDGET = 2**63 - 1  # the largest a SQL BIGINT holds


class KeyStore:
    """API keys in the release database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.audit = AuditLog(db)

    def create(
        self,
        *,
        role: str,
        models: list[str] | None = None,
        rate: str | None = None,
        budget: int | None = None,
        output: str = "full",
        note: str | None = None,
        actor: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Create a key; return ``(the key, shown once, its record)``."""
        if role not in ROLES:
            raise UsageError(f"bad role {role!r}: use client, viewer, operator or admin")
        if budget is not None and not 1 <= budget <= _MAX_BUDGET:
            raise UsageError(f"--budget must be a number of predictions from 1 to {_MAX_BUDGET}")
        parsed_rate = parse_rate(rate)
        policy = parse_output(output)
        if models is not None and (not models or any(not m for m in models)):
            raise UsageError("--models needs at least one model name")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        who = actor or actor_name()
        row = {
            "id": key_id,
            "salt": salt,
            "hash": _digest(salt, secret),
            "role": role,
            "models": json.dumps(sorted(set(models))) if models is not None else None,
            "rate": str(parsed_rate) if parsed_rate else None,
            "budget": budget,
            "used": 0,
            "output": str(policy),
            "note": note,
            "created_at": now(),
            "created_by": who,
            "revoked_at": None,
        }
        with self.db.write() as conn:
            conn.execute(api_keys.insert(), [row])
            details = {k: row[k] for k in ("role", "models", "rate", "budget", "output", "note")}
            self.audit.append("keys.create", f"apikey:{key_id}", details, actor=who, conn=conn, publish=True)
            record = _record(conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one())
        return f"dlsec_{key_id}_{secret}", record

    def revoke(self, key_id: str, *, actor: str | None = None) -> ApiKey:
        who = actor or actor_name()
        with self.db.write() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise UsageError(f"no API key {key_id!r}; see `dlsec keys list`")
            if row.revoked_at is None:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now()))
                self.audit.append("keys.revoke", f"apikey:{key_id}", {}, actor=who, conn=conn, publish=True)
            return _record(conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one())

    def set_rate(self, key_id: str, rate: str | None, *, actor: str | None = None) -> ApiKey:
        """Change a key's rate limit (an incident throttling a client); logged."""
        parsed = parse_rate(rate)
        who = actor or actor_name()
        with self.db.write() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise UsageError(f"no API key {key_id!r}; see `dlsec keys list`")
            value = str(parsed) if parsed else None
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(rate=value))
            self.audit.append(
                "keys.rate", f"apikey:{key_id}", {"rate": value}, actor=who, conn=conn, publish=True
            )
            return _record(conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one())

    def get(self, key_id: str) -> ApiKey | None:
        """The key record ``key_id``, or None."""
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _record(row) if row is not None else None

    def all(self) -> list[ApiKey]:
        with self.db.read() as conn:
            return [_record(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def save_usage(self, used: dict[str, int]) -> None:
        """Persist budget usage (what the limit store counted) so it survives restarts."""
        if not used:
            return
        with self.db.write() as conn:
            for key_id, value in used.items():
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(used=value))


def authenticate(keys: dict[str, ApiKey], presented: str | None) -> ApiKey | None:
    """The key record ``presented`` proves, or None (unknown, malformed, wrong secret or revoked)."""
    if not presented:
        return None
    m = _KEY.match(presented.strip())
    if not m:
        return None
    record = keys.get(m.group(1))
    if record is None or record.revoked_at is not None:
        return None
    return record if hmac.compare_digest(_digest(record.salt, m.group(2)), record.hash) else None
