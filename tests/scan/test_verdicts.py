"""The three verdicts (safe, unsafe, unscannable with its kind), their exit codes, and SARIF."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import jsonschema
import numpy as np
import py7zr
import pytest
from safetensors.numpy import save_file

from dlsec.cli import main
from dlsec.errors import EXIT_FINDING, EXIT_OK, EXIT_UNSCANNABLE
from dlsec.scan import UNSCANNABLE_KINDS, scan_file, scan_paths, scan_sarif
from tests.scan.corpus import call, set_zip_flag_encrypted, torch_zip, zip_of

SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "sarif-schema-2.1.0.json"
CLEAN = pickle.dumps({"weights": [1.0, 2.0], "epoch": 3}, protocol=2)
EVIL = call("os", "system", "true", protocol=2)


def _unscannable(folder: Path) -> dict[str, tuple[Path, str]]:
    """One file per way a file can be unscannable: name -> (path, expected kind)."""
    files: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, kind: str) -> None:
        path = folder / name
        path.write_bytes(data)
        files[name] = (path, kind)

    # ZipCrypto-like ciphertext: a member flagged encrypted whose bytes are not plain data.
    rng = np.random.default_rng(0)
    cipher = bytes(rng.integers(0, 256, 400, dtype=np.uint8))
    put("encrypted.pt", set_zip_flag_encrypted(torch_zip(b"\x80\x02" + cipher)), "encrypted")
    put("encrypted.npz", set_zip_flag_encrypted(zip_of({"w.npy": cipher})), "encrypted")
    put("truncated.pkl", CLEAN[:-7], "truncated")
    put("truncated.pt", torch_zip(CLEAN)[:-40], "truncated")
    put("unknown.bin", b"GIF89a not a model at all", "unknown-format")
    put("pickle.safetensors", CLEAN, "extension-mismatch")
    put("pickle.npy", CLEAN, "extension-mismatch")
    seven = folder / "encrypted.7z"
    with py7zr.SevenZipFile(seven, "w", password="secret") as archive:
        archive.writestr(CLEAN, "model.pkl")
    files["encrypted.7z"] = (seven, "encrypted")
    return files


def test_each_kind_of_unscannable_file_is_named(tmp_path: Path) -> None:
    for name, (path, kind) in _unscannable(tmp_path).items():
        result = scan_file(path)
        assert result.verdict == "unscannable", (name, result.findings)
        assert result.error_kind == kind, (name, result.error)
        assert result.error and kind in UNSCANNABLE_KINDS
        assert result.to_dict()["error_kind"] == kind


def test_an_encryption_flag_over_clear_bytes_is_read_whole(tmp_path: Path) -> None:
    clean = tmp_path / "clean.pt"
    clean.write_bytes(set_zip_flag_encrypted(torch_zip(CLEAN)))
    result = scan_file(clean)
    assert result.verdict == "safe" and result.findings == []  # PyTorch reads it; so did we
    assert result.notes and "flagged as encrypted" in result.notes[0]
    evil = tmp_path / "evil.pt"
    evil.write_bytes(set_zip_flag_encrypted(torch_zip(EVIL)))
    result = scan_file(evil)
    assert result.verdict == "unsafe" and result.findings[0].import_name == "os.system"


def test_a_disguised_file_that_runs_code_is_unsafe_not_just_mismatched(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(EVIL)
    result = scan_file(path)
    assert result.verdict == "unsafe" and result.findings[0].import_name == "os.system"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes_of_the_three_verdicts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    safe = tmp_path / "ok.safetensors"
    save_file({"w": np.ones(3, dtype=np.float32)}, str(safe))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(EVIL)
    (tmp_path / "u").mkdir()
    files = _unscannable(tmp_path / "u")
    some_unscannable = [str(p) for p, _ in list(files.values())[:2]]
    assert _cli(capsys, "scan", str(safe))[0] == EXIT_OK
    code, out, _ = _cli(capsys, "scan", str(safe), *some_unscannable)
    assert code == EXIT_UNSCANNABLE and "encrypted" in out and "2 unscannable" in out
    code, out, _ = _cli(capsys, "scan", str(safe), *some_unscannable, "--allow-unscannable")
    assert code == EXIT_OK and "allowed by --allow-unscannable" in out
    # Unsafe outranks unscannable, and --allow-unscannable does not excuse it.
    code, out, _ = _cli(capsys, "scan", str(evil), *some_unscannable, "--allow-unscannable")
    assert code == EXIT_FINDING and "os.system" in out
    code, _, err = _cli(capsys, "scan", str(safe), "--format", "xml")
    assert code == 2 and err.startswith("error: --format")
    code, _, err = _cli(capsys, "scan", str(safe), "--output", str(tmp_path / "x.json"))
    assert code == 2 and "--format" in err and not (tmp_path / "x.json").exists()


def _validate(log: dict) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft4Validator(schema).validate(log)


def test_sarif_is_valid_and_has_one_result_per_finding(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(EVIL)
    safe = tmp_path / "ok.safetensors"
    save_file({"w": np.ones(3, dtype=np.float32)}, str(safe))
    files = _unscannable(tmp_path)
    results = scan_paths([tmp_path])
    log = scan_sarif(results, version="1.2.3")
    _validate(log)
    [run] = log["runs"]
    sarif_results = run["results"]
    expected = sum(len(r.findings) for r in results) + sum(1 for r in results if r.verdict == "unscannable")
    assert len(sarif_results) == expected
    by_uri: dict[str, list[dict]] = {}
    for item in sarif_results:
        [location] = item["locations"]
        uri = location["physicalLocation"]["artifactLocation"]["uri"]
        by_uri.setdefault(uri, []).append(item)
        assert item["ruleId"] in {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    evil_results = next(v for k, v in by_uri.items() if k.endswith("evil.pkl"))
    assert {r["properties"]["import"] for r in evil_results} == {"os.system"}
    assert any(r["level"] == "error" and r["ruleId"] == "dlsec.scan/unsafe-call" for r in evil_results)
    for name, (_, kind) in files.items():
        [item] = next(v for k, v in by_uri.items() if k.endswith(name))
        assert item["ruleId"] == f"dlsec.scan/unscannable-{kind}" and item["level"] == "error"
    assert not any(k.endswith("ok.safetensors") for k in by_uri)
    warned = scan_sarif(results, version="1.2.3", allow_unscannable=True)
    _validate(warned)
    assert {r["level"] for r in warned["runs"][0]["results"] if "unscannable" in r["ruleId"]} == {"warning"}


def test_sarif_from_the_cli_is_written_atomically_and_valid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/evil.pt").write_bytes(torch_zip(EVIL))
    code, out, err = _cli(capsys, "scan", "models", "--format", "sarif", "--output", "scan.sarif")
    assert code == EXIT_FINDING and out == "" and "sarif written to scan.sarif" in err
    log = json.loads(Path("scan.sarif").read_text())
    _validate(log)
    results = log["runs"][0]["results"]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert uris == {"models/evil.pt"}  # relative to the repository root, as code scanning expects
    code, out, _ = _cli(capsys, "scan", "models", "--json")
    assert code == EXIT_FINDING and json.loads(out)["files"][0]["verdict"] == "unsafe"


def test_a_broken_sarif_log_fails_the_schema_check() -> None:
    log = scan_sarif([], version="1.0")
    _validate(log)
    log["runs"][0]["results"] = [{"ruleId": "x", "level": "fatal", "message": {"text": "m"}}]
    with pytest.raises(jsonschema.ValidationError):
        _validate(log)


def test_the_vendored_schema_is_the_official_one() -> None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "sarif-schema-2.1.0.json"
    if not shared.is_file():
        pytest.skip("no shared/schemas beside this checkout")
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(shared.read_text())


@pytest.mark.parametrize("header_len", [128, 384, 640])
def test_a_safetensors_header_that_starts_like_a_pickle_is_still_safetensors(
    tmp_path: Path, header_len: int
) -> None:
    """A header of 128, 384, 640... bytes begins 0x80 0x00-0x02, a pickle PROTO opcode."""
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (header_len - len(header))  # safetensors pads its header with spaces
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + header + b"\x00" * 8)
    assert path.read_bytes()[0] == 0x80
    result = scan_file(path)
    assert (result.verdict, result.format) == ("safe", "safetensors"), result.error


def test_bytes_that_are_also_a_whole_pickle_are_a_polyglot() -> None:
    import io

    from dlsec.scan._allowlist import DEFAULT_ALLOWLIST
    from dlsec.scan._scanner import _Scan

    scan = _Scan(DEFAULT_ALLOWLIST)
    scan.pickle_reading(io.BytesIO(EVIL), 0, member=None)
    codes = {f.code for f in scan.ctx.findings}
    assert {"polyglot", "unsafe-call"} <= codes
    honest = _Scan(DEFAULT_ALLOWLIST)
    honest.pickle_reading(io.BytesIO(b"\x80\x00" + b"\x00" * 6 + b"{}"), 0, member=None)
    assert honest.ctx.findings == []


def test_torchscript_is_unvetted_with_its_classes_and_methods_named(tmp_path: Path) -> None:
    import zipfile

    import torch

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    result = scan_file(path)
    assert (result.verdict, result.format, result.error_kind) == ("unscannable", "torchscript", "unvetted")
    assert result.findings == []  # a scripted nn.Sequential is not "unsafe"
    assert result.error and "Sequential" in result.error and "forward" in result.error
    # The same archive with a pickle that calls os.system is unsafe, whatever its code says.
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, EVIL if info.filename.endswith("/data.pkl") else data)
    result = scan_file(evil)
    assert result.verdict == "unsafe" and result.findings[0].import_name == "os.system"
