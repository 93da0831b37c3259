"""A text classifier behind the gateway: keys, scopes, budgets and the query log, and text attacks
run through it as a black box (the real FastAPI app, through FastAPI's TestClient)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dlsec.errors import ModelLoadError
from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.serve import connect_text, create_app
from dlsec.store import Registry
from dlsec.store._apikeys import KeyStore
from dlsec.text import PWWS, DeepWordBug, TextDataset, load_text_model, train_text_model
from tests.release.test_registry import PASS
from tests.serve.conftest import auth, make_gateway

ROWS = [
    ("a good and moving film", 1),
    ("great acting and a fine story", 1),
    ("a dull and awful mess", 0),
    ("bad plot and bad actors", 0),
] * 15
THESAURUS = {"good": ["bad", "dull"], "great": ["awful"], "fine": ["bad"], "dull": ["great"], "bad": ["good"]}
TEXTS = ("a good film", "great acting", "a fine story", "a dull mess", "bad plot", "good acting", "bad film")
LABELS = np.array([1, 1, 1, 0, 0, 1, 0], dtype=np.int64)
URL = "http://testserver/v1/models/reviews"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text-gateway")
    generate_signing_keys(root / "keys", passphrase=PASS, scrypt_log_n=10)
    data = TextDataset(tuple(t for t, _ in ROWS), np.array([y for _, y in ROWS]), ("neg", "pos"), "tiny")
    folder = root / "src" / "reviews"
    train_text_model(data, out=folder, epochs=30, vocab_size=100, max_length=8, seed=0)
    sign_model(folder, load_signing_keys(root / "keys", passphrase=PASS))
    reg = Registry.open(home=root)
    record = reg.add(folder, "reviews")
    reg.promote("reviews", record.version)
    reg.close()
    return root


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(Registry.open(home=home).db)
    out = {
        "client": store.create(role="client", models=["reviews"])[0],
        "other": store.create(role="client", models=["clf"])[0],
        "label": store.create(role="client", models=["reviews"], output="label")[0],
        "budget-1": store.create(role="client", models=["reviews"], budget=40)[0],
        "budget-4": store.create(role="client", models=["reviews"], budget=40)[0],
        "attacker": store.create(role="client", models=["reviews"])[0],
        "cli": store.create(role="client", models=["reviews"], budget=25)[0],
    }
    store.db.dispose()
    return out


@pytest.fixture
def client(home: Path, keys: dict[str, str]) -> Iterator[TestClient]:
    gateway = make_gateway(home, models=["reviews"], log_inputs=True)  # texts logged as JSON
    with TestClient(create_app(gateway)) as c:
        c.gateway = gateway  # type: ignore[attr-defined]
        yield c


def test_text_predictions_match_the_model_and_are_logged(client, keys, home):
    local = load_text_model(home / "src" / "reviews")
    r = client.post("/v1/models/reviews/predict", json={"inputs": list(TEXTS)}, headers=auth(keys["client"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == local.predict(TEXTS).tolist()
    assert np.allclose(body["probabilities"], local.probs(TEXTS), atol=1e-12)
    assert body["truncated"] == []
    info = client.get("/v1/models/reviews", headers=auth(keys["client"])).json()
    assert info["spec"] == {
        "kind": "text",
        "num_classes": 2,
        "class_names": ["neg", "pos"],
        "max_length": 8,
        "watched": False,
    }
    long = "good " * 20  # 20 tokens, the model keeps 8: truncation is reported
    r = client.post(
        "/v1/models/reviews/predict", json={"inputs": ["bad", long]}, headers=auth(keys["client"])
    )
    assert r.json()["truncated"] == [1]
    client.gateway.drain()
    rows = client.gateway.query_log.recent(limit=10)
    first = next(row for row in rows if row["rows"] == len(TEXTS))
    assert first["input_sha256"] == hashlib.sha256(json.dumps(list(TEXTS)).encode()).hexdigest()


@pytest.mark.parametrize(
    ("key", "inputs", "status", "reason"),
    [
        ("client", [[0.1, 0.2]], 422, "invalid"),  # numbers to a text model
        ("client", ["fine", "  "], 422, "invalid"),  # an empty text
        ("client", ["x" * 20_001], 422, "invalid"),  # beyond max_text_chars
        ("client", [], 422, "invalid"),
        ("other", ["fine"], 403, "scope"),
    ],
)
def test_bad_text_requests_are_refused_and_not_charged(client, keys, key, inputs, status, reason):
    r = client.post("/v1/models/reviews/predict", json={"inputs": inputs}, headers=auth(keys[key]))
    assert r.status_code == status and r.json()["reason"] == reason
    assert client.gateway.limits.usage().get(client.gateway.key(keys[key]).id, 0) == 0


def test_pwws_through_the_gateway_equals_the_local_attack_and_is_charged(client, keys, home):
    local = load_text_model(home / "src" / "reviews")
    attack = PWWS(thesaurus=THESAURUS, max_change=0.5)
    expected = attack(local, TEXTS, LABELS)
    remote = connect_text(URL, api_key=keys["attacker"], http=client)
    got = attack(remote, TEXTS, LABELS)
    assert got.adv_texts == expected.adv_texts and got.success.tolist() == expected.success.tolist()
    assert got.queries.tolist() == expected.queries.tolist()
    assert got.success[got.clean_correct].any()  # the thesaurus' swaps fool the model
    key_id = client.gateway.key(keys["attacker"]).id
    assert client.gateway.limits.usage()[key_id] == int(got.queries.sum()) == remote.fn.queries


@pytest.mark.parametrize("lockstep", [1, 4])
def test_the_keys_budget_stops_an_attack_through_the_gateway(client, keys, lockstep):
    unlimited = DeepWordBug(max_change=1.0, edits_per_kind=3, seed=0, lockstep=lockstep)
    texts, labels = TEXTS * 3, np.tile(LABELS, 3)
    key = keys[f"budget-{lockstep}"]
    remote = connect_text(URL, api_key=key, http=client)
    result = unlimited(remote, texts, labels)
    key_id = client.gateway.key(key).id
    charged = client.gateway.limits.usage()[key_id]
    assert result.stopped is not None and "budget" in result.stopped
    assert charged == remote.fn.queries <= 40  # the gateway never answered past the budget
    k = result.attacked
    assert k is not None and 0 <= k < len(texts) and (k > 0 or lockstep > 1)
    # the texts before the stop were attacked as without a budget; none after it was
    full = unlimited(load_text_model(_folder(client)), texts, labels)
    assert result.adv_texts[:k] == full.adv_texts[:k]
    assert result.adv_texts[k:] == texts[k:]
    assert result.summary()["stopped"] == result.stopped and result.summary()["attacked"] == k
    r = client.post("/v1/models/reviews/predict", json={"inputs": ["x"] * 41}, headers=auth(key))
    assert r.status_code == 429 and r.json()["reason"] == "budget"


def _folder(client: TestClient) -> Path:
    registry = client.gateway.registry
    return registry.get("reviews").path


def test_connect_text_refuses_a_label_only_key_and_a_model_not_served(client, keys):
    with pytest.raises(ModelLoadError, match="hides the probabilities"):
        connect_text(URL, api_key=keys["label"], http=client)
    with pytest.raises(ModelLoadError, match="HTTP 404"):
        connect_text("http://testserver/v1/models/clf", api_key=keys["other"], http=client)


def test_text_attack_cli_on_an_unreachable_gateway_exits_2_with_one_line(monkeypatch, capsys):
    from dlsec.cli import main

    monkeypatch.setenv("DLSEC_API_KEY", "dlsec_not_a_real_key")
    args = [
        "text",
        "attack",
        "--model",
        "http://127.0.0.1:9/v1/models/reviews",
        "--data",
        "builtin:rotten-tomatoes",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "did not answer" in err and len(err.splitlines()) == 1 and "dlsec_not_a_real_key" not in err


def test_dlsec_text_attack_runs_through_a_live_gateway_on_the_keys_budget(
    home, keys, monkeypatch, tmp_path, capsys
):
    from dlsec.cli import main
    from dlsec.serve.live import LiveServer

    data = tmp_path / "texts.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": t, "label": ["neg", "pos"][y]}) + "\n"
            for t, y in zip(TEXTS, LABELS, strict=True)
        ),
        encoding="utf-8",
    )
    gateway = make_gateway(home, models=["reviews"])
    with LiveServer(create_app(gateway)) as url:
        monkeypatch.setenv("DLSEC_API_KEY", keys["cli"])
        args = ["text", "attack", "--model", f"{url}/v1/models/reviews", "--data", str(data)]
        args += ["--attack", "deepwordbug", "--max-change", "1.0", "--split", "all", "--json"]
        assert main(args) == 0
        summary = json.loads(capsys.readouterr().out)["summary"]
        key_id = gateway.key(keys["cli"]).id
        assert len(TEXTS) < gateway.limits.usage()[key_id] <= 25  # past the clean query, within budget
    assert summary["stopped"] is not None and "budget" in summary["stopped"]
    assert summary["attacked"] < summary["n"] == len(TEXTS)
