"""The tamper-evident audit log: an append-only Merkle log with signed checkpoints.

Every registry, key and gateway-admin action is one entry ``(index, time, actor, action,
subject, details)``. Its leaf hash is ``SHA-256(0x00 || canonical JSON of the entry)`` (the
index is inside, so moving an entry changes its hash); the log's tree head is the RFC 6962
Merkle root. After each operation a checkpoint ``(size, root, time)`` is signed with the log's
Ed25519 key (``$DLSEC_HOME/registry/audit-key.pem``, created on first use, mode 0600; the
public half beside it) and kept in the database and in ``audit-checkpoint.json`` outside it, so a
truncated log is caught too.

:meth:`AuditLog.verify` replays the whole log: indices contiguous from 0, every stored leaf hash
equal to the recomputed one, every checkpoint's signature valid and its root equal to the root
recomputed at its size, and the log no shorter than the newest checkpoint. It names the first
bad entry (for an edit that also rewrote the stored hashes, the first entry after the last
checkpoint that still matches).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from dlsec.errors import AuditLogError, KeyFileError, UsageError
from dlsec.fsutil import atomic_write_bytes, atomic_write_text
from dlsec.store import _merkle as merkle
from dlsec.store._db import Database, audit_checkpoints, audit_entries

__all__ = ["AuditLog", "AuditVerification", "Entry", "actor_name"]

KEY_NAME = "audit-key.pem"
PUB_NAME = "audit-key.pub.pem"
LATEST = "audit-checkpoint.json"
_CHECKPOINT_TAG = b"dlsec-audit-checkpoint/1\n"
PUBLISH_INTERVAL = 1.0  # seconds between unforced writes of the checkpoint file


def actor_name() -> str:
    """Who is acting: ``$DLSEC_ACTOR``, else the OS user."""
    import getpass
    import os

    actor = os.environ.get("DLSEC_ACTOR")
    if actor:
        if len(actor) > 200:
            raise UsageError("DLSEC_ACTOR is longer than 200 characters; use a shorter name")
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    index: int
    ts: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]

    def canonical(self) -> bytes:
        return json.dumps(
            {
                "i": self.index,
                "ts": self.ts,
                "actor": self.actor,
                "action": self.action,
                "subject": self.subject,
                "details": self.details,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")

    def leaf(self) -> bytes:
        return merkle.leaf_hash(self.canonical())

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
        }


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    size: int
    checkpoints: int
    first_bad: int | None
    reason: str | None
    root: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.size,
            "checkpoints_checked": self.checkpoints,
            "first_bad_entry": self.first_bad,
            "reason": self.reason,
            "root": self.root,
        }


def _checkpoint_message(size: int, root: str, ts: str) -> bytes:
    return _CHECKPOINT_TAG + f"{size}\n{root}\n{ts}\n".encode()


class AuditLog:
    """The audit log in a release :class:`~dlsec.store._db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._frontier: merkle.Frontier | None = None
        self._key: ed25519.Ed25519PrivateKey | None = None
        self._published = -PUBLISH_INTERVAL

    # -- keys -----------------------------------------------------------------------------

    def _signing_key(self) -> ed25519.Ed25519PrivateKey:
        if self._key is None:
            path = self.db.root / KEY_NAME
            if not path.exists():
                key = ed25519.Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                pub = key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                atomic_write_bytes(self.db.root / PUB_NAME, pub)
                atomic_write_bytes(path, pem, mode=0o600)
            loaded = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(loaded, ed25519.Ed25519PrivateKey):
                raise KeyFileError(f"{path}: not an Ed25519 private key")
            self._key = loaded
        return self._key

    def public_key(self, path: str | Path | None = None) -> ed25519.Ed25519PublicKey:
        """The checkpoint verification key (default: beside the database)."""
        source = Path(path) if path is not None else self.db.root / PUB_NAME
        try:
            key = serialization.load_pem_public_key(source.read_bytes())
        except FileNotFoundError:
            raise AuditLogError(
                f"{source}: the audit log's public key is missing; the log cannot be verified"
            ) from None
        except ValueError:
            raise AuditLogError(f"{source}: not a PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise AuditLogError(f"{source}: not an Ed25519 public key")
        return key

    # -- writing ----------------------------------------------------------------------------

    def _sync_frontier(self, conn: Connection) -> merkle.Frontier:
        # max(idx) walks the primary-key index (count(*) would scan the table on SQLite).
        size = int(conn.execute(select(func.coalesce(func.max(audit_entries.c.idx) + 1, 0))).scalar_one())
        if self._frontier is None or self._frontier.size != size:
            frontier = merkle.Frontier()
            for (leaf,) in conn.execute(select(audit_entries.c.leaf_hash).order_by(audit_entries.c.idx)):
                frontier.append(bytes.fromhex(leaf))
            self._frontier = frontier
        return self._frontier

    def append(
        self,
        action: str,
        subject: str,
        details: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
        conn: Connection | None = None,
        checkpoint: bool = True,
        publish: bool = False,
    ) -> Entry:
        """Append one entry (inside ``conn``'s write transaction when given) and sign a checkpoint.

        ``publish`` also writes the checkpoint to ``audit-checkpoint.json`` now (the file outside the
        database that catches truncation); otherwise that file is refreshed at most once a second,
        so that high-rate appends (gateway events) do not each pay for a synced file write.
        """
        events = [(action, subject, details or {})]
        return self.append_many(events, actor=actor, conn=conn, checkpoint=checkpoint, publish=publish)[0]

    def append_many(
        self,
        events: Iterable[tuple[str, str, dict[str, Any]]],
        *,
        actor: str | None = None,
        conn: Connection | None = None,
        checkpoint: bool = True,
        publish: bool = False,
    ) -> list[Entry]:
        """Append several entries in one transaction, then (by default) sign one checkpoint."""
        if conn is None:
            with self.db.write() as own:
                return self.append_many(events, actor=actor, conn=own, checkpoint=checkpoint, publish=publish)
        who = actor or actor_name()
        frontier = self._sync_frontier(conn)
        try:
            entries, rows = [], []
            for action, subject, details in events:
                entry = Entry(frontier.size, now(), who, action, subject, dict(details))
                leaf = entry.leaf()
                rows.append(
                    {
                        "idx": entry.index,
                        "ts": entry.ts,
                        "actor": entry.actor,
                        "action": entry.action,
                        "subject": entry.subject,
                        "details": json.dumps(entry.details, sort_keys=True, ensure_ascii=False),
                        "leaf_hash": leaf.hex(),
                    }
                )
                frontier.append(leaf)
                entries.append(entry)
            if rows:
                conn.execute(audit_entries.insert(), rows)
            if checkpoint:
                self._checkpoint(conn, frontier, publish=publish)
        except BaseException:
            self._frontier = None  # the transaction rolls back: forget what we added
            raise
        return entries

    def checkpoint(self) -> dict[str, Any]:
        """Sign a checkpoint of the log as it is now."""
        with self.db.write() as conn:
            return self._checkpoint(conn, self._sync_frontier(conn), publish=True)

    def _checkpoint(self, conn: Connection, frontier: merkle.Frontier, *, publish: bool) -> dict[str, Any]:
        size, root, ts = frontier.size, frontier.root().hex(), now()
        key = self._signing_key()
        sig = base64.b64encode(key.sign(_checkpoint_message(size, root, ts))).decode()
        fp = _fingerprint(key.public_key())
        record = {"size": size, "root": root, "ts": ts, "key_fingerprint": fp, "signature": sig}
        existing = conn.execute(
            select(audit_checkpoints.c.size).where(audit_checkpoints.c.size == size)
        ).first()
        if existing is None:
            conn.execute(audit_checkpoints.insert(), [record])
        if publish or time.monotonic() - self._published >= PUBLISH_INTERVAL:
            atomic_write_text(self.db.root / LATEST, json.dumps(record, indent=2) + "\n")
            self._published = time.monotonic()
        return record

    # -- reading ----------------------------------------------------------------------------

    def _rows(self, conn: Connection) -> Iterator[Any]:
        return iter(conn.execute(select(audit_entries).order_by(audit_entries.c.idx)))

    @staticmethod
    def _entry(row: Any) -> Entry:
        try:
            details = json.loads(row.details)
        except json.JSONDecodeError:
            details = {"unparseable": row.details}
        return Entry(row.idx, row.ts, row.actor, row.action, row.subject, details)

    def entries(self, *, subject: str | None = None, limit: int | None = None) -> list[Entry]:
        """The entries, oldest first; ``subject``: only those whose subject starts with it, literally."""
        with self.db.read() as conn:
            query = select(audit_entries).order_by(audit_entries.c.idx)
            if subject is not None:
                # Not LIKE: its % and _ are wildcards, and SQLite's LIKE ignores ASCII case.
                prefix = func.substr(audit_entries.c.subject, 1, len(subject))
                query = query.where(prefix == subject)
            rows = list(conn.execute(query))
        entries = [self._entry(r) for r in rows]
        return entries[-limit:] if limit else entries

    def last_index(self) -> int:
        """The index of the newest entry, -1 when empty (a cheap generation number for caches)."""
        with self.db.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(audit_entries.c.idx), -1))).scalar_one())

    def recent(self, action: str, *, limit: int = 100) -> list[Entry]:
        """The newest ``limit`` entries of one ``action``, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(audit_entries)
                .where(audit_entries.c.action == action)
                .order_by(audit_entries.c.idx.desc())
                .limit(limit)
            ).all()
        return [self._entry(r) for r in reversed(rows)]

    def size(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_entries)).scalar_one())

    def verify(
        self, *, public_key: str | Path | None = None, checkpoint_file: str | Path | None = None
    ) -> AuditVerification:
        """Replay the log and check it against every signed checkpoint (see the module docstring)."""
        key = self.public_key(public_key)
        with self.db.read() as conn:
            rows = list(conn.execute(select(audit_entries).order_by(audit_entries.c.idx)))
            checkpoints = list(conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size)))
        frontier = merkle.Frontier()
        by_size = {c.size: c for c in checkpoints}
        last_good_checkpoint = 0
        checked = 0

        def fail(index: int | None, reason: str) -> AuditVerification:
            return AuditVerification(False, len(rows), checked, index, reason, frontier.root().hex())

        for cp in checkpoints:
            try:
                key.verify(base64.b64decode(cp.signature), _checkpoint_message(cp.size, cp.root, cp.ts))
            except (InvalidSignature, ValueError):
                return fail(
                    cp.size - 1 if cp.size else 0, f"checkpoint at size {cp.size} has an invalid signature"
                )
        if 0 in by_size:
            checked += 1
        for position, row in enumerate(rows):
            if row.idx != position:
                kind = "missing (deleted)" if row.idx > position else "duplicated or inserted"
                return fail(
                    position, f"entry {position} is {kind}: found index {row.idx} at position {position}"
                )
            leaf = self._entry(row).leaf()
            if leaf.hex() != row.leaf_hash:
                return fail(
                    position, f"entry {position} was altered: its content does not match its leaf hash"
                )
            frontier.append(leaf)
            at = by_size.get(position + 1)
            if at is not None:
                cp = at
                checked += 1
                if frontier.root().hex() != cp.root:
                    return fail(
                        last_good_checkpoint,
                        f"the log up to entry {position} does not match the checkpoint signed at size "
                        f"{cp.size}: an entry from {last_good_checkpoint} to {position} was altered, "
                        "inserted or reordered",
                    )
                last_good_checkpoint = position + 1
        if checkpoints and checkpoints[-1].size > len(rows):
            return fail(
                len(rows),
                f"the log has {len(rows)} entries but a checkpoint was signed at size {checkpoints[-1].size}",
            )
        latest_path = Path(checkpoint_file) if checkpoint_file is not None else self.db.root / LATEST
        if latest_path.exists():
            try:
                latest = json.loads(latest_path.read_text())
                key.verify(
                    base64.b64decode(latest["signature"]),
                    _checkpoint_message(int(latest["size"]), latest["root"], latest["ts"]),
                )
            except (InvalidSignature, ValueError, KeyError, TypeError, json.JSONDecodeError):
                return fail(
                    None, f"{latest_path}: the latest checkpoint is unreadable or its signature is invalid"
                )
            size = int(latest["size"])
            if size > len(rows):
                return fail(
                    len(rows), f"the log has {len(rows)} entries but the latest checkpoint covers {size}"
                )
            if size not in by_size or by_size[size].root != latest["root"]:
                return fail(None, f"the latest checkpoint (size {size}) is not in the database's checkpoints")
        elif checkpoint_file is not None:
            raise UsageError(f"{checkpoint_file}: no such checkpoint file")
        if rows and (not checkpoints or checkpoints[-1].size < len(rows)):
            signed = checkpoints[-1].size if checkpoints else 0
            return fail(signed, f"entries from {signed} on are not covered by a signed checkpoint")
        return AuditVerification(True, len(rows), checked, None, None, frontier.root().hex())

    def _leaves(self, size: int | None = None) -> tuple[list[bytes], dict[str, Any]]:
        with self.db.read() as conn:
            checkpoints = list(conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size)))
            leaves = [
                bytes.fromhex(h)
                for (h,) in conn.execute(select(audit_entries.c.leaf_hash).order_by(audit_entries.c.idx))
            ]
        if not checkpoints:
            raise UsageError("the audit log has no signed checkpoint yet")
        chosen = checkpoints[-1] if size is None else next((c for c in checkpoints if c.size == size), None)
        if chosen is None:
            raise UsageError(f"no checkpoint was signed at size {size}; see `dlsec audit checkpoints`")
        return leaves[: chosen.size], dict(chosen._mapping)

    def inclusion_proof(self, index: int, *, size: int | None = None) -> dict[str, Any]:
        """Inclusion proof of entry ``index`` against the newest (or a given) signed checkpoint."""
        leaves, cp = self._leaves(size)
        if not 0 <= index < len(leaves):
            raise UsageError(f"entry {index} is not covered by the checkpoint at size {cp['size']}")
        proof = merkle.inclusion_proof(leaves, index)
        return {
            "index": index,
            "leaf_hash": leaves[index].hex(),
            "tree_size": cp["size"],
            "root": cp["root"],
            "checkpoint": cp,
            "proof": [p.hex() for p in proof],
            "verified": merkle.verify_inclusion(
                leaves[index], index, cp["size"], proof, bytes.fromhex(cp["root"])
            ),
        }

    def consistency_proof(self, old_size: int, *, size: int | None = None) -> dict[str, Any]:
        """Proof that the log at ``old_size`` is a prefix of the log at the newest (or a given) checkpoint."""
        leaves, cp = self._leaves(size)
        if not 0 < old_size <= len(leaves):
            raise UsageError(f"--old must be between 1 and {len(leaves)}")
        proof = merkle.consistency_proof(leaves, old_size)
        old_root = merkle.tree_root(leaves[:old_size])
        return {
            "old_size": old_size,
            "old_root": old_root.hex(),
            "tree_size": cp["size"],
            "root": cp["root"],
            "proof": [p.hex() for p in proof],
            "verified": merkle.verify_consistency(
                old_size, cp["size"], old_root, bytes.fromhex(cp["root"]), proof
            ),
        }

    def export(self, path: str | Path) -> int:
        """Write every entry as one JSON line (with its leaf hash), atomically; return the count."""
        with self.db.read() as conn:
            rows = list(self._rows(conn))
        lines = [
            json.dumps({**self._entry(r).to_dict(), "leaf_hash": r.leaf_hash}, sort_keys=True) for r in rows
        ]
        atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
        return len(lines)


def _fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    import hashlib

    return hashlib.sha256(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).hexdigest()
