"""What wraps every request: body size and content type, error bodies, Prometheus metrics.

Every refusal, whichever layer makes it, answers ``{"error": ..., "reason": ...}`` and counts in
``dlsec_rejections_total{reason}``; a stack trace never reaches a client.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from dlsec.errors import Error, UsageError

__all__ = ["ApiError", "Guard", "Metrics", "error_response", "install_error_handlers", "metrics_response"]

log = logging.getLogger("dlsec.serve")


class ApiError(Exception):
    """A refusal with its HTTP status, its ``reason`` (the metrics label) and extra headers."""

    def __init__(
        self, status: int, message: str, *, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class Metrics:
    """Prometheus metrics in a registry of their own (several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dlsec_requests", "Prediction requests", ["model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "dlsec_request_latency_seconds",
            "Prediction latency",
            ["model"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.rejections = Counter("dlsec_rejections", "Refused requests", ["reason"], registry=self.registry)
        self.alerts = Counter("dlsec_alerts", "Alerts raised", ["source", "signal"], registry=self.registry)
        self.dropped = Counter(
            "dlsec_events_dropped", "Background events dropped (queue full)", registry=self.registry
        )

    def served(self, model: str, start: float) -> None:
        """Count a prediction answered 200 and its latency since ``start`` (``time.perf_counter``)."""
        self.requests.labels(model=model, status="200").inc()
        self.latency.labels(model=model).observe(time.perf_counter() - start)


def metrics_response(metrics: Metrics) -> PlainTextResponse:
    """The Prometheus text exposition of ``metrics``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def error_response(
    status: int, message: str, reason: str, metrics: Metrics, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error body every refusal answers, counted under ``reason``."""
    metrics.rejections.labels(reason=reason).inc()
    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)


class TooLarge(Exception):
    """The request body grew past the limit while it was read."""


class Guard:
    """Pure ASGI middleware (cheap, unlike ``BaseHTTPMiddleware``): body size and content type.

    A declared ``Content-Length`` over the limit is refused before anything is read (413); a body
    that streams past the limit raises :class:`TooLarge` while the endpoint reads it (413); a
    POST that is not ``application/json`` is refused (415).
    """

    def __init__(self, app: Any, *, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await error_response(413, f"request body over {self.limit} bytes", "body-size", self.metrics)(
                scope, receive, send
            )
            return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            await error_response(415, "send the body as application/json", "content-type", self.metrics)(
                scope, receive, send
            )
            return
        received = 0

        async def capped() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise TooLarge
            return message

        await self.app(scope, capped, send)


def install_error_handlers(app: FastAPI, *, limit: int, metrics: Metrics) -> None:
    """Add :class:`Guard` and map every exception to the error body (500 for the unexpected)."""
    app.add_middleware(Guard, limit=limit, metrics=metrics)

    @app.exception_handler(TooLarge)
    async def too_large(_request: Request, _exc: TooLarge) -> JSONResponse:
        return error_response(413, f"request body over {limit} bytes", "body-size", metrics)

    @app.exception_handler(Exception)
    async def internal(_request: Request, _exc: Exception) -> JSONResponse:
        log.exception("unhandled error")  # never leak a stack trace to a client
        return error_response(500, "internal error", "internal", metrics)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.reason, metrics, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid", metrics)

    @app.exception_handler(Error)
    async def dlsec_error(_request: Request, exc: Error) -> JSONResponse:
        return error_response(422 if isinstance(exc, UsageError) else 403, str(exc), "refused", metrics)
