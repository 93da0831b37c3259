"""A registry with two signed versions of a small model, a gateway over it, and a bare key store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlsec.release import generate_signing_keys
from dlsec.serve import Gateway, GatewayConfig, create_app
from dlsec.store import Registry
from dlsec.store._apikeys import KeyStore
from dlsec.store._db import open_database
from tests.release.test_registry import PASS, _signed_model


@pytest.fixture
def home(tmp_path: Path) -> Path:
    generate_signing_keys(tmp_path / "keys", passphrase=PASS, scrypt_log_n=10)
    reg = Registry.open(home=tmp_path)
    for seed in (1, 2):
        record = reg.add(_signed_model(tmp_path, f"v{seed}", seed), "clf")
        reg.promote("clf", record.version)
    reg.close()
    return tmp_path


@pytest.fixture
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(Registry.open(home=home).db)
    out = {
        "client": store.create(role="client", models=["clf"])[0],
        "other": store.create(role="client", models=["nothing-here"])[0],
        "viewer": store.create(role="viewer", models=["clf"])[0],
        "operator": store.create(role="operator")[0],
        "admin": store.create(role="admin")[0],
        "label": store.create(role="client", output="label")[0],
        "top1": store.create(role="client", output="top-1")[0],
        "slow": store.create(role="client", rate="2/minute")[0],
        "budget": store.create(role="client", budget=5)[0],
    }
    store.db.dispose()
    return out


def make_gateway(home: Path, **overrides: object) -> Gateway:
    settings = {"models": ["clf"], "refresh_seconds": 0, "detector_process": False, **overrides}
    cfg = GatewayConfig.model_validate(settings)
    return Gateway(cfg, home=home)


@pytest.fixture
def client(home: Path, keys: dict[str, str]) -> Iterator[TestClient]:
    gateway = make_gateway(home)
    with TestClient(create_app(gateway)) as c:
        c.gateway = gateway  # type: ignore[attr-defined]
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyStore]:
    """A key store on an empty database, the actor named by `DLSEC_ACTOR`."""
    monkeypatch.setenv("DLSEC_ACTOR", "env-actor")
    s = KeyStore(open_database(home=tmp_path))
    yield s
    s.db.dispose()
