"""The model registry: immutable signed versions with lineage, aliases, a promotion policy.

A version is a copy of the model's files, content-addressed under
``$DLSEC_HOME/registry/blobs/ROOT_DIGEST/`` with its signature, and a database row recording the
manifest, the signature bundle and who signed it, the scan verdict, and the lineage (training data
hash, training configuration, parent version, assessment report hash and gate results), who added
it and when. Nothing about a version changes after ``add`` except its status (``registered``,
``quarantined``, ``retired``).

Aliases (``production``, ``staging``, ...) point at versions. ``promote`` moves an alias only when
the policy holds: a signature that verifies with the trusted keys, a clean scan of the stored
files, and (when configured) passing assessment gates. ``quarantine`` takes a version out of
service at once (loading it is refused); ``rollback`` moves an alias back to the newest version it
pointed at before that is still good; ``quarantine_and_rollback`` does both for the aliases that
pointed at the version (what the CLI and the gateway run; a playbook's ``rollback`` action runs its
second half, ``rollback_from``). Every action, refused promotions included, is appended to the
audit log in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from dlsec.core.card import TrainingCard
from dlsec.core.home import default_key_dir
from dlsec.errors import (
    Error,
    ModelLoadError,
    ModelOutOfServiceError,
    PolicyError,
    RegistryError,
    SecurityFinding,
    SignatureMissingError,
    UsageError,
)
from dlsec.release import (
    SIGNATURE_NAME,
    VerifyKeys,
    default_signature_path,
    hash_model,
    load_verify_keys,
    verify_model,
)
from dlsec.store._audit import AuditLog, actor_name, now
from dlsec.store._db import Database, alias_history, aliases, models, open_database, versions

__all__ = [
    "Policy",
    "Quarantine",
    "Registry",
    "ReportCheck",
    "VersionRecord",
    "default_key_dir",
    "load_registry_ref",
    "parse_ref",
]

STATUSES = ("registered", "quarantined", "retired")

if TYPE_CHECKING:  # torch is imported by the loader only when a model is loaded
    from dlsec.core.loading import LoadOptions
    from dlsec.core.model import Model


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@3`` or ``NAME@production`` -> (name, version-or-alias or None)."""
    name, _, sel = ref.partition("@")
    if not name:
        raise UsageError(f"bad model reference {ref!r}: use NAME, NAME@VERSION or NAME@ALIAS")
    return name, sel or None


ReportCheck = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Policy:
    """What ``promote`` requires. A signature and a clean scan are always required.

    Attributes:
        require_report: an assessment report must be recorded with the version.
        gates: what the report must pass, as a callable from the report to the names and reasons
            of the gates it fails (``dlsec.assess.load_promotion_policy`` builds one from YAML);
            None accepts a report whose own gates passed. The registry runs it, it does not
            know what a gate is.
    """

    require_report: bool = False
    gates: ReportCheck | None = None


@dataclass(frozen=True)
class Quarantine:
    """What :meth:`Registry.quarantine_and_rollback` did.

    Attributes:
        record: the quarantined version, as stored now.
        rolled_back: each alias that moved, and the version it points at now.
        failures: each alias that could not move, and why.
    """

    record: VersionRecord
    rolled_back: dict[str, int]
    failures: dict[str, Error]

    def raise_failure(self) -> None:
        """Raise the first roll-back failure, if any (the quarantine itself has happened)."""
        for error in self.failures.values():
            raise error


@dataclass(frozen=True)
class VersionRecord:
    """One registered version, as stored."""

    model: str
    version: int
    status: str
    status_reason: str | None
    kind: str
    entry: str
    root_digest: str
    manifest: dict[str, str]
    signed: bool
    signer: dict[str, Any] | None
    scan: dict[str, Any]
    lineage: dict[str, Any]
    created_at: str
    created_by: str
    blob: Path

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def path(self) -> Path:
        """The stored model: its directory, or its one file."""
        return self.blob / self.entry if self.kind == "file" else self.blob

    @property
    def signature_path(self) -> Path:
        return default_signature_path(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "status": self.status,
            "status_reason": self.status_reason,
            "root_digest": self.root_digest,
            "files": self.manifest,
            "signed": self.signed,
            "signer": self.signer,
            "scan": self.scan,
            "lineage": self.lineage,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "path": str(self.path),
        }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Registry:
    """The model registry over a release database (SQLite by default).

    Example:
        >>> reg = Registry.open()  # doctest: +SKIP
        >>> v = reg.add("out/model", "digits")  # doctest: +SKIP
        >>> reg.promote("digits", v.version, alias="production")  # doctest: +SKIP
    """

    def __init__(self, db: Database, *, home: str | Path | None = None) -> None:
        self.db = db
        self.home = home
        self.audit = AuditLog(db)

    @classmethod
    def open(cls, url: str | None = None, *, home: str | Path | None = None) -> Registry:
        return cls(open_database(url, home=home), home=home)

    def close(self) -> None:
        self.db.dispose()

    def trusted_keys(self, keys: str | Path | VerifyKeys | None = None) -> VerifyKeys:
        if isinstance(keys, VerifyKeys):
            return keys
        return load_verify_keys(keys if keys is not None else default_key_dir(self.home))

    # -- add --------------------------------------------------------------------------------

    def _store(self, source: Path, root: str, sig: Path | None) -> tuple[Path, str, str]:
        """Copy the model and signature into the content-addressed blob store: (blob, kind, entry)."""
        blob = self.db.root / "blobs" / root
        kind = "dir" if source.is_dir() else "file"
        entry = "" if kind == "dir" else source.name
        if blob.exists():
            return blob, kind, entry
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root[:16]}.", dir=blob.parent))
        try:
            if kind == "dir":
                target = tmp / "m"
                shutil.copytree(source, target, ignore=shutil.ignore_patterns(SIGNATURE_NAME, ".git"))
                if sig is not None:
                    shutil.copyfile(sig, target / SIGNATURE_NAME)
                staged = target
            else:
                staged = tmp / "m"
                staged.mkdir()
                shutil.copyfile(source, staged / entry)
                if sig is not None:
                    shutil.copyfile(sig, staged / (entry + ".sig"))
            for path in staged.rglob("*"):
                if path.is_file():
                    os.chmod(path, 0o444)
            try:
                os.rename(staged, blob)
            except OSError:
                if not blob.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return blob, kind, entry

    def add(
        self,
        source: str | Path,
        name: str,
        *,
        signature: str | Path | None = None,
        keys: str | Path | VerifyKeys | None = None,
        data_sha256: str | None = None,
        training_config: dict[str, Any] | None = None,
        parent: str | None = None,
        report: str | Path | None = None,
        actor: str | None = None,
    ) -> VersionRecord:
        """Register ``source`` (a model file or directory) as the next version of ``name``.

        A signature (default ``DIR/model.sig`` or ``FILE.sig``) is verified with the trusted keys
        and recorded; a model without one is registered as unsigned (``promote`` will refuse it),
        a model whose signature fails is refused. The files are scanned and the verdict recorded.
        A training card ``model.json`` in the directory (or beside the file) fills in the
        lineage it knows: the training data's hash, the recipe and the training configuration;
        a malformed card is refused (``ModelLoadError`` naming it).
        """
        from dlsec.scan import scan_paths

        source = Path(source)
        if not source.exists():
            raise UsageError(f"{source}: no such file or directory")
        _check_name(name)
        card = TrainingCard.find(source)
        sig = Path(signature) if signature is not None else default_signature_path(source)
        signer = None
        if sig.exists():
            verified = verify_model(source, self.trusted_keys(keys), signature=sig)
            manifest = verified.manifest
            signer = verified.key_fingerprints
        elif signature is not None:
            raise SignatureMissingError(f"{sig}: no such signature file")
        else:
            manifest = hash_model(source, signature=sig)
        root = manifest.root_digest
        blob, kind, entry = self._store(source, root, sig if signer else None)
        stored = blob / entry if kind == "file" else blob
        results = scan_paths(
            [p for p in sorted(stored.rglob("*")) if p.is_file() and not p.name.endswith(".sig")]
            if kind == "dir"
            else [stored]
        )
        verdict = (
            "safe"
            if results and all(r.safe for r in results)
            else ("unscannable" if any(r.verdict == "unscannable" for r in results) else "unsafe")
        )
        scan = {
            "verdict": verdict,
            "files": {str(Path(r.path).relative_to(blob)): r.verdict for r in results},
        }
        lineage = self._lineage(card, data_sha256, training_config, parent, report)
        who = actor or actor_name()
        with self.db.write() as conn:
            if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
                conn.execute(models.insert(), [{"name": name, "created_at": now(), "created_by": who}])
            if parent is not None:
                self._resolve(conn, *parse_ref(parent))
            number = (
                int(
                    conn.execute(
                        select(func.coalesce(func.max(versions.c.version), 0)).where(versions.c.model == name)
                    ).scalar_one()
                )
                + 1
            )
            row = {
                "model": name,
                "version": number,
                "status": "registered",
                "status_reason": None,
                "kind": kind,
                "entry": entry,
                "root_digest": root,
                "manifest": _json(manifest.files),
                "signature": sig.read_text(encoding="utf-8") if signer else None,
                "signer": _json(signer) if signer else None,
                "scan": _json(scan),
                "lineage": _json(lineage),
                "created_at": now(),
                "created_by": who,
            }
            conn.execute(versions.insert(), [row])
            self.audit.append(
                "registry.add",
                f"{name}@{number}",
                {
                    "root_digest": root,
                    "signed": bool(signer),
                    "signer": signer,
                    "scan": verdict,
                    "lineage": lineage,
                },
                actor=who,
                conn=conn,
                publish=True,
            )
            return self._record(
                conn.execute(
                    select(versions).where(versions.c.model == name, versions.c.version == number)
                ).one()
            )

    def _lineage(
        self,
        card: TrainingCard | None,
        data_sha256: str | None,
        config: dict[str, Any] | None,
        parent: str | None,
        report: str | Path | None,
    ) -> dict[str, Any]:
        recorded = (
            {k: card[k] for k in ("recipe", "recipe_params", "seed", "train_config") if k in card}
            if card is not None
            else {}
        )
        lineage: dict[str, Any] = {
            "data_sha256": data_sha256 or (card.data_sha256 if card is not None else None),
            "training_config": config if config is not None else recorded or None,
            "parent": parent,
            "report_sha256": None,
            "gates": None,
            "gates_passed": None,
        }
        if report is not None:
            report = Path(report)
            try:
                raw = report.read_bytes()
                parsed = json.loads(raw)
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UsageError(f"--report {report}: not a readable report.json ({exc})") from None
            if not isinstance(parsed, dict) or "gates" not in parsed:
                raise UsageError(f"--report {report}: not a dlsec report.json (no gates); run `dlsec assess`")
            digest = hashlib.sha256(raw).hexdigest()
            stored = self.db.root / "reports" / f"{digest}.json"
            if not stored.exists():
                from dlsec.fsutil import atomic_write_bytes

                atomic_write_bytes(stored, raw, mode=0o444)
            lineage.update(
                report_sha256=digest, gates=parsed.get("gates"), gates_passed=bool(parsed.get("passed"))
            )
        return lineage

    # -- queries ----------------------------------------------------------------------------

    def _record(self, row: Any) -> VersionRecord:
        return VersionRecord(
            model=row.model,
            version=row.version,
            status=row.status,
            status_reason=row.status_reason,
            kind=row.kind,
            entry=row.entry,
            root_digest=row.root_digest,
            manifest=json.loads(row.manifest),
            signed=row.signature is not None,
            signer=json.loads(row.signer) if row.signer else None,
            scan=json.loads(row.scan),
            lineage=json.loads(row.lineage),
            created_at=row.created_at,
            created_by=row.created_by,
            blob=self.db.root / "blobs" / row.root_digest,
        )

    def _resolve(self, conn: Connection, name: str, selector: str | None) -> VersionRecord:
        if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
            raise RegistryError(f"no model {name!r} in the registry; see `dlsec registry list`")
        if selector is None:
            selector = "production"
        if selector.isdigit():
            number = int(selector)
        else:
            alias = conn.execute(
                select(aliases.c.version).where(aliases.c.model == name, aliases.c.alias == selector)
            ).first()
            if alias is None:
                raise RegistryError(f"{name}: no alias {selector!r}; promote a version to it first")
            number = alias.version
        row = conn.execute(
            select(versions).where(versions.c.model == name, versions.c.version == number)
        ).first()
        if row is None:
            raise RegistryError(f"{name}: no version {number}")
        return self._record(row)

    def get(self, ref: str) -> VersionRecord:
        """The version ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS`` names (a bare name: production)."""
        with self.db.read() as conn:
            return self._resolve(conn, *parse_ref(ref))

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of one model, or all), with the aliases pointing at it."""
        with self.db.read() as conn:
            query = select(versions).order_by(versions.c.model, versions.c.version)
            if name is not None:
                query = query.where(versions.c.model == name)
            rows = [self._record(r) for r in conn.execute(query)]
            alias_rows = list(conn.execute(select(aliases)))
        if name is not None and not rows:
            raise RegistryError(f"no model {name!r} in the registry; see `dlsec registry list`")
        out = []
        for r in rows:
            names = sorted(a.alias for a in alias_rows if a.model == r.model and a.version == r.version)
            out.append(
                {
                    "model": r.model,
                    "version": r.version,
                    "status": r.status,
                    "aliases": names,
                    "signed": r.signed,
                    "scan": r.scan["verdict"],
                    "root_digest": r.root_digest,
                    "created_at": r.created_at,
                    "created_by": r.created_by,
                }
            )
        return out

    def aliases(self, name: str) -> dict[str, int]:
        with self.db.read() as conn:
            return {a.alias: a.version for a in conn.execute(select(aliases).where(aliases.c.model == name))}

    def show(self, ref: str) -> dict[str, Any]:
        record = self.get(ref)
        with self.db.read() as conn:
            history = [
                dict(h._mapping)
                for h in conn.execute(
                    select(alias_history)
                    .where(alias_history.c.model == record.model)
                    .order_by(alias_history.c.id)
                )
            ]
        return {
            **record.to_dict(),
            "aliases": sorted(a for a, v in self.aliases(record.model).items() if v == record.version),
            "alias_history": [h for h in history if h["version"] == record.version],
            "audit": [
                e.to_dict() for e in self.audit.entries(subject=record.ref) if _about(e.subject, record.ref)
            ],
        }

    # -- policy and state changes -----------------------------------------------------------

    def check(
        self,
        record: VersionRecord,
        *,
        keys: str | Path | VerifyKeys | None = None,
        policy: Policy | None = None,
    ) -> list[str]:
        """The policy rules ``record`` breaks now (empty when it may serve). Fails closed."""
        from dlsec.scan import scan_paths

        broken: list[str] = []
        if record.status != "registered":
            broken.append(
                f"status: the version is {record.status}"
                + (f" ({record.status_reason})" if record.status_reason else "")
            )
        if not record.signed:
            broken.append("signature: the version is unsigned; sign it (`dlsec sign`) and add it again")
        else:
            try:
                verified = verify_model(record.path, self.trusted_keys(keys))
                if verified.manifest.root_digest != record.root_digest:
                    broken.append("signature: the stored files are not the registered ones")
            except SecurityFinding as exc:
                broken.append(f"signature: {exc}")
        try:
            files = (
                [p for p in sorted(record.path.rglob("*")) if p.is_file() and not p.name.endswith(".sig")]
                if record.kind == "dir"
                else [record.path]
            )
            results = scan_paths(files)
            if not results or not all(r.safe for r in results):
                bad = [Path(r.path).name for r in results if not r.safe]
                broken.append(f"scan: not clean ({', '.join(bad) or 'no files'})")
        except (OSError, SecurityFinding) as exc:
            broken.append(f"scan: could not run ({exc})")
        if policy is not None and policy.require_report:
            lineage = record.lineage
            if lineage.get("report_sha256") is None:
                broken.append(
                    "gates: no assessment report recorded; add the version with --report OUT/report.json"
                )
            else:
                broken += self._gates(lineage["report_sha256"], policy)
        return broken

    def _stored_report(self, digest: str) -> dict[str, Any]:
        path = self.db.root / "reports" / f"{digest}.json"
        try:
            raw = path.read_bytes()
        except OSError:
            raise RegistryError(f"the recorded report {digest[:12]} is missing from the registry") from None
        if hashlib.sha256(raw).hexdigest() != digest:
            raise PolicyError(f"the recorded report {digest[:12]} was altered")
        try:
            report = json.loads(raw)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            raise PolicyError(f"the recorded report {digest[:12]} is not a report")
        return report

    def report(self, record: VersionRecord) -> dict[str, Any] | None:
        """The assessment report recorded with ``record`` (``None`` when none was), its SHA-256
        checked against the one recorded at registration.

        Raises:
            RegistryError: the stored report is missing.
            PolicyError: it was altered (or is not a report).
        """
        digest = record.lineage.get("report_sha256")
        if not digest:
            return None
        try:
            return self._stored_report(str(digest))
        except (RegistryError, PolicyError) as exc:
            raise type(exc)(f"{record.ref}: {exc}") from None

    def _gates(self, digest: str, policy: Policy) -> list[str]:
        try:
            report = self._stored_report(digest)
        except (RegistryError, PolicyError) as exc:
            return [f"gates: {exc}"]
        if policy.gates is None:
            return [] if report.get("passed") else ["gates: the recorded assessment did not pass its gates"]
        return [f"gates: {failure}" for failure in policy.gates(report)]

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = "production",
        keys: str | Path | VerifyKeys | None = None,
        policy: Policy | None = None,
        actor: str | None = None,
    ) -> VersionRecord:
        """Point ``alias`` at ``name@version`` if the policy holds; else raise :class:`PolicyError`."""
        _check_name(alias)
        if alias.isdigit():
            raise UsageError(f"bad alias {alias!r}: an alias cannot be a number (numbers name versions)")
        record = self.get(f"{name}@{version}")
        broken = self.check(record, keys=keys, policy=policy)
        who = actor or actor_name()
        with self.db.write() as conn:
            if not broken:
                current = self._resolve(conn, name, str(version))  # re-read under the lock
                if current.status != "registered":
                    broken = [f"status: the version is {current.status}"]
            details: dict[str, Any]
            if broken:
                action, details = "registry.promote.refused", {"alias": alias, "rules": broken}
            else:
                previous = self._set_alias(conn, name, alias, version, "promote", who)
                action = "registry.promote"
                details = {"alias": alias, "previous": previous, "root_digest": record.root_digest}
            self.audit.append(action, record.ref, details, actor=who, conn=conn, publish=True)
        if broken:
            raise PolicyError(f"promote {record.ref} to {alias} refused: " + "; ".join(broken))
        return record

    def _set_alias(
        self, conn: Connection, name: str, alias: str, version: int, action: str, who: str
    ) -> int | None:
        existing = conn.execute(
            select(aliases.c.version).where(aliases.c.model == name, aliases.c.alias == alias)
        ).first()
        stamp = now()
        if existing is None:
            conn.execute(
                aliases.insert(),
                [{"model": name, "alias": alias, "version": version, "updated_at": stamp, "updated_by": who}],
            )
        else:
            conn.execute(
                update(aliases)
                .where(aliases.c.model == name, aliases.c.alias == alias)
                .values(version=version, updated_at=stamp, updated_by=who)
            )
        conn.execute(
            alias_history.insert(),
            [{"model": name, "alias": alias, "version": version, "action": action, "at": stamp, "by": who}],
        )
        return None if existing is None else int(existing.version)

    def _set_status(
        self, name: str, version: int, status: str, reason: str | None, action: str, actor: str | None
    ) -> VersionRecord:
        who = actor or actor_name()
        with self.db.write() as conn:
            record = self._resolve(conn, name, str(version))
            if record.status == status:
                return record  # idempotent: nothing to change, nothing to log
            if status == "retired":
                pointing = [
                    a.alias
                    for a in conn.execute(
                        select(aliases).where(aliases.c.model == name, aliases.c.version == version)
                    )
                ]
                if pointing:
                    raise RegistryError(
                        f"{record.ref} is still {', '.join(pointing)}; promote another version "
                        "or roll back first"
                    )
            if record.status == "retired" and status == "quarantined":
                raise RegistryError(f"{record.ref} is retired; it is already out of service")
            conn.execute(
                update(versions)
                .where(versions.c.model == name, versions.c.version == version)
                .values(status=status, status_reason=reason)
            )
            self.audit.append(
                action,
                record.ref,
                {"from": record.status, "to": status, "reason": reason},
                actor=who,
                conn=conn,
                publish=True,
            )
            return self._resolve(conn, name, str(version))

    def serving(self, name: str, alias: str) -> tuple[int, str, str] | None:
        """``(version, status, root_digest)`` of what ``name@alias`` points at, or None."""
        with self.db.read() as conn:
            row = conn.execute(
                select(aliases.c.version).where(aliases.c.model == name, aliases.c.alias == alias)
            ).first()
            if row is None:
                return None
            version = conn.execute(
                select(versions.c.status, versions.c.root_digest).where(
                    versions.c.model == name, versions.c.version == row.version
                )
            ).first()
        if version is None:
            return None
        return int(row.version), str(version.status), str(version.root_digest)

    def quarantine(
        self, name: str, version: int, *, reason: str | None = None, actor: str | None = None
    ) -> VersionRecord:
        """Take ``name@version`` out of service now: loading or serving it is refused."""
        return self._set_status(name, version, "quarantined", reason, "registry.quarantine", actor)

    def release(
        self, name: str, version: int, *, reason: str | None = None, actor: str | None = None
    ) -> VersionRecord:
        """Lift a quarantine (the version still has to pass the policy to be promoted again)."""
        return self._set_status(name, version, "registered", reason, "registry.release", actor)

    def retire(
        self, name: str, version: int, *, reason: str | None = None, actor: str | None = None
    ) -> VersionRecord:
        """Retire a version no alias points at (kept for the record, never served)."""
        return self._set_status(name, version, "retired", reason, "registry.retire", actor)

    def rollback(
        self,
        name: str,
        *,
        alias: str = "production",
        keys: str | Path | VerifyKeys | None = None,
        actor: str | None = None,
    ) -> tuple[int, VersionRecord]:
        """Move ``alias`` to the newest version it pointed at before the current one that passes the policy.

        Returns ``(previous version, new record)``.
        """
        who = actor or actor_name()
        with self.db.read() as conn:
            current = self._resolve(conn, name, alias)
            history = [
                h.version
                for h in conn.execute(
                    select(alias_history)
                    .where(alias_history.c.model == name, alias_history.c.alias == alias)
                    .order_by(alias_history.c.id.desc())
                )
            ]
        rejected: dict[int, list[str]] = {}
        for number in history:
            if number == current.version or number in rejected:
                continue
            candidate = self.get(f"{name}@{number}")
            broken = self.check(candidate, keys=keys)
            if broken:
                rejected[number] = broken
                continue
            with self.db.write() as conn:
                now_current = self._resolve(conn, name, alias)
                if now_current.version != current.version:
                    raise RegistryError(
                        f"{name}@{alias} moved to {now_current.version} meanwhile; run rollback again"
                    )
                self._set_alias(conn, name, alias, number, "rollback", who)
                self.audit.append(
                    "registry.rollback",
                    f"{name}@{number}",
                    {
                        "alias": alias,
                        "from": current.version,
                        "to": number,
                        "skipped": {str(k): v for k, v in rejected.items()},
                    },
                    actor=who,
                    conn=conn,
                    publish=True,
                )
            return current.version, candidate
        raise RegistryError(
            f"{name}@{alias}: no earlier good version to roll back to "
            f"(it has pointed at {sorted(set(history))})"
        )

    def rollback_from(
        self,
        name: str,
        version: int,
        *,
        aliases: Iterable[str] | None = None,
        keys: str | Path | VerifyKeys | None = None,
        actor: str | None = None,
    ) -> Quarantine:
        """Roll back each of ``aliases`` (default: every alias of ``name``) that points at ``version``.

        Each alias moves as :meth:`rollback` moves it; one that cannot move (no earlier good
        version) is reported in ``failures`` and the others still move. The returned
        :class:`Quarantine` holds the version's current record.
        """
        current = self.aliases(name)
        wanted = list(current) if aliases is None else list(dict.fromkeys(aliases))
        moved: dict[str, int] = {}
        failures: dict[str, Error] = {}
        for alias in wanted:
            if current.get(alias) != version:
                continue
            try:
                _, record = self.rollback(name, alias=alias, keys=keys, actor=actor)
            except Error as exc:
                failures[alias] = exc
            else:
                moved[alias] = record.version
        return Quarantine(self.get(f"{name}@{version}"), moved, failures)

    def quarantine_and_rollback(
        self,
        name: str,
        version: int,
        *,
        aliases: Iterable[str] | None = None,
        reason: str | None = None,
        keys: str | Path | VerifyKeys | None = None,
        actor: str | None = None,
    ) -> Quarantine:
        """Quarantine ``name@version``, then roll back the aliases that pointed at it.

        What ``dlsec registry quarantine --rollback`` and the gateway's quarantine route run (a
        playbook runs the two halves as its ``quarantine`` and ``rollback`` actions).
        ``aliases`` limits the roll-back (default: every alias of ``name``; ``()`` quarantines
        only). The quarantine holds even when a roll-back fails; the failures are in the
        result (:meth:`Quarantine.raise_failure` raises the first).

        Example:
            >>> done = registry.quarantine_and_rollback("clf", 3, reason="drift")  # doctest: +SKIP
            >>> done.rolled_back                                                   # doctest: +SKIP
            {'production': 2}
        """
        self.quarantine(name, version, reason=reason, actor=actor)
        return self.rollback_from(name, version, aliases=aliases, keys=keys, actor=actor)

    # -- loading ----------------------------------------------------------------------------

    def open_for_use(self, ref: str, *, keys: str | Path | VerifyKeys | None = None) -> VersionRecord:
        """Resolve ``ref`` and check it may be used now: in service, signature verified, scan clean."""
        record = self.get(ref)
        if record.status != "registered":
            raise ModelOutOfServiceError(
                f"{record.ref} is {record.status}"
                + (f" ({record.status_reason})" if record.status_reason else "")
                + "; it is not served or loaded"
            )
        if not record.signed:
            raise SignatureMissingError(f"{record.ref} is unsigned; only signed versions are loaded")
        broken = self.check(record, keys=keys)
        if broken:
            raise PolicyError(f"{record.ref} may not be used: " + "; ".join(broken))
        return record


def _check_name(name: str) -> None:
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name) or name[0] in "-.":
        raise UsageError(f"bad name {name!r}: use letters, digits, '-', '_' and '.' (not first)")


def load_registry_ref(ref: str, options: LoadOptions) -> Model:
    """The ``registry:NAME[@VERSION|@ALIAS]`` scheme of :func:`dlsec.core.load_model`.

    The version's signature and scan are verified first (:meth:`Registry.open_for_use`);
    quarantined, retired or unsigned versions are refused. Registered as an entry point.
    """
    registry = Registry.open(home=options.home)
    try:
        record = registry.open_for_use(ref.split(":", 1)[1])
    finally:
        registry.close()
    path = record.path / "model.safetensors" if record.kind == "dir" else record.path
    if not path.is_file():
        raise ModelLoadError(f"{record.ref} holds no model.safetensors; register the model folder or file")
    from dlsec.core.loading import load_model_file

    return load_model_file(path, options)


def _about(subject: str, ref: str) -> bool:
    """Whether an audit subject found by the prefix ``ref`` (``clf@1``) is about that version:
    the ref itself or the ref followed by a qualifier, never a longer number (``clf@10``)."""
    rest = subject[len(ref) :]
    return subject.startswith(ref) and not rest[:1].isdigit()
