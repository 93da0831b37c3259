"""The Merkle audit log: RFC 6962 known answers, proofs, and detection of every kind of tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

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
