"""Serve: the inference gateway (keys, roles, budgets, rate limits, output hardening, audit).

The gateway serves registry models by alias behind API keys; each client's queries feed the
extraction detector and the version's monitors (:mod:`dlsec.monitor`). Alerts go to the
hooks given to :class:`Gateway` (``alert_hooks``): the CLI subscribes the incident responder
(:mod:`dlsec.respond`) there, so serving does not depend on responding. Who may call what is
decided by the FastAPI dependencies in :mod:`dlsec.serve.auth` (``CurrentKey`` and the role
each router requires), which tests swap with ``app.dependency_overrides``.

Example:
    >>> from dlsec.serve import Gateway, GatewayConfig, create_app
    >>> app = create_app(Gateway(GatewayConfig(models=["digits"])))  # doctest: +SKIP
"""

from dlsec.serve._gateway import Gateway, GatewayConfig
from dlsec.serve.app import create_app
from dlsec.serve.client import connect, connect_text

__all__ = ["Gateway", "GatewayConfig", "connect", "connect_text", "create_app"]
