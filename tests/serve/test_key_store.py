"""The key store's known answers: what a key serialises to, what create stores, revoke and set_rate."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from dlsec.errors import UsageError
from dlsec.store._apikeys import ApiKey, KeyStore, OutputPolicy, Rate
from dlsec.store._audit import LATEST

_MAX = 2**63 - 1
_BUDGET = f"--budget must be a number of predictions from 1 to {_MAX}"


def _key(**kw: object) -> ApiKey:
    fields: dict[str, object] = {
        "id": "0123456789ab",
        "role": "client",
        "models": None,
        "rate": None,
        "budget": None,
        "used": 0,
        "output": OutputPolicy("full"),
        "note": None,
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "created_by": "alice",
        "revoked_at": None,
        "salt": "00" * 16,
        "hash": "11" * 32,
    }
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (Rate(10, 1.0), "10/second"),
        (Rate(600, 60.0), "600/minute"),
        (Rate(5, 3600.0), "5/hour"),
        (Rate(2, 86400.0), "2/day"),
        (Rate(3, 7.5), "3/7.5s"),
        (Rate(3, 2.0), "3/2.0s"),
        (Rate(4, 120.0), "4/120.0s"),
        (Rate(1, 1.5), "1/second"),  # a period is named by its whole seconds
    ],
)
def test_a_rate_prints_as_count_per_unit(rate: Rate, text: str) -> None:
    assert str(rate) == text


def test_a_plain_key_serialises_to_exactly_these_fields() -> None:
    assert _key().to_dict() == {
        "id": "0123456789ab",
        "role": "client",
        "models": None,
        "rate": None,
        "budget": None,
        "used": 0,
        "output": "full",
        "note": None,
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "created_by": "alice",
        "revoked": False,
        "revoked_at": None,
    }


def test_a_limited_revoked_key_serialises_its_limits_and_never_its_salt_or_hash() -> None:
    key = _key(
        role="operator",
        models=("a", "b"),
        rate=Rate(600, 60.0),
        budget=7,
        used=3,
        output=OutputPolicy("top", k=2),
        note="n",
        revoked_at="2026-02-02T00:00:00.000000+00:00",
    )
    d = key.to_dict()
    assert d == {
        "id": "0123456789ab",
        "role": "operator",
        "models": ["a", "b"],
        "rate": "600/minute",
        "budget": 7,
        "used": 3,
        "output": "top-2",
        "note": "n",
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "created_by": "alice",
        "revoked": True,
        "revoked_at": "2026-02-02T00:00:00.000000+00:00",
    }
    assert type(d["models"]) is list
    assert "salt" not in d and "hash" not in d


def test_create_stores_a_salted_hash_and_returns_the_key_once(store: KeyStore) -> None:
    secret, rec = store.create(
        role="viewer",
        models=["m2", "m1", "m2"],
        rate="10 / s",
        budget=5,
        output="Rounded-3",
        note="for ci",
        actor="bob",
    )
    m = re.fullmatch(r"dlsec_([0-9a-f]{12})_([A-Za-z0-9_-]{43})", secret)
    assert m is not None
    assert rec.id == m.group(1)
    assert re.fullmatch(r"[0-9a-f]{32}", rec.salt)
    assert rec.hash == hashlib.sha256(bytes.fromhex(rec.salt) + m.group(2).encode()).hexdigest()
    assert rec.role == "viewer"
    assert rec.models == ("m1", "m2")
    assert rec.rate == Rate(10, 1.0)
    assert rec.budget == 5
    assert rec.used == 0
    assert rec.output == OutputPolicy("rounded", digits=3)
    assert rec.note == "for ci"
    assert rec.created_by == "bob"
    assert rec.revoked_at is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", rec.created_at)
    assert store.get(rec.id) == rec
    assert secret.split("_", 2)[2] not in json.dumps(rec.to_dict())
    (entry,) = store.audit.entries()
    assert (entry.actor, entry.action, entry.subject) == ("bob", "keys.create", f"apikey:{rec.id}")
    assert entry.details == {
        "role": "viewer",
        "models": '["m1", "m2"]',
        "rate": "10/second",
        "budget": 5,
        "output": "rounded-3",
        "note": "for ci",
    }


def test_create_with_defaults_stores_no_limits_and_the_environment_actor(store: KeyStore) -> None:
    _, rec = store.create(role="client")
    assert (rec.models, rec.rate, rec.budget, rec.note) == (None, None, None, None)
    assert rec.output == OutputPolicy("full")
    assert rec.created_by == "env-actor"
    (entry,) = store.audit.entries()
    assert entry.actor == "env-actor"
    assert entry.details == {
        "role": "client",
        "models": None,
        "rate": None,
        "budget": None,
        "output": "full",
        "note": None,
    }


def test_each_key_gets_its_own_id_salt_and_secret(store: KeyStore) -> None:
    s1, r1 = store.create(role="client")
    s2, r2 = store.create(role="client")
    assert s1 != s2 and r1.id != r2.id and r1.salt != r2.salt and r1.hash != r2.hash
    assert [k.id for k in store.all()] == [r1.id, r2.id]


@pytest.mark.parametrize("budget", [1, _MAX])
def test_the_budget_bounds_are_accepted(store: KeyStore, budget: int) -> None:
    assert store.create(role="client", budget=budget)[1].budget == budget


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "root"}, "bad role 'root': use client, viewer, operator or admin"),
        ({"role": "Admin"}, "bad role 'Admin': use client, viewer, operator or admin"),
        ({"role": "client", "budget": 0}, _BUDGET),
        ({"role": "client", "budget": -1}, _BUDGET),
        ({"role": "client", "budget": _MAX + 1}, _BUDGET),
        ({"role": "client", "models": []}, "--models needs at least one model name"),
        ({"role": "client", "models": [""]}, "--models needs at least one model name"),
        ({"role": "client", "models": ["a", ""]}, "--models needs at least one model name"),
        ({"role": "client", "rate": "fast"}, "bad rate 'fast'"),
        ({"role": "client", "output": "top-0"}, "bad output policy 'top-0'"),
    ],
)
def test_create_refuses_bad_arguments_and_stores_nothing(
    store: KeyStore, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as e:
        store.create(**kwargs)  # type: ignore[arg-type]
    assert str(e.value).startswith(message)
    assert store.all() == []
    assert store.audit.entries() == []


def test_revoke_marks_the_key_once_and_logs_it_once(store: KeyStore) -> None:
    _, rec = store.create(role="client", rate="2/minute")
    _, other = store.create(role="admin")
    revoked = store.revoke(rec.id, actor="carol")
    assert revoked.revoked_at is not None and revoked.revoked_at >= rec.created_at
    assert revoked == ApiKey(**{**rec.__dict__, "revoked_at": revoked.revoked_at})
    assert store.get(rec.id) == revoked
    assert store.get(other.id) == other  # only that key
    again = store.revoke(rec.id, actor="dave")
    assert again == revoked  # the first revocation time stays
    entries = store.audit.entries()
    assert [(e.action, e.subject, e.actor, e.details) for e in entries[2:]] == [
        ("keys.revoke", f"apikey:{rec.id}", "carol", {})
    ]


def test_revoke_defaults_to_the_environment_actor(store: KeyStore) -> None:
    _, rec = store.create(role="client", actor="x")
    store.revoke(rec.id)
    assert store.audit.entries()[-1].actor == "env-actor"


def test_revoke_and_set_rate_refuse_an_unknown_id(store: KeyStore) -> None:
    store.create(role="client")
    with pytest.raises(UsageError) as e:
        store.revoke("ffffffffffff")
    assert str(e.value) == "no API key 'ffffffffffff'; see `dlsec keys list`"
    with pytest.raises(UsageError) as e:
        store.set_rate("ffffffffffff", "1/second")
    assert str(e.value) == "no API key 'ffffffffffff'; see `dlsec keys list`"
    assert len(store.audit.entries()) == 1


def test_set_rate_stores_the_normalised_rate_on_that_key_only_and_logs_it(store: KeyStore) -> None:
    _, rec = store.create(role="client", rate="2/minute")
    _, other = store.create(role="client", rate="9/hour")
    changed = store.set_rate(rec.id, " 5 / m ", actor="erin")
    assert changed.rate == Rate(5, 60.0)
    assert changed == ApiKey(**{**rec.__dict__, "rate": Rate(5, 60.0)})
    assert store.get(rec.id) == changed
    assert store.get(other.id) == other
    entry = store.audit.entries()[-1]
    assert (entry.action, entry.subject, entry.actor, entry.details) == (
        "keys.rate",
        f"apikey:{rec.id}",
        "erin",
        {"rate": "5/minute"},
    )


@pytest.mark.parametrize("cleared", [None, ""])
def test_set_rate_to_nothing_clears_the_limit(store: KeyStore, cleared: str | None) -> None:
    _, rec = store.create(role="client", rate="2/minute")
    changed = store.set_rate(rec.id, cleared)
    assert changed.rate is None
    assert store.get(rec.id) == changed
    entry = store.audit.entries()[-1]
    assert (entry.action, entry.actor, entry.details) == ("keys.rate", "env-actor", {"rate": None})


@pytest.mark.parametrize("bad", ["0/second", "fast", "5/week"])
def test_set_rate_refuses_a_bad_rate_and_changes_nothing(store: KeyStore, bad: str) -> None:
    _, rec = store.create(role="client", rate="2/minute")
    with pytest.raises(UsageError, match=re.escape(f"bad rate {bad!r}")):
        store.set_rate(rec.id, bad)
    assert store.get(rec.id) == rec
    assert len(store.audit.entries()) == 1


def test_get_returns_the_record_or_none(store: KeyStore) -> None:
    assert store.get("0123456789ab") is None
    _, rec = store.create(role="operator", models=["only"])
    assert store.get(rec.id) == rec
    assert store.get(rec.id.upper()) is None


def test_every_key_change_publishes_the_checkpoint_file_at_once(store: KeyStore) -> None:
    path = store.db.root / LATEST
    store.create(role="client")  # the log's first checkpoint is always written
    assert json.loads(path.read_text())["size"] == 1
    _, rec = store.create(role="client")  # well within the unforced interval: only publish writes it
    assert json.loads(path.read_text())["size"] == 2
    store.set_rate(rec.id, "1/second")
    assert json.loads(path.read_text())["size"] == 3
    store.revoke(rec.id)
    assert json.loads(path.read_text())["size"] == 4
