"""A live gateway on loopback: attacks through it, extraction detection, fuzzing, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from dlsec.core.loading import load_model
from dlsec.core.model import DecisionModel, ScoreModel
from dlsec.serve import create_app
from dlsec.serve.live import LiveServer
from tests.cli.test_cli import assert_user_error, run, run_json
from tests.serve.conftest import auth, make_gateway


@pytest.fixture
def live(home: Path, keys: dict[str, str]) -> Iterator[tuple[str, object]]:
    extraction = {"volume": {"max_queries": 40, "window_seconds": 60, "action": "block"}}
    gateway = make_gateway(home, extraction=extraction, detector_process=True)  # as `dlsec serve` runs it
    with LiveServer(create_app(gateway)) as url:
        yield url, gateway


def test_models_behind_the_gateway_load_as_black_boxes(live, keys, home, monkeypatch):
    url, _ = live
    monkeypatch.setenv("DLSEC_API_KEY", keys["client"])
    remote = load_model(f"{url}/v1/models/clf")
    assert isinstance(remote, ScoreModel) and remote.spec.shape == (4,)
    x = torch.rand(7, 4)
    local = load_model(str(home / "src" / "v2" / "model.safetensors"))
    assert torch.allclose(remote.probs(x), local.probs(x), atol=1e-5)
    monkeypatch.setenv("DLSEC_API_KEY", keys["label"])
    labels_only = load_model(f"{url}/v1/models/clf")
    assert isinstance(labels_only, DecisionModel)
    assert torch.equal(labels_only.predict(x), local.predict(x))


def test_a_query_flood_is_detected_alerted_audited_and_blocked(live, keys):
    url, gateway = live
    x = np.random.default_rng(1).random((10, 4)).tolist()
    with httpx.Client(base_url=url, headers=auth(keys["client"])) as c:
        codes = [c.post("/v1/models/clf/predict", json={"inputs": x}).status_code for _ in range(6)]
        assert codes[:4] == [200] * 4  # 40 queries allowed in the window
        gateway.drain()
        blocked = c.post("/v1/models/clf/predict", json={"inputs": x})
    assert blocked.status_code == 403 and "extraction" in blocked.json()["error"]
    alerts = httpx.get(f"{url}/v1/alerts", headers=auth(keys["operator"])).json()
    assert alerts and alerts[0]["signal"] == "volume" and alerts[0]["action"] == "block"
    assert alerts[0]["subject"] == f"apikey:{keys['client'].split('_')[1]}"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'dlsec_alerts_total{signal="volume",source="extraction"}' in metrics
    assert gateway.audit.verify().ok


MALFORMED = [
    b"",
    b"null",
    b"[]",
    b'{"inputs": null}',
    b'{"inputs": "abc"}',
    b'{"inputs": [[[[[[[[[[1]]]]]]]]]]}',
    b'{"inputs": [{"a": 1}]}',
    b'{"inputs": [[1e400, 0, 0, 0]]}',
    b'{"inputs": [[-Infinity, 0, 0, 0]]}',
    b'{"inputs": [[0, 0, 0, 0]], "extra": 1}',
    b'{"inputs": [[0, 0, 0, 0]]' + b" " * 10,
    b"\xff\xfe\x00garbage",
    json.dumps({"inputs": [[0.1] * 4] * 300}).encode(),
    b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


def test_malformed_bodies_never_give_a_5xx_and_the_server_stays_up(live, keys):
    url, _ = live
    headers = {**auth(keys["operator"]), "content-type": "application/json"}
    with httpx.Client(base_url=url, headers=headers) as c:
        for body in MALFORMED:
            r = c.post("/v1/models/clf/predict", content=body)
            assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text[:200])
            assert "Traceback" not in r.text
        assert c.post("/v1/models/clf/predict", json={"inputs": [[0.5] * 4]}).status_code == 200


def test_schemathesis_finds_no_server_error(live, keys):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    url, _ = live
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures = []
    calls = []

    def fuzz(op) -> None:  # noqa: ANN001
        @given(op.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same cases every run: CI must not pass or fail by chance
        )
        def check(case) -> None:  # noqa: ANN001
            original = dict(case.headers or {})
            for key in (keys["admin"], None):
                case.headers = {**original, **(auth(key) if key else {})}
                response = case.call(base_url=url)
                calls.append(response.status_code)
                if response.status_code >= 500:
                    failures.append((op.method, op.path, response.status_code, response.text[:200]))

        check()

    for operation in schema.get_all_operations():
        fuzz(operation.ok())
    assert failures == []
    assert len(calls) >= 100 and {401, 422} <= set(calls)  # it really fuzzed, with and without a key
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_keys_cli_create_list_revoke(capsys, home):
    h = str(home)
    created = run_json(capsys, "--home", h, "keys", "create", "--role", "client", "--models", "clf",
                       "--rate", "5/second", "--budget", "100", "--output", "top-2")  # fmt: skip
    assert (
        created["key"].startswith("dlsec_") and created["rate"] == "5/second" and created["output"] == "top-2"
    )
    listed = run_json(capsys, "--home", h, "keys", "list")
    assert created["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert run_json(capsys, "--home", h, "keys", "revoke", created["id"])["revoked"]
    code, _, err = run(capsys, "--home", h, "keys", "create", "--role", "root")
    assert_user_error(code, err, "bad role")
    code, _, err = run(capsys, "--home", h, "keys", "create", "--rate", "fast")
    assert_user_error(code, err, "bad rate")
    code, _, err = run(capsys, "--home", h, "serve")
    assert_user_error(code, err, "--models")
    code, _, err = run(capsys, "--home", h, "serve", "--models", "clf", "--workers", "2")
    assert_user_error(code, err, "--redis-url")
    bad = home / "gateway.yaml"
    bad.write_text("models: [clf]\nmax_batch: -3\n")
    code, _, err = run(capsys, "--home", h, "serve", "--config", str(bad))
    assert_user_error(code, err, "gateway.yaml:2: max_batch")
