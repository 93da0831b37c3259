"""The registry: add, promote (policy), quarantine, rollback, retire, loading, concurrency, PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlsec.core.arch import build_architecture
from dlsec.core.io import save_safetensors_model
from dlsec.core.loading import load_model
from dlsec.core.spec import InputSpec
from dlsec.errors import ModelOutOfServiceError, PolicyError, RegistryError, SignatureMissingError
from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.store import Policy, Registry
from tests._needs import missing, need_module
from tests.cli.test_cli import assert_user_error, run, run_json

PASS = "registry test passphrase"
SPEC = InputSpec(shape=(4,), num_classes=3, kind="tabular")


def _model(dirpath: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    kwargs = {"in_features": 4, "num_classes": 3, "hidden": [8]}
    module = build_architecture("mlp", kwargs)
    dirpath.mkdir(parents=True, exist_ok=True)
    save_safetensors_model(module, SPEC, dirpath / "model.safetensors", arch="mlp", arch_kwargs=kwargs)
    return dirpath


@pytest.fixture
def home(tmp_path: Path) -> Path:
    generate_signing_keys(tmp_path / "keys", passphrase=PASS, scrypt_log_n=10)
    return tmp_path


def _signed_model(home: Path, name: str, seed: int) -> Path:
    path = _model(home / "src" / name, seed)
    sign_model(path, load_signing_keys(home / "keys", passphrase=PASS))
    return path


def test_promote_quarantine_rollback_end_to_end_with_every_step_audited(home):
    reg = Registry.open(home=home)
    unsigned = reg.add(_model(home / "src" / "u", 0), "clf")
    assert not unsigned.signed and unsigned.scan["verdict"] == "safe"
    with pytest.raises(PolicyError, match="signature"):
        reg.promote("clf", 1)
    v2 = reg.add(_signed_model(home, "a", 1), "clf")
    v3 = reg.add(_signed_model(home, "b", 2), "clf", parent="clf@2")
    assert (v2.version, v3.version) == (2, 3) and v3.lineage["parent"] == "clf@2"
    reg.promote("clf", 2)
    reg.promote("clf", 3)
    assert reg.get("clf").version == 3
    before = load_model("registry:clf", home=home)
    assert before.spec.num_classes == 3

    reg.quarantine("clf", 3, reason="drift alert")
    with pytest.raises(ModelOutOfServiceError, match="quarantined"):
        load_model("registry:clf", home=home)
    with pytest.raises(PolicyError, match="quarantined"):
        reg.promote("clf", 3)
    previous, record = reg.rollback("clf")
    assert (previous, record.version) == (3, 2)
    x = torch.rand(5, 4)
    restored = load_model("registry:clf", home=home)
    expected = load_model(str(home / "src" / "a" / "model.safetensors"))
    assert torch.equal(restored.predict(x), expected.predict(x))
    with pytest.raises(RegistryError, match="production"):
        reg.retire("clf", 2)
    reg.retire("clf", 3)
    with pytest.raises(ModelOutOfServiceError, match="retired"):
        load_model("registry:clf@3", home=home)
    with pytest.raises(SignatureMissingError):
        load_model("registry:clf@1", home=home)

    actions = [(e.action, e.subject) for e in reg.audit.entries() if e.subject.startswith("clf")]
    assert actions == [
        ("registry.add", "clf@1"),
        ("registry.promote.refused", "clf@1"),
        ("registry.add", "clf@2"),
        ("registry.add", "clf@3"),
        ("registry.promote", "clf@2"),
        ("registry.promote", "clf@3"),
        ("registry.quarantine", "clf@3"),
        ("registry.promote.refused", "clf@3"),
        ("registry.rollback", "clf@2"),
        ("registry.retire", "clf@3"),
    ]
    assert reg.audit.verify().ok
    reg.close()


def test_stored_files_tampered_after_add_are_refused(home):
    reg = Registry.open(home=home)
    record = reg.add(_signed_model(home, "a", 1), "clf")
    weights = record.path / "model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match="changed"):
        reg.promote("clf", 1)
    with pytest.raises(PolicyError, match="changed"):
        reg.open_for_use("clf@1")


def test_policy_gates_use_the_recorded_assessment_report(home, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"gates": [{"name": "g", "passed": False}], "passed": False,
                                  "clean": {"accuracy": 0.91}, "findings": []}))  # fmt: skip
    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "a", 1), "clf", report=report)
    reg.add(_signed_model(home, "b", 2), "clf")
    policy = Policy(require_report=True)
    with pytest.raises(PolicyError, match="did not pass"):
        reg.promote("clf", 1, policy=policy)
    with pytest.raises(PolicyError, match="no assessment report"):
        reg.promote("clf", 2, policy=policy)
    strict = tmp_path / "policy.yaml"
    strict.write_text("gates:\n  - {name: acc, metric: clean_accuracy, min: 0.95}\n")
    with pytest.raises(PolicyError, match="acc"):
        reg.promote("clf", 1, policy=_policy(strict))
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("gates:\n  - {name: acc, metric: clean_accuracy, min: 0.9}\n")
    reg.promote("clf", 1, policy=_policy(lenient))
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates:\n  - {metric: clean_accuracy}\n")
    with pytest.raises(Exception, match="min or max"):
        _policy(bad)


def _policy(path: Path) -> Policy:
    from dlsec.assess import load_promotion_policy

    loaded = load_promotion_policy(path)
    return Policy(require_report=loaded.requires_report, gates=loaded.check if loaded.gates else None)


_WRITER = """
import sys
from pathlib import Path
from dlsec.store import Registry
home, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
reg = Registry.open(sys.argv[4] if len(sys.argv) > 4 else None, home=home)
for i in range(n):
    src = home / "src" / f"{tag}{i}"
    src.mkdir(parents=True)
    (src / "w.bin").write_bytes(f"{tag}-{i}".encode())
    reg.add(src, "shared")
    reg.audit.append("test.event", f"{tag}{i}", {})
"""


def _concurrent_writers(home: Path, url: str | None, n: int = 8) -> Registry:
    args = [str(home), "", str(n)] + ([url] if url else [])
    procs = []
    for tag in ("p", "q"):
        args[1] = tag
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, *args], stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    reg = Registry.open(url, home=home)
    rows = reg.versions("shared")
    assert sorted(r["version"] for r in rows) == list(range(1, 2 * n + 1))
    assert len({r["root_digest"] for r in rows}) == 2 * n
    entries = reg.audit.entries()
    assert [e.index for e in entries] == list(range(4 * n))
    assert sum(e.action == "registry.add" for e in entries) == 2 * n
    assert reg.audit.verify().ok
    return reg


def test_many_connections_creating_one_database_at_once_all_succeed(tmp_path):
    # SQLite refuses the switch to WAL at once (no busy wait) while another connection holds the
    # file: the opener must read the mode first and retry, or one of these fails with "locked".
    import threading

    from dlsec.store._db import open_database

    failures: list[str] = []
    for round_ in range(10):
        home = tmp_path / str(round_)
        barrier = threading.Barrier(12)

        def opener(home: Path = home, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                open_database(home=home).dispose()
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(str(exc))

        threads = [threading.Thread(target=opener) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    _concurrent_writers(tmp_path, None).close()


def test_show_lists_the_versions_own_audit_entries_not_those_of_a_longer_number(home):
    reg = Registry.open(home=home)
    reg.add(_model(home / "src" / "a", 0), "clf")
    reg.audit.append("registry.note", "clf@10", {"n": 10})  # another version whose ref starts with clf@1
    reg.audit.append("registry.note", "clf@1:card", {"n": 1})  # the version itself, qualified
    shown = reg.show("clf@1")
    assert [(e["action"], e["subject"]) for e in shown["audit"]] == [
        ("registry.add", "clf@1"),
        ("registry.note", "clf@1:card"),
    ]


def test_registry_cli_flow_and_errors(capsys, home, monkeypatch):
    monkeypatch.setenv("DLSEC_PASSPHRASE", PASS)
    h = str(home)
    model = _model(home / "src" / "cli", 3)
    assert run_json(capsys, "--home", h, "sign", str(model))["files"] == 1
    assert run_json(capsys, "--home", h, "verify", str(model))["verified"]
    added = run_json(capsys, "--home", h, "registry", "add", str(model), "--name", "m")
    assert added["ref"] == "m@1" and added["signed"]
    run_json(capsys, "--home", h, "registry", "promote", "m@1", "--alias", "staging")
    listing = run_json(capsys, "--home", h, "registry", "list")
    assert listing[0]["aliases"] == ["staging"]
    shown = run_json(capsys, "--home", h, "registry", "show", "m@staging")
    assert [e["action"] for e in shown["audit"]] == ["registry.add", "registry.promote"]
    code, _, err = run(capsys, "--home", h, "registry", "show", "nope@1")
    assert_user_error(code, err, "no model 'nope'")
    code, _, err = run(capsys, "--home", h, "registry", "promote", "m")
    assert_user_error(code, err, "NAME@NUMBER")
    (model / "model.safetensors").write_bytes(b"tampered")
    code, _, err = run(capsys, "--home", h, "verify", str(model))
    assert code == 1 and "changed" in err and "Traceback" not in err
    run_json(capsys, "--home", h, "registry", "quarantine", "m@1", "--reason", "test")
    code, _, err = run(capsys, "--home", h, "eval", "-m", "registry:m@staging", "-d", "builtin:digits")
    assert code == 1 and "quarantined" in err


def test_quarantine_and_rollback_moves_every_alias_that_pointed_at_the_version(home):
    reg = Registry.open(home=home)
    for i, name in enumerate(("a", "b", "c")):
        reg.add(_signed_model(home, name, i + 1), "clf")
    reg.promote("clf", 1, alias="staging")
    reg.promote("clf", 1)
    reg.promote("clf", 2)
    reg.promote("clf", 2, alias="staging")
    reg.promote("clf", 3, alias="canary")
    done = reg.quarantine_and_rollback("clf", 2, reason="drift", actor="tester")
    assert done.record.ref == "clf@2" and done.record.status == "quarantined"
    assert done.rolled_back == {"production": 1, "staging": 1} and done.failures == {}
    assert reg.aliases("clf") == {"production": 1, "staging": 1, "canary": 3}  # canary untouched
    done.raise_failure()  # nothing failed: nothing raised
    # Only the named aliases move; () quarantines only.
    reg.release("clf", 2)
    reg.promote("clf", 2)
    reg.promote("clf", 2, alias="staging")
    done = reg.quarantine_and_rollback("clf", 2, aliases=["staging"])
    assert done.rolled_back == {"staging": 1} and reg.aliases("clf")["production"] == 2
    reg.release("clf", 2)
    done = reg.quarantine_and_rollback("clf", 2, aliases=())
    assert done.rolled_back == {} and reg.get("clf@2").status == "quarantined"
    actions = [e.action for e in reg.audit.entries(subject="clf@2")]
    assert actions.count("registry.quarantine") == 3
    reg.close()


def test_a_failed_rollback_keeps_the_quarantine_and_names_the_alias(home, capsys):
    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "a", 1), "clf")
    reg.promote("clf", 1)
    done = reg.quarantine_and_rollback("clf", 1)
    assert done.record.status == "quarantined" and done.rolled_back == {}
    assert set(done.failures) == {"production"}
    with pytest.raises(RegistryError, match="no earlier good version"):
        done.raise_failure()
    reg.close()
    # The CLI goes through the same method: exit 2 naming the failure, the quarantine holds.
    h = str(home)
    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "b", 2), "other")
    reg.promote("other", 1)
    reg.close()
    code, _, err = run(capsys, "--home", h, "registry", "quarantine", "other@1", "--rollback")
    assert_user_error(code, err, "no earlier good version")
    assert Registry.open(home=home).get("other@1").status == "quarantined"


def test_quarantine_with_rollback_from_the_cli(home, capsys):
    reg = Registry.open(home=home)
    reg.add(_signed_model(home, "a", 1), "clf")
    reg.add(_signed_model(home, "b", 2), "clf")
    reg.promote("clf", 1)
    reg.promote("clf", 2)
    reg.close()
    out = run_json(capsys, "--home", str(home), "registry", "quarantine", "clf@2", "--rollback")
    assert out == {"action": "quarantine", "ref": "clf@2", "status": "quarantined",
                   "rolled_back": {"production": 1}}  # fmt: skip


def test_lineage_comes_from_the_training_card(home, capsys):
    from dlsec.core import TrainingCard
    from dlsec.errors import ModelLoadError

    model = _model(home / "src" / "carded", 1)
    card = TrainingCard(
        {
            "schema": "dlsec.model-card/1",
            "recipe": "dp-sgd",
            "recipe_params": {"epsilon": 3.0},
            "seed": 4,
            "train_config": {"epochs": 2, "lr": 0.5},
            "dataset": {"name": "builtin:breast-cancer", "sha256": "ab" * 32},
        }
    )
    card.write(model / "model.json")
    reg = Registry.open(home=home)
    lineage = reg.add(model, "carded").lineage
    assert lineage["data_sha256"] == "ab" * 32
    assert lineage["training_config"] == {
        "recipe": "dp-sgd",
        "recipe_params": {"epsilon": 3.0},
        "seed": 4,
        "train_config": {"epochs": 2, "lr": 0.5},
    }
    # Given values win over the card's.
    given = reg.add(model, "carded", data_sha256="cd" * 32, training_config={"note": "x"}).lineage
    assert given["data_sha256"] == "cd" * 32 and given["training_config"] == {"note": "x"}
    (model / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="model.json"):
        reg.add(model, "carded")
    reg.close()
    code, _, err = run(capsys, "--home", str(home), "registry", "add", str(model), "--name", "carded")
    assert_user_error(code, err, "model.json")


# -- PostgreSQL, against a real server when its binaries are installed --------------------------


def _initdb() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        return candidate
    found = shutil.which("initdb")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def postgres_url():
    need_module("psycopg", "pip install -e .[dev]")
    initdb = _initdb()
    if initdb is None:
        missing("PostgreSQL server binaries are not installed (make test installs them on Debian)")
    bindir = initdb.parent
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="dlsec-pg-"))  # outside pytest's root-only folders
    data = scratch / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(scratch, "postgres")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
         "-o", f"-p {port} -k {data} -h 127.0.0.1", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        time.sleep(0.1)
        shutil.rmtree(scratch, ignore_errors=True)


def test_postgresql_registry_flow_and_concurrent_writers(postgres_url, tmp_path):
    generate_signing_keys(tmp_path / "keys", passphrase=PASS, scrypt_log_n=10)
    reg = _concurrent_writers(tmp_path, postgres_url, n=4)
    reg.add(_signed_model(tmp_path, "pg", 5), "pgmodel")
    reg.promote("pgmodel", 1)
    reg.quarantine("pgmodel", 1)
    with pytest.raises(ModelOutOfServiceError):
        reg.open_for_use("pgmodel")
    reg.audit.append("keys.generate", "/deep" * 100, {})  # PostgreSQL enforces column lengths
    # The subject filter is a literal, case-sensitive prefix on PostgreSQL too (no LIKE wildcards).
    for subject in ("pg_model@1", "pgXmodel@1", "PG_MODEL@1"):
        reg.audit.append("registry.note", subject, {})
    assert [e.subject for e in reg.audit.entries(subject="pg_model")] == ["pg_model@1"]
    assert [e.subject for e in reg.audit.entries(subject="pgmodel@1")] == ["pgmodel@1"] * 3
    from dlsec.store._apikeys import KeyStore

    KeyStore(reg.db).create(role="client", budget=2**63 - 1, rate=f"{10**12}/day")  # BIGINT, 40 chars
    assert reg.audit.verify().ok
    reg.close()
