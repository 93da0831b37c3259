"""report.html rendered in real headless Chromium: charts and gallery present, no console errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dlsec.cli import main
from tests._needs import missing, need_module

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--examples", "24", "--json"]) == 0
    return out / "report.html"


def test_report_renders_in_chromium(demo_report, tmp_path):
    exe = _chromium()
    if exe is None:
        missing("chromium is not installed (`make test` installs Debian's chromium package)")
    sync_api = need_module("playwright.sync_api", "pip install -e .[dev]")
    errors: list[str] = []
    screenshot = Path(os.environ.get("DLSEC_SCREENSHOT", tmp_path / "report.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(demo_report.as_uri())
        charts = page.locator("svg.chart").count()
        series = page.locator("#robustness polyline.series").count()
        gallery = page.locator("#gallery img").count()
        decoded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        sections = [
            page.locator(f"#{s}").count() for s in ("summary", "findings", "certification", "corruptions")
        ]
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert errors == []
    assert charts >= 5  # per class, two robustness curves, corruptions, certification
    assert series >= 4 and gallery >= 16 and decoded
    assert sections == [1, 1, 1, 1]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
