"""SARIF from `dlsec scan`: a file that could not be scanned is a tool-execution notification."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import jsonschema
import numpy as np
from safetensors.numpy import save_file

from dlsec.scan import scan_paths, scan_sarif

SCHEMA = Path(__file__).parent.parent / "schemas" / "sarif-schema-2.1.0.json"


def _invocation(log: dict) -> dict:
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(log)
    [run] = log["runs"]
    [invocation] = run["invocations"]
    return invocation


def test_unscannable_files_are_notifications_and_the_verdict_is_partial(tmp_path: Path) -> None:
    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "ok.safetensors"))
    (tmp_path / "unknown.bin").write_bytes(b"GIF89a not a model at all")
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2)[:-7])
    log = scan_sarif(scan_paths([tmp_path]), version="1.0")
    invocation = _invocation(log)
    notes = invocation["toolExecutionNotifications"]
    assert sorted(n["descriptor"]["id"] for n in notes) == [
        "dlsec.scan/unscannable-malformed",
        "dlsec.scan/unscannable-unknown-format",
    ]
    assert all(n["level"] == "error" and n["message"]["text"].startswith("not scanned: ") for n in notes)
    assert any("unknown.bin" in n["message"]["text"] for n in notes)
    assert invocation["properties"] == {"verdict": "partial", "complete": False}
    allowed = _invocation(scan_sarif(scan_paths([tmp_path]), version="1.0", allow_unscannable=True))
    assert {n["level"] for n in allowed["toolExecutionNotifications"]} == {"warning"}


def test_a_complete_scan_has_no_notifications(tmp_path: Path) -> None:
    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "ok.safetensors"))
    invocation = _invocation(scan_sarif(scan_paths([tmp_path]), version="1.0"))
    assert invocation["toolExecutionNotifications"] == []
    assert invocation["properties"] == {"verdict": "pass", "complete": True}
