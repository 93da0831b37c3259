"""Playbooks: matching, idempotent actions, dry runs, the CLI, and an incident end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from dlsec.attacks import PGD
from dlsec.core.loading import load_model
from dlsec.errors import UsageError
from dlsec.respond import Responder, load_playbook
from dlsec.serve import create_app
from dlsec.store import IncidentStore, Registry
from tests.cli.test_cli import assert_user_error, run, run_json
from tests.serve.conftest import auth


def make_gateway(home: Path, **overrides: object):
    """The gateway with its playbook subscribed, as ``dlsec serve`` builds it."""
    from dlsec.respond import build_gateway
    from dlsec.serve import GatewayConfig

    settings = {"models": ["clf"], "refresh_seconds": 0, "detector_process": False, **overrides}
    return build_gateway(GatewayConfig.model_validate(settings), home=home)


PLAYBOOK = """\
rules:
  - name: drift
    when: {source: monitor, min_severity: high}
    actions: [snapshot, quarantine, rollback]
  - name: extraction
    when: {source: extraction, signal: [volume, prada], min_severity: high}
    actions: [snapshot, revoke_key]
"""


def _playbook(tmp_path: Path, text: str = PLAYBOOK):
    path = tmp_path / "respond.yaml"
    path.write_text(text)
    return path


def test_playbook_errors_name_the_line_and_field(tmp_path, capsys):
    cases = [
        ("rules: []\n", "respond.yaml:1: rules"),
        ("rules:\n  - name: x\n    actions: [explode]\n", "respond.yaml:3: rules.0.actions.0"),
        ("rules:\n  - name: x\n    actions: [webhook]\n", "webhook action needs url"),
        (
            "rules:\n  - name: x\n    when: {min_severity: urgent}\n    actions: [snapshot]\n",
            "respond.yaml:3",
        ),
        ("rules:\n  - name: x\n    actions: [snapshot, snapshot]\n", "listed twice"),
    ]
    for text, fragment in cases:
        with pytest.raises(UsageError, match=fragment.replace(".", r"\.")):
            load_playbook(_playbook(tmp_path, text))
    alert = tmp_path / "alert.json"
    alert.write_text("{}")
    code, _, err = run(capsys, "--home", str(tmp_path), "incident", "plan", "--playbook",
                       str(_playbook(tmp_path, "rules: []\n")), "--alert", str(alert))  # fmt: skip
    assert_user_error(code, err, "respond.yaml:1")


def test_actions_run_once_per_incident_and_the_dry_run_changes_nothing(home, keys, tmp_path, capsys):
    reg = Registry.open(home=home)
    responder = Responder(load_playbook(_playbook(tmp_path)), reg)
    alert = {"source": "monitor", "signal": "input drift", "severity": "critical", "model": "clf",
             "subject": "model:clf"}  # fmt: skip
    size = reg.audit.size()
    plan = responder.plan(alert)
    assert plan == [
        {
            "rule": "drift",
            "incident": "new",
            "actions": [
                {
                    "action": "snapshot",
                    "would": "record the alert, recent queries and the serving version's hash",
                },
                {"action": "quarantine", "would": "quarantine clf@2 (production)"},
                {"action": "rollback", "would": "roll back from clf@2 (production)"},
            ],
        }
    ]
    assert reg.audit.size() == size and reg.get("clf").version == 2  # nothing happened
    (incident,) = responder.handle(alert)
    assert [a["status"] for a in incident.actions] == ["done", "done", "done"]
    assert incident.evidence["snapshot"]["serving"]["version"] == 2
    assert reg.get("clf").version == 1 and reg.get("clf@2").status == "quarantined"
    again = responder.handle({**alert, "statistic": 0.9})  # the same incident: joins, repeats nothing
    assert again[0].id == incident.id and len(again[0].alerts) == 2 and len(again[0].actions) == 3
    assert reg.get("clf").version == 1
    steps = [e.action for e in reg.audit.entries()][size:]
    assert steps == ["incident.open", "respond.snapshot", "registry.quarantine", "respond.quarantine",
                     "registry.rollback", "respond.rollback"]  # fmt: skip
    low = {**alert, "severity": "medium"}
    assert responder.plan(low) == [] and responder.handle(low) == []
    assert responder.plan(alert)[0]["incident"] == incident.id
    listed = run_json(capsys, "--home", str(home), "incident", "list")
    assert [i["id"] for i in listed] == [incident.id]
    resolved = run_json(capsys, "--home", str(home), "incident", "resolve", str(incident.id), "--note", "ok")
    assert resolved["status"] == "resolved" and IncidentStore(reg.db).list(status="open") == []
    assert reg.audit.verify().ok
    reg.close()


def test_extraction_alert_revokes_the_key(home, keys, tmp_path):
    reg = Registry.open(home=home)
    responder = Responder(load_playbook(_playbook(tmp_path)), reg)
    key_id = keys["client"].split("_")[1]
    alert = {"source": "extraction", "signal": "prada", "severity": "critical", "subject": f"apikey:{key_id}",
             "key_id": key_id}  # fmt: skip
    (incident,) = responder.handle(alert)
    assert [a["action"] for a in incident.actions] == ["snapshot", "revoke_key"]
    from dlsec.store._apikeys import KeyStore

    assert {k.id: k.revoked_at is not None for k in KeyStore(reg.db).all()}[key_id]
    reg.close()


def _monitored_gateway(home: Path, tmp_path: Path, rng: np.random.Generator, rows: int, rules: str):
    """The gateway with the drift playbook and a monitor.yaml of ``rules`` over random reference rows."""
    reference = tmp_path / "reference.npz"
    np.savez(reference, x=rng.random((rows, 4)).astype(np.float32), y=rng.integers(0, 3, rows))
    monitor = tmp_path / "monitor.yaml"
    monitor.write_text("window: 40\nert: 10000\nrules:\n" + rules)
    return make_gateway(
        home,
        monitor=str(monitor),
        monitor_reference=str(reference),
        playbook=str(_playbook(tmp_path)),
        extraction=None,
    )


def test_attack_traffic_triggers_an_incident_that_quarantines_and_rolls_back(home, keys, tmp_path):
    """The issue's end-to-end incident, through the gateway with monitoring and a playbook."""
    rng = np.random.default_rng(0)
    rules = "  - name: input drift\n    severity: high\n    detector: ks\n    params: {correction: fdr}\n"
    gateway = _monitored_gateway(home, tmp_path, rng, 4000, rules)
    served = load_model(str(home / "src" / "v2" / "model.safetensors"))
    natural = rng.random((80, 4)).astype(np.float32)
    # Attack traffic: targeted PGD pushing every input toward the class the model gives least often.
    pred = served.predict(natural)
    rare = int(torch.bincount(served.predict(rng.random((2000, 4)).astype(np.float32)), minlength=3).argmin())
    pgd = PGD(eps=0.5, steps=20, norm="linf", seed=0, targeted=True)
    attack = pgd(served, torch.from_numpy(natural), pred, target=torch.full_like(pred, rare))
    with TestClient(create_app(gateway)) as c:
        for i in range(0, 80, 20):
            r = c.post(
                "/v1/models/clf/predict",
                json={"inputs": natural[i : i + 20].tolist()},
                headers=auth(keys["client"]),
            )
            assert r.status_code == 200 and r.json()["version"] == 2
        gateway.drain()
        assert IncidentStore(gateway.db).list() == []  # natural traffic: no alarm
        x_adv = attack.x_adv.numpy()
        for i in range(0, 80, 20):
            c.post(
                "/v1/models/clf/predict",
                json={"inputs": x_adv[i : i + 20].tolist()},
                headers=auth(keys["client"]),
            )
        gateway.drain()
        (incident,) = IncidentStore(gateway.db).list()
        after = c.post(
            "/v1/models/clf/predict", json={"inputs": natural[:3].tolist()}, headers=auth(keys["client"])
        )
        alerts = c.get("/v1/alerts", headers=auth(keys["operator"])).json()
    assert incident.rule == "drift" and [a["status"] for a in incident.actions] == ["done", "done", "done"]
    assert after.status_code == 200 and after.json()["version"] == 1  # the previous version answers
    assert alerts and alerts[-1]["source"] == "monitor" and alerts[-1]["model"] == "clf"
    actions = [e.action for e in gateway.audit.entries()]
    i = actions.index("gateway.alert")
    assert actions[i:i + 7] == ["gateway.alert", "incident.open", "respond.snapshot", "registry.quarantine",
                               "respond.quarantine", "registry.rollback", "respond.rollback"]  # fmt: skip
    assert gateway.audit.verify().ok


def test_a_monitor_detector_that_cannot_run_is_said_once_and_opens_no_incident(home, keys, tmp_path):
    """Served traffic has no true labels: the performance rule cannot run; the gateway says so."""
    rng = np.random.default_rng(1)
    rules = (
        "  - {name: input drift, severity: high, detector: ks}\n"
        "  - {name: accuracy, severity: high, detector: performance}\n"
    )
    gateway = _monitored_gateway(home, tmp_path, rng, 2000, rules)
    natural = rng.random((60, 4)).astype(np.float32)
    with TestClient(create_app(gateway)) as c:
        for i in range(0, 60, 20):
            r = c.post(
                "/v1/models/clf/predict",
                json={"inputs": natural[i : i + 20].tolist()},
                headers=auth(keys["client"]),
            )
            assert r.status_code == 200
        gateway.drain()
        alerts = c.get("/v1/alerts", headers=auth(keys["operator"])).json()
    [status] = [a for a in alerts if a["source"] == "monitor-status"]
    assert status["signal"] == "not-run" and status["model"] == "clf" and status["severity"] == "low"
    assert [n["check"] for n in status["not_run"]] == ["performance"] and "label" in status["not_run"][0][
        "reason"
    ]
    assert IncidentStore(gateway.db).list() == []  # a playbook on `source: monitor` does not act on it


def test_webhooks_receive_alerts_and_incidents(home, keys, tmp_path):
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "body": _json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    playbook = _playbook(
        tmp_path,
        "rules:\n  - name: notify\n    when: {source: extraction}\n    actions: [webhook]\n"
        f"    url: {url}/incident\n",
    )
    gateway = make_gateway(
        home,
        webhook=f"{url}/alert",
        playbook=str(playbook),
        extraction={"volume": {"max_queries": 5, "window_seconds": 60, "action": "alert"}},
    )
    x = np.random.default_rng(0).random((4, 4)).tolist()
    with TestClient(create_app(gateway)) as c:
        for _ in range(3):
            assert (
                c.post("/v1/models/clf/predict", json={"inputs": x}, headers=auth(keys["client"])).status_code
                == 200
            )
        gateway.drain()
    server.shutdown()
    paths = [r["path"] for r in received]
    assert paths == ["/alert", "/incident"]
    assert received[0]["body"]["signal"] == "volume" and received[1]["body"]["rule"] == "notify"
    (incident,) = IncidentStore(gateway.db).list()
    assert incident.actions[0]["action"] == "webhook" and incident.actions[0]["status"] == "done"


def test_a_failing_action_is_not_retried_by_every_alert_of_a_storm(home, keys, tmp_path):
    reg = Registry.open(home=home)
    reg.quarantine("clf", 1, reason="bad")  # nothing good to roll back to
    responder = Responder(load_playbook(_playbook(tmp_path)), reg)
    alert = {
        "source": "monitor",
        "signal": "input drift",
        "severity": "high",
        "model": "clf",
        "subject": "model:clf",
    }
    for i in range(5):
        (incident,) = responder.handle({**alert, "n": i})
    statuses = [(a["action"], a["status"]) for a in incident.actions]
    assert statuses == [("snapshot", "done"), ("quarantine", "done"), ("rollback", "failed")]
    assert len(incident.alerts) == 5
    reg.close()
