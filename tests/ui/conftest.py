"""A registry made with the store's API: two signed versions of a tiny model with assessment
reports and lineage, an alert and an incident, and one API key per role."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.store import IncidentStore, KeyStore, Registry
from dlsec.ui import create_dashboard

PASS = "ui test passphrase"


def report(clean: float, linf: list[float], *, passed: bool = True) -> dict[str, object]:
    """A small but complete report.json, as `dlsec assess` writes it (what render_html reads)."""
    eps = [0.01, 0.03, 0.1][: len(linf)]
    return {
        "schema": "dlsec.report/1",
        "title": "assessment",
        "model": {"ref": "clf", "access": "white-box", "sha256": "0" * 64},
        "data": {"ref": "builtin:digits", "sha256": "1" * 64, "rows": 10, "kind": "image"},
        "campaign": {},
        "clean": {
            "accuracy": clean,
            "n": 10,
            "confusion_matrix": [[5, 0], [1, 4]],
            "per_class_accuracy": [1.0, 0.8],
            "class_names": ["0", "1"],
        },
        "robustness": {
            "curves": {
                "linf": {
                    "eps": eps,
                    "attacks": ["pgd"],
                    "per_attack": {"pgd": linf},
                    "robust_accuracy": linf,
                }
            }
        },
        "findings": [],
        "gates": [
            {
                "name": "robust-linf",
                "passed": passed,
                "reason": "at eps 0.03",
                "value": linf[1],
                "children": [],
            }
        ],
        "passed": passed,
        "reproducibility": {},
    }


@dataclass
class World:
    home: Path
    keys: dict[str, str]
    key_ids: dict[str, str]
    incident: int


def _model(root: Path, name: str, seed: int, signing: object) -> Path:
    path = root / "src" / name
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((2, 2)).astype(np.float32)}, str(path / "model.safetensors"))
    sign_model(path, signing)  # type: ignore[arg-type]
    return path


@pytest.fixture
def world(tmp_path: Path) -> World:
    home = tmp_path / "home"
    generate_signing_keys(home / "keys", passphrase=PASS, scrypt_log_n=10)
    signing = load_signing_keys(home / "keys", passphrase=PASS)
    reg = Registry.open(home=home)
    try:
        r1 = tmp_path / "r1.json"
        r1.write_text(json.dumps(report(0.9, [0.8, 0.6, 0.2])))
        r2 = tmp_path / "r2.json"
        r2.write_text(json.dumps(report(0.95, [0.85, 0.7, 0.4])))
        reg.add(
            _model(tmp_path, "v1", 1, signing),
            "clf",
            data_sha256="d" * 64,
            training_config={"recipe": "standard", "epochs": 3},
            report=r1,
        )
        reg.promote("clf", 1)
        reg.add(
            _model(tmp_path, "v2", 2, signing),
            "clf",
            data_sha256="e" * 64,
            training_config={"recipe": "pgd-at", "epochs": 5},
            parent="clf@1",
            report=r2,
        )
        reg.promote("clf", 2)
        reg.add(_model(tmp_path, "o1", 3, signing), "other")
        store = KeyStore(reg.db)
        made = {
            "viewer": store.create(role="viewer", actor="test"),
            "operator": store.create(role="operator", actor="test"),
            "admin": store.create(role="admin", actor="test"),
            "scoped": store.create(role="viewer", models=["other"], budget=100, actor="test"),
            "client": store.create(role="client", actor="test"),
        }
        reg.audit.append(
            "gateway.alert",
            "clf",
            {"source": "extraction", "signal": "queries", "severity": "high", "model": "clf"},
            actor="dlsec-gateway",
        )
        incidents = IncidentStore(reg.db, reg.audit)
        incident = incidents.open_or_join(
            "extraction",
            "apikey:feedbeef0000",
            {"signal": "queries", "ts": "x"},
            model="clf",
            severity="high",
            actor="dlsec-responder",
        )
        incidents.record_action(
            incident, "revoke_key", "done", "revoked feedbeef0000", None, actor="dlsec-responder"
        )
    finally:
        reg.close()
    return World(home, {k: v[0] for k, v in made.items()}, {k: v[1].id for k, v in made.items()}, incident)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: TestClient, key: str) -> str:
    """Log in with ``key``; return the session's CSRF token."""
    page = client.get("/login")
    assert page.status_code == 200
    done = client.post("/login", data={"csrf": csrf_of(page.text), "key": key, "next": "/"})
    assert done.status_code == 200 and "Models" in done.text, done.text
    return csrf_of(done.text)


@pytest.fixture
def app(world: World):  # type: ignore[no-untyped-def]
    registry = Registry.open(home=world.home)
    yield create_dashboard(registry=registry)
    registry.close()


@pytest.fixture
def client(app) -> TestClient:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c
