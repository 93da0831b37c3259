"""The gateway's query log: one row per prediction request (hashes, not inputs, by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import desc, select

from dlsec.store._db import Database, query_log

__all__ = ["QueryLog"]

_SUMMARY = ("ts", "key_id", "model", "version", "rows", "input_sha256", "latency_ms")


class QueryLog:
    """Append and read the query log of a dlsec database.

    Example:
        >>> QueryLog(db).recent(key_id="0a1b2c3d4e5f", limit=5)  # doctest: +SKIP
        [{'ts': ..., 'key_id': '0a1b2c3d4e5f', 'model': 'digits', ...}]
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` (columns of the ``query_log`` table) in one transaction."""
        if rows:
            with self.db.write() as conn:
                conn.execute(query_log.insert(), list(rows))

    def recent(
        self, *, model: str | None = None, key_id: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` requests of a model or of a key (summaries, newest first)."""
        query = select(query_log).order_by(desc(query_log.c.id)).limit(limit)
        if model is not None:
            query = query.where(query_log.c.model == model)
        if key_id is not None:
            query = query.where(query_log.c.key_id == key_id)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [{name: getattr(r, name) for name in _SUMMARY} for r in rows]
