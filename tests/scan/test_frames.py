"""Pickle framing: the scanner reads the opcodes that CPython's unpickler reads, or says unsafe.

A differential test: every pickle stream the scanner analyses (each file of the corpus, and
generated frame layouts) is also fed to CPython's own C unpickler, from a file object without
``peek()`` (``io.BytesIO``, as ``torch.load`` reads ``data.pkl``) and from one with it
(``io.BufferedReader``). That unpickler's ``find_class`` only records the names it is asked for
and returns an inert stub, so no payload runs; the payloads would only create a marker file in
a temporary folder, and each test asserts the marker never appears.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import pickle
import random
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from dlsec.scan import _scanner, scan_bytes, scan_file
from dlsec.scan._pickle import ScanContext, StreamTrace
from tests.scan.corpus import (
    BYPASSES,
    CONTAINERS,
    OPCODE_PATHS,
    Payload,
    benign_files,
    sglobal,
    shell,
    torch_zip,
    u,
    write_payload,
)

FRAME_CASES = [p for p in BYPASSES if "frame" in p.name]


class _Inert:
    """What the recording unpickler returns for every global: accepts anything, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


class _Recorder(pickle.Unpickler):  # the C implementation (_pickle.Unpickler)
    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self.names: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.names.append((module, name))
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()


def cpython_names(data: bytes, *, peek: bool) -> list[tuple[str, str]]:
    """The globals CPython's C unpickler asks for, reading ``data`` as a file, until it stops."""
    f: Any = io.BufferedReader(io.BytesIO(data)) if peek else io.BytesIO(data)  # type: ignore[arg-type]
    assert hasattr(f, "peek") == peek
    rec = _Recorder(f)
    with contextlib.suppress(Exception):  # where CPython stops, it imports nothing more
        rec.load()
    return rec.names


def traced_scan(monkeypatch: pytest.MonkeyPatch, path: Path | None = None, data: bytes | None = None):
    traces: list[StreamTrace] = []
    monkeypatch.setattr(_scanner, "ScanContext", functools.partial(ScanContext, trace=traces))
    result = scan_file(path) if path is not None else scan_bytes(data or b"", label="gen.pkl")
    return result, traces


def _is_prefix(short: list[Any], long: list[Any]) -> bool:
    return long[: len(short)] == short


def assert_scanner_sees_what_cpython_imports(result: Any, traces: list[StreamTrace]) -> int:
    """Every stream: CPython's names are a prefix of the scanner's reading of the same bytes.

    Without a frame-divergence finding, the flat reading must match both CPython readings.
    With one, the C unpickler's reading of a file without peek() must match the scanner's
    ``c-file`` reading (so the hidden imports are named), and the verdict is unsafe.
    Returns how many streams were compared.
    """
    divergent = any(f.code == "frame-divergence" for f in result.findings)
    compared = 0
    for trace in traces:
        if trace.view == "plain":
            continue  # joblib streams read as plain pickle: checked by the joblib tests
        same_start = [t for t in traces if t.data == trace.data and t.member == trace.member]
        views = {t.view: t.imports for t in same_start}
        no_peek = cpython_names(trace.data, peek=False)
        with_peek = cpython_names(trace.data, peek=True)
        flat = views.get("flat", trace.imports)
        assert _is_prefix(with_peek, flat), (trace.member, with_peek, flat)
        if "c-file" in views:
            assert divergent and result.verdict == "unsafe"
            assert _is_prefix(no_peek, views["c-file"]), (trace.member, no_peek, views["c-file"])
        else:
            assert _is_prefix(no_peek, flat), (trace.member, no_peek, flat, result.to_dict())
        compared += 1
    return compared


@pytest.mark.parametrize("payload", FRAME_CASES, ids=[p.name for p in FRAME_CASES])
def test_frame_divergence_is_unsafe_and_names_the_hidden_call(
    payload: Payload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "PWNED"
    data = payload.build(marker)
    # The divergence is real: a flat reading never imports, CPython reading a BytesIO does.
    assert cpython_names(data, peek=False) == [("os", "system")]
    for wrapped, name in ((data, "p.pkl"), (torch_zip(data), "p.pt")):
        path = tmp_path / name
        path.write_bytes(wrapped)
        result, traces = traced_scan(monkeypatch, path)
        assert result.verdict == "unsafe"
        codes = {(f.code, f.import_name) for f in result.findings}
        assert ("frame-divergence", None) in codes
        assert ("unsafe-call", "os.system") in codes
        frame = next(f for f in result.findings if f.code == "frame-divergence")
        assert frame.offset is not None and f"byte {frame.offset}" in frame.reason
        assert assert_scanner_sees_what_cpython_imports(result, traces) >= 1
    assert not marker.exists()


def test_frame_divergence_payloads_are_live_under_torch_load(tmp_path: Path) -> None:
    """torch.load (in a child process) runs each payload; plain pickle.loads does not."""
    jobs = []
    for p in FRAME_CASES:
        marker = tmp_path / f"{p.name}.marker"
        path = tmp_path / f"{p.name}.pt"
        path.write_bytes(torch_zip(p.build(marker)))
        jobs.append((str(path), str(marker)))
    script = (
        "import sys, json, torch\n"
        "for path, _ in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        torch.load(path, weights_only=False)\n"
        "    except Exception:\n"
        "        pass\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(jobs)],
        cwd=tmp_path,
        timeout=120,
        check=True,
        capture_output=True,
    )
    assert all(Path(m).exists() for _, m in jobs), [m for _, m in jobs if not Path(m).exists()]


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    import warnings

    folder = tmp_path_factory.mktemp("corpus")
    marker = folder / "PWNED"
    files = [write_payload(p, folder, marker) for p in BYPASSES + OPCODE_PATHS + CONTAINERS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files += benign_files(folder / "benign")
    return files, marker


def test_every_corpus_file_is_read_as_cpython_reads_it(
    corpus_files: tuple[list[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, marker = corpus_files
    compared = 0
    for path in files:
        result, traces = traced_scan(monkeypatch, path)
        compared += assert_scanner_sees_what_cpython_imports(result, traces)
    assert compared >= len(files) // 2  # most corpus files hold at least one pickle stream
    assert not marker.exists()


# -- generated frame layouts ---------------------------------------------------------------------


def _payload_bytes(rng: random.Random, marker: Path) -> bytes:
    """Opcodes that call os.system, to hide in constants where a misread can reach them."""
    call = sglobal("os", "system") + u(shell(marker)) + b"\x85R"
    text_call = b"cos\nsystem\n(S'" + shell(marker).encode() + b"'\ntR"
    return rng.choice([call, text_call, call + b"0" + text_call])


def _benign_object(rng: random.Random, hidden: bytes) -> Any:
    pieces: list[Any] = [hidden, hidden.decode("latin-1"), bytearray(hidden[: rng.randint(1, len(hidden))])]
    pieces += [
        rng.randint(-(2**40), 2**40),
        rng.random(),
        "x" * rng.randint(0, 300),
        b"\0" * rng.randint(0, 70),
    ]
    rng.shuffle(pieces)
    return OrderedDict((f"k{i}", v) for i, v in enumerate(pieces))


def _unframe(data: bytes) -> tuple[bytes, list[int]]:
    """``data`` without its FRAME opcodes, and the offsets where its opcodes then start."""
    import pickletools

    out, starts = bytearray(), []
    ops = list(pickletools.genops(data))
    for i, (op, _, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name != "FRAME":
            starts.append(len(out))
            out += data[pos:end]
    return bytes(out), starts


def _reframe(data: bytes, rng: random.Random) -> tuple[bytes, bool]:
    """Strip the pickle's frames, then wrap a random span in one FRAME of a random length.

    Returns the new bytes and whether the frame ends exactly on an opcode boundary.
    """
    flat, starts = _unframe(data)
    starts = [p for p in starts if p >= 2]  # after PROTO
    at = rng.choice(starts[:-1])
    stop = len(flat)
    if rng.random() < 0.5:
        end = rng.choice([p for p in starts if p > at] + [stop])  # a boundary
    else:
        end = rng.randint(at + 1, stop)  # anywhere
    framed = flat[:at] + b"\x95" + struct.pack("<Q", end - at) + flat[at:]
    return framed, end in set(starts) | {stop}


def test_generated_frame_layouts_never_hide_an_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = random.Random(154848)
    marker = tmp_path / "PWNED"
    flagged = aligned = hidden_found = diverged = 0
    for _ in range(300):
        obj = _benign_object(rng, _payload_bytes(rng, marker))
        data = pickle.dumps(obj, protocol=rng.choice([4, 5]))
        framed, on_boundary = _reframe(data, rng)
        result, traces = traced_scan(monkeypatch, data=framed)
        divergent = any(f.code == "frame-divergence" for f in result.findings)
        # A frame that ends on an opcode boundary is legal; one that ends inside an opcode is not.
        assert divergent == (not on_boundary), (on_boundary, result.to_dict())
        no_peek = cpython_names(framed, peek=False)
        diverged += no_peek != cpython_names(framed, peek=True)
        if ("os", "system") in no_peek:
            hidden_found += 1
            assert result.verdict == "unsafe"
            assert any(f.import_name == "os.system" for f in result.findings), result.to_dict()
        flagged += divergent
        aligned += on_boundary and not divergent
        assert_scanner_sees_what_cpython_imports(result, traces)
    assert not marker.exists()
    # The generator exercises both sides: legal frames that pass, and divergent ones on which
    # CPython's two readings import different names (each caught and named above).
    assert aligned >= 50 and flagged >= 50 and diverged >= 1, (aligned, flagged, diverged, hidden_found)


def test_real_framed_pickles_are_not_flagged() -> None:
    """Pickles written by CPython (several frames, large bytes written outside frames) pass."""
    obj = {
        "big": b"\1" * 200_000,
        "text": "y" * 100_000,
        "items": list(range(20_000)),
        "od": OrderedDict(a=1),
    }
    for protocol in (4, 5):
        data = pickle.dumps(obj, protocol=protocol)
        assert data.count(b"\x95") >= 2  # really framed, more than once
        result = scan_bytes(data, label="framed.pkl")
        assert result.verdict == "safe", result.to_dict()
        py = pickle._dumps(obj, protocol=protocol)  # type: ignore[attr-defined]  # the pure-Python pickler
        assert scan_bytes(py, label="framed-py.pkl").verdict == "safe"


def test_joblib_array_inside_a_frame_is_unsafe(tmp_path: Path) -> None:
    """joblib reads array bytes straight from the file: inside a frame, loaders disagree."""
    joblib = pytest.importorskip("joblib")
    import numpy as np

    path = tmp_path / "a.joblib"
    joblib.dump({"w": np.arange(50, dtype=np.float64)}, path)
    data = path.read_bytes()
    assert scan_bytes(data, label="a.joblib").verdict == "safe"
    # Re-wrap the stream so that its first frame also covers the array bytes.
    first = data.index(b"\x95")
    length = struct.unpack("<Q", data[first + 1 : first + 9])[0]
    grown = data[: first + 1] + struct.pack("<Q", length + 40) + data[first + 9 :]
    result = scan_bytes(grown, label="grown.joblib")
    assert result.verdict != "safe"
