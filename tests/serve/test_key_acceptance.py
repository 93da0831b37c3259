"""Whether a presented API key is accepted, and with which role: known answers (issue 28).

``authenticate`` is checked against records whose hash is computed here from the documented
format (``SHA-256(salt || secret)``, hex); ``current_key`` and the role checks are run on a
request built by hand over a stand-in gateway, so that which header is read, when the key table
is refreshed and what a refusal says are pinned without a server.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from dlsec.serve._middleware import ApiError
from dlsec.serve.auth import _requires, current_key, require_admin, require_client, require_operator
from dlsec.store import ROLES, ApiKey, authenticate
from dlsec.store._apikeys import OutputPolicy

KEY_ID = "0123456789ab"
SALT = "00112233445566778899aabbccddeeff"
SECRET = "Zz09_-" + "a" * 37  # 43 characters, like secrets.token_urlsafe(32)


def digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("ascii")).hexdigest()


def record(
    role: str = "client", *, key_id: str = KEY_ID, secret: str = SECRET, revoked: str | None = None
) -> ApiKey:
    return ApiKey(
        id=key_id,
        role=role,
        models=None,
        rate=None,
        budget=None,
        used=0,
        output=OutputPolicy("full"),
        note=None,
        created_at="2026-01-01T00:00:00Z",
        created_by="test",
        revoked_at=revoked,
        salt=SALT,
        hash=digest(SALT, secret),
    )


def test_the_key_its_record_was_made_for_is_accepted() -> None:
    rec = record()
    keys = {KEY_ID: rec}
    assert authenticate(keys, f"dlsec_{KEY_ID}_{SECRET}") is rec
    assert authenticate(keys, f"  dlsec_{KEY_ID}_{SECRET}\n") is rec  # surrounding blanks are ignored


def test_the_secret_length_bounds_are_20_and_100_characters() -> None:
    for secret in ("A" * 20, "A" * 100):
        assert authenticate({KEY_ID: record(secret=secret)}, f"dlsec_{KEY_ID}_{secret}") is not None
    for secret in ("A" * 19, "A" * 101):
        assert authenticate({KEY_ID: record(secret=secret)}, f"dlsec_{KEY_ID}_{secret}") is None


@pytest.mark.parametrize(
    "presented",
    [
        None,
        "",
        f"dlsec_{KEY_ID}_{SECRET[:-1]}",  # wrong secret
        f"dlsec_{KEY_ID}_{SECRET}x",
        f"dlsec_{KEY_ID.upper()}_{SECRET}",  # the id is lower-case hex
        f"dlsec_{KEY_ID[:-1]}_{SECRET}",
        f"dlsec_{KEY_ID}0_{SECRET}",
        f"xdlsec_{KEY_ID}_{SECRET}",
        f"dlsec_{KEY_ID}_{SECRET}!",
        f"dlsec_{KEY_ID}_{SECRET}+",
        f"Dlsec_{KEY_ID}_{SECRET}",
        f"dlsec-{KEY_ID}_{SECRET}",
        f"dlsec_{KEY_ID}-{SECRET}",
        f"dlsec_{KEY_ID}_ {SECRET}",
        f"dlsec_ffffffffffff_{SECRET}",  # unknown id
        f"{KEY_ID}_{SECRET}",
        SECRET,
    ],
)
def test_anything_else_is_refused(presented: str | None) -> None:
    assert authenticate({KEY_ID: record()}, presented) is None


def test_a_revoked_key_is_refused_even_with_its_secret() -> None:
    rec = record(revoked="2026-01-02T00:00:00Z")
    assert authenticate({KEY_ID: rec}, f"dlsec_{KEY_ID}_{SECRET}") is None


def test_the_hash_is_of_salt_then_secret_not_the_other_way() -> None:
    swapped = replace(record(), hash=hashlib.sha256(SECRET.encode() + bytes.fromhex(SALT)).hexdigest())
    assert authenticate({KEY_ID: swapped}, f"dlsec_{KEY_ID}_{SECRET}") is None
    unsalted = replace(record(), hash=hashlib.sha256(SECRET.encode()).hexdigest())
    assert authenticate({KEY_ID: unsalted}, f"dlsec_{KEY_ID}_{SECRET}") is None


def test_the_record_is_looked_up_by_the_key_s_id() -> None:
    other = "abcdefabcdef"
    mine, theirs = record(), record(key_id=other, secret="B" * 43)
    keys = {KEY_ID: mine, other: theirs}
    assert authenticate(keys, f"dlsec_{other}_{'B' * 43}") is theirs
    assert authenticate(keys, f"dlsec_{other}_{SECRET}") is None
    assert authenticate(keys, f"dlsec_{KEY_ID}_{'B' * 43}") is None


@pytest.mark.parametrize("role", ROLES)
def test_each_role_includes_exactly_the_ones_below_it(role: str) -> None:
    rank = ROLES.index(role)
    assert [record(role).may(r) for r in ROLES] == [i <= rank for i in range(len(ROLES))]


def test_a_key_limited_to_some_models_may_use_only_those() -> None:
    assert record().may_use("anything")
    limited = replace(record(), models=("a", "b"))
    assert limited.may_use("a") and limited.may_use("b") and not limited.may_use("c")


# -- current_key and the role dependencies -------------------------------------------------------


class Gateway:
    """What ``current_key`` uses of a gateway, recording the calls."""

    def __init__(self, *, due: bool = False, inline: bool = True) -> None:
        self.due = due
        self.config = SimpleNamespace(inline_inference=inline)
        self.calls: list[Any] = []
        self.refresh_thread: int | None = None

    def refresh_due(self) -> bool:
        return self.due

    def refresh(self) -> None:
        self.calls.append("refresh")
        self.refresh_thread = threading.get_ident()

    def key(self, presented: str | None) -> ApiKey | None:
        self.calls.append(("key", presented))
        return authenticate({KEY_ID: record()}, presented)


def request(gateway: Gateway, **headers: str) -> Request:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    app = SimpleNamespace(state=SimpleNamespace(gateway=gateway))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "app": app})


GOOD = f"dlsec_{KEY_ID}_{SECRET}"


@pytest.mark.parametrize(
    ("headers", "presented"),
    [
        ({"authorization": f"Bearer {GOOD}"}, GOOD),
        ({"Authorization": f"bEaReR {GOOD}"}, GOOD),
        ({"X_API_Key": GOOD}, GOOD),
        ({"authorization": f"Basic {GOOD}", "x_api_key": GOOD}, GOOD),
        ({"authorization": f"Bearer {GOOD}", "x_api_key": "other"}, GOOD),
        ({"authorization": f"Bearer  {GOOD}"}, f" {GOOD}"),  # the blank is stripped with the key
    ],
)
def test_the_key_is_read_from_a_bearer_token_then_x_api_key(headers: dict[str, str], presented: str) -> None:
    gateway = Gateway()
    key = asyncio.run(current_key(request(gateway, **headers)))
    assert key.id == KEY_ID and gateway.calls == [("key", presented)]


@pytest.mark.parametrize(
    ("headers", "presented"),
    [
        ({}, None),
        ({"authorization": GOOD}, None),
        ({"authorization": f"Bearer{GOOD}"}, None),
        ({"authorization": f"Token {GOOD}"}, None),
        ({"x_api_key": GOOD[:-1]}, GOOD[:-1]),
    ],
)
def test_a_missing_or_wrong_key_is_401_with_a_bearer_challenge(
    headers: dict[str, str], presented: Any
) -> None:
    gateway = Gateway()
    with pytest.raises(ApiError) as caught:
        asyncio.run(current_key(request(gateway, **headers)))
    err = caught.value
    assert (err.status, err.message, err.reason) == (401, "missing, unknown or revoked API key", "auth")
    assert err.headers == {"WWW-Authenticate": "Bearer"}
    assert gateway.calls == [("key", presented)]


def test_the_key_table_is_refreshed_first_when_due() -> None:
    here = threading.get_ident()
    gateway = Gateway(due=True, inline=True)
    asyncio.run(current_key(request(gateway, x_api_key=GOOD)))
    assert gateway.calls == ["refresh", ("key", GOOD)] and gateway.refresh_thread == here
    gateway = Gateway(due=True, inline=False)
    asyncio.run(current_key(request(gateway, x_api_key=GOOD)))
    assert gateway.calls == ["refresh", ("key", GOOD)]
    assert gateway.refresh_thread is not None and gateway.refresh_thread != here  # off the event loop
    gateway = Gateway(due=False)
    asyncio.run(current_key(request(gateway, x_api_key=GOOD)))
    assert gateway.calls == [("key", GOOD)]


def _check_role_dependency(dependency: Any, needs: str) -> None:
    """``dependency`` is ``require_<needs>``: it passes keys of role ``needs`` or higher, 403 below."""
    assert dependency.__name__ == dependency.__qualname__ == f"require_{needs}"
    assert dependency.__doc__ == f"The caller's API key if its role is at least {needs}, or 403."
    for role in ROLES:
        key = record(role)
        if ROLES.index(role) >= ROLES.index(needs):
            assert asyncio.run(dependency(key)) is key
            continue
        with pytest.raises(ApiError) as caught:
            asyncio.run(dependency(key))
        err = caught.value
        assert (err.status, err.reason, err.headers) == (403, "role", {})
        assert err.message == f"this key's role ({role}) may not do this; it needs {needs}"


@pytest.mark.parametrize(("dependency", "needs"), [(require_operator, "operator"), (require_admin, "admin")])
def test_role_dependencies_refuse_lower_roles_with_403(dependency: Any, needs: str) -> None:
    _check_role_dependency(dependency, needs)


@pytest.mark.parametrize("needs", ROLES)
def test_the_role_dependency_factory_builds_each_check(needs: str) -> None:
    # require_operator and require_admin were built at import; build them (and the others) here,
    # so that the factory itself runs under test.
    dependency: Any = _requires(needs)
    _check_role_dependency(dependency, needs)


def test_the_client_role_is_any_valid_key() -> None:
    assert require_client is current_key
