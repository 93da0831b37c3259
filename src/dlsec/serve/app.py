"""The inference gateway as a FastAPI application: :func:`create_app` over a :class:`Gateway`.

The parts live in private modules: the state in ``_gateway`` (models, keys, limits, watcher,
background worker, alerts), the routes in ``_routes`` (one router per role), body checks, error
bodies and metrics in ``_middleware``; who is calling is decided by the dependencies in
:mod:`dlsec.serve.auth`.

Request path for ``POST /v1/models/{name}/predict``: body size and content type (413, 415), API
key (401), role (403), then :meth:`Gateway.predict`: model scope (403), a block from the
extraction detector (403), rate limit and budget (429 with ``Retry-After``), input validation
against the model's spec (422), prediction, the key's output policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dlsec.serve._gateway import Gateway
from dlsec.serve._middleware import install_error_handlers
from dlsec.serve._routes import ROUTERS

__all__ = ["create_app"]


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI application over a :class:`Gateway`; closing the app closes the gateway.

    Example:
        >>> from dlsec.serve import Gateway, GatewayConfig, create_app
        >>> app = create_app(Gateway(GatewayConfig(models=["digits"])))  # doctest: +SKIP
        >>> uvicorn.run(app)  # doctest: +SKIP
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        gateway.close()

    app = FastAPI(
        lifespan=lifespan,
        title="dlsec gateway",
        version="1",
        description="Registry models behind API keys, rate limits, budgets, output hardening and "
        "extraction detection.",
    )
    app.state.gateway = gateway
    install_error_handlers(app, limit=gateway.config.max_body_bytes, metrics=gateway.metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app
