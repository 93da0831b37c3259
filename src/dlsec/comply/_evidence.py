"""What dlsec holds about a model, gathered and checked now: the evidence the control maps cite.

Every item is checked by the strongest method dlsec has at the time of the call, never copied
from a label: a registry version's signature is verified again and its files scanned again
(``Registry.check``), the audit log is replayed against its signed checkpoints, a report's
verdict is read from the report itself. An item that could not be checked is not evidence: it
is listed in ``not_run`` with the reason, and the controls that needed it show as gaps.

States of an item: ``ok`` (checked and holds), ``partial`` (checked, holds only in part: an
assessment whose strongest attacks did not all run), ``failing`` (checked and does not hold:
an unsafe scan, a failed gate, PII left in the data), ``attested`` (a file a person attached
with ``--evidence KIND=FILE``: hashed and cited, not checked by dlsec).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.core.card import TrainingCard
    from dlsec.store import Entry, Registry

__all__ = ["KINDS", "Evidence", "EvidenceItem", "collect_evidence"]

State = Literal["ok", "partial", "failing", "attested"]

# Each kind of evidence, and what dlsec checks to hold it.
KINDS: dict[str, str] = {
    "signature": "the model's files verify against their signature with the trusted keys (checked now)",
    "scan": "the model's files scan safe: no code runs when they load (scanned now)",
    "assessment": "a red-team assessment report (dlsec assess) with its verdict",
    "gates": "the assessment's release gates passed",
    "robustness": "robust accuracy measured under attack (the assessment's robustness curves)",
    "privacy-audit": "membership-inference and other privacy attacks run against the model",
    "dp": "trained with differential privacy (DP-SGD), with its epsilon and delta",
    "audit-log": "the tamper-evident audit log replays against its signed checkpoints",
    "lineage": "the registry records the version's data hash, training configuration and parent",
    "data-provenance": "the training data's hash, source and split are recorded on the training card",
    "pii-scan": "the training data was scanned for personal data (dlsec data pii) and holds none",
    "erasure": "erasure requests were carried out and verified (signed records in the audit log)",
    "fairness": "fairness measured per group (dlsec fairness), within its thresholds",
    "monitoring": "a production monitor is configured (monitor.yaml)",
    "incident-response": "incident playbooks are configured (quarantine, rollback, key revocation)",
    "access-control": "the gateway serves only to API keys with roles and budgets",
    "model-card": "a model card (Mitchell et al. 2019) built from the card, report and registry",
    "ml-bom": "a CycloneDX 1.6 ML bill of materials, validated against its schema",
    "explanations": "attributions explaining the model's decisions (dlsec explain)",
    "encryption": "data and models protected in transit and at rest",
}


@dataclass(frozen=True)
class EvidenceItem:
    """One piece of evidence: its kind, its state now, what it says and where it came from."""

    kind: str
    state: State
    summary: str
    source: str
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "summary": self.summary,
            "source": self.source,
            "sha256": self.sha256,
        }


_RANK = {"failing": 0, "partial": 1, "attested": 2, "ok": 3}


@dataclass
class Evidence:
    """The evidence gathered for one model, and what could not be checked."""

    model: str | None = None
    items: list[EvidenceItem] = field(default_factory=list)
    not_run: list[dict[str, str]] = field(default_factory=list)
    card: TrainingCard | None = None
    record: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    fairness: dict[str, Any] | None = None
    pii: dict[str, Any] | None = None
    files: dict[str, str] | None = None  # file -> SHA-256, when a check already hashed them

    def add(self, kind: str, state: State, summary: str, source: str, sha256: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown evidence kind {kind!r}")
        self.items.append(EvidenceItem(kind, state, summary, source, sha256))

    def missing(self, kind: str, reason: str) -> None:
        """Record that ``kind`` could not be checked (it stays absent: a gap, never a pass)."""
        self.not_run.append({"kind": kind, "reason": reason})

    def of(self, kind: str) -> list[EvidenceItem]:
        return [i for i in self.items if i.kind == kind]

    def state(self, kind: str) -> str:
        """The weakest state among the items of ``kind``; ``absent`` when there are none."""
        items = self.of(kind)
        if not items:
            return "absent"
        return min((i.state for i in items), key=_RANK.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "items": [i.to_dict() for i in self.items],
            "not_run": list(self.not_run),
        }


def _sha256(path: Path) -> str:
    from dlsec.fsutil import sha256_file

    return sha256_file(path)


def _read_json(path: Path, what: str, option: str) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: no such file") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: not a readable JSON {what} ({exc})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{option} {path}: not a {what} (expected a JSON object)")
    return doc, hashlib.sha256(raw).hexdigest()


# -- the parts ------------------------------------------------------------------------------------


def _from_card(ev: Evidence, card: TrainingCard, source: str) -> None:
    ev.card = card
    data = card.dataset
    if card.data_sha256:
        split = card.split
        rows = f", {split.get('train_rows')} training rows" if split.get("train_rows") is not None else ""
        ev.add(
            "data-provenance",
            "ok",
            f"{data.get('name', 'dataset')} sha256 {card.data_sha256[:12]}{rows}",
            source,
            card.data_sha256,
        )
    else:
        ev.missing("data-provenance", f"{source}: the training card records no data hash")
    privacy = card.get("privacy") or {}
    epsilon = privacy.get("epsilon") if isinstance(privacy, Mapping) else None
    if epsilon is not None:
        ev.add(
            "dp",
            "ok",
            f"DP-SGD, epsilon {float(epsilon):.3g} at delta {privacy.get('delta')}",
            source,
        )


def _from_report(ev: Evidence, report: dict[str, Any], source: str, digest: str) -> None:
    ev.report = report
    if "gates" not in report or "verdict" not in report and "passed" not in report:
        raise UsageError(f"{source}: not a dlsec report.json (no gates); run `dlsec assess`")
    verdict = report.get("verdict") or ("pass" if report.get("passed") else "fail")
    not_run = [
        str(n.get("check", n)) if isinstance(n, Mapping) else str(n) for n in report.get("not_run") or []
    ]
    state: State = "ok" if verdict == "pass" else ("partial" if verdict == "partial" else "failing")
    extra = f"; not run: {', '.join(not_run)}" if not_run else ""
    ev.add("assessment", state, f"verdict {verdict}{extra}", source, digest)
    gates = report.get("gates") or []
    failed = [str(g.get("name")) for g in gates if isinstance(g, Mapping) and not g.get("passed")]
    if gates:
        ev.add(
            "gates",
            "failing" if failed else "ok",
            f"{len(gates) - len(failed)} of {len(gates)} gates passed"
            + (f" (failed: {', '.join(failed)})" if failed else ""),
            source,
            digest,
        )
    else:
        ev.missing("gates", f"{source}: the campaign sets no gates (acceptance criteria)")
    curves = (report.get("robustness") or {}).get("curves") or {}
    if curves:
        norms = ", ".join(curves) if isinstance(curves, Mapping) else f"{len(curves)}"
        ev.add("robustness", "ok", f"robust accuracy measured ({norms})", source, digest)
    else:
        ev.missing("robustness", f"{source}: the report has no robustness curves")
    privacy = report.get("privacy")
    if privacy:
        skipped = privacy.get("skipped") if isinstance(privacy, Mapping) else None
        ev.add(
            "privacy-audit",
            "partial" if skipped else "ok",
            "privacy attacks run" + (f" (skipped: {', '.join(map(str, skipped))})" if skipped else ""),
            source,
            digest,
        )


def _from_registry(ev: Evidence, registry: Registry, ref: str, keys: str | Path | None) -> Path:
    record = registry.get(ref)
    ev.model = record.ref
    ev.record = record.to_dict()
    where = f"registry:{record.ref}"
    broken = registry.check(record, keys=keys)
    sig_broken = [b for b in broken if b.startswith("signature:")]
    scan_broken = [b for b in broken if b.startswith("scan:")]
    if sig_broken:
        ev.add("signature", "failing", "; ".join(sig_broken), where, record.root_digest)
    else:
        signer = ", ".join(sorted((record.signer or {}).values())) if isinstance(record.signer, dict) else ""
        ev.add(
            "signature",
            "ok",
            f"verified now{f' (keys {signer})' if signer else ''}",
            where,
            record.root_digest,
        )
    ev.add(
        "scan",
        "failing" if scan_broken else "ok",
        "; ".join(scan_broken) if scan_broken else "every file scans safe (scanned now)",
        where,
    )
    lineage = record.lineage
    if lineage.get("data_sha256") or lineage.get("training_config"):
        parent = f", parent {lineage['parent']}" if lineage.get("parent") else ""
        ev.add("lineage", "ok", f"data hash and training configuration recorded{parent}", where)
    else:
        ev.missing("lineage", f"{where}: no data hash or training configuration recorded")
    verification = registry.audit.verify()
    entries = [e for e in registry.audit.entries() if e.subject.split("@")[0] == record.model]
    ev.add(
        "audit-log",
        "ok" if verification.ok else "failing",
        (
            f"{verification.size} entries replay against {verification.checkpoints} signed checkpoint(s), "
            f"root {verification.root[:16]}; {len(entries)} about {record.model}"
            if verification.ok
            else f"the audit log does not verify: {verification.reason}"
        ),
        "audit log",
        verification.root,
    )
    _erasures(ev, [e for e in entries if e.action.startswith("erasure.")])
    from dlsec.store import KeyStore

    live = [k for k in KeyStore(registry.db).all() if k.revoked_at is None and k.may_use(record.model)]
    if live:
        roles = sorted({k.role for k in live})
        ev.add(
            "access-control",
            "ok",
            f"{len(live)} live API key(s) may use it (roles {', '.join(roles)})",
            where,
        )
    else:
        ev.missing("access-control", "no live API key may use this model (dlsec keys create)")
    if ev.report is None and lineage.get("report_sha256"):
        stored = registry.db.root / "reports" / f"{lineage['report_sha256']}.json"
        if stored.exists():
            report, digest = _read_json(stored, "report", "registered report")
            _from_report(ev, report, f"{where} (report recorded at registration)", digest)
        else:
            ev.missing("assessment", f"{where}: the recorded report {stored.name} is missing from the store")
    return record.path


def _erasures(ev: Evidence, entries: list[Entry]) -> None:
    """Erasure records of the audit log: verified ones are evidence; a failed request is failing
    while some of its rows are covered by no verified erasure (the data stays in the model)."""
    parsed = []
    for e in entries:
        details = e.details or {}
        verification = details.get("verification") or {}
        verified = isinstance(verification, Mapping) and verification.get("verified") is True
        rows = {str(r) for r in details.get("row_hmac") or details.get("row_sha256") or []}
        parsed.append((e, details, verification, e.action == "erasure.record" and verified, rows))
    done: set[str] = set().union(*(rows for *_, ok, rows in parsed if ok))
    for e, details, verification, ok, rows in parsed:
        where = f"audit log entry {e.index}"
        if ok:
            auc, ci = verification.get("auc"), verification.get("auc_ci") or []
            measured = (
                f"; LiRA AUC on them {auc:.3f}" + (f", CI [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else "")
                if isinstance(auc, float)
                else ""
            )
            summary = f"{len(rows)} row(s) erased ({details.get('method')}) into {e.subject}{measured}"
            ev.add("erasure", "ok", summary, where)
        elif not rows <= done:
            why = (
                "not verified"
                if e.action == "erasure.record"
                else "its verification failed; nothing was written"
            )
            ev.add("erasure", "failing", f"erasure of {len(rows - done)} row(s) at {e.ts}: {why}", where)


def _from_files(ev: Evidence, path: Path, keys: str | Path | None) -> None:
    from dlsec.errors import SecurityFinding
    from dlsec.release import default_signature_path, load_verify_keys, verify_model
    from dlsec.scan import scan_paths
    from dlsec.store import default_key_dir

    ev.model = str(path)
    sig = default_signature_path(path)
    if not sig.exists():
        ev.missing("signature", f"{path}: unsigned (no {sig.name}); sign it with `dlsec sign`")
    else:
        try:
            verified = verify_model(path, load_verify_keys(keys or default_key_dir()))
            ev.add("signature", "ok", "verified now", str(sig), verified.manifest.root_digest)
            ev.files = dict(verified.manifest.files)  # hashed once, by the verification
        except SecurityFinding as exc:
            ev.add("signature", "failing", str(exc), str(sig))
    files = (
        [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.endswith(".sig")]
        if path.is_dir()
        else [path]
    )
    results = scan_paths(files)
    bad = [Path(r.path).name for r in results if not r.safe]
    ev.add(
        "scan",
        "failing" if bad or not results else "ok",
        f"not clean: {', '.join(bad)}"
        if bad
        else ("no files" if not results else f"{len(results)} file(s) scan safe"),
        str(path),
    )


def _pii_item(ev: Evidence, doc: dict[str, Any], source: str, digest: str) -> None:
    ev.pii = doc
    found = doc.get("found")
    if not isinstance(found, bool):
        raise UsageError(f"--pii {source}: not a `dlsec data pii --json` report (no found)")
    totals = doc.get("totals") or {}
    counts = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) if isinstance(totals, Mapping) else ""
    skipped = ", ".join(map(str, doc.get("not_run") or {}))
    state: State = "failing" if found else ("partial" if doc.get("partial") else "ok")
    summary = (
        f"personal data found in {doc.get('path')} ({counts})"
        if found
        else f"no personal data in {doc.get('path')}"
    )
    ev.add("pii-scan", state, summary + (f"; not run: {skipped}" if skipped else ""), source, digest)


def _fairness_item(ev: Evidence, doc: dict[str, Any], source: str, digest: str) -> None:
    ev.fairness = doc
    gates = doc.get("gates")
    passed = gates.get("passed") if isinstance(gates, Mapping) else None
    if not isinstance(passed, bool) or "protected" not in doc:
        raise UsageError(f"--fairness {source}: not a `dlsec fairness --json` report (no gates.passed)")

    def num(key: str) -> str:
        value = doc.get(key)
        return f"{value:.3f}" if isinstance(value, int | float) else "n/a"

    summary = (
        f"protected attribute {doc['protected']}: demographic parity difference "
        f"{num('demographic_parity_difference')}, "
        f"equalised-odds difference {num('equalized_odds_difference')}"
    )
    if doc.get("robust_gap") is not None:
        summary += f", robust-accuracy gap {num('robust_gap')} (worst group {doc.get('robust_worst_group')})"
    if not passed and isinstance(gates, Mapping):
        summary += f"; gates failed: {', '.join(map(str, gates.get('failed') or []))}"
    ev.add("fairness", "ok" if passed else "failing", summary, source, digest)


def collect_evidence(
    model: str | Path | None = None,
    *,
    registry: Registry | None = None,
    keys: str | Path | None = None,
    report: str | Path | None = None,
    pii: str | Path | None = None,
    fairness: str | Path | None = None,
    monitor: str | Path | None = None,
    playbooks: str | Path | None = None,
    attached: Mapping[str, str | Path] | None = None,
) -> Evidence:
    """Gather and check the evidence for ``model``.

    Args:
        model: a registry reference (``name@version`` or ``name@alias``, with or without
            ``registry:``) or a model file or directory; None maps only what the files give.
        registry: the registry to resolve references in and whose audit log and keys to check.
        keys: trusted signing keys (default: the registry's).
        report: an assessment ``report.json`` (default: the one recorded at registration).
        pii: a ``dlsec data pii --json`` report; fairness: a ``dlsec fairness --json`` report.
        monitor: a ``monitor.yaml`` (loaded and validated); playbooks: a playbook file that the
            caller has validated (respond sits above comply).
        attached: ``{kind: file}`` evidence a person vouches for (state ``attested``).

    Raises:
        UsageError: a file is missing or is not what its option says, or an unknown kind.
    """
    ev = Evidence()
    if report is not None:
        doc, digest = _read_json(Path(report), "report", "--report")
        _from_report(ev, doc, str(report), digest)
    model_path: Path | None = None
    if model is not None:
        text = str(model)
        if Path(text).exists():
            model_path = Path(text)
            _from_files(ev, model_path, keys)
        elif registry is None:
            raise UsageError(f"--model {text}: no such file or directory (and no registry to look it up in)")
        else:
            model_path = _from_registry(ev, registry, text.removeprefix("registry:"), keys)
        from dlsec.core.card import TrainingCard

        card = TrainingCard.find(model_path)
        if card is not None:
            _from_card(ev, card, str(card.source or model_path))
        else:
            ev.missing("data-provenance", f"{model_path}: no training card (model.json) beside the model")
    if pii is not None:
        doc, digest = _read_json(Path(pii), "PII report", "--pii")
        _pii_item(ev, doc, str(pii), digest)
    if fairness is not None:
        doc, digest = _read_json(Path(fairness), "fairness report", "--fairness")
        _fairness_item(ev, doc, str(fairness), digest)
    if monitor is not None:
        from dlsec.monitor.config import load_monitor_config

        config = load_monitor_config(monitor)
        ev.add(
            "monitoring", "ok", f"{len(config.rules)} monitor rule(s)", str(monitor), _sha256(Path(monitor))
        )
    if playbooks is not None:
        ev.add("incident-response", "ok", "playbooks configured", str(playbooks), _sha256(Path(playbooks)))
    for kind, path in (attached or {}).items():
        if kind not in KINDS:
            raise UsageError(f"--evidence {kind}={path}: unknown kind; choose one of {', '.join(KINDS)}")
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"--evidence {kind}={path}: no such file")
        ev.add(kind, "attested", f"attached by a person: {p.name} (not checked by dlsec)", str(p), _sha256(p))
    return ev
