"""Authentication is a FastAPI dependency: tests swap it, and each router enforces its role."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from dlsec.serve.auth import current_key
from dlsec.store import ROLES, ApiKey
from tests.serve.conftest import auth

X = [[0.1, 0.2, 0.3, 0.4]]

# (method, path, JSON body, the least role that may call it); quarantine last: it changes what is served
ROUTES = [
    ("POST", "/v1/models/clf/predict", {"inputs": X}, "client"),
    ("GET", "/v1/models", None, "client"),
    ("GET", "/v1/models/clf", None, "client"),
    ("GET", "/v1/alerts", None, "operator"),
    ("GET", "/v1/keys", None, "admin"),
    ("POST", "/v1/keys", {"role": "client"}, "admin"),
    ("POST", "/v1/models/clf/quarantine", {"reason": "test", "rollback": False}, "operator"),
]


def record(client: TestClient, secret: str) -> ApiKey:
    """The key record a secret proves, as the dependency would return it."""
    key = client.gateway.key(secret)  # type: ignore[attr-defined]
    assert key is not None
    return key


def call(
    client: TestClient, method: str, path: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.request(method, path, json=body, headers=headers or {})


def test_overriding_the_key_dependency_lets_a_request_without_a_header_through(client, keys):
    operator = record(client, keys["operator"])
    assert client.get("/v1/alerts").status_code == 401  # no header, no override: refused
    assert client.get("/v1/alerts").headers["WWW-Authenticate"] == "Bearer"
    client.app.dependency_overrides[current_key] = lambda: operator
    try:
        r = client.get("/v1/alerts")
        assert r.status_code == 200 and r.json() == []
        r = client.post("/v1/models/clf/predict", json={"inputs": X})  # the prediction path too
        assert r.status_code == 200 and r.json()["model"] == "clf"
    finally:
        client.app.dependency_overrides.clear()
    assert client.get("/v1/alerts").status_code == 401  # the override is gone: refused again
    assert client.get("/v1/alerts", headers=auth(keys["operator"])).status_code == 200


@pytest.mark.parametrize("role", ROLES)
def test_each_router_enforces_its_role_on_the_overridden_key(client, keys, role):
    key = record(client, keys[role])
    client.app.dependency_overrides[current_key] = lambda: key
    try:
        for method, path, body, needs in ROUTES:
            r = call(client, method, path, body)
            allowed = ROLES.index(role) >= ROLES.index(needs)
            assert r.status_code == (200 if allowed else 403), (role, method, path, r.text)
            if not allowed:
                assert r.json() == {
                    "error": f"this key's role ({role}) may not do this; it needs {needs}",
                    "reason": "role",
                }
    finally:
        client.app.dependency_overrides.clear()


def test_without_a_key_every_guarded_route_answers_401_and_public_ones_answer(client):
    for method, path, body, _ in ROUTES:
        r = call(client, method, path, body)
        assert r.status_code == 401, (method, path)
        assert r.json() == {"error": "missing, unknown or revoked API key", "reason": "auth"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_the_key_is_read_from_a_bearer_token_or_x_api_key(client, keys):
    secret = keys["client"]
    for headers in (auth(secret), {"authorization": f"bearer {secret}"}, {"X-API-Key": secret}):
        assert client.get("/v1/models", headers=headers).status_code == 200, headers
    assert client.get("/v1/models", headers={"Authorization": secret}).status_code == 401  # no scheme


def test_a_route_refuses_an_unauthorised_caller_before_validating_its_request(client, keys):
    # The role dependencies run before the route's own parameters are read: a caller without the
    # role learns nothing about what the route would accept.
    bad = {"rollback": "not a boolean"}
    assert call(client, "POST", "/v1/models/clf/quarantine", bad).status_code == 401
    assert call(client, "POST", "/v1/models/clf/quarantine", bad, auth(keys["client"])).status_code == 403
    assert call(client, "POST", "/v1/models/clf/quarantine", bad, auth(keys["operator"])).status_code == 422
    assert client.get("/v1/alerts?limit=x", headers=auth(keys["client"])).status_code == 403
    assert client.get("/v1/alerts?limit=x", headers=auth(keys["operator"])).status_code == 422
