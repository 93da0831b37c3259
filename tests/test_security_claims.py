"""The README's security claims, each through the real CLI or a running gateway.

One test per claim, named in the README's feature table; each fails if the claim breaks:

- promotion and use refuse a *signed* version that holds an unsafe file (only the scan can);
- ``registry add`` refuses a model whose signature fails, and stores nothing;
- a key revoked by ``dlsec keys revoke`` in another process is refused by a running
  ``dlsec serve`` on its next request, without a restart;
- signatures are checked before any file is hashed;
- ``--classical-only`` accepts an ECDSA-only signature, and only with it.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.store import Registry
from dlsec.store._apikeys import KeyStore
from tests.cli.test_cli import run, run_json
from tests.release.test_registry import PASS, _model
from tests.scan.corpus import call, shell
from tests.serve.conftest import auth, make_gateway

X = [[0.1, 0.2, 0.3, 0.4]]
CLI = "import sys; from dlsec.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_signing_keys(tmp_path / "keys", passphrase=PASS, scrypt_log_n=10)
    monkeypatch.setenv("DLSEC_PASSPHRASE", PASS)
    return tmp_path


def _dlsec(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``dlsec --home HOME ARGS`` in its own process."""
    return subprocess.run(
        [sys.executable, "-c", CLI, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _bundle(sig: Path) -> dict:
    return json.loads(sig.read_text())


# -- 1. a signed version holding an unsafe file: only the scan refuses it ----------------------


def _signed_with_payload(home: Path) -> tuple[Path, Path]:
    """A signed model folder whose extra ``extra.pkl`` runs a shell command when unpickled."""
    marker = home / "PWNED"
    model = _model(home / "src" / "evil", 1)
    (model / "extra.pkl").write_bytes(call("os", "system", shell(marker), protocol=2))
    sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
    return model, marker


def test_claim_promotion_and_use_refuse_a_signed_version_holding_an_unsafe_file(capsys, home, monkeypatch):
    h = str(home)
    model, marker = _signed_with_payload(home)
    # The signature is good: verification alone would let it through.
    assert run_json(capsys, "--home", h, "verify", str(model))["verified"]
    added = run_json(capsys, "--home", h, "registry", "add", str(model), "--name", "m")
    assert added["signed"] and added["scan"]["verdict"] == "unsafe"
    verdicts = {Path(name).name: verdict for name, verdict in added["scan"]["files"].items()}
    assert verdicts == {"extra.pkl": "unsafe", "model.safetensors": "safe"}, verdicts

    code, _, err = run(capsys, "--home", h, "registry", "promote", "m@1")
    assert code == 1 and "Traceback" not in err
    assert "scan: not clean (extra.pkl)" in err and "signature" not in err
    code, _, err = run(capsys, "--home", h, "eval", "-m", "registry:m@1", "-d", "builtin:breast-cancer")
    assert code == 1 and "scan: not clean (extra.pkl)" in err and "signature" not in err

    # The refusal is logged with the scan as its only broken rule, and no alias moved.
    shown = run_json(capsys, "--home", h, "registry", "show", "m@1")
    refused = [e for e in shown["audit"] if e["action"] == "registry.promote.refused"]
    assert [e["details"]["rules"] for e in refused] == [["scan: not clean (extra.pkl)"]]
    assert shown["aliases"] == []

    # A version promoted while the scanner passed it (an older scanner, say) is still not
    # served: the gateway scans again before it loads a version.
    import dlsec.scan

    real = dlsec.scan.scan_paths
    monkeypatch.setattr(dlsec.scan, "scan_paths", lambda paths: [r for r in real(paths) if r.safe])
    reg = Registry.open(home=home)
    reg.promote("m", 1)
    key = KeyStore(reg.db).create(role="client", models=["m"])[0]
    reg.close()
    monkeypatch.setattr(dlsec.scan, "scan_paths", real)
    from fastapi.testclient import TestClient

    from dlsec.serve import create_app

    gateway = make_gateway(home, models=["m"])
    with TestClient(create_app(gateway)) as client:
        r = client.post("/v1/models/m/predict", json={"inputs": [[0.0] * 30]}, headers=auth(key))
        assert r.status_code == 503 and r.json()["reason"] == "unavailable"
        assert "scan: not clean (extra.pkl)" in r.json()["error"]
        (served,) = client.get("/v1/models", headers=auth(key)).json()
        assert served["status"] == "unavailable" and served["version"] == 1
    assert not marker.exists()


# -- 2. registry add refuses a model whose signature fails ---------------------------------------


def _nothing_stored(home: Path) -> None:
    reg = Registry.open(home=home)
    try:
        assert reg.versions() == []
        assert not any(e.action == "registry.add" for e in reg.audit.entries())
    finally:
        reg.close()
    blobs = home / "registry" / "blobs"
    assert not blobs.exists() or not any(p for p in blobs.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("failure", ["changed-file", "other-key", "altered-signature", "no-ml-dsa"])
def test_claim_registry_add_refuses_a_model_whose_signature_fails(capsys, home, failure):
    model = _model(home / "src" / "m", 1)
    if failure == "other-key":
        generate_signing_keys(home / "other", passphrase=PASS, scrypt_log_n=10)
        sign_model(model, load_signing_keys(home / "other", passphrase=PASS))
    else:
        sig, _ = sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
        bundle = _bundle(sig)
        if failure == "changed-file":
            data = bytearray((model / "model.safetensors").read_bytes())
            data[-1] ^= 1
            (model / "model.safetensors").write_bytes(bytes(data))
        elif failure == "altered-signature":
            raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
            raw[10] ^= 0x40
            bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
            sig.write_text(json.dumps(bundle))
        else:
            del bundle["dsseEnvelope"]["signatures"][1]
            sig.write_text(json.dumps(bundle))
    expected = {
        "changed-file": "FileChangedError",
        "other-key": "WrongKeyError",
        "altered-signature": "BadSignatureError",
        "no-ml-dsa": "HybridSignatureError",
    }[failure]
    message = {
        "changed-file": "'model.safetensors' changed since signing",
        "other-key": "not by the trusted ECDSA key",
        "altered-signature": "the ECDSA signature does not verify",
        "no-ml-dsa": "the ML-DSA-65 half of the hybrid signature is missing",
    }[failure]
    code, out, err = run(capsys, "--home", str(home), "registry", "add", str(model), "--name", "m", "--json")
    assert code == 1 and out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert message in line, (expected, line)
    _nothing_stored(home)


# -- 3. a key revoked in another process is refused by the running gateway ----------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``dlsec serve`` in its own process over a signed, promoted model, and two client keys."""
    reg = Registry.open(home=home)
    model = _model(home / "src" / "m", 1)
    sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
    reg.add(model, "clf")
    reg.promote("clf", 1)
    store = KeyStore(reg.db)
    keys = {"doomed": store.create(role="client")[0], "kept": store.create(role="client")[0]}
    reg.close()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "--home", str(home), "serve", "--models", "clf", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # up to 60 s on a loaded machine
            if proc.poll() is not None:
                pytest.fail(
                    f"dlsec serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=2).json()["models"] == {"clf": "serving"}:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("dlsec serve did not start")
        yield url, keys
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _predict(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/clf/predict", json={"inputs": X}, headers=auth(key), timeout=30)


def test_claim_a_key_revoked_by_another_process_is_refused_by_the_running_gateway(home, served):
    url, keys = served
    assert _predict(url, keys["doomed"]).status_code == 200
    assert _predict(url, keys["kept"]).status_code == 200
    key_id = keys["doomed"].split("_")[1]
    done = _dlsec(home, "keys", "revoke", key_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revoked"]
    # Past the gateway's refresh interval (0.2 s): its very next request is refused.
    time.sleep(0.3)
    r = _predict(url, keys["doomed"])
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert _predict(url, keys["doomed"]).status_code == 401
    assert _predict(url, keys["kept"]).status_code == 200


# -- 4. signatures are checked before any file is hashed -----------------------------------------


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the signing code hashes (its one hashing function, spied on)."""
    import dlsec.release._signing as signing

    calls: list[Path] = []
    real = signing.sha256_file

    def spy(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(signing, "sha256_file", spy)
    return calls


@pytest.mark.parametrize("failure", ["other-key", "altered-signature", "no-ml-dsa", "altered-statement"])
def test_claim_signatures_are_checked_before_any_file_is_hashed(capsys, home, hashed, failure):
    model = _model(home / "src" / "m", 1)
    (model / "big.bin").write_bytes(b"\0" * 100_000)
    signer = "other" if failure == "other-key" else "keys"
    if signer == "other":
        generate_signing_keys(home / "other", passphrase=PASS, scrypt_log_n=10)
    sig, _ = sign_model(model, load_signing_keys(home / signer, passphrase=PASS))
    assert len(hashed) == 2  # the spy sees signing's hashing
    bundle = _bundle(sig)
    if failure == "altered-signature":
        raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
        raw[10] ^= 0x40
        bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    elif failure == "no-ml-dsa":
        del bundle["dsseEnvelope"]["signatures"][1]
    elif failure == "altered-statement":
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        statement["predicate"]["resources"][0]["digest"] = "00" * 32
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    hashed.clear()
    code, _, err = run(capsys, "--home", str(home), "verify", str(model))
    assert code == 1 and "Traceback" not in err
    assert hashed == []
    code, _, err = run(capsys, "--home", str(home), "registry", "add", str(model), "--name", "m")
    assert code == 1 and hashed == []
    # With a good signature the same command hashes every file: the spy is on the real path.
    sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
    hashed.clear()
    assert run_json(capsys, "--home", str(home), "verify", str(model))["verified"]
    assert sorted(p.name for p in hashed) == ["big.bin", "model.safetensors"]


# -- 5. --classical-only ---------------------------------------------------------------------


def test_claim_classical_only_accepts_an_ecdsa_only_signature_and_nothing_less(capsys, home):
    h = str(home)
    model = _model(home / "src" / "m", 1)
    sig, _ = sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
    hybrid = sig.read_text()
    assert run_json(capsys, "--home", h, "verify", str(model))["hybrid"] is True
    # The ECDSA half alone (what `model_signing sign key` makes).
    bundle = json.loads(hybrid)
    del bundle["dsseEnvelope"]["signatures"][1]
    sig.write_text(json.dumps(bundle))
    code, _, err = run(capsys, "--home", h, "verify", str(model))
    assert code == 1 and "ML-DSA-65 half of the hybrid signature is missing" in err
    accepted = run_json(capsys, "--home", h, "verify", str(model), "--classical-only")
    assert accepted["verified"] and accepted["hybrid"] is False
    # One public ECDSA PEM file: only with --classical-only.
    pem = str(home / "keys" / "ecdsa-p256.pub.pem")
    code, _, err = run(capsys, "--home", h, "verify", str(model), "--pub", pem)
    assert code == 2 and "hybrid signature needs both public keys" in err
    assert run_json(capsys, "--home", h, "verify", str(model), "--pub", pem, "--classical-only")["verified"]
    # --classical-only weakens nothing else: a bad ECDSA signature or a changed file still fail.
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[10] ^= 0x40
    altered = json.loads(json.dumps(bundle))
    altered["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(altered))
    code, _, err = run(capsys, "--home", h, "verify", str(model), "--classical-only")
    assert code == 1 and "the ECDSA signature does not verify" in err
    sig.write_text(json.dumps(bundle))
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "model.safetensors").write_bytes(bytes(data))
    code, _, err = run(capsys, "--home", h, "verify", str(model), "--classical-only")
    assert code == 1 and "changed since signing" in err
