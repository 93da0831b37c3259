"""The gateway: every status code, output policies, budgets under concurrency, quarantine and rollback."""

from __future__ import annotations

import json
import threading

import numpy as np
import torch

from dlsec.core.loading import load_model
from dlsec.store import Registry
from tests.serve.conftest import auth

X = np.random.default_rng(0).random((6, 4)).tolist()


def predict(client, key, inputs=X, name="clf", **kw):
    return client.post(
        f"/v1/models/{name}/predict", json={"inputs": inputs}, headers=auth(key) if key else {}, **kw
    )


def test_prediction_matches_the_registered_production_model(client, keys, home):
    r = predict(client, keys["client"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "clf" and body["version"] == 2
    expected = load_model(str(home / "src" / "v2" / "model.safetensors"))
    probs = expected.probs(torch.tensor(X, dtype=torch.float32)).numpy()
    assert body["predictions"] == probs.argmax(1).tolist()
    assert np.allclose(body["probabilities"], probs, atol=1e-6)


def test_output_policies_reveal_only_what_the_key_allows(client, keys):
    label = predict(client, keys["label"]).json()
    assert "probabilities" not in label and len(label["predictions"]) == 6
    top = predict(client, keys["top1"]).json()
    assert all(len(row) == 1 for row in top["probabilities"])
    assert [int(next(iter(row))) for row in top["probabilities"]] == top["predictions"]


def test_authentication_and_authorisation_status_codes(client, keys):
    assert predict(client, None).status_code == 401
    assert predict(client, "dlsec_000000000000_" + "x" * 43).status_code == 401
    forged = keys["client"][:-4] + "AAAA"
    assert predict(client, forged).status_code == 401
    assert predict(client, keys["other"]).status_code == 403  # outside its model scope
    assert client.get("/v1/alerts", headers=auth(keys["client"])).status_code == 403  # role
    assert client.get("/v1/alerts", headers=auth(keys["operator"])).status_code == 200
    assert client.get("/v1/keys", headers=auth(keys["operator"])).status_code == 403
    assert client.get("/v1/keys", headers=auth(keys["admin"])).status_code == 200
    assert predict(client, keys["client"], name="missing").status_code == 403  # scope before existence
    assert predict(client, keys["operator"], name="missing").status_code == 404


def test_revoked_key_is_refused_without_a_restart(client, keys):
    assert predict(client, keys["client"]).status_code == 200
    key_id = keys["client"].split("_")[1]
    r = client.delete(f"/v1/keys/{key_id}", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["revoked"]
    assert predict(client, keys["client"]).status_code == 401


def test_key_budgets_beyond_a_sql_bigint_are_refused_not_a_server_error(client, keys):
    # Found by schemathesis: a budget of 2**64 reached the database and answered 500.
    admin = auth(keys["admin"])
    r = client.post("/v1/keys", json={"budget": 2**64}, headers=admin)
    assert r.status_code == 422 and "budget" in r.json()["error"]
    r = client.post("/v1/keys", json={"rate": f"{10**40}/second"}, headers=admin)
    assert r.status_code == 422 and "rate" in r.json()["error"]
    r = client.post("/v1/keys", json={"budget": 2**63 - 1}, headers=admin)
    assert r.status_code == 200 and r.json()["budget"] == 2**63 - 1


def test_input_validation_status_codes(client, keys):
    k = keys["client"]
    assert predict(client, k, inputs=[[0.1, 0.2]]).status_code == 422  # shape
    assert predict(client, k, inputs=[[2.0, 0, 0, 0]]).status_code == 422  # bounds
    assert predict(client, k, inputs=[[0.1, 0.2, 0.3], [0.1]]).status_code == 422  # ragged
    assert predict(client, k, inputs=[["a", "b", "c", "d"]]).status_code == 422  # dtype
    assert predict(client, k, inputs=[[True, False, True, False]]).status_code == 422
    assert predict(client, k, inputs=[]).status_code == 422
    assert predict(client, k, inputs=[[0.1] * 4] * 257).status_code == 422  # batch size
    nan = '{"inputs": [[NaN, 0, 0, 0]]}'
    r = client.post(
        "/v1/models/clf/predict", content=nan, headers={**auth(k), "content-type": "application/json"}
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/models/clf/predict", content=b"{", headers={**auth(k), "content-type": "application/json"}
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/models/clf/predict",
        content=json.dumps({"inputs": X}),
        headers={**auth(k), "content-type": "text/plain"},
    )
    assert r.status_code == 415
    big = json.dumps({"inputs": [[0.5] * 4] * 200_000})
    r = client.post(
        "/v1/models/clf/predict", content=big, headers={**auth(k), "content-type": "application/json"}
    )
    assert r.status_code == 413
    for r in (predict(client, k, inputs=[[0.1, 0.2]]),):
        assert "Traceback" not in r.text and set(r.json()) == {"error", "reason"}


def test_rate_limit_and_budget_answer_429_with_retry_after(client, keys):
    assert predict(client, keys["slow"]).status_code == 200
    assert predict(client, keys["slow"]).status_code == 200
    r = predict(client, keys["slow"])
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.json()["reason"] == "rate"
    assert predict(client, keys["budget"], inputs=X[:3]).status_code == 200
    r = predict(client, keys["budget"], inputs=X[:3])  # 3 + 3 > 5
    assert r.status_code == 429 and r.json()["reason"] == "budget" and "Retry-After" in r.headers
    assert predict(client, keys["budget"], inputs=X[:2]).status_code == 200  # exactly 5 served


def test_budget_holds_exactly_under_concurrent_requests(home, keys):
    from fastapi.testclient import TestClient

    from dlsec.serve import create_app
    from dlsec.store._apikeys import KeyStore
    from tests.serve.conftest import make_gateway

    store = KeyStore(Registry.open(home=home).db)
    key = store.create(role="client", budget=37)[0]
    gateway = make_gateway(home)
    codes: list[int] = []
    lock = threading.Lock()
    with TestClient(create_app(gateway)) as c:

        def worker() -> None:
            for _ in range(10):
                r = predict(c, key, inputs=X[:1])
                with lock:
                    codes.append(r.status_code)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gateway.drain()
    assert codes.count(200) == 37 and codes.count(429) == 80 - 37
    used = {k.id: k.used for k in store.all()}
    assert used[key.split("_")[1]] == 37  # persisted for the next start


def test_quarantine_stops_serving_at_once_and_rollback_serves_the_previous_version(client, keys, home):
    assert predict(client, keys["client"]).json()["version"] == 2
    reg = Registry.open(home=home)
    reg.quarantine("clf", 2, reason="test")
    r = predict(client, keys["client"])
    assert r.status_code == 503 and "quarantined" in r.json()["error"]
    reg.rollback("clf")
    assert predict(client, keys["client"]).json()["version"] == 1
    reg.release("clf", 2)
    reg.promote("clf", 2)
    assert predict(client, keys["client"]).json()["version"] == 2
    # The operator endpoint does both steps, and every step is in the audit log.
    r = client.post("/v1/models/clf/quarantine", json={"reason": "alert"}, headers=auth(keys["operator"]))
    assert r.status_code == 200 and r.json() == {"model": "clf", "quarantined": 2, "now_serving": 1}
    assert predict(client, keys["client"]).json()["version"] == 1
    actions = [e.action for e in reg.audit.entries(subject="clf@")]
    assert actions[-2:] == ["registry.quarantine", "registry.rollback"]
    reg.close()


def test_health_metrics_models_and_openapi(client, keys):
    assert client.get("/healthz").json() == {"status": "ok", "models": {"clf": "serving"}}
    predict(client, keys["client"])
    predict(client, None)
    metrics = client.get("/metrics").text
    assert 'dlsec_requests_total{model="clf",status="200"}' in metrics
    assert 'dlsec_rejections_total{reason="auth"}' in metrics
    assert "dlsec_request_latency_seconds_bucket" in metrics
    models = client.get("/v1/models", headers=auth(keys["client"])).json()
    assert models[0]["spec"]["shape"] == [4] and models[0]["version"] == 2
    schema = client.get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in schema["paths"]


def test_query_log_records_hashes_not_inputs_by_default(client, keys):
    from sqlalchemy import select

    from dlsec.store._db import query_log

    predict(client, keys["client"])
    client.gateway.drain()
    with client.gateway.db.read() as conn:
        rows = conn.execute(select(query_log)).all()
    assert len(rows) == 1 and rows[0].rows == 6 and rows[0].inputs is None
    expected = __import__("hashlib").sha256(np.asarray(X, dtype=np.float32).tobytes()).hexdigest()
    assert rows[0].input_sha256 == expected and rows[0].version == 2
