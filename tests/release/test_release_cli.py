"""``dlsec scan``, ``convert``, ``encrypt``, ``decrypt`` and ``encrypt-keygen`` through ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlsec.cli import main
from tests.scan.corpus import call, shell, torch_zip


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "models" / "good.pt"
    good.parent.mkdir()
    torch.save({"w": torch.ones(3)}, good)
    bad = tmp_path / "models" / "nested" / "bad.bin"
    bad.parent.mkdir()
    bad.write_bytes(torch_zip(call("os", "system", shell(tmp_path / "PWNED"), protocol=2)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 nothing")
    return {"good": good, "bad": bad, "junk": junk, "marker": tmp_path / "PWNED"}


def test_scan_exit_codes_and_json_records(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "scan", str(files["good"]), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["verdict"] == "pass" and doc["complete"] is True
    assert doc["counts"] == {"safe": 1, "unsafe": 0, "unscannable": 0}
    [record] = doc["files"]
    assert record["verdict"] == "safe" and record["format"] == "torch-zip" and record["findings"] == []
    code, out, _ = run(capsys, "scan", str(files["good"].parent), "--json")  # a folder, recursively
    doc = json.loads(out)
    records = {Path(r["path"]).name: r for r in doc["files"]}
    assert code == 1 and set(records) == {"good.pt", "bad.bin"} and doc["verdict"] == "fail"
    finding = records["bad.bin"]["findings"][0]
    assert records["bad.bin"]["verdict"] == "unsafe" and finding["import"] == "os.system"
    assert finding["severity"] == "critical" and isinstance(finding["offset"], int)
    code, out, _ = run(capsys, "scan", str(files["junk"]), "--json")
    doc = json.loads(out)
    assert code == 3 and doc["files"][0]["verdict"] == "unscannable"  # its own exit code
    assert doc["verdict"] == "partial" and doc["complete"] is False  # what was not read never passes
    code, _, err = run(capsys, "scan", str(files["good"].parent / "missing.pt"))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert not files["marker"].exists()


def test_scan_human_output_and_allow_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, Path]
) -> None:
    code, out, _ = run(capsys, "scan", str(files["bad"]), str(files["good"]))
    assert code == 1 and "unsafe" in out and "os.system" in out and "1 safe, 1 unsafe, 0 unscannable" in out
    import argparse

    ns = tmp_path / "ns.pt"
    torch.save({"args": argparse.Namespace(a=1)}, ns)
    code, out, _ = run(capsys, "scan", str(ns), "--allow", "argparse.Namespace")
    assert code == 0 and "--allow extended the allowlist" in out and "argparse.Namespace" in out
    code, out, _ = run(capsys, "scan", str(ns), "--allow", "argparse.Namespace", "--json")
    record = json.loads(out)["files"][0]
    assert record["allowed_by_user"] == ["argparse.Namespace"] and record["allowlist_extended"] == [
        "argparse.Namespace"
    ]
    code, _, err = run(capsys, "scan", str(ns), "--allow", "1bad name")
    assert code == 2 and "--allow" in err


def test_convert_command(capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, Path]) -> None:
    out_path = tmp_path / "good.safetensors"
    code, out, _ = run(capsys, "convert", str(files["good"]), "--to", str(out_path), "--json")
    assert code == 0 and json.loads(out)["tensors"] == 1 and out_path.is_file()
    code, _, _ = run(capsys, "scan", str(out_path))
    assert code == 0
    code, _, err = run(capsys, "convert", str(files["good"]), "--to", str(out_path))
    assert code == 2 and "--force" in err
    evil_out = tmp_path / "evil.safetensors"
    code, _, err = run(capsys, "convert", str(files["bad"]), "--to", str(evil_out))
    assert code == 1 and "os.system" in err and "dlsec scan" in err
    assert not evil_out.exists() and not files["marker"].exists()


def test_encrypt_decrypt_with_a_passphrase(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DLSEC_PASSPHRASE", "from the environment")
    src = files["good"]
    enc = tmp_path / "good.pt.enc"
    code, out, _ = run(capsys, "encrypt", str(src), "--json")
    assert code == 0 and json.loads(out)["output"] == str(src) + ".enc"
    Path(str(src) + ".enc").rename(enc)
    code, _, _ = run(capsys, "decrypt", str(enc), "-o", str(tmp_path / "back.pt"))
    assert code == 0 and (tmp_path / "back.pt").read_bytes() == src.read_bytes()
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text("a different passphrase\n")
    code, _, err = run(
        capsys, "decrypt", str(enc), "-o", str(tmp_path / "wrong.pt"), "--passphrase-file", str(pass_file)
    )
    assert code == 1 and "wrong key or passphrase" in err and not (tmp_path / "wrong.pt").exists()
    tampered = tmp_path / "tampered.enc"
    data = bytearray(enc.read_bytes())
    data[-3] ^= 1
    tampered.write_bytes(bytes(data))
    code, _, err = run(capsys, "decrypt", str(tampered), "-o", str(tmp_path / "t.pt"))
    assert code == 1 and not (tmp_path / "t.pt").exists()
    # Secrets never travel on the command line.
    code, _, _ = run(capsys, "encrypt", str(src), "--passphrase", "leaky")
    assert code == 2
    monkeypatch.delenv("DLSEC_PASSPHRASE")
    code, _, err = run(capsys, "encrypt", str(src), "-o", str(tmp_path / "x.enc"))
    assert code == 2 and "DLSEC_PASSPHRASE" in err


def test_keygen_and_recipient_flow(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text("identity passphrase")
    code, out, _ = run(
        capsys,
        "encrypt-keygen",
        "--out",
        str(tmp_path / "bob"),
        "--passphrase-file",
        str(pass_file),
        "--json",
    )
    keys = json.loads(out)
    assert code == 0 and Path(keys["public_key"]).name == "bob.pub.pem"
    enc = tmp_path / "model.enc"
    code, _, _ = run(capsys, "encrypt", str(files["good"]), "-o", str(enc), "--recipient", keys["public_key"])
    assert code == 0
    code, _, err = run(capsys, "decrypt", str(enc), "-o", str(tmp_path / "m.pt"))
    assert code == 2 and "--identity" in err
    code, _, _ = run(
        capsys,
        "decrypt",
        str(enc),
        "-o",
        str(tmp_path / "m.pt"),
        "--identity",
        keys["private_key"],
        "--passphrase-file",
        str(pass_file),
    )
    assert code == 0 and (tmp_path / "m.pt").read_bytes() == files["good"].read_bytes()
    monkeypatch.setenv("DLSEC_PASSPHRASE", "not the identity passphrase")
    code, _, err = run(
        capsys, "decrypt", str(enc), "-o", str(tmp_path / "n.pt"), "--identity", keys["private_key"]
    )
    assert code == 1 and "wrong passphrase" in err and not (tmp_path / "n.pt").exists()
    assert "not the identity passphrase" not in err
