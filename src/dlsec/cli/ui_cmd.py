"""``dlsec ui``: the security team's web dashboard over the registry, the audit log and the keys."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from dlsec.cli._app import app, err_console, settings
from dlsec.cli.keys_cmd import RegistryUrlOpt
from dlsec.errors import UsageError


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM): serve https.")
    ] = None,
    keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies trusted to say the client used https (X-Forwarded-Proto).",
        ),
    ] = "127.0.0.1",
    session_hours: Annotated[float, typer.Option("--session-hours", help="How long a login lasts.")] = 8.0,
    registry_url: RegistryUrlOpt = None,
) -> None:
    """Serve the web dashboard: models, lineage, reports, audit log, incidents, API keys.

    Log in with a gateway API key: a client key is a viewer, operator and admin keys can act.

    Example:

    \b
        dlsec ui --host 127.0.0.1 --port 8080
    """
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: use a TCP port from 1 to 65535")
    if (certfile is None) != (keyfile is None):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    import uvicorn

    from dlsec.store import Registry
    from dlsec.ui import Dashboard, create_dashboard

    registry = Registry.open(registry_url, home=settings(ctx).home)
    dashboard = Dashboard(registry, session_hours=session_hours)
    scheme = "https" if certfile is not None else "http"
    if scheme == "http" and not _loopback(host):
        err_console().print(
            f"warning: serving the dashboard on {host} over plain http: API keys and session cookies "
            "cross the network in clear; pass --ssl-certfile/--ssl-keyfile or put a TLS proxy in front",
            markup=False,
        )
    err_console().print(f"dlsec dashboard on {scheme}://{host}:{port}/", markup=False)
    try:
        uvicorn.run(
            create_dashboard(dashboard=dashboard),
            host=host,
            port=port,
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
            proxy_headers=True,
            forwarded_allow_ips=forwarded_allow_ips,
            log_level="warning",
        )
    finally:
        registry.close()
