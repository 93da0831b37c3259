"""The Merkle audit log: RFC 6962 known answers, proofs, and detection of every kind of tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update

from dlsec.errors import UsageError
from dlsec.store import AuditLog, open_database
from dlsec.store import _merkle as merkle
from dlsec.store._db import audit_checkpoints, audit_entries
from tests.cli.test_cli import run, run_json

# RFC 6962 test vectors (certificate-transparency's merkle_tree_test): the inputs and the roots
# of the trees of their first 1..8 leaves.
CT_INPUTS = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)),
             bytes(range(0x60, 0x70))]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_tree_heads_match_the_rfc6962_test_vectors():
    leaves = [merkle.leaf_hash(d) for d in CT_INPUTS]
    assert [merkle.tree_root(leaves[:n]).hex() for n in range(1, 9)] == CT_ROOTS
    assert merkle.tree_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_every_inclusion_and_consistency_proof_verifies_and_wrong_ones_do_not():
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(21)]
    for n in range(1, 22):
        root = merkle.tree_root(leaves[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(leaves[:n], i)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
            assert not merkle.verify_inclusion(leaves[(i + 1) % 21], i, n, proof, root)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(leaves[:n], m)
            old = merkle.tree_root(leaves[:m])
            assert merkle.verify_consistency(m, n, old, root, proof)
            if m < n:
                assert not merkle.verify_consistency(m, n, old, merkle.tree_root(leaves[1 : n + 1]), proof)
                assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"x"), root, proof)


def _new_log(home: Path, n: int) -> AuditLog:
    """A fresh log in its own home with ``n`` entries ``("a", "s0", {})``, ``("a", "s1", {})``, ..."""
    audit = AuditLog(open_database(home=home))
    for i in range(n):
        audit.append("a", f"s{i}", {})
    return audit


@pytest.fixture
def log(tmp_path) -> AuditLog:
    audit = AuditLog(open_database(home=tmp_path))
    for i in range(12):
        audit.append("registry.add", f"model@{i}", {"i": i})
    return audit


def test_clean_log_verifies_and_proofs_check_out(log):
    result = log.verify()
    assert result.ok and result.size == 12 and result.checkpoints == 12
    proof = log.inclusion_proof(5)
    assert proof["verified"] and proof["tree_size"] == 12
    assert log.consistency_proof(7)["verified"]


def _bad(log: AuditLog) -> int | None:
    result = log.verify()
    assert not result.ok
    return result.first_bad


def test_an_edited_entry_is_named(log):
    with log.db.write() as conn:
        conn.execute(update(audit_entries).where(audit_entries.c.idx == 4).values(actor="mallory"))
    assert _bad(log) == 4


def test_an_edit_that_also_rewrites_the_hashes_is_caught_by_the_checkpoints(log):
    entries = log.entries()
    forged = entries[6].__class__(
        6, entries[6].ts, "mallory", entries[6].action, entries[6].subject, {"i": 6}
    )
    with log.db.write() as conn:
        conn.execute(
            update(audit_entries)
            .where(audit_entries.c.idx == 6)
            .values(actor="mallory", leaf_hash=forged.leaf().hex())
        )
    assert _bad(log) == 6  # one checkpoint per operation: the interval is that one entry


def test_deleted_inserted_and_reordered_entries_are_detected(log, tmp_path):
    with log.db.write() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.idx == 3))
    assert _bad(log) == 3

    other = _new_log(tmp_path / "b", 5)
    with other.db.write() as conn:  # swap the contents of rows 1 and 2 (indices stay in place)
        rows = {r.idx: r for r in conn.execute(audit_entries.select().where(audit_entries.c.idx.in_([1, 2])))}
        for a, b in ((1, 2), (2, 1)):
            values = {
                k: getattr(rows[b], k) for k in ("ts", "actor", "action", "subject", "details", "leaf_hash")
            }
            conn.execute(update(audit_entries).where(audit_entries.c.idx == a).values(**values))
    assert _bad(other) == 1

    third = _new_log(tmp_path / "c", 4)
    with third.db.write() as conn:  # an entry appended behind the log's back
        conn.execute(
            audit_entries.insert(),
            [{"idx": 4, "ts": "2026-01-01", "actor": "m", "action": "a", "subject": "s", "details": "{}",
              "leaf_hash": "00" * 32}],
        )  # fmt: skip
    assert _bad(third) == 4


def test_truncation_and_forged_checkpoints_are_detected(log):
    log.checkpoint()  # publishes the newest checkpoint outside the database too
    with log.db.write() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.idx >= 10))
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > 10))
    result = log.verify()  # the newest checkpoint kept outside the database still says 12
    assert not result.ok and "12" in (result.reason or "")
    log2 = AuditLog(open_database(home=log.db.root.parent / "x"))
    log2.append("a", "s", {})
    with log2.db.write() as conn:
        conn.execute(update(audit_checkpoints).values(root="11" * 32))
    assert not log2.verify().ok


def test_audit_cli_verify_proof_export_and_tamper_exit_code(capsys, tmp_path):
    home = str(tmp_path)
    audit = AuditLog(open_database(home=tmp_path))
    for i in range(5):
        audit.append("registry.add", f"m@{i}", {})
    assert run_json(capsys, "--home", home, "audit", "verify")["ok"]
    code, out, _ = run(capsys, "--home", home, "audit", "proof", "3")
    assert code == 0 and json.loads(out)["verified"]
    assert (
        run_json(capsys, "--home", home, "audit", "export", "--out", str(tmp_path / "log.jsonl"))["entries"]
        == 5
    )
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["subject"] for line in lines] == [f"m@{i}" for i in range(5)]
    with audit.db.write() as conn:
        conn.execute(text("UPDATE audit_entries SET subject = 'x' WHERE idx = 2"))
    code, _, err = run(capsys, "--home", home, "audit", "verify")
    assert code == 1 and "entry 2" in err and "Traceback" not in err


def test_long_subjects_are_kept_and_overlong_actors_refused(log, monkeypatch):
    from dlsec.errors import UsageError

    subject = "/very/deep/" * 60  # a key directory's path: 660 characters, kept whole
    entry = log.append("keys.generate", subject, {})
    assert log.entries()[entry.index].subject == subject and log.verify().ok
    monkeypatch.setenv("DLSEC_ACTOR", "x" * 201)
    with pytest.raises(UsageError, match="DLSEC_ACTOR"):
        log.append("registry.add", "model@99", {})
    assert len(log.entries()) == 13  # nothing half-written


# ---------------------------------------------------------------- written against mutation survivors
# (benchmarks/mutation.py --only audit-log): the whole verdict of each case, not just ``ok``: the
# entries read, the checkpoints checked, the first bad entry, the reason, and the root replayed
# up to the failure (checked against an independent tree root of the same leaves).


def _root(log: AuditLog, n: int) -> str:
    return merkle.tree_root([e.leaf() for e in log.entries()[:n]]).hex()


def test_each_verdict_is_exact(log, tmp_path):
    assert log.verify().to_dict() == {
        "ok": True, "entries": 12, "checkpoints_checked": 12, "first_bad_entry": None, "reason": None,
        "root": _root(log, 12),
    }  # fmt: skip
    with log.db.write() as conn:
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > 10))
    assert log.verify().to_dict() == {
        "ok": False, "entries": 12, "checkpoints_checked": 10, "first_bad_entry": 10,
        "reason": "entries from 10 on are not covered by a signed checkpoint", "root": _root(log, 12),
    }  # fmt: skip

    deleted = _new_log(tmp_path / "deleted", 6)
    with deleted.db.write() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.idx == 3))
    assert deleted.verify().to_dict() == {
        "ok": False, "entries": 5, "checkpoints_checked": 3, "first_bad_entry": 3,
        "reason": "entry 3 is missing (deleted): found index 4 at position 3", "root": _root(deleted, 3),
    }  # fmt: skip

    forged = _new_log(tmp_path / "forged", 6)
    with forged.db.write() as conn:
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.size == 5).values(signature="AAAA"))
    assert forged.verify().to_dict() == {
        "ok": False, "entries": 6, "checkpoints_checked": 0, "first_bad_entry": 4,
        "reason": "checkpoint at size 5 has an invalid signature", "root": _root(forged, 0),
    }  # fmt: skip


def test_a_checkpoint_kept_elsewhere_catches_truncation(log, tmp_path):
    log.checkpoint()
    kept = tmp_path / "kept-checkpoint.json"
    kept.write_bytes((log.db.root / "audit-checkpoint.json").read_bytes())
    with log.db.write() as conn:  # truncate the log, its checkpoints and the copy beside it
        conn.execute(delete(audit_entries).where(audit_entries.c.idx >= 10))
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > 10))
    (log.db.root / "audit-checkpoint.json").unlink()
    assert log.verify().ok  # nothing inside the database can tell
    assert log.verify(checkpoint_file=kept).to_dict() == {
        "ok": False, "entries": 10, "checkpoints_checked": 10, "first_bad_entry": 10,
        "reason": "the log has 10 entries but the latest checkpoint covers 12", "root": _root(log, 10),
    }  # fmt: skip
    with pytest.raises(UsageError) as caught:
        log.verify(checkpoint_file=tmp_path / "nowhere.json")
    assert str(caught.value) == f"{tmp_path / 'nowhere.json'}: no such checkpoint file"


def test_verification_uses_the_public_key_it_is_given(log, tmp_path):
    other = AuditLog(open_database(home=tmp_path / "other"))
    other.append("a", "s", {})
    result = log.verify(public_key=other.db.root / "audit-key.pub.pem")
    assert not result.ok and result.reason == "checkpoint at size 1 has an invalid signature"
    assert log.verify(public_key=log.db.root / "audit-key.pub.pem").ok


def test_latest_checkpoint_and_checkpoint_table_verdicts_are_exact(log, tmp_path):
    log.checkpoint()  # the copy beside the database now covers all 12 entries
    assert log.verify().ok
    latest = log.db.root / "audit-checkpoint.json"
    good = latest.read_text()
    record = json.loads(good)
    # A correctly signed latest checkpoint whose root the database's checkpoint of that size lacks.
    import base64

    from dlsec.store._audit import _checkpoint_message

    other_root = "11" * 32
    signature = log._signing_key().sign(_checkpoint_message(12, other_root, record["ts"]))
    latest.write_text(
        json.dumps({**record, "root": other_root, "signature": base64.b64encode(signature).decode()})
    )
    assert (
        log.verify().to_dict()["reason"]
        == "the latest checkpoint (size 12) is not in the database's checkpoints"
    )
    latest.write_text(json.dumps({**record, "signature": "AAAA"}))
    assert log.verify().to_dict()["reason"] == (
        f"{latest}: the latest checkpoint is unreadable or its signature is invalid"
    )

    fresh = _new_log(tmp_path / "fresh", 4)
    fresh.checkpoint()
    with fresh.db.write() as conn:  # the database's own checkpoints say 4, its entries stop at 2
        conn.execute(delete(audit_entries).where(audit_entries.c.idx >= 2))
    assert fresh.verify().to_dict() == {
        "ok": False, "entries": 2, "checkpoints_checked": 2, "first_bad_entry": 2,
        "reason": "the log has 2 entries but a checkpoint was signed at size 4", "root": _root(fresh, 2),
    }  # fmt: skip
    bare = _new_log(tmp_path / "bare", 3)
    with bare.db.write() as conn:
        conn.execute(delete(audit_checkpoints))
    (bare.db.root / "audit-checkpoint.json").unlink(missing_ok=True)
    assert bare.verify().to_dict() == {
        "ok": False, "entries": 3, "checkpoints_checked": 0, "first_bad_entry": 0,
        "reason": "entries from 0 on are not covered by a signed checkpoint", "root": _root(bare, 3),
    }  # fmt: skip


def test_an_interval_between_checkpoints_is_named_in_the_reason(tmp_path):
    log = AuditLog(open_database(home=tmp_path))
    for i in range(6):
        log.append("a", f"s{i}", {"i": i})
    with log.db.write() as conn:  # keep only the checkpoints at 2 and 6
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size.not_in([2, 6])))
    entries = log.entries()
    forged = entries[4].__class__(
        4, entries[4].ts, "mallory", entries[4].action, entries[4].subject, {"i": 4}
    )
    with log.db.write() as conn:
        conn.execute(
            update(audit_entries)
            .where(audit_entries.c.idx == 4)
            .values(actor="mallory", leaf_hash=forged.leaf().hex())
        )
    result = log.verify()
    assert (result.first_bad, result.checkpoints) == (2, 2)
    assert result.reason == (
        "the log up to entry 5 does not match the checkpoint signed at size 6: an entry from 2 to 5 was "
        "altered, inserted or reordered"
    )


def _documented_leaf(index: int, ts: str, actor: str, action: str, subject: str, details: str) -> bytes:
    """RFC 6962's leaf hash of an entry's documented canonical form, written out by hand: sorted
    keys, no spaces, UTF-8 (not ASCII escapes); ``details`` given as its canonical JSON text."""
    import hashlib

    body = (
        f'{{"action":"{action}","actor":"{actor}","details":{details},"i":{index},'
        f'"subject":"{subject}","ts":"{ts}"}}'
    )
    return hashlib.sha256(b"\x00" + body.encode("utf-8")).digest()


def test_the_canonical_form_is_the_documented_one():
    from dlsec.store._audit import Entry

    entry = Entry(3, "2026-01-01T00:00:00+00:00", "ana", "registry.add", "modèle@1", {"b": "é", "a": [1, 2]})
    assert (
        entry.canonical()
        == (
            '{"action":"registry.add","actor":"ana","details":{"a":[1,2],"b":"é"},"i":3,'
            '"subject":"modèle@1","ts":"2026-01-01T00:00:00+00:00"}'
        ).encode()
    )
    assert entry.leaf() == _documented_leaf(
        3, "2026-01-01T00:00:00+00:00", "ana", "registry.add", "modèle@1", '{"a":[1,2],"b":"é"}'
    )
    assert entry.to_dict() == {
        "index": 3,
        "ts": "2026-01-01T00:00:00+00:00",
        "actor": "ana",
        "action": "registry.add",
        "subject": "modèle@1",
        "details": {"b": "é", "a": [1, 2]},
    }


def test_the_logs_root_is_built_from_the_documented_leaves(log):
    entries = log.entries()
    leaves = [
        _documented_leaf(e.index, e.ts, e.actor, "registry.add", f"model@{i}", f'{{"i":{i}}}')
        for i, e in enumerate(entries)
    ]
    assert [e.index for e in entries] == list(range(12))
    assert log.verify().to_dict()["root"] == merkle.tree_root(leaves).hex()


def test_proofs_are_exact_and_check_out_against_the_documented_leaves(log):
    entries = log.entries()
    leaves = [
        _documented_leaf(e.index, e.ts, e.actor, "registry.add", f"model@{i}", f'{{"i":{i}}}')
        for i, e in enumerate(entries)
    ]
    root = merkle.tree_root(leaves)
    p = log.inclusion_proof(5)
    assert set(p) == {"index", "leaf_hash", "tree_size", "root", "checkpoint", "proof", "verified"}
    assert (p["index"], p["leaf_hash"], p["tree_size"], p["root"]) == (5, leaves[5].hex(), 12, root.hex())
    assert p["checkpoint"]["size"] == 12 and p["checkpoint"]["root"] == root.hex() and p["verified"] is True
    assert merkle.verify_inclusion(leaves[5], 5, 12, [bytes.fromhex(h) for h in p["proof"]], root)
    first = log.inclusion_proof(0)  # the first entry is covered too
    assert (first["leaf_hash"], first["verified"]) == (leaves[0].hex(), True)
    for bad in (-1, 12):
        with pytest.raises(UsageError) as err:
            log.inclusion_proof(bad)
        assert str(err.value) == f"entry {bad} is not covered by the checkpoint at size 12"
    c = log.consistency_proof(1)
    assert set(c) == {"old_size", "old_root", "tree_size", "root", "proof", "verified"}
    assert (c["old_size"], c["old_root"], c["tree_size"], c["root"]) == (1, leaves[0].hex(), 12, root.hex())
    old = [bytes.fromhex(h) for h in c["proof"]]
    assert c["verified"] is True and merkle.verify_consistency(1, 12, leaves[0], root, old)
    assert log.consistency_proof(12)["verified"] is True  # the whole log is its own prefix
    for bad in (0, 13):
        with pytest.raises(UsageError) as err:
            log.consistency_proof(bad)
        assert str(err.value) == "--old must be between 1 and 12"
    # Against an earlier signed checkpoint (one is signed at every append here).
    early = merkle.tree_root(leaves[:4])
    q = log.inclusion_proof(2, size=4)
    assert (q["tree_size"], q["root"], q["verified"]) == (4, early.hex(), True)
    r = log.consistency_proof(2, size=4)
    assert (r["tree_size"], r["root"], r["old_root"], r["verified"]) == (
        4,
        early.hex(),
        merkle.tree_root(leaves[:2]).hex(),
        True,
    )


# ---------------------------------------------------------------- the writer, the readers and the keys
# (second round against survivors: append_many, _sync_frontier, the readers, the checkpoint file, the
# key files, the actor; and the verify branches no test reached: a checkpoint at size 0, an entry
# inserted before the first, an interval that starts at 0, rows returned out of key order).


def _stored(log: AuditLog) -> list[tuple]:
    with log.db.read() as conn:
        return [tuple(r) for r in conn.execute(select(audit_entries).order_by(audit_entries.c.idx))]


def _checkpoint_rows(log: AuditLog) -> list[dict]:
    with log.db.read() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size))
        ]


def _raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _message(size: int, root: str, ts: str) -> bytes:
    """The documented signed checkpoint message, written out here."""
    return b"dlsec-audit-checkpoint/1\n" + f"{size}\n{root}\n{ts}\n".encode()


def _unordered(db) -> None:
    """Make SQLite return the rows of a query without ``ORDER BY`` newest first (its
    ``reverse_unordered_selects`` pragma), as a database that does not keep key order may."""
    from sqlalchemy import event

    def pragma(dbapi_conn, _record) -> None:
        dbapi_conn.execute("PRAGMA reverse_unordered_selects = ON")

    for engine in {db.engine, db.read_engine}:
        event.listen(engine, "connect", pragma)
        engine.dispose()


EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def test_a_batch_is_stored_in_the_documented_form_under_one_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSEC_ACTOR", "ana")
    log = AuditLog(open_database(home=tmp_path))
    assert log.append("first", "s0").index == 0  # details default to {}
    batch = log.append_many([("b.x", "m@1", {"é": "ü", "z": 1}), ("b.y", "m@2", {})], actor="bob")
    assert [(e.index, e.actor, e.action, e.subject, e.details) for e in batch] == [
        (1, "bob", "b.x", "m@1", {"é": "ü", "z": 1}),
        (2, "bob", "b.y", "m@2", {}),
    ]
    ts = [e.ts for e in log.entries()]
    assert all(TS.match(t) for t in ts) and ts == sorted(ts) and ts[1:] == [e.ts for e in batch]
    details = ["{}", '{"z": 1, "é": "ü"}', "{}"]  # sorted keys, UTF-8 kept, json's default spacing
    leaves = [
        _documented_leaf(0, ts[0], "ana", "first", "s0", "{}"),
        _documented_leaf(1, ts[1], "bob", "b.x", "m@1", '{"z":1,"é":"ü"}'),
        _documented_leaf(2, ts[2], "bob", "b.y", "m@2", "{}"),
    ]
    assert _stored(log) == [
        (0, ts[0], "ana", "first", "s0", details[0], leaves[0].hex()),
        (1, ts[1], "bob", "b.x", "m@1", details[1], leaves[1].hex()),
        (2, ts[2], "bob", "b.y", "m@2", details[2], leaves[2].hex()),
    ]
    cps = _checkpoint_rows(log)
    assert [(c["size"], c["root"]) for c in cps] == [
        (1, merkle.tree_root(leaves[:1]).hex()),
        (3, merkle.tree_root(leaves).hex()),
    ]  # one checkpoint for the whole batch
    assert log.append_many([]) == [] and log.size() == 3 and len(_checkpoint_rows(log)) == 2
    unsigned = log.append_many([("c", "s3", {})], checkpoint=False)
    assert [e.index for e in unsigned] == [3] and len(_checkpoint_rows(log)) == 2
    assert log.verify().to_dict() == {
        "ok": False, "entries": 4, "checkpoints_checked": 2, "first_bad_entry": 3,
        "reason": "entries from 3 on are not covered by a signed checkpoint",
        "root": merkle.tree_root([*leaves, bytes.fromhex(_stored(log)[3][6])]).hex(),
    }  # fmt: skip


def test_a_failed_batch_leaves_nothing_and_does_not_poison_the_next_checkpoint(tmp_path):
    db = open_database(home=tmp_path)
    first, second = AuditLog(db), AuditLog(db)
    first.append("a", "s0", {})
    with pytest.raises(TypeError):  # the second event's details cannot be written as JSON
        first.append_many([("a", "s1", {}), ("a", "s2", {"x": object()})])
    assert [e.subject for e in first.entries()] == ["s0"] and first.size() == 1
    second.append("a", "t1", {})  # another writer takes index 1 meanwhile
    assert first.append("a", "t2", {}).index == 2
    assert second.append("a", "t3", {}).index == 3
    assert [e.subject for e in first.entries()] == ["s0", "t1", "t2", "t3"]
    assert first.verify().to_dict()["ok"] is True


def test_the_writer_signs_the_leaves_it_wrote_and_a_new_one_rereads_them(tmp_path):
    log = _new_log(tmp_path, 3)
    honest = [bytes.fromhex(r[6]) for r in _stored(log)]
    with log.db.write() as conn:  # the stored hash of entry 1 is rewritten behind the writer's back
        conn.execute(update(audit_entries).where(audit_entries.c.idx == 1).values(leaf_hash="00" * 32))
    log.append("a", "s3", {})
    stored = [bytes.fromhex(r[6]) for r in _stored(log)]
    assert _checkpoint_rows(log)[-1]["root"] == merkle.tree_root([*honest, stored[3]]).hex()
    fresh = AuditLog(log.db)  # a new writer knows only what is stored
    fresh.append("a", "s4", {})
    stored = [bytes.fromhex(r[6]) for r in _stored(log)]
    assert stored[1] == bytes(32)
    assert _checkpoint_rows(log)[-1]["root"] == merkle.tree_root(stored).hex()

    one = _new_log(tmp_path / "one", 1)
    with one.db.write() as conn:  # every entry removed: the next one is entry 0 again
        conn.execute(delete(audit_entries))
    assert one.append("a", "again", {}).index == 0


def test_the_readers_order_by_index_whatever_order_the_database_returns(tmp_path):
    log = _new_log(tmp_path, 5)
    _unordered(log.db)
    with log.db.read() as conn:  # the pragma is in force: a bare SELECT comes back newest first
        assert [r.idx for r in conn.execute(select(audit_entries.c.idx))] == [4, 3, 2, 1, 0]
        assert [r.size for r in conn.execute(select(audit_checkpoints.c.size))] == [5, 4, 3, 2, 1]
    leaves = [bytes.fromhex(r[6]) for r in _stored(log)]
    assert log.verify().to_dict() == {
        "ok": True, "entries": 5, "checkpoints_checked": 5, "first_bad_entry": None, "reason": None,
        "root": merkle.tree_root(leaves).hex(),
    }  # fmt: skip
    assert [e.index for e in log.entries()] == [0, 1, 2, 3, 4]
    assert [e.subject for e in log.recent("a", limit=2)] == ["s3", "s4"]
    proof = log.inclusion_proof(1)
    assert (proof["tree_size"], proof["leaf_hash"], proof["verified"]) == (5, leaves[1].hex(), True)
    assert log.inclusion_proof(1, size=2)["root"] == merkle.tree_root(leaves[:2]).hex()
    assert log.consistency_proof(2)["old_root"] == merkle.tree_root(leaves[:2]).hex()
    log.export(tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3, 4]
    fresh = AuditLog(log.db)  # rebuilds its frontier from the stored leaves, in index order
    fresh.append("a", "s5", {})
    leaves = [bytes.fromhex(r[6]) for r in _stored(log)]
    newest = _checkpoint_rows(log)[-1]
    assert (newest["size"], newest["root"]) == (6, merkle.tree_root(leaves).hex())


def test_the_readers_return_exact_entries(tmp_path):
    log = AuditLog(open_database(home=tmp_path))
    assert (log.last_index(), log.size(), log.entries(), log.recent("x")) == (-1, 0, [], [])
    log.append_many([("x", "m@1", {}), ("y", "m@1/v2", {}), ("x", "n@1", {}), ("x", "m@2", {})], actor="ana")
    assert (log.last_index(), log.size()) == (3, 4)

    def idx(entries) -> list[int]:
        return [e.index for e in entries]

    assert idx(log.entries(subject="m@")) == [0, 1, 3]
    assert idx(log.entries(subject="m@1")) == [0, 1]
    assert idx(log.entries(limit=2)) == [2, 3]
    assert idx(log.entries(subject="m@", limit=2)) == [1, 3]
    assert idx(log.entries(limit=0)) == [0, 1, 2, 3]  # 0: no limit
    assert idx(log.recent("x")) == [0, 2, 3]
    assert idx(log.recent("x", limit=2)) == [2, 3]
    assert idx(log.recent("y")) == [1] and log.recent("z") == []
    log.append_many([("g", f"g{i}", {}) for i in range(101)], actor="ana")
    newest = log.recent("g")  # 100 by default: entries 5 to 104, oldest first
    assert idx(newest) == list(range(5, 105)) and newest[0].subject == "g1"
    assert (log.last_index(), log.size()) == (104, 105)
    with log.db.write() as conn:  # details that are not JSON are read back, not dropped
        conn.execute(update(audit_entries).where(audit_entries.c.idx == 1).values(details="{not json"))
    assert log.entries()[1].details == {"unparseable": "{not json"}
    result = log.verify()
    assert (result.first_bad, result.reason) == (
        1,
        "entry 1 was altered: its content does not match its leaf hash",
    )


def test_the_export_is_one_documented_json_line_per_entry(tmp_path):
    log = AuditLog(open_database(home=tmp_path))
    assert log.export(tmp_path / "empty.jsonl") == 0 and (tmp_path / "empty.jsonl").read_text() == ""
    log.append_many([("x", "m@1", {"b": 2, "a": "é"}), ("y", "m@2", {})], actor="ana")
    assert log.export(tmp_path / "out.jsonl") == 2
    ts = [e.ts for e in log.entries()]
    leaf = _documented_leaf(0, ts[0], "ana", "x", "m@1", '{"a":"é","b":2}').hex()
    leaf1 = _documented_leaf(1, ts[1], "ana", "y", "m@2", "{}").hex()
    assert (tmp_path / "out.jsonl").read_text() == (
        f'{{"action": "x", "actor": "ana", "details": {{"a": "\\u00e9", "b": 2}}, "index": 0, '
        f'"leaf_hash": "{leaf}", "subject": "m@1", "ts": "{ts[0]}"}}\n'
        f'{{"action": "y", "actor": "ana", "details": {{}}, "index": 1, '
        f'"leaf_hash": "{leaf1}", "subject": "m@2", "ts": "{ts[1]}"}}\n'
    )


def test_the_checkpoint_file_is_refreshed_at_most_once_a_second_unless_published(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from dlsec.store import _audit

    clock = [0.0]
    monkeypatch.setattr(_audit, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    log = AuditLog(open_database(home=tmp_path))
    latest = log.db.root / "audit-checkpoint.json"

    def published() -> int:
        return json.loads(latest.read_text())["size"]

    log.append("a", "s0", {})  # the first append publishes, whatever the clock says
    assert published() == 1
    clock[0] = 0.999
    log.append("a", "s1", {})
    assert published() == 1
    clock[0] = 1.0  # a second after the last write
    log.append("a", "s2", {})
    assert published() == 3
    clock[0] = 1.5
    log.append("a", "s3", {}, publish=True)
    assert published() == 4
    clock[0] = 2.0  # half a second after the forced write
    log.append("a", "s4", {})
    log.append_many([("a", "s5", {})])  # a batch is not forced either
    assert published() == 4
    record = log.checkpoint()  # always published; the database already has a checkpoint at 6
    assert published() == 6 and len(_checkpoint_rows(log)) == 6

    # The file's form, written out: the checkpoint record, two-space indented, then a newline.
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key((log.db.root / "audit-key.pub.pem").read_bytes())
    row = record  # signed anew; the database keeps its first checkpoint at that size, same root
    assert set(row) == {"size", "root", "ts", "key_fingerprint", "signature"}
    assert (_checkpoint_rows(log)[-1]["size"], _checkpoint_rows(log)[-1]["root"]) == (6, row["root"])
    assert row["key_fingerprint"] == hashlib.sha256(_raw(public)).hexdigest()
    assert row["root"] == merkle.tree_root([bytes.fromhex(r[6]) for r in _stored(log)]).hex()
    assert TS.match(row["ts"])
    public.verify(base64.b64decode(row["signature"]), _message(6, row["root"], row["ts"]))
    assert latest.read_text() == (
        f'{{\n  "size": 6,\n  "root": "{row["root"]}",\n  "ts": "{row["ts"]}",\n'
        f'  "key_fingerprint": "{row["key_fingerprint"]}",\n  "signature": "{row["signature"]}"\n}}\n'
    )


def test_the_signing_key_is_made_once_kept_private_and_checked(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from dlsec.errors import KeyFileError

    log = _new_log(tmp_path / "made", 1)
    root = log.db.root
    pem = (root / "audit-key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not encrypted
    assert (root / "audit-key.pem").stat().st_mode & 0o777 == 0o600
    private = serialization.load_pem_private_key(pem, None)
    public = serialization.load_pem_public_key((root / "audit-key.pub.pem").read_bytes())
    assert _raw(public) == _raw(private.public_key())
    AuditLog(log.db).append("a", "s1", {})  # a second writer signs with the same key
    assert (root / "audit-key.pem").read_bytes() == pem
    for cp in _checkpoint_rows(log):
        public.verify(base64.b64decode(cp["signature"]), _message(cp["size"], cp["root"], cp["ts"]))

    # A key put there before the first entry is used as it is (its public half is not written).
    given = ed25519.Ed25519PrivateKey.generate()
    placed = AuditLog(open_database(home=tmp_path / "placed"))
    (placed.db.root / "audit-key.pem").write_bytes(
        given.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    placed.append("a", "s0", {})
    cp = _checkpoint_rows(placed)[0]
    given.public_key().verify(base64.b64decode(cp["signature"]), _message(1, cp["root"], cp["ts"]))
    assert cp["key_fingerprint"] == hashlib.sha256(_raw(given.public_key())).hexdigest()
    assert not (placed.db.root / "audit-key.pub.pem").exists()

    wrong = AuditLog(open_database(home=tmp_path / "wrong"))
    path = wrong.db.root / "audit-key.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError) as caught:
        wrong.append("a", "s0", {})
    assert str(caught.value) == f"{path}: not an Ed25519 private key"
    assert wrong.size() == 0 and _checkpoint_rows(wrong) == []  # nothing half-written


def test_the_public_key_is_refused_when_missing_or_not_ed25519(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from dlsec.errors import AuditLogError

    log = _new_log(tmp_path / "log", 1)
    default = log.db.root / "audit-key.pub.pem"
    assert _raw(log.public_key()) == _raw(log.public_key(str(default)))
    cases = {
        tmp_path / "missing.pem": "the audit log's public key is missing; the log cannot be verified",
        tmp_path / "garbage.pem": "not a PEM public key",
        tmp_path / "ec.pem": "not an Ed25519 public key",
    }
    (tmp_path / "garbage.pem").write_text("not a key\n")
    (tmp_path / "ec.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for path, message in cases.items():
        with pytest.raises(AuditLogError) as caught:
            log.verify(public_key=path)
        assert str(caught.value) == f"{path}: {message}"
    default.unlink()
    with pytest.raises(AuditLogError) as caught:
        log.verify()
    assert (
        str(caught.value) == f"{default}: the audit log's public key is missing; the log cannot be verified"
    )


def test_the_actor_is_dlsec_actor_else_the_os_user_else_unknown(monkeypatch):
    import getpass

    from dlsec.store._audit import actor_name, now

    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")
    monkeypatch.setenv("DLSEC_ACTOR", "a" * 200)
    assert actor_name() == "a" * 200
    monkeypatch.setenv("DLSEC_ACTOR", "b" * 201)
    with pytest.raises(UsageError) as caught:
        actor_name()
    assert str(caught.value) == "DLSEC_ACTOR is longer than 200 characters; use a shorter name"
    monkeypatch.setenv("DLSEC_ACTOR", "")
    assert actor_name() == "osuser"
    monkeypatch.delenv("DLSEC_ACTOR")
    assert actor_name() == "osuser"
    for error in (KeyError("no such uid"), OSError("no login")):

        def fail(error=error) -> str:
            raise error

        monkeypatch.setattr(getpass, "getuser", fail)
        assert actor_name() == "unknown"
    assert TS.match(now())


def test_entry_times_are_utc_to_the_microsecond_even_on_a_whole_second(monkeypatch):
    from datetime import datetime

    from dlsec.store import _audit

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(_audit, "datetime", Frozen)
    assert _audit.now() == "2026-01-02T03:04:05.000000+00:00"


def test_verify_at_the_edges_empty_log_size_zero_checkpoint_first_interval_and_inserted_entry(tmp_path):
    empty = AuditLog(open_database(home=tmp_path / "empty"))
    empty._signing_key()  # writes the key pair; no entry, no checkpoint
    assert empty.verify().to_dict() == {
        "ok": True, "entries": 0, "checkpoints_checked": 0, "first_bad_entry": None, "reason": None,
        "root": EMPTY_ROOT,
    }  # fmt: skip
    record = empty.checkpoint()  # a checkpoint of the empty log, at size 0
    assert (record["size"], record["root"]) == (0, EMPTY_ROOT)
    assert empty.verify().to_dict()["checkpoints_checked"] == 1
    empty.append("a", "s0", {})
    assert empty.verify().to_dict()["checkpoints_checked"] == 2
    with empty.db.write() as conn:
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.size == 0).values(signature="AAAA"))
    assert empty.verify().to_dict() == {
        "ok": False, "entries": 1, "checkpoints_checked": 0, "first_bad_entry": 0,
        "reason": "checkpoint at size 0 has an invalid signature", "root": EMPTY_ROOT,
    }  # fmt: skip

    first = _new_log(tmp_path / "first", 3)
    with first.db.write() as conn:  # only the checkpoint at 3 is kept; entry 1 is forged, hash and all
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size != 3))
        row = conn.execute(select(audit_entries).where(audit_entries.c.idx == 1)).one()
        forged = _documented_leaf(1, row.ts, "mallory", "a", "s1", "{}").hex()
        conn.execute(
            update(audit_entries).where(audit_entries.c.idx == 1).values(actor="mallory", leaf_hash=forged)
        )
    leaves = [bytes.fromhex(r[6]) for r in _stored(first)]
    assert first.verify().to_dict() == {
        "ok": False, "entries": 3, "checkpoints_checked": 1, "first_bad_entry": 0,
        "reason": "the log up to entry 2 does not match the checkpoint signed at size 3: an entry from 0 "
        "to 2 was altered, inserted or reordered",
        "root": merkle.tree_root(leaves).hex(),
    }  # fmt: skip

    inserted = _new_log(tmp_path / "inserted", 2)
    with inserted.db.write() as conn:  # an entry slipped in before the first one
        conn.execute(
            audit_entries.insert(),
            [{"idx": -1, "ts": "2026-01-01", "actor": "m", "action": "a", "subject": "s", "details": "{}",
              "leaf_hash": "00" * 32}],
        )  # fmt: skip
    assert inserted.verify().to_dict() == {
        "ok": False, "entries": 3, "checkpoints_checked": 0, "first_bad_entry": 0,
        "reason": "entry 0 is duplicated or inserted: found index -1 at position 0", "root": EMPTY_ROOT,
    }  # fmt: skip


def test_proofs_need_a_signed_checkpoint_of_that_size(tmp_path):
    log = AuditLog(open_database(home=tmp_path))
    for refused in (lambda: log.inclusion_proof(0), lambda: log.consistency_proof(1)):
        with pytest.raises(UsageError) as caught:
            refused()
        assert str(caught.value) == "the audit log has no signed checkpoint yet"
    log.append_many([("a", "s0", {}), ("a", "s1", {})], checkpoint=False)
    with pytest.raises(UsageError) as caught:  # entries, but none signed
        log.inclusion_proof(0)
    assert str(caught.value) == "the audit log has no signed checkpoint yet"
    log.checkpoint()
    log.append("a", "s2", {}, checkpoint=False)
    for size in (1, 3):
        with pytest.raises(UsageError) as caught:
            log.inclusion_proof(0, size=size)
        assert str(caught.value) == f"no checkpoint was signed at size {size}; see `dlsec audit checkpoints`"
    with pytest.raises(UsageError) as caught:  # entry 2 is past the newest checkpoint (size 2)
        log.inclusion_proof(2)
    assert str(caught.value) == "entry 2 is not covered by the checkpoint at size 2"
    assert log.inclusion_proof(1)["tree_size"] == 2


def test_a_log_one_entry_short_of_its_newest_checkpoint_is_named(tmp_path):
    log = _new_log(tmp_path, 4)
    with log.db.write() as conn:
        conn.execute(delete(audit_entries).where(audit_entries.c.idx == 3))
    assert log.verify().to_dict() == {
        "ok": False, "entries": 3, "checkpoints_checked": 3, "first_bad_entry": 3,
        "reason": "the log has 3 entries but a checkpoint was signed at size 4", "root": _root(log, 3),
    }  # fmt: skip
    assert [e.index for e in log.entries(limit=1)] == [2]


def test_one_append_honours_its_actor_checkpoint_flag_and_the_callers_transaction(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSEC_ACTOR", "ana")
    log = _new_log(tmp_path, 2)
    assert log.append("a", "s2", {}, actor="carol").actor == "carol"
    assert log.append("a", "s3", {}, checkpoint=False).index == 3
    assert [c["size"] for c in _checkpoint_rows(log)] == [1, 2, 3]  # none for entry 3
    with pytest.raises(RuntimeError), log.db.write() as conn:  # the caller's transaction fails later
        assert log.append("a", "inside", {}, conn=conn).index == 4
        raise RuntimeError("rolled back")
    assert log.size() == 4 and [c["size"] for c in _checkpoint_rows(log)] == [1, 2, 3]
    with log.db.write() as conn:
        log.append("a", "s4", {}, conn=conn)
    assert [(e.index, e.actor, e.subject) for e in log.entries()][2:] == [
        (2, "carol", "s2"),
        (3, "ana", "s3"),
        (4, "ana", "s4"),
    ]
    assert log.verify().to_dict()["ok"] is True


def test_a_subject_filter_is_a_literal_case_sensitive_prefix(tmp_path):
    # Before: SQL LIKE with the subject pasted in, so "_" and "%" were wildcards and SQLite
    # matched "CLF@1" for "clf@1".
    log = AuditLog(open_database(home=tmp_path))
    subjects = [
        "clf@1",
        "CLF@1",
        "my_model@1",
        "myXmodel@1",
        "50%@1",
        "50x@1",
        "a/b\\c@1",
        "a/bxc@1",
        "modèle@1",
    ]
    log.append_many([("x", s, {}) for s in subjects], actor="ana")

    def found(prefix: str) -> list[str]:
        return [e.subject for e in log.entries(subject=prefix)]

    assert found("clf@1") == ["clf@1"]
    assert found("CLF") == ["CLF@1"]
    assert found("my_model") == ["my_model@1"]
    assert found("50%") == ["50%@1"]
    assert found("a/b\\c") == ["a/b\\c@1"]
    assert found("") == subjects
    assert found("nothing") == []
    assert found("modè") == found("modèle@1") == ["modèle@1"]  # counted in characters, not bytes
    assert found("odèle") == []  # a prefix, not a substring
