"""Store: dlsec's state, in one database, behind one API.

The model registry (versions, aliases with history, lineage, statuses), the tamper-evident audit
log (a Merkle tree with signed checkpoints), the gateway's API keys and query log, and incident
records all live in one SQLAlchemy database: SQLite under the dlsec home by default, PostgreSQL
with ``--registry-url``. Every other package reads and changes that state through the classes
here; none runs SQL of its own. Promotion gates come in as a callable (:class:`Policy`), so the
store does not depend on the assessment.

Example:
    >>> from dlsec.store import Registry
    >>> registry = Registry.open(home="~/.dlsec")  # doctest: +SKIP
    >>> registry.promote("digits", 3, alias="production")  # doctest: +SKIP
"""

from __future__ import annotations

from dlsec.store._apikeys import (
    ROLES,
    ApiKey,
    KeyStore,
    OutputPolicy,
    Rate,
    authenticate,
    parse_output,
    parse_rate,
)
from dlsec.store._audit import AuditLog, AuditVerification, Entry, actor_name, now
from dlsec.store._db import Database, open_database
from dlsec.store._incidents import SEVERITIES, Incident, IncidentStore
from dlsec.store._querylog import QueryLog
from dlsec.store._registry import (
    Policy,
    Quarantine,
    Registry,
    ReportCheck,
    VersionRecord,
    default_key_dir,
    load_registry_ref,
    parse_ref,
)
from dlsec.store._ship import ship_model

__all__ = [
    "ROLES",
    "SEVERITIES",
    "ApiKey",
    "AuditLog",
    "AuditVerification",
    "Database",
    "Entry",
    "Incident",
    "IncidentStore",
    "KeyStore",
    "OutputPolicy",
    "Policy",
    "Quarantine",
    "QueryLog",
    "Rate",
    "Registry",
    "ReportCheck",
    "VersionRecord",
    "actor_name",
    "authenticate",
    "default_key_dir",
    "load_registry_ref",
    "now",
    "open_database",
    "parse_output",
    "parse_rate",
    "parse_ref",
    "ship_model",
]
