"""A served generator: every image carries a valid C2PA manifest naming the generator and its
weights' digest, charged to the key's budget, scoped by the key, recorded in the audit log."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlsec.errors import UsageError
from dlsec.generative import generator_path, load_generator, verify_provenance
from dlsec.serve import Gateway, GatewayConfig, create_app
from dlsec.store import Registry
from dlsec.store._apikeys import KeyStore
from tests.serve.conftest import auth


def _gateway(home: Path) -> Gateway:
    load_generator("zoo-gan")  # trained once in the session's home, then copied: not again per test
    target = generator_path("zoo-gan", home=home)
    if not target.exists():
        shutil.copytree(generator_path("zoo-gan"), target)
    cfg = GatewayConfig(models=["clf"], generators=["zoo-gan"], refresh_seconds=0, detector_process=False)
    return Gateway(cfg, home=home)


def test_every_generated_image_is_signed_charged_and_audited(home: Path, tmp_path: Path) -> None:
    store = KeyStore(Registry.open(home=home).db)
    key, record = store.create(role="client", models=["zoo-gan"], budget=3)
    other = store.create(role="client", models=["clf"])[0]
    gateway = _gateway(home)
    expected = load_generator("zoo-gan", home=home).weights_sha256
    with TestClient(create_app(gateway)) as c:
        r = c.post("/v1/generators/zoo-gan/generate", json={"n": 2, "seed": 7, "size": 64}, headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["generator"] == "zoo-gan" and body["weights_sha256"] == expected and body["seed"] == 7
        for i, image in enumerate(body["images"]):
            png = base64.b64decode(image["png_base64"])
            assert hashlib.sha256(png).hexdigest() == image["sha256"]
            path = tmp_path / f"{i}.png"
            path.write_bytes(png)
            report = verify_provenance(path, home=home)
            assert report.generator["name"] == "zoo-gan" and report.generator["weights_sha256"] == expected
        # 2 of 3 images used: a request for 2 more is over the budget, one more is not
        over = c.post("/v1/generators/zoo-gan/generate", json={"n": 2}, headers=auth(key))
        assert over.status_code == 429 and over.json()["reason"] == "budget"
        assert c.post("/v1/generators/zoo-gan/generate", json={"n": 1}, headers=auth(key)).status_code == 200
        scoped = c.post("/v1/generators/zoo-gan/generate", json={"n": 1}, headers=auth(other))
        assert scoped.status_code == 403 and scoped.json()["reason"] == "scope"
        unknown = c.post("/v1/generators/nothing/generate", json={"n": 1}, headers=auth(key))
        assert unknown.status_code == 404
        too_many = c.post("/v1/generators/zoo-gan/generate", json={"n": 999}, headers=auth(other))
        assert too_many.status_code in (403, 422)
    entries = [e for e in gateway.audit.entries() if e.action == "gateway.generate"]
    assert [e.actor for e in entries] == [f"apikey:{record.id}"] * 2
    assert entries[0].details["images"] == [i["sha256"] for i in body["images"]]


def test_an_unknown_generator_is_refused_at_start(home: Path) -> None:
    with pytest.raises(UsageError, match="unknown generator 'nope'"):
        Gateway(GatewayConfig(models=["clf"], generators=["nope"], detector_process=False), home=home)
