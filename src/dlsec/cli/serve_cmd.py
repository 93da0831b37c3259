"""``dlsec serve`` (the gateway) and ``dlsec keys create|list|revoke`` (its API keys)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, err_console, out_console, settings
from dlsec.cli.keys_cmd import RegistryUrlOpt, keys_app
from dlsec.errors import UsageError
from dlsec.store import KeyStore

if TYPE_CHECKING:  # dlsec.serve imports torch: only `dlsec serve` itself pays for it
    from dlsec.serve import GatewayConfig


def _keystore(ctx: typer.Context, url: str | None) -> KeyStore:
    from dlsec.store import open_database

    return KeyStore(open_database(url, home=settings(ctx).home))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[
        str, typer.Option("--role", help="client, viewer (reads the dashboard), operator or admin.")
    ] = "client",
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model names (default: every model).")
    ] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Requests per period, e.g. 10/second.")] = None,
    budget: Annotated[int | None, typer.Option("--budget", help="Total predictions (rows) allowed.")] = None,
    output: Annotated[
        str, typer.Option("--output", help="What answers reveal: full, top-K, rounded-D or label.")
    ] = "full",
    note: Annotated[str | None, typer.Option("--note", help="Who or what the key is for.")] = None,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a gateway API key; it is shown once and stored only as a salted hash.

    Example:

    \b
        dlsec keys create --role client --models bc --rate 10/second --budget 10000 --output top-3
    """
    names = [m.strip() for m in models.split(",")] if models is not None else None
    store = _keystore(ctx, registry_url)
    try:
        secret, record = store.create(
            role=role, models=names, rate=rate, budget=budget, output=output, note=note
        )
    finally:
        store.db.dispose()
    if json_out:
        emit_json({"key": secret, **record.to_dict()})
        return
    out_console().print(secret, markup=False)
    err_console().print(
        f"API key {record.id} ({record.role}) created; it is shown once: store it now", markup=False
    )


@keys_app.command("list")
def keys_list(ctx: typer.Context, registry_url: RegistryUrlOpt = None, json_out: JsonOpt = False) -> None:
    """List gateway API keys (never their secrets).

    Example:

    \b
        dlsec keys list
    """
    store = _keystore(ctx, registry_url)
    try:
        keys = store.all()
    finally:
        store.db.dispose()
    if json_out:
        emit_json([k.to_dict() for k in keys])
        return
    table = Table(title="gateway API keys")
    for col in ("id", "role", "models", "rate", "budget", "used", "output", "status", "note"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.id,
            k.role,
            ", ".join(k.models) if k.models is not None else "all",
            str(k.rate) if k.rate else "-",
            str(k.budget) if k.budget is not None else "-",
            str(k.used),
            str(k.output),
            "[red]revoked[/]" if k.revoked_at else "active",
            escape(k.note or ""),
        )
    out_console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id (see `dlsec keys list`).")],
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a gateway API key (a running gateway refuses it within its refresh interval).

    Example:

    \b
        dlsec keys revoke 3f9a2c7d1e08
    """
    store = _keystore(ctx, registry_url)
    try:
        record = store.revoke(key_id)
    finally:
        store.db.dispose()
    if json_out:
        emit_json(record.to_dict())
    else:
        out_console().print(f"API key {record.id} revoked")


@app.command()
def serve(
    ctx: typer.Context,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated registry model names to serve.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Gateway YAML (GatewayConfig fields).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    alias: Annotated[str | None, typer.Option("--alias", help="Alias to serve (default production).")] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis for limits shared by several workers.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Gateway worker processes.")] = 1,
    monitor: Annotated[
        Path | None, typer.Option("--monitor", help="monitor.yaml: drift and attack rules over the traffic.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference data for the monitors (e.g. builtin:digits).")
    ] = None,
    playbook: Annotated[
        Path | None, typer.Option("--playbook", help="respond.yaml: actions when an alert fires.")
    ] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST every alert as JSON here.")] = None,
    registry_url: RegistryUrlOpt = None,
    generators: Annotated[
        str | None,
        typer.Option("--generators", help="Built-in generators to serve too (zoo-gan,zoo-vae), C2PA-signed."),
    ] = None,
    detect_generated: Annotated[
        str | None,
        typer.Option(
            "--detect-generated",
            help="Score image inputs and /v1/detect/generated uploads with this synthetic-image detector "
            "(spectrum-gan, spectrum-vae); flagged images raise alerts.",
        ),
    ] = None,
    ui: Annotated[
        bool, typer.Option("--ui", help="Serve the web dashboard beside the gateway, under /ui.")
    ] = False,
) -> None:
    """Serve registry models behind API keys, limits, output hardening and extraction detection.

    Example:

    \b
        dlsec serve --models bc --port 8000
    """
    import os

    import uvicorn

    from dlsec.serve.config import load_gateway_config

    overrides = {
        "monitor": str(monitor) if monitor else None,
        "monitor_reference": reference,
        "playbook": str(playbook) if playbook else None,
        "webhook": webhook,
        "detect_generated": detect_generated,
    }
    cfg = load_gateway_config(
        config, models=models, alias=alias, redis_url=redis_url, generators=generators, **overrides
    )
    _check_files(cfg)
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and not cfg.redis_url:
        raise UsageError("several workers need shared limits: pass --redis-url redis://HOST:PORT/0")
    home = settings(ctx).home
    # uvicorn's workers import the app factory by name; the settings travel in the environment.
    os.environ["DLSEC_GATEWAY_CONFIG"] = cfg.model_dump_json()
    if home is not None:
        os.environ["DLSEC_HOME"] = str(home)
    if registry_url is not None:
        os.environ["DLSEC_REGISTRY_URL"] = registry_url
    factory = "dlsec.respond.gateway:app_from_env"
    if ui:
        import secrets

        factory = "dlsec.ui.app:gateway_with_dashboard_from_env"
        os.environ.setdefault("DLSEC_UI_SECRET", secrets.token_hex(32))  # one for all workers
    err_console().print(
        f"dlsec gateway on http://{host}:{port} serving {', '.join(cfg.models)}"
        + (f"; dashboard on http://{host}:{port}/ui/" if ui else ""),
        markup=False,
    )
    uvicorn.run(factory, factory=True, host=host, port=port, workers=workers, log_level="warning")


def _check_files(cfg: GatewayConfig) -> None:
    """Read the monitor and playbook files now, so that a bad one is an error before serving."""
    if cfg.monitor is not None:
        from dlsec.monitor import load_monitor_config

        load_monitor_config(cfg.monitor)
        if cfg.monitor_reference is None:
            raise UsageError("--monitor needs --reference DATA (what normal traffic looks like)")
    if cfg.playbook is not None:
        from dlsec.respond import load_playbook

        load_playbook(cfg.playbook)
    if cfg.detect_generated is not None:
        from dlsec.generative import SYNTHETIC_DETECTORS

        if cfg.detect_generated not in SYNTHETIC_DETECTORS:
            raise UsageError(
                f"--detect-generated {cfg.detect_generated}: unknown detector; built-in: "
                + ", ".join(sorted(SYNTHETIC_DETECTORS))
            )
