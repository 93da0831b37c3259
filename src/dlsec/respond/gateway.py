"""The gateway with its playbook subscribed: what ``dlsec serve`` and the demo run.

The gateway (:mod:`dlsec.serve`) publishes each alert to its ``alert_hooks``; this module is
where the incident responder subscribes to them, so that serving never imports responding.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fastapi import FastAPI

from dlsec.respond.playbook import Responder, load_playbook
from dlsec.serve import Gateway, GatewayConfig, create_app
from dlsec.serve.limits import LimitStore

__all__ = ["app_from_env", "build_gateway"]


def build_gateway(
    config: GatewayConfig,
    *,
    home: str | Path | None = None,
    registry_url: str | None = None,
    limits: LimitStore | None = None,
) -> Gateway:
    """A :class:`~dlsec.serve.Gateway` whose alerts run ``config.playbook`` (when it names one).

    Example:
        >>> config = GatewayConfig(models=["digits"], playbook="respond.yaml")
        >>> gateway = build_gateway(config)  # doctest: +SKIP
    """
    playbook = load_playbook(config.playbook) if config.playbook is not None else None
    gateway = Gateway(config, home=home, registry_url=registry_url, limits=limits, run_playbook=False)
    if playbook is not None:
        responder = Responder(playbook, gateway.registry, alias=config.alias)
        gateway.subscribe(responder.handle, changes_state=True)
    return gateway


def app_from_env() -> FastAPI:
    """Build the app from ``$DLSEC_GATEWAY_CONFIG`` (what ``dlsec serve`` sets for its workers)."""
    cfg = GatewayConfig.model_validate_json(os.environ["DLSEC_GATEWAY_CONFIG"])
    # The background worker (query log, alerts) must hand the interpreter back to the request
    # path quickly: a 1 ms switch interval instead of CPython's 5 ms keeps p50 latency flat.
    sys.setswitchinterval(0.001)
    return create_app(build_gateway(cfg))
