"""The dashboard in real headless Chromium, served beside a real gateway in one app: log in with a key, see a
model, open its report, compare two versions, quarantine as an operator (the gateway then serves the
rolled-back version), be refused as a viewer, verify the audit log. A screenshot of each page is
saved (``$DLSEC_SCREENSHOT_DIR``, else the test's tmp dir) and the console stays free of errors."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dlsec.release import generate_signing_keys
from dlsec.serve import Gateway, GatewayConfig, create_app
from dlsec.store import KeyStore, Registry
from dlsec.ui import beside, create_dashboard
from tests._needs import missing, need_module
from tests.assess.test_browser import CHROMIUM_ARGS, _chromium
from tests.release.test_registry import PASS, _signed_model
from tests.ui.conftest import report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The gateway serving clf@production with the dashboard mounted at /ui, on a loopback port."""
    uvicorn = need_module("uvicorn", "pip install -e .")
    home = tmp_path / "home"
    generate_signing_keys(home / "keys", passphrase=PASS, scrypt_log_n=10)
    reg = Registry.open(home=home)
    try:
        for version, (clean, curve) in enumerate([(0.9, [0.8, 0.6, 0.2]), (0.95, [0.85, 0.7, 0.4])], 1):
            path = tmp_path / f"r{version}.json"
            path.write_text(json.dumps(report(clean, curve)))
            parent = f"clf@{version - 1}" if version > 1 else None
            reg.add(
                _signed_model(home, f"v{version}", version),
                "clf",
                report=path,
                parent=parent,
                data_sha256=f"{version}" * 64,
                training_config={"recipe": "standard", "seed": version},
            )
            reg.promote("clf", version)
        store = KeyStore(reg.db)
        keys = {role: store.create(role=role, actor="test")[0] for role in ("client", "viewer", "operator")}
    finally:
        reg.close()
    gateway = Gateway(GatewayConfig(models=["clf"], refresh_seconds=0, detector_process=False), home=home)
    app = beside(create_app(gateway), create_dashboard(registry=gateway.registry))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the gateway did not start")
        time.sleep(0.05)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "keys": keys, "home": home}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _serving(served: dict[str, Any]) -> Any:
    answer = httpx.get(f"{served['url']}/v1/models/clf", headers={"X-API-Key": served["keys"]["client"]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_dashboard_in_chromium_end_to_end(served: dict[str, Any], tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        missing("chromium is not installed (`make test` installs Debian's chromium package)")
    sync_api = need_module("playwright.sync_api", "pip install -e .[dev]")
    shots = Path(os.environ.get("DLSEC_SCREENSHOT_DIR", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    ui, keys = served["url"] + "/ui", served["keys"]
    assert _serving(served)["version"] == 2
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        def log_in(key: str) -> None:
            page.goto(f"{ui}/login")
            page.fill("#key", key)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert page.url == f"{ui}/", (page.url, page.content()[:3000], errors)

        # Log in as an operator, see the model.
        page.goto(f"{ui}/")
        assert page.url.startswith(f"{ui}/login")
        shot("01-login")
        log_in(keys["operator"])
        assert page.locator("#models a", has_text="clf").count() == 1
        shot("02-models")
        page.click("#models a:text-is('clf')")
        assert page.locator("#versions tbody tr").count() == 2
        shot("03-model")
        page.click("#version-2 a:text-is('clf@2')")
        assert page.locator("svg.graph .node").count() >= 5
        shot("04-version-lineage")

        # Its report, embedded, then the comparison with version 1.
        page.click("#lineage svg a[href$='/report']")
        frame = page.frame_locator("iframe.report")
        assert frame.locator("#robustness").count() == 1
        assert frame.locator("svg.chart").count() >= 2
        shot("05-report")
        page.select_option("#compare-form select[name=a]", "1")
        page.click("#compare-form button")
        assert page.locator("svg.chart polyline.series").count() == 2
        assert page.locator("table.side tbody tr").count() == 4
        shot("06-compare")
        page.emulate_media(media="print")  # the print stylesheet: no navigation, no forms, the data
        assert page.locator("header.top").is_hidden() and page.locator("form").first.is_hidden()
        assert page.locator("table.side").is_visible() and page.locator("svg.chart").is_visible()
        shot("06b-compare-print")
        page.emulate_media(media="screen")

        # Quarantine version 2 as the operator: the gateway then serves version 1.
        page.goto(f"{ui}/models/clf")
        page.fill("#version-2 input[name=reason]", "suspected poisoning")
        page.click("#version-2 button.danger")
        assert "production now points at clf@1" in page.locator("#done").inner_text()
        shot("07-quarantined")
        now = _serving(served)
        assert (now["version"], now["status"]) == (1, "serving")
        predicted = httpx.post(
            f"{served['url']}/v1/models/clf/predict",
            headers={"X-API-Key": keys["client"]},
            json={"inputs": [[0.1, 0.2, 0.3, 0.4]]},
        )
        assert predicted.status_code == 200 and predicted.json()["version"] == 1

        # A viewer: no controls, and a forged POST with its own valid CSRF token is refused.
        page.click("header .who button")
        page.wait_for_url(re.compile(r".*/ui/login.*"))
        log_in(keys["viewer"])
        page.goto(f"{ui}/models/clf")
        assert page.locator("button.danger").count() == 0 and page.locator("#aliases form").count() == 0
        shot("08-viewer-model")
        token = page.locator("header .who input[name=csrf]").get_attribute("value")
        refused = page.request.post(
            f"{ui}/models/clf/1/quarantine", form={"csrf": token or "", "reason": "x"}
        )
        assert refused.status == 403 and "needs operator" in refused.text()
        assert _serving(served)["version"] == 1

        # Verify the audit log, then one entry's inclusion proof.
        page.goto(f"{ui}/audit")
        page.click("#verify")
        root = page.locator("#root").inner_text()
        assert "Verified" in page.locator("#verification").inner_text()
        shot("09-audit-verified")
        page.click("#entries tbody tr:first-child a")
        assert "verifies" in page.locator("#proof-verdict").inner_text()
        shot("10-proof")
        browser.close()
    registry = Registry.open(home=served["home"])
    try:
        verified = registry.audit.verify()
        actions = [(e.action, e.actor) for e in registry.audit.entries()]
    finally:
        registry.close()
    assert verified.ok and root == verified.root
    operator_id = keys["operator"].split("_")[1]
    assert ("registry.quarantine", f"apikey:{operator_id}") in actions
    assert ("registry.rollback", f"apikey:{operator_id}") in actions
    assert errors == []
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) == 11 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
