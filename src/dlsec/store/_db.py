"""The release database: registry tables and the audit log, through SQLAlchemy Core.

SQLite under the dlsec home by default (``$DLSEC_HOME/registry/registry.db``, WAL mode); a
PostgreSQL URL (``postgresql+psycopg://...``, from ``--registry-url`` or
``$DLSEC_REGISTRY_URL``) works too. Every write runs in :meth:`Database.write`, which holds the
database's writer lock for the whole transaction (``BEGIN IMMEDIATE`` on SQLite, a transaction
advisory lock on PostgreSQL), so concurrent processes serialise: version numbers and audit-log
indices are never handed out twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, OperationalError

from dlsec.core.home import home_dir
from dlsec.errors import UsageError

__all__ = ["Database", "open_database"]

metadata = MetaData()

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", Text, nullable=False),  # may be a path: no length limit
    Column("details", Text, nullable=False),
    Column("leaf_hash", String(64), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", Integer, primary_key=True, autoincrement=False),
    Column("root", String(64), nullable=False),
    Column("ts", String(40), nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("signature", Text, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(200), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), ForeignKey("models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("status_reason", Text, nullable=True),
    Column("kind", String(10), nullable=False),  # "file" or "dir"
    Column("entry", String(400), nullable=False),  # file name (kind file) or "" (dir)
    Column("root_digest", String(64), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("signature", Text, nullable=True),
    Column("signer", Text, nullable=True),
    Column("scan", Text, nullable=False),
    Column("lineage", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("model", "version", name="uq_model_version"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model", String(200), ForeignKey("models.name"), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("alias", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(20), nullable=False),
    Column("at", String(40), nullable=False),
    Column("by", String(200), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("models", Text, nullable=True),  # JSON list, or NULL for every model
    Column("rate", String(40), nullable=True),
    Column("budget", BigInteger, nullable=True),
    Column("used", BigInteger, nullable=False, default=0),
    Column("output", String(40), nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)

query_log = Table(
    "query_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", String(40), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("output", Text, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("inputs", Text, nullable=True),  # raw inputs, only when the gateway is configured to keep them
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(200), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("model", String(200), nullable=True),
    Column("severity", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # open, resolved
    Column("opened_at", String(40), nullable=False),
    Column("alerts", Text, nullable=False),  # JSON list
    Column("actions", Text, nullable=False),  # JSON list of {action, status, detail, at}
    Column("evidence", Text, nullable=False),  # JSON
    Column("resolved_at", String(40), nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Column("resolution", Text, nullable=True),
)

_LOCK_KEY = 0x646C736563  # "dlsec": the PostgreSQL advisory lock id for writers


class Database:
    """An engine plus the writer lock; create with :func:`open_database`."""

    def __init__(self, engine: Engine, root: Path, *, read_engine: Engine | None = None) -> None:
        self.engine = engine
        self.read_engine = read_engine or engine
        self.root = root  # where blobs, reports and the audit key live
        self.is_sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that holds the writer lock until it commits (or rolls back on error)."""
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot (on SQLite a deferred transaction: it never blocks writers)."""
        with self.read_engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _sqlite_engine(path: Path, *, begin: str = "BEGIN IMMEDIATE") -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        # The journal mode is stored in the file: switch only once. The switch needs an exclusive
        # lock that SQLite may refuse at once (no busy wait) while another process opens the file.
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def open_database(url: str | None = None, *, home: str | Path | None = None) -> Database:
    """Open (and create if needed) the release database.

    Args:
        url: an SQLAlchemy URL; default ``$DLSEC_REGISTRY_URL``, else SQLite under the home.
        home: the dlsec home (default ``$DLSEC_HOME``).
    """
    root = home_dir(home) / "registry"
    url = url or os.environ.get("DLSEC_REGISTRY_URL") or None
    read_engine = None
    try:
        if url is None or url.startswith("sqlite:///"):
            path = root / "registry.db" if url is None else Path(url.removeprefix("sqlite:///"))
            engine = _sqlite_engine(path)
            read_engine = _sqlite_engine(path, begin="BEGIN")
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise UsageError(f"registry URL {url!r}: {exc}") from None
    db = Database(engine, root, read_engine=read_engine)
    deadline = time.monotonic() + 60
    while True:
        try:
            with db.write() as conn:
                metadata.create_all(conn)
            return db
        except OperationalError as exc:
            reason = str(exc.orig).splitlines()[0]
            # Two processes creating the same SQLite file at once can see "locked" before any busy
            # wait applies (the WAL switch, the first schema write); that settles within moments.
            if db.is_sqlite and "locked" in reason and time.monotonic() < deadline:
                db.dispose()
                time.sleep(0.05)
                continue
            db.dispose()
            raise UsageError(f"cannot open the registry database ({reason})") from None
