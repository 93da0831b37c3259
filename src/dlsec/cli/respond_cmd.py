"""``dlsec incident list|show|resolve|plan``: incident records and playbook dry runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, settings
from dlsec.cli.keys_cmd import RegistryUrlOpt
from dlsec.errors import UsageError
from dlsec.store import Registry

incident_app = typer.Typer(help="Incidents opened by playbooks, and playbook dry runs.", no_args_is_help=True)
app.add_typer(incident_app, name="incident")


def _open(ctx: typer.Context, url: str | None) -> Registry:
    return Registry.open(url, home=settings(ctx).home)


@incident_app.command("list")
def incident_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="open or resolved.")] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List incidents.

    Example:

    \b
        dlsec incident list --status open
    """
    from dlsec.store import IncidentStore

    if status not in (None, "open", "resolved"):
        raise UsageError("--status must be open or resolved")
    registry = _open(ctx, registry_url)
    try:
        rows = IncidentStore(registry.db).list(status=status)
    finally:
        registry.close()
    if json_out:
        emit_json([r.to_dict() for r in rows])
        return
    table = Table(title="incidents")
    for col in ("id", "status", "severity", "rule", "subject", "opened", "actions"):
        table.add_column(col)
    for r in rows:
        actions = ", ".join(f"{a['action']}:{a['status']}" for a in r.actions)
        table.add_row(
            str(r.id), r.status, r.severity, escape(r.rule), escape(r.subject), r.opened_at[:19], actions
        )
    out_console().print(table if rows else "no incidents")


@incident_app.command("show")
def incident_show(
    ctx: typer.Context,
    incident_id: Annotated[int, typer.Argument(help="Incident id.")],
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show an incident: its alerts, the actions taken and the evidence.

    Example:

    \b
        dlsec incident show 1
    """
    from dlsec.store import IncidentStore

    registry = _open(ctx, registry_url)
    try:
        incident = IncidentStore(registry.db).get(incident_id)
    finally:
        registry.close()
    if json_out:
        emit_json(incident.to_dict())
        return
    console = out_console()
    console.print(
        f"[bold]incident {incident.id}[/] {incident.status} {incident.severity} rule {escape(incident.rule)}"
    )
    console.print(
        f"  subject {escape(incident.subject)}  opened {incident.opened_at}  alerts {len(incident.alerts)}"
    )
    for a in incident.actions:
        console.print(f"  {a['at'][:19]} {a['action']}: {a['status']} ({escape(a['detail'])})")
    if incident.resolved_at:
        console.print(
            f"  resolved {incident.resolved_at} by {escape(incident.resolved_by or '')}: "
            f"{escape(incident.resolution or '')}"
        )


@incident_app.command("resolve")
def incident_resolve(
    ctx: typer.Context,
    incident_id: Annotated[int, typer.Argument(help="Incident id.")],
    note: Annotated[str | None, typer.Option("--note", help="What was found and done.")] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Close an incident (recorded in the audit log).

    Example:

    \b
        dlsec incident resolve 1 --note 'key revoked; false alarm ruled out'
    """
    from dlsec.store import IncidentStore

    registry = _open(ctx, registry_url)
    try:
        incident = IncidentStore(registry.db, registry.audit).resolve(incident_id, note=note)
    finally:
        registry.close()
    if json_out:
        emit_json(incident.to_dict())
    else:
        out_console().print(f"incident {incident.id} resolved")


@incident_app.command("plan")
def incident_plan(
    ctx: typer.Context,
    playbook: Annotated[Path, typer.Option("--playbook", help="respond.yaml to try.")],
    alert: Annotated[Path, typer.Option("--alert", help="An alert as JSON (e.g. from /v1/alerts).")],
    alias: Annotated[str, typer.Option("--alias", help="The alias the gateway serves.")] = "production",
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Dry run: what a playbook would do for an alert, without doing it.

    Example:

    \b
        dlsec incident plan --playbook respond.yaml --alert alert.json
    """
    from dlsec.respond import Responder, load_playbook

    rules = load_playbook(playbook)
    try:
        data = json.loads(alert.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--alert {alert}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--alert {alert}: an alert is a JSON object")
    registry = _open(ctx, registry_url)
    try:
        plan = Responder(rules, registry, alias=alias).plan(data)
    finally:
        registry.close()
    if json_out:
        emit_json(plan)
        return
    console = out_console()
    if not plan:
        console.print("no rule matches this alert: nothing would be done")
    for step in plan:
        console.print(f"rule {escape(step['rule'])} (incident {step['incident']}):")
        for a in step["actions"]:
            console.print(f"  {a['action']}: {escape(a['would'])}")
