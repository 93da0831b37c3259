"""Known answers for the rest of the key module: rates and output policies as written, usage saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsec.errors import UsageError
from dlsec.store._apikeys import KeyStore, OutputPolicy, Rate, parse_output, parse_rate
from dlsec.store._db import api_keys, open_database

_RATE_HELP = "use COUNT/second, /minute, /hour or /day (COUNT from 1 to 10^12), e.g. 10/second"
_OUTPUT_HELP = "use full, top-K, rounded-D or label"


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1/second", Rate(1, 1.0)),
        ("7/s", Rate(7, 1.0)),
        ("600/minute", Rate(600, 60.0)),
        ("3/m", Rate(3, 60.0)),
        ("5/hour", Rate(5, 3600.0)),
        ("4/h", Rate(4, 3600.0)),
        ("2/day", Rate(2, 86400.0)),
        ("9/d", Rate(9, 86400.0)),
        ("  12 /  minute ", Rate(12, 60.0)),
        ("007/second", Rate(7, 1.0)),
        ("1000000000000/day", Rate(10**12, 86400.0)),
    ],
)
def test_a_rate_parses_to_its_count_and_period_in_seconds(text: str, rate: Rate) -> None:
    parsed = parse_rate(text)
    assert parsed == rate
    assert parsed is not None and type(parsed.count) is int and type(parsed.period) is float


@pytest.mark.parametrize("empty", [None, ""])
def test_no_rate_is_none(empty: str | None) -> None:
    assert parse_rate(empty) is None


@pytest.mark.parametrize(
    "bad",
    ["0/second", "1000000000001/day", "10", "ten/second", "5/week", "-1/second", "1/Second", " ", "/s"],
)
def test_a_bad_rate_is_refused_with_the_syntax(bad: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_rate(bad)
    assert str(e.value) == f"bad rate {bad!r}: {_RATE_HELP}"


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("full", OutputPolicy("full")),
        ("label", OutputPolicy("label")),
        (" LABEL ", OutputPolicy("label")),
        ("Full", OutputPolicy("full")),
        ("top-1", OutputPolicy("top", k=1)),
        ("top-100", OutputPolicy("top", k=100)),
        (" Top-05\n", OutputPolicy("top", k=5)),
        ("rounded-1", OutputPolicy("rounded", digits=1)),
        ("ROUNDED-100", OutputPolicy("rounded", digits=100)),
    ],
)
def test_an_output_policy_parses_to_its_kind_and_number(text: str, policy: OutputPolicy) -> None:
    parsed = parse_output(text)
    assert parsed == policy
    assert type(parsed.k) is (int if policy.kind == "top" else type(None))
    assert type(parsed.digits) is (int if policy.kind == "rounded" else type(None))


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("top-0", "top-0"),
        ("top-101", "top-101"),
        (" Rounded-0 ", "rounded-0"),
        ("rounded-101", "rounded-101"),
        ("top", "top"),
        ("top-", "top-"),
        ("top-k", "top-k"),
        ("bottom-3", "bottom-3"),
        ("full-1", "full-1"),
        ("", ""),
    ],
)
def test_a_bad_output_policy_is_refused_as_read(bad: str, shown: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_output(bad)
    assert str(e.value) == f"bad output policy {shown!r}: {_OUTPUT_HELP}"


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (OutputPolicy("full"), "full"),
        (OutputPolicy("label"), "label"),
        (OutputPolicy("top", k=3), "top-3"),
        (OutputPolicy("rounded", digits=2), "rounded-2"),
        (OutputPolicy("top", k=7, digits=2), "top-7"),
        (OutputPolicy("rounded", k=7, digits=2), "rounded-2"),
    ],
)
def test_an_output_policy_prints_as_written(policy: OutputPolicy, text: str) -> None:
    assert str(policy) == text


def _row(key_id: str, created_at: str) -> dict[str, object]:
    return {
        "id": key_id,
        "salt": "00" * 16,
        "hash": "11" * 32,
        "role": "client",
        "models": None,
        "rate": None,
        "budget": 10,
        "used": 0,
        "output": "full",
        "note": None,
        "created_at": created_at,
        "created_by": "t",
        "revoked_at": None,
    }


def test_all_lists_the_keys_by_creation_time_not_by_insertion(store: KeyStore) -> None:
    with store.db.write() as conn:
        conn.execute(
            api_keys.insert(),
            [
                _row("bbbbbbbbbbbb", "2026-03-01T00:00:00.000000+00:00"),
                _row("aaaaaaaaaaaa", "2026-01-01T00:00:00.000000+00:00"),
                _row("cccccccccccc", "2026-02-01T00:00:00.000000+00:00"),
            ],
        )
    assert [k.id for k in store.all()] == ["aaaaaaaaaaaa", "cccccccccccc", "bbbbbbbbbbbb"]


def test_save_usage_stores_each_count_on_its_own_key(store: KeyStore) -> None:
    _, a = store.create(role="client", budget=10)
    _, b = store.create(role="client", budget=10)
    _, c = store.create(role="client", budget=10)
    store.save_usage({a.id: 4, b.id: 9})
    assert {k.id: k.used for k in store.all()} == {a.id: 4, b.id: 9, c.id: 0}
    store.save_usage({})
    assert {k.id: k.used for k in store.all()} == {a.id: 4, b.id: 9, c.id: 0}
    store.save_usage({b.id: 10})
    assert {k.id: k.used for k in store.all()} == {a.id: 4, b.id: 10, c.id: 0}
    assert len(store.audit.entries()) == 3  # usage is not a key change: nothing logged


def test_a_key_store_reads_and_logs_in_its_own_database(tmp_path: Path) -> None:
    db = open_database(home=tmp_path)
    try:
        s = KeyStore(db)
        assert s.db is db and s.audit.db is db
    finally:
        db.dispose()
