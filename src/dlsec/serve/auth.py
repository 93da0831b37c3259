"""Who is calling: the caller's API key as a typed FastAPI dependency, and the role routers need.

``CurrentKey`` is any valid key (401 otherwise, with ``WWW-Authenticate: Bearer``); ``OperatorKey``
and ``AdminKey`` are keys whose role is at least that one (403 otherwise; the roles are
:data:`dlsec.store.ROLES`, each including the ones below it, so ``ClientKey`` is ``CurrentKey``). A
router enforces its role with ``dependencies=[Depends(require_operator)]``; a route that needs the
key itself also takes it as a parameter (``key: OperatorKey``), and FastAPI calls it once per
request. Every role check goes through :func:`current_key`, so overriding that one dependency
(``app.dependency_overrides[current_key]``) sets the caller for every route; role checks still apply.

The key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The dependencies
are coroutines, so they run on the event loop rather than in the thread pool.

Example:
    Serve a route to operators only, or let a test act as an operator without a header:

    >>> from fastapi import APIRouter, Depends
    >>> from dlsec.serve.auth import OperatorKey, current_key, require_operator
    >>> router = APIRouter(dependencies=[Depends(require_operator)])
    >>> @router.get("/whoami")
    ... def whoami(key: OperatorKey) -> dict[str, str]:
    ...     return {"id": key.id, "role": key.role}
    >>> app.dependency_overrides[current_key] = lambda: operator_key  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from dlsec.serve._gateway import Gateway
from dlsec.serve._middleware import ApiError
from dlsec.store import ApiKey

__all__ = [
    "AdminKey",
    "ClientKey",
    "CurrentKey",
    "OperatorKey",
    "current_key",
    "gateway_of",
    "require_admin",
    "require_client",
    "require_operator",
]


def gateway_of(request: Request) -> Gateway:
    """The :class:`~dlsec.serve.Gateway` the app was created over."""
    gateway: Gateway = request.app.state.gateway
    return gateway


async def current_key(request: Request) -> ApiKey:
    """The caller's API key: a valid, unrevoked key, or 401.

    It takes nothing but the request (no sub-dependencies): FastAPI solves every dependency of a
    route on every request, cached or not, and this one is on the prediction path.
    """
    header = request.headers.get("authorization", "")
    presented = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    gateway = gateway_of(request)
    # The key table is brought up to date before it is read, so that a key revoked by another
    # process (`dlsec keys revoke`) is refused from the next request on, not the one after.
    # Off the event loop when inference is (loading a newly promoted version can take a while).
    if gateway.refresh_due():
        if gateway.config.inline_inference:
            gateway.refresh()
        else:
            await run_in_threadpool(gateway.refresh)
    key = gateway.key(presented)
    if key is None:
        raise ApiError(401, "missing, unknown or revoked API key", reason="auth",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def _requires(role: str) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    async def require(key: CurrentKey) -> ApiKey:
        if not key.may(role):
            raise ApiError(
                403, f"this key's role ({key.role}) may not do this; it needs {role}", reason="role"
            )
        return key

    require.__name__ = require.__qualname__ = f"require_{role}"
    require.__doc__ = f"The caller's API key if its role is at least {role}, or 403."
    return require


# Every role includes client, so a valid key is a client key: the client routes (the prediction
# path among them) depend on current_key itself, one dependency fewer to solve per request.
require_client = current_key
require_operator = _requires("operator")
require_admin = _requires("admin")

ClientKey = CurrentKey
OperatorKey = Annotated[ApiKey, Depends(require_operator)]
AdminKey = Annotated[ApiKey, Depends(require_admin)]
