"""Who may do what: sessions from API keys, roles, CSRF, the security headers, audited actions."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from dlsec.store import Entry, IncidentStore, KeyStore, Registry, authenticate
from dlsec.ui.app import CSP, REPORT_CSP
from tests.ui.conftest import World, csrf_of, login


def _state(world: World) -> dict[str, object]:
    """Everything a refused action must leave untouched."""
    registry = Registry.open(home=world.home)
    try:
        keys = KeyStore(registry.db).all()
        return {
            "clf@2": registry.get("clf@2").status,
            "aliases": registry.aliases("clf"),
            "keys": sorted((k.id, k.revoked_at) for k in keys),
            "incidents": [i.status for i in IncidentStore(registry.db, registry.audit).list()],
            "audit": [(e.action, e.subject) for e in registry.audit.entries() if e.action != "ui.login"],
        }
    finally:
        registry.close()


ACTIONS = [
    # (name, path, fields, the least role that may)
    ("quarantine", "/models/clf/2/quarantine", {"reason": "test"}, "operator"),
    ("rollback", "/models/clf/rollback", {"alias": "production"}, "operator"),
    ("resolve", "/incidents/{incident}/resolve", {"note": "done"}, "operator"),
    ("create-key", "/keys", {"role": "admin"}, "admin"),
    ("revoke-key", "/keys/{admin_id}/revoke", {}, "admin"),
]
REFUSED = [
    (who, name, path, fields)
    for name, path, fields, least in ACTIONS
    for who in ("viewer", "operator")
    if (who, least) in (("viewer", "operator"), ("viewer", "admin"), ("operator", "admin"))
]


@pytest.mark.parametrize("who, name, path, fields", REFUSED, ids=[f"{w}-{n}" for w, n, _, _ in REFUSED])
def test_a_role_below_the_action_gets_403_and_nothing_changes(
    client: TestClient, world: World, who: str, name: str, path: str, fields: dict[str, str]
) -> None:
    csrf = login(client, world.keys[who])
    before = _state(world)
    url = path.format(incident=world.incident, admin_id=world.key_ids["admin"])
    answer = client.post(url, data={"csrf": csrf, **fields})
    assert answer.status_code == 403, answer.text
    assert "may not do this" in answer.text  # refused for the role, not for the token
    assert "dlsec_" not in answer.text.replace("dlsec_ui", "")  # no secret in a refusal
    assert _state(world) == before


def test_a_viewer_sees_no_action_form_and_no_keys_page(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    page = client.get("/models/clf").text
    assert "Quarantine" not in page and "Roll back" not in page
    assert client.get("/keys").status_code == 403
    assert "/keys" not in client.get("/").text


@pytest.mark.parametrize("token", ["", "wrong", "other-session"])
def test_a_post_without_the_sessions_csrf_token_is_refused(app, world: World, token: str) -> None:
    with TestClient(app) as other:
        other_csrf = login(other, world.keys["operator"])
    with TestClient(app) as client:
        mine = login(client, world.keys["operator"])
        before = _state(world)
        sent = {"": None, "wrong": mine[:-4] + "0000", "other-session": other_csrf}[token]
        data = {"reason": "x"} if sent is None else {"reason": "x", "csrf": sent}
        answer = client.post("/models/clf/2/quarantine", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
        assert _state(world) == before


def test_login_needs_its_csrf_token_and_a_valid_key(client: TestClient, world: World) -> None:
    page = client.get("/login")
    token = csrf_of(page.text)
    assert client.post("/login", data={"key": world.keys["viewer"]}).status_code == 403
    assert client.post("/login", data={"key": world.keys["viewer"], "csrf": "x" * 64}).status_code == 403
    for bad in ("", "dlsec_000000000000_" + "a" * 43, world.keys["viewer"][:-2] + "zz"):
        answer = client.post("/login", data={"key": bad, "csrf": token})
        assert answer.status_code == 401 and "unknown, malformed or revoked API key" in answer.text
        token = csrf_of(answer.text)
    assert SESSION not in client.cookies
    # The form never echoes the key back.
    assert world.keys["viewer"] not in answer.text


def test_a_client_key_cannot_open_the_dashboard(client: TestClient, world: World) -> None:
    """A client key predicts; the fleet's state (audit log, incidents, keys) is for viewers and up."""
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"key": world.keys["client"], "csrf": token})
    assert answer.status_code == 403 and "a client key cannot open the dashboard" in answer.text
    assert SESSION not in client.cookies
    registry = Registry.open(home=world.home)
    try:
        refused = [e for e in registry.audit.entries() if e.action == "ui.login-refused"]
    finally:
        registry.close()
    assert [e.subject for e in refused] == [f"apikey:{world.key_ids['client']}"]


SESSION = "dlsec_ui_session"


def test_pages_need_a_session_and_a_revoked_key_ends_it(client: TestClient, world: World) -> None:
    answer = client.get("/audit?page=2", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/audit"
    assert client.post("/models/clf/2/quarantine", data={"reason": "x"}).status_code == 403
    login(client, world.keys["viewer"])
    assert client.get("/audit").status_code == 200
    registry = Registry.open(home=world.home)
    try:
        KeyStore(registry.db).revoke(world.key_ids["viewer"], actor="test")
    finally:
        registry.close()
    assert client.get("/audit", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(client: TestClient, world: World) -> None:
    csrf = login(client, world.keys["viewer"])
    cookie = client.cookies[SESSION]
    assert client.post("/logout", data={"csrf": csrf}).status_code == 200
    client.cookies.set(SESSION, cookie)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_forged_or_edited_session_cookie_is_refused(client: TestClient, world: World) -> None:
    login(client, world.keys["viewer"])
    key_id, expires, nonce, mac = client.cookies[SESSION].split(".")
    for forged in (
        f"{world.key_ids['admin']}.{expires}.{nonce}.{mac}",  # someone else's key
        f"{key_id}.{int(expires) + 10**6}.{nonce}.{mac}",  # a longer life
        f"{key_id}.{expires}.{nonce}.{'0' * 64}",
        "garbage",
    ):
        client.cookies.set(SESSION, forged)
        assert client.get("/", follow_redirects=False).status_code == 303, forged


def test_security_headers_and_cookie_flags(client: TestClient, world: World) -> None:
    page = client.get("/login")
    assert page.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "script-src 'none'" in CSP and "frame-ancestors 'none'" in CSP
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http
    login(client, world.keys["viewer"])
    for path in ("/", "/static/dashboard.css", "/models/nothing"):
        assert client.get(path).headers["content-security-policy"] == CSP, path
    assert "<script" not in client.get("/models/clf").text and "style=" not in client.get("/models/clf").text
    report = client.get("/models/clf/2/report.html")
    assert report.headers["content-security-policy"] == REPORT_CSP and "sandbox" in REPORT_CSP
    assert report.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<script" not in report.text


def test_over_https_the_cookies_are_secure(app, world: World) -> None:
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/login")
        assert "Secure" in page.headers["set-cookie"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
        done = client.post(
            "/login",
            data={"csrf": csrf_of(page.text), "key": world.keys["viewer"]},
            follow_redirects=False,
        )
        session = [c for c in done.headers.get_list("set-cookie") if c.startswith(SESSION)]
        assert session and "Secure" in session[0] and "HttpOnly" in session[0]


def _audit(world: World, action: str) -> list[Entry]:
    registry = Registry.open(home=world.home)
    try:
        return [e for e in registry.audit.entries() if e.action == action]
    finally:
        registry.close()


def test_quarantine_as_operator_serves_the_rolled_back_version_and_is_audited(
    client: TestClient, world: World
) -> None:
    csrf = login(client, world.keys["operator"])
    answer = client.post("/models/clf/2/quarantine", data={"csrf": csrf, "reason": "poisoned data"})
    assert answer.status_code == 200, answer.text
    assert "production now points at clf@1" in answer.text
    registry = Registry.open(home=world.home)
    try:
        assert registry.get("clf@2").status == "quarantined"
        assert registry.get("clf@production").version == 1
        version, status, _ = registry.serving("clf", "production") or (None, None, None)
        assert (version, status) == (1, "registered")  # what the gateway's refresh serves
    finally:
        registry.close()
    actor = f"apikey:{world.key_ids['operator']}"
    (quarantined,) = _audit(world, "registry.quarantine")
    assert quarantined.actor == actor and quarantined.subject == "clf@2"
    assert quarantined.details["reason"] == "poisoned data"
    (rolled,) = _audit(world, "registry.rollback")
    assert rolled.actor == actor and rolled.details["from"] == 2 and rolled.details["to"] == 1
    page = client.get("/models/clf").text
    assert "status-quarantined" in page and "poisoned data" in page


def test_rollback_and_resolve_as_operator_are_audited(client: TestClient, world: World) -> None:
    csrf = login(client, world.keys["operator"])
    answer = client.post("/models/clf/rollback", data={"csrf": csrf, "alias": "production"})
    assert answer.status_code == 200 and "moved from version 2 to 1" in answer.text
    answer = client.post(f"/incidents/{world.incident}/resolve", data={"csrf": csrf, "note": "key revoked"})
    assert answer.status_code == 200
    actor = f"apikey:{world.key_ids['operator']}"
    assert [e.actor for e in _audit(world, "registry.rollback")] == [actor]
    (resolved,) = _audit(world, "incident.resolve")
    assert resolved.actor == actor and resolved.details == {"note": "key revoked"}
    # A roll-back with nothing earlier to go to is a one-line refusal, not a crash.
    answer = client.post("/models/other/rollback", data={"csrf": csrf, "alias": "production"})
    assert answer.status_code == 400 and "no alias" in answer.text


def test_an_admin_creates_a_key_sees_its_secret_once_and_revokes_it(client: TestClient, world: World) -> None:
    csrf = login(client, world.keys["admin"])
    answer = client.post(
        "/keys", data={"csrf": csrf, "role": "client", "models": "clf", "budget": "50", "note": "ci"}
    )
    assert answer.status_code == 200
    secret = re.search(r'<code class="secret" id="secret">(dlsec_[0-9a-f]{12}_[^<]+)</code>', answer.text)
    assert secret is not None
    registry = Registry.open(home=world.home)
    try:
        records = {k.id: k for k in KeyStore(registry.db).all()}
    finally:
        registry.close()
    made = authenticate(records, secret.group(1))
    assert made is not None and made.role == "client" and made.models == ("clf",) and made.budget == 50
    listing = client.get("/keys").text
    assert made.id in listing and secret.group(1) not in listing and "0 / 50" in listing
    (created,) = [e for e in _audit(world, "keys.create") if e.subject == f"apikey:{made.id}"]
    assert created.actor == f"apikey:{world.key_ids['admin']}"
    assert secret.group(1).split("_")[2] not in str(created.details)
    answer = client.post(f"/keys/{made.id}/revoke", data={"csrf": csrf})
    assert answer.status_code == 200 and "is revoked" in answer.text
    (revoked,) = _audit(world, "keys.revoke")
    assert revoked.subject == f"apikey:{made.id}" and revoked.actor == f"apikey:{world.key_ids['admin']}"
    bad = client.post("/keys", data={"csrf": csrf, "role": "root"})
    assert bad.status_code == 400 and "bad role" in bad.text


def test_a_scoped_viewer_sees_only_its_models(client: TestClient, world: World) -> None:
    login(client, world.keys["scoped"])
    page = client.get("/").text
    assert 'href="/models/other"' in page and 'href="/models/clf"' not in page
    for path in ("/models/clf", "/models/clf/2", "/models/clf/2/report.html", "/compare?model=clf&a=1&b=2"):
        assert client.get(path).status_code == 403, path


@pytest.mark.parametrize(
    "target, lands",
    [
        ("/models/clf", "/models/clf"),
        ("//evil.example/x", "/"),
        ("/\t/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
    ],
)
def test_after_login_only_a_local_path_is_followed(
    client: TestClient, world: World, target: str, lands: str
) -> None:
    page = client.get("/login", params={"next": target})
    done = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "key": world.keys["viewer"], "next": target},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == lands
