"""``dlsec registry ...`` and ``dlsec audit ...``: versions, aliases, policy, and the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, settings
from dlsec.cli.keys_cmd import RegistryUrlOpt, SignatureOpt
from dlsec.errors import AuditLogError, UsageError
from dlsec.store import Policy, Registry, parse_ref

registry_app = typer.Typer(
    help="The model registry: signed versions, lineage, aliases, policy.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The tamper-evident audit log (a Merkle log with signed checkpoints).", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")

PubOpt = Annotated[
    Path | None, typer.Option("--pub", help="Trusted public signing keys (default: HOME/keys).")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit log).")]
AliasOpt = Annotated[str, typer.Option("--alias", "--to", help="Alias to move (production, staging, ...).")]

_STATUS_STYLE = {"registered": "green", "quarantined": "bold red", "retired": "dim"}


@contextmanager
def _registry(ctx: typer.Context, url: str | None) -> Iterator[Registry]:
    registry = Registry.open(url, home=settings(ctx).home)
    try:
        yield registry
    finally:
        registry.close()


def _version_ref(ref: str) -> tuple[str, int]:
    name, sel = parse_ref(ref)
    if sel is None or not sel.isdigit():
        raise UsageError(f"{ref!r}: name a version as NAME@NUMBER (see `dlsec registry list`)")
    return name, int(sel)


@registry_app.command("add")
def registry_add(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Model file or directory (with its signature).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name in the registry.")],
    signature: SignatureOpt = None,
    pub: PubOpt = None,
    data_sha256: Annotated[
        str | None, typer.Option("--data-sha256", help="SHA-256 of the training data manifest.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Training configuration (JSON) for the lineage.")
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Parent version, NAME@VERSION.")] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Assessment report.json (its hash and gates are recorded)."),
    ] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a model as the next immutable version (signature verified, files scanned, lineage kept).

    Example:

    \b
        dlsec registry add runs/bc --name bc --report runs/bc-assess/report.json
    """
    training_config = None
    if config is not None:
        try:
            training_config = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--config {config}: not readable JSON ({exc})") from None
    if data_sha256 is not None and (
        len(data_sha256) != 64 or any(c not in "0123456789abcdef" for c in data_sha256)
    ):
        raise UsageError("--data-sha256 must be 64 lowercase hex digits")
    with _registry(ctx, registry_url) as registry:
        record = registry.add(
            model,
            name,
            signature=signature,
            keys=pub,
            data_sha256=data_sha256,
            training_config=training_config,
            parent=parent,
            report=report,
        )
    if json_out:
        emit_json(record.to_dict())
        return
    signed = "signed" if record.signed else "UNSIGNED (promote will refuse it)"
    out_console().print(
        f"added {record.ref}: {len(record.manifest)} file(s), root {record.root_digest[:16]}..., {signed}, "
        f"scan {record.scan['verdict']}"
    )


@registry_app.command("list")
def registry_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List models and versions with their status and aliases.

    Example:

    \b
        dlsec registry list bc
    """
    with _registry(ctx, registry_url) as registry:
        rows = registry.versions(name)
    if json_out:
        emit_json(rows)
        return
    table = Table(title="dlsec registry")
    for col in ("version", "status", "aliases", "signed", "scan", "root", "created", "by"):
        table.add_column(col)
    for r in rows:
        style = _STATUS_STYLE.get(r["status"], "")
        table.add_row(
            f"{r['model']}@{r['version']}",
            f"[{style}]{r['status']}[/]",
            ", ".join(r["aliases"]),
            "yes" if r["signed"] else "[red]no[/]",
            r["scan"],
            r["root_digest"][:12],
            r["created_at"][:19],
            escape(r["created_by"]),
        )
    out_console().print(table if rows else "the registry is empty; add a model with `dlsec registry add`")


@registry_app.command("show")
def registry_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME@ALIAS or NAME (production).")],
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a version: files, signature, scan, lineage, aliases and its audit trail.

    Example:

    \b
        dlsec registry show bc@production
    """
    with _registry(ctx, registry_url) as registry:
        info = registry.show(ref)
    if json_out:
        emit_json(info)
        return
    console = out_console()
    console.print(
        f"[bold]{escape(info['ref'])}[/] {info['status']} aliases: {', '.join(info['aliases']) or '-'}"
    )
    console.print(f"  root digest {info['root_digest']}  files {len(info['files'])}  signed {info['signed']}")
    if info["signer"]:
        for alg, fp in info["signer"].items():
            console.print(f"  signer {alg}: {fp}")
    console.print(
        f"  scan {info['scan']['verdict']}  created {info['created_at']} by {escape(info['created_by'])}"
    )
    for key, value in info["lineage"].items():
        if value is not None:
            console.print(f"  lineage.{key}: {escape(json.dumps(value)[:200])}")
    for entry in info["audit"]:
        console.print(
            f"  audit #{entry['index']} {entry['ts'][:19]} {escape(entry['actor'])} {entry['action']}"
        )


def _report(action: str, payload: dict[str, Any], text: str, json_out: bool) -> None:
    if json_out:
        emit_json({"action": action, **payload})
    else:
        out_console().print(text)


@registry_app.command("promote")
def registry_promote(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to promote.")],
    alias: AliasOpt = "production",
    pub: PubOpt = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy YAML: require_report, gates (like campaign gates)."),
    ] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point an alias at a version, if it is signed, scans clean and passes the policy (exit 1 if refused).

    Example:

    \b
        dlsec registry promote bc@1 --to production
    """
    name, version = _version_ref(ref)
    rules = None
    if policy is not None:
        from dlsec.assess import load_promotion_policy

        loaded = load_promotion_policy(policy)
        rules = Policy(require_report=loaded.requires_report, gates=loaded.check if loaded.gates else None)
    with _registry(ctx, registry_url) as registry:
        record = registry.promote(name, version, alias=alias, keys=pub, policy=rules)
    _report("promote", {"ref": record.ref, "alias": alias}, f"{name}@{alias} -> {record.ref}", json_out)


@registry_app.command("quarantine")
def registry_quarantine(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to take out of service.")],
    reason: ReasonOpt = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Also roll back every alias that pointed at it.")
    ] = False,
    pub: PubOpt = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Quarantine a version: it is refused by loading and serving at once.

    Example:

    \b
        dlsec registry quarantine bc@1 --reason drift --rollback
    """
    name, version = _version_ref(ref)
    with _registry(ctx, registry_url) as registry:
        done = registry.quarantine_and_rollback(
            name, version, aliases=None if rollback else (), reason=reason, keys=pub
        )
    done.raise_failure()
    record, moved = done.record, done.rolled_back
    text = f"{record.ref} quarantined" + "".join(f"; {name}@{a} -> {name}@{v}" for a, v in moved.items())
    _report("quarantine", {"ref": record.ref, "status": record.status, "rolled_back": moved}, text, json_out)


@registry_app.command("release")
def registry_release(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to take out of quarantine.")],
    reason: ReasonOpt = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Lift a quarantine (the version must still pass the policy to be promoted).

    Example:

    \b
        dlsec registry release bc@1 --reason 'false alarm'
    """
    _change_status(ctx, registry_url, ref, "release", reason, json_out)


@registry_app.command("rollback")
def registry_rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: AliasOpt = "production",
    pub: PubOpt = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move an alias back to the last good version it pointed at before the current one.

    Example:

    \b
        dlsec registry rollback bc --alias production
    """
    with _registry(ctx, registry_url) as registry:
        previous, record = registry.rollback(name, alias=alias, keys=pub)
    _report(
        "rollback",
        {"alias": alias, "from": previous, "to": record.version, "ref": record.ref},
        f"{name}@{alias}: {previous} -> {record.version}",
        json_out,
    )


@registry_app.command("retire")
def registry_retire(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to retire.")],
    reason: ReasonOpt = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Retire a version no alias points at (kept for the record, never served).

    Example:

    \b
        dlsec registry retire bc@1 --reason 'replaced by bc@2'
    """
    _change_status(ctx, registry_url, ref, "retire", reason, json_out)


def _change_status(
    ctx: typer.Context, url: str | None, ref: str, action: str, reason: str | None, json_out: bool
) -> None:
    """``release`` or ``retire`` a version, and report its new status."""
    name, version = _version_ref(ref)
    with _registry(ctx, url) as registry:
        change = registry.release if action == "release" else registry.retire
        record = change(name, version, reason=reason)
    _report(action, {"ref": record.ref, "status": record.status}, f"{record.ref} {record.status}", json_out)


# -- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Checkpoint key (default: beside the database).")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="A checkpoint JSON kept elsewhere, to detect truncation."),
    ] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay the audit log against its signed checkpoints; exit 1 naming the first bad entry.

    Example:

    \b
        dlsec audit verify
    """
    with _registry(ctx, registry_url) as registry:
        result = registry.audit.verify(public_key=public_key, checkpoint_file=checkpoint)
    if json_out:
        emit_json(result.to_dict())
    elif result.ok:
        out_console().print(
            f"audit log ok: {result.size} entries, {result.checkpoints} checkpoints, "
            f"root {result.root[:16]}..."
        )
    if not result.ok:
        raise AuditLogError(f"audit log tampered: {result.reason}")


@audit_app.command("proof")
def audit_proof(
    ctx: typer.Context,
    entry: Annotated[int, typer.Argument(help="Entry index.")],
    size: Annotated[int | None, typer.Option("--size", help="Checkpoint size (default: newest).")] = None,
    registry_url: RegistryUrlOpt = None,
) -> None:
    """Print an inclusion proof (JSON) of one entry against a signed checkpoint.

    Example:

    \b
        dlsec audit proof 0
    """
    with _registry(ctx, registry_url) as registry:
        emit_json(registry.audit.inclusion_proof(entry, size=size))


@audit_app.command("consistency")
def audit_consistency(
    ctx: typer.Context,
    old: Annotated[int, typer.Option("--old", help="Older tree size.")],
    size: Annotated[
        int | None, typer.Option("--size", help="Newer checkpoint size (default: newest).")
    ] = None,
    registry_url: RegistryUrlOpt = None,
) -> None:
    """Print a consistency proof (JSON): the log at --old is a prefix of the log now.

    Example:

    \b
        dlsec audit consistency --old 1
    """
    with _registry(ctx, registry_url) as registry:
        emit_json(registry.audit.consistency_proof(old, size=size))


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON-lines file to write.")],
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write every audit entry as one JSON line.

    Example:

    \b
        dlsec audit export --out audit.jsonl
    """
    with _registry(ctx, registry_url) as registry:
        count = registry.audit.export(out)
    _report(
        "export",
        {"entries": count, "out": str(out)},
        f"{count} entries written to {escape(str(out))}",
        json_out,
    )


@audit_app.command("log")
def audit_log(
    ctx: typer.Context,
    subject: Annotated[str | None, typer.Option("--subject", help="Only entries about this subject.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Newest N entries.")] = 50,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the newest audit entries.

    Example:

    \b
        dlsec audit log --subject bc@1 --limit 20
    """
    with _registry(ctx, registry_url) as registry:
        entries = registry.audit.entries(subject=subject, limit=limit)
    if json_out:
        emit_json([e.to_dict() for e in entries])
        return
    table = Table(title="dlsec audit log")
    for col in ("#", "time", "actor", "action", "subject"):
        table.add_column(col)
    for e in entries:
        table.add_row(str(e.index), e.ts[:19], escape(e.actor), e.action, escape(e.subject))
    out_console().print(table)
