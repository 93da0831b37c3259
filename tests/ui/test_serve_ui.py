"""`dlsec serve --ui`: each worker builds the gateway with the dashboard beside it from the
environment, and the session secret the command sets is honoured by every worker."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dlsec.serve import GatewayConfig
from dlsec.ui.app import gateway_with_dashboard_from_env
from tests.ui.conftest import World, csrf_of


def _worker(world: World, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("DLSEC_HOME", str(world.home))
    cfg = GatewayConfig(models=["clf"], refresh_seconds=0, detector_process=False)
    monkeypatch.setenv("DLSEC_GATEWAY_CONFIG", cfg.model_dump_json())
    monkeypatch.setenv("DLSEC_UI_SECRET", "ab" * 32)
    return TestClient(gateway_with_dashboard_from_env())


def test_two_workers_share_the_gateway_and_the_dashboard_sessions(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _worker(world, monkeypatch) as first, _worker(world, monkeypatch) as second:
        served = first.get("/v1/models/clf", headers={"X-API-Key": world.keys["operator"]})
        assert served.status_code == 200 and served.json()["version"] == 2  # the gateway answers
        token = csrf_of(first.get("/ui/login").text)
        done = first.post(
            "/ui/login", data={"key": world.keys["viewer"], "csrf": token}, follow_redirects=False
        )
        assert done.status_code == 303
        cookie = {"dlsec_ui_session": done.cookies["dlsec_ui_session"]}
        page = second.get("/ui/models/clf", cookies=cookie)  # another worker, the same secret
        assert page.status_code == 200 and "clf" in page.text and "/ui/login" not in str(page.url)
