"""Each page renders the registry's real data; the audit page's root is the audit log's own."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dlsec.cli import main
from dlsec.store import Registry
from dlsec.ui import create_dashboard
from tests.ui.conftest import World, csrf_of, login

PAGES = [
    # path, what the page must show (from the data the fixture registered)
    ("/", ["clf", "other", "production &rarr; 2"]),
    ("/models/clf", ["clf@1", "clf@2", "robust-linf: pass", "promote", "signed"]),
    ("/models/clf/2", ["e" * 64, "pgd-at", "clf@1", "assessment report", "registry.promote", "safe"]),
    ("/models/clf/2/report", ['<iframe class="report" sandbox', "/models/clf/2/report.html"]),
    ("/models/clf/2/report.html", ["Evasion robustness", "0.7000"]),
    ("/compare?model=clf&a=1&b=2", ["clf@1", "clf@2", '<polyline class="series series-a"', "+0.1000"]),
    ("/audit", ["registry.add", "keys.create", "ui.login"]),
    (
        "/incidents",
        ["extraction", "queries", "apikey:feedbeef0000", '<meta http-equiv="refresh" content="30">'],
    ),
    ("/incidents/{incident}", ["opened by rule extraction", "revoke_key: revoked feedbeef0000"]),
]


@pytest.mark.parametrize("path, shows", PAGES, ids=[p for p, _ in PAGES])
def test_each_page_renders_registry_data(
    client: TestClient, world: World, path: str, shows: list[str]
) -> None:
    login(client, world.keys["viewer"])
    page = client.get(path.format(incident=world.incident))
    assert page.status_code == 200, page.text
    for text in shows:
        assert text in page.text, f"{path} does not show {text!r}"


def test_the_lineage_graph_links_parent_report_and_child(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    v1 = client.get("/models/clf/1").text
    graph = v1[v1.index("<svg") : v1.index("</svg>")]
    assert 'href="/models/clf/2"' in graph  # v2 names clf@1 as its parent: a child node
    assert 'href="/models/clf/1/report"' in graph and "gates passed" in graph
    v2 = client.get("/models/clf/2").text
    assert 'href="/models/clf/1"' in v2[v2.index("<svg") : v2.index("</svg>")]  # the parent
    assert "Ancestors: <code>clf@1</code>" in v2


def test_the_comparison_puts_both_versions_side_by_side(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    page = client.get("/compare", params={"model": "clf", "a": 1, "b": 2}).text
    rows = re.findall(r"<tr><td>([0-9.]+)(?: \(clean\))?</td>\s*<td>([0-9.-]+)</td><td>([0-9.-]+)</td>", page)
    assert rows == [
        ("0", "0.9000", "0.9500"),
        ("0.01", "0.8000", "0.8500"),
        ("0.03", "0.6000", "0.7000"),
        ("0.1", "0.2000", "0.4000"),
    ]
    # One version without a report: named, and its column is empty rather than invented.
    page = client.get("/compare", params={"model": "other", "a": 1, "b": 1}).text
    assert "other@1 has no recorded assessment report" in page


def test_audit_verify_shows_the_audit_logs_own_root(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    page = client.get("/audit/verify")
    assert page.status_code == 200
    shown = re.search(r'<code id="root">([0-9a-f]{64})</code>', page.text)
    registry = Registry.open(home=world.home)
    try:
        result = registry.audit.verify()
        proof = registry.audit.inclusion_proof(2)
    finally:
        registry.close()
    assert result.ok and shown is not None and shown.group(1) == result.root
    assert "Verified" in page.text and f"<td>{result.size}</td>" in page.text
    page = client.get("/audit/proof", params={"index": 2}).text
    assert f'<code id="proof-root">{proof["root"]}</code>' in page
    assert proof["verified"] and "The proof verifies" in page
    for step in proof["proof"]:
        assert step in page


def test_a_tampered_report_is_refused_not_shown(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    registry = Registry.open(home=world.home)
    try:
        digest = registry.get("clf@2").lineage["report_sha256"]
        stored = registry.db.root / "reports" / f"{digest}.json"
    finally:
        registry.close()
    stored.chmod(0o644)
    stored.write_text(stored.read_text().replace("0.95", "0.99"))
    for path in ("/models/clf/2/report", "/models/clf/2/report.html", "/compare?model=clf&a=1&b=2"):
        page = client.get(path)
        assert page.status_code == 400 and "was altered" in page.text, path


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/models/nothing", 404, "no model &#39;nothing&#39; in the registry"),
        ("/models/clf/9", 400, "clf: no version 9"),
        ("/models/clf/x", 400, "path.version"),
        ("/audit/proof?index=999", 400, "entry 999 is not covered"),
        ("/incidents/77", 400, "no incident 77"),
    ],
)
def test_bad_input_is_a_one_line_error_page(
    client: TestClient, world: World, path: str, status: int, message: str
) -> None:
    login(client, world.keys["viewer"])
    page = client.get(path)
    assert page.status_code == status
    error = re.search(r'<p class="error" id="error">(.*)</p>', page.text)
    assert error is not None and message in error.group(1) and "\n" not in error.group(1)


def test_mounted_beside_another_app_every_link_keeps_the_prefix(world: World) -> None:
    registry = Registry.open(home=world.home)
    outer = FastAPI()
    outer.mount("/ui", create_dashboard(registry=registry))
    try:
        with TestClient(outer) as client:
            assert client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login?next=/"
            page = client.get("/ui/login")
            assert "dlsec_ui_login" in page.headers["set-cookie"] and "Path=/ui" in page.headers["set-cookie"]
            done = client.post("/ui/login", data={"csrf": csrf_of(page.text), "key": world.keys["viewer"]})
            assert done.status_code == 200 and str(done.url).endswith("/ui/")
            hrefs = re.findall(r'href="([^"]+)"', done.text)
            assert hrefs and all(h.startswith("/ui/") for h in hrefs), hrefs
            assert client.get("/ui/models/clf").status_code == 200
    finally:
        registry.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ui", "--port", "0"], "--port 0"),
        (["ui", "--ssl-certfile", "cert.pem"], "go together"),
        (["ui", "--ssl-certfile", "nope.pem", "--ssl-keyfile", "nope.key"], "nope.pem: no such file"),
    ],
)
def test_dlsec_ui_bad_options_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_beside_routes_the_prefix_to_the_dashboard_and_the_rest_to_the_other_app(app) -> None:
    from dlsec.errors import UsageError
    from dlsec.ui import beside

    other = FastAPI()

    @other.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    with TestClient(beside(other, app)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        page = client.get("/ui/login")
        assert page.status_code == 200 and 'action="/ui/login"' in page.text
        assert "content-security-policy" not in client.get("/healthz").headers  # each keeps its own
    for bad in ("ui", "/", "/ui/"):
        with pytest.raises(UsageError, match="bad prefix"):
            beside(other, app, prefix=bad)
