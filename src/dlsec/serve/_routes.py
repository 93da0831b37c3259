"""The gateway's HTTP routes, one router per kind of caller.

``public``: health and metrics, no key. ``client``: predictions and the served models, any key
(its model scope checked per model). ``operator``: alerts and quarantine. ``admin``: API keys.
Each router enforces its role with a dependency from :mod:`dlsec.serve.auth`, so a key is checked
before the body is even parsed: 401/403 never depend on the payload.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from dlsec.serve._gateway import Gateway
from dlsec.serve._middleware import ApiError, metrics_response
from dlsec.serve.auth import (
    AdminKey,
    ClientKey,
    OperatorKey,
    gateway_of,
    require_admin,
    require_client,
    require_operator,
)
from dlsec.store import ApiKey

__all__ = ["ROUTERS", "admin", "client", "operator", "public"]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(description="a batch: nested lists in the model's input shape")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(1, description="how many images (each C2PA-signed)")
    seed: int | None = Field(None, ge=0, description="the generator's seed (default: random)")
    size: int = Field(256, ge=8, le=1024, description="output width and height in pixels")


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_base64: str = Field(description="a PNG or JPEG image, base64-encoded")


class QuarantineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = None
    rollback: bool = True


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = "client"
    models: list[str] | None = None
    rate: str | None = None
    budget: int | None = None
    output: str = "full"
    note: str | None = None


public = APIRouter()
client = APIRouter(dependencies=[Depends(require_client)])
operator = APIRouter(dependencies=[Depends(require_operator)])
admin = APIRouter(dependencies=[Depends(require_admin)])


# -- client ---------------------------------------------------------------------------------


@client.post(
    "/v1/models/{name}/predict",
    openapi_extra={
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "title": "Name"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        },
    },
)
async def predict(request: Request, key: ClientKey) -> JSONResponse:
    # The hot path: its router is included first (routes are matched in order), its one
    # dependency is the key (solved before the body is read), and the path parameter and body are
    # read directly (FastAPI's parameter solving is a measurable share of the gateway's overhead).
    gateway, name = gateway_of(request), request.path_params["name"]
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, f"{where}: {first.get('msg', 'invalid request')}", reason="invalid") from None
    start = time.perf_counter()
    if gateway.config.inline_inference:
        result = _predict_sync(gateway, name, key, body.inputs)
    else:
        result = await run_in_threadpool(_predict_sync, gateway, name, key, body.inputs)
    gateway.metrics.served(name, start)
    return JSONResponse(result)  # plain JSON types already: no response-model pass


@client.post("/v1/generators/{name}/generate")
async def generate(name: str, body: GenerateRequest, request: Request, key: ClientKey) -> dict[str, Any]:
    """Images from a served generator, each a PNG (base64) with a signed C2PA manifest."""
    gateway = gateway_of(request)
    gateway.refresh()
    return await run_in_threadpool(gateway.generate, name, key, body.n, body.seed, body.size)


@client.post("/v1/detect/generated")
async def detect_generated(body: DetectRequest, request: Request, key: ClientKey) -> dict[str, Any]:
    """Score an uploaded image with the synthetic-image detector; a flagged image raises an alert."""
    import base64

    gateway = gateway_of(request)
    gateway.refresh()
    try:
        data = base64.b64decode(body.image_base64, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise ApiError(422, "image_base64 is not valid base64", reason="invalid") from None
    return await run_in_threadpool(gateway.detect_generated, key, data)


def _predict_sync(gateway: Gateway, name: str, key: ApiKey, inputs: list[Any]) -> dict[str, Any]:
    gateway.refresh()
    return gateway.predict(name, key, inputs)


@client.get("/v1/models")
def list_models(request: Request, key: ClientKey) -> list[dict[str, Any]]:
    gateway = gateway_of(request)
    gateway.refresh()
    return [s for s in gateway.served() if key.may_use(s["name"])]


@client.get("/v1/models/{name}")
def show_model(name: str, request: Request, key: ClientKey) -> dict[str, Any]:
    gateway = gateway_of(request)
    if not key.may_use(name):
        raise ApiError(403, f"this key may not use model {name!r}", reason="scope")
    gateway.refresh()
    for s in gateway.served():
        if s["name"] == name:
            return {**s, "output": str(key.output), "max_batch": gateway.config.max_batch}
    raise ApiError(404, f"model {name!r} is not served here", reason="unknown-model")


# -- public ---------------------------------------------------------------------------------


@public.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    gateway.refresh()
    served = gateway.served()
    return {"status": "ok", "models": {s["name"]: s["status"] for s in served}}


@public.get("/metrics")
def metrics(request: Request) -> PlainTextResponse:
    return metrics_response(gateway_of(request).metrics)


# -- operator -------------------------------------------------------------------------------


@operator.get("/v1/alerts")
def alerts(request: Request, limit: int = 100) -> list[dict[str, Any]]:
    return gateway_of(request).alerts(limit=max(1, min(limit, 1000)))


@operator.post("/v1/models/{name}/quarantine")
def quarantine(name: str, body: QuarantineRequest, request: Request, key: OperatorKey) -> dict[str, Any]:
    actor = f"apikey:{key.id}"
    return gateway_of(request).quarantine(name, reason=body.reason, rollback=body.rollback, actor=actor)


# -- admin ----------------------------------------------------------------------------------


@admin.post("/v1/keys")
def create_key(body: KeyRequest, request: Request, key: AdminKey) -> dict[str, Any]:
    gateway = gateway_of(request)
    secret, record = gateway.keystore.create(**body.model_dump(), actor=f"apikey:{key.id}")
    gateway.refresh(force=True)
    return {"key": secret, **record.to_dict()}


@admin.get("/v1/keys")
def list_keys(request: Request) -> list[dict[str, Any]]:
    return [k.to_dict() for k in gateway_of(request).keystore.all()]


@admin.delete("/v1/keys/{key_id}")
def revoke_key(key_id: str, request: Request, key: AdminKey) -> dict[str, Any]:
    gateway = gateway_of(request)
    record = gateway.keystore.revoke(key_id, actor=f"apikey:{key.id}")
    gateway.refresh(force=True)
    return record.to_dict()


# The order the app includes them in: the prediction route first.
ROUTERS = (client, public, operator, admin)
