"""The scanner: published bypasses, every opcode path and container, benign checkpoints, fail-closed."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.errors import UnsafeFileError, UnscannableFileError, UsageError
from dlsec.scan import DEFAULT_ALLOWLIST, detect_format, scan_bytes, scan_file, scan_paths, verify_safe
from tests.scan.corpus import (
    BYPASSES,
    CONTAINERS,
    OPCODE_PATHS,
    Payload,
    benign_files,
    call,
    shell,
    torch_zip,
    write_payload,
)


def _hits(result) -> set[str]:
    found = {f.import_name for f in result.findings if f.import_name} | {f.code for f in result.findings}
    return found | ({"unscannable"} if result.error else set())


def _assert_flagged(payload: Payload, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = write_payload(payload, tmp_path, marker)
    result = scan_file(path)
    assert result.verdict != "safe", (payload.name, payload.source)
    assert payload.expect in _hits(result), (payload.name, result.to_dict())
    assert not marker.exists()


# One named test per published bypass of picklescan, modelscan and fickling; each entry's
# `source` cites the advisory, issue or pull request it reproduces (see tests/scan/corpus.py).
@pytest.mark.parametrize("payload", BYPASSES, ids=[p.name for p in BYPASSES])
def test_published_bypass_is_flagged(payload: Payload, tmp_path: Path) -> None:
    _assert_flagged(payload, tmp_path)


@pytest.mark.parametrize("payload", OPCODE_PATHS, ids=[p.name for p in OPCODE_PATHS])
def test_payload_through_each_opcode_path_is_flagged(payload: Payload, tmp_path: Path) -> None:
    _assert_flagged(payload, tmp_path)


@pytest.mark.parametrize("payload", CONTAINERS, ids=[p.name for p in CONTAINERS])
def test_payload_in_each_container_is_flagged(payload: Payload, tmp_path: Path) -> None:
    _assert_flagged(payload, tmp_path)


def test_payloads_are_live_when_unpickled(tmp_path: Path) -> None:
    """The corpus is real: plain ``pickle.loads`` of these payloads does create the marker.

    Runs in a child process, so that the scanner's own process never unpickles anything.
    """
    live = [
        "picklescan_memo_put_memoize_confusion",
        "picklescan_string_opcode_stack_global",
        "picklescan_inst_exec",
        "fickling_builtins_import_getattr",
        "modelscan_numpy_prod_build_setattr",
        "picklescan_io_fileio",
        "picklescan_logging_filehandler_cve_2026_56304",
    ]
    chosen = [p for p in BYPASSES if p.name in live]
    jobs = []
    for p in chosen:
        marker = tmp_path / f"{p.name}.marker"
        path = write_payload(p, tmp_path, marker)
        jobs.append((str(path), str(marker)))
    script = (
        "import pickle, sys, json\n"
        "for path, _ in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        pickle.loads(open(path, 'rb').read())\n"
        "    except Exception:\n"
        "        pass\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(jobs)],
        cwd=tmp_path,
        timeout=60,
        check=True,
        capture_output=True,
    )
    assert all(Path(marker).exists() for _, marker in jobs), [m for _, m in jobs if not Path(m).exists()]


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return benign_files(tmp_path_factory.mktemp("benign"))


def test_benign_checkpoints_from_torch_save_pass(benign: list[Path]) -> None:
    results = {p.name: scan_file(p) for p in benign}
    failed = {name: r.to_dict() for name, r in results.items() if not r.safe}
    assert not failed
    formats = {r.format for r in results.values()}
    assert {"torch-zip", "pickle", "numpy", "npz", "safetensors", "compressed"} <= formats


def test_benign_files_truncated_or_with_trailing_bytes_are_never_safe(
    benign: list[Path], tmp_path: Path
) -> None:
    for path in benign:
        data = path.read_bytes()
        for cut, label in ((len(data) - 1, "minus one byte"), (len(data) // 2, "half")):
            result = scan_bytes(data[:cut], label=f"{path.name} {label}")
            assert result.verdict != "safe", (path.name, label)
        result = scan_bytes(data + b"garbage!", label=f"{path.name} + trailing")
        assert result.verdict != "safe", (path.name, "trailing")


def test_scanning_reads_no_tensor_data(tmp_path: Path) -> None:
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("needs /proc/self/io")
    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(8 * 1024 * 1024)}, path)  # 32 MiB of tensor data

    def rchar() -> int:
        return int(
            next(line for line in io_stats.read_text().splitlines() if line.startswith("rchar")).split()[1]
        )

    before = rchar()
    assert scan_file(path).safe
    assert rchar() - before < 1024 * 1024


def test_findings_name_the_import_offset_and_member(tmp_path: Path) -> None:
    data = call("os", "system", shell(tmp_path / "PWNED"), protocol=2)
    path = tmp_path / "m.pt"
    path.write_bytes(torch_zip(data))
    result = scan_file(path)
    call_finding = next(f for f in result.findings if f.code == "unsafe-call")
    import_finding = next(f for f in result.findings if f.code == "unsafe-global")
    assert call_finding.severity == "critical" and call_finding.import_name == "os.system"
    assert import_finding.offset == 2 and data[2:3] == b"c"  # the GLOBAL opcode
    assert call_finding.offset == data.index(b"R")
    assert call_finding.member == "archive/data.pkl"
    record = result.to_dict()
    assert set(record) >= {"path", "format", "verdict", "findings"}
    assert set(record["findings"][0]) >= {"severity", "import", "offset", "reason"}


def test_allow_extends_the_list_and_is_reported(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "w": torch.ones(2)}, path)
    default = scan_file(path)
    assert default.verdict == "unsafe" and "argparse.Namespace" in _hits(default)
    allowed = scan_file(path, allow=["argparse.Namespace"])
    assert allowed.safe and allowed.allowed_by_user == ["argparse.Namespace"]
    assert scan_file(path, allow=["argparse:Namespace"]).safe
    with pytest.raises(UsageError, match="--allow"):
        scan_file(path, allow=["not a name"])
    assert DEFAULT_ALLOWLIST.may_call("collections", "OrderedDict")
    assert not DEFAULT_ALLOWLIST.may_call("torch", "FloatStorage")  # a value, never a callable


def _safetensors(header: dict, data: bytes, *, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


GOOD = {
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "I8", "shape": [4], "data_offsets": [8, 12]},
}


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        (
            "unknown_dtype",
            _safetensors({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
        ),
        (
            "offsets_out_of_bounds",
            _safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
        ),
        (
            "overlap",
            _safetensors({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [4, 8]}}, bytes(12)),
        ),
        (
            "gap",
            _safetensors({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [9, 13]}}, bytes(13)),
        ),
        ("trailing_bytes", _safetensors(GOOD, bytes(12) + b"extra")),
        (
            "shape_mismatch",
            _safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        ),
        (
            "duplicate_keys",
            _safetensors(
                {},
                bytes(8),
                raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            ),
        ),
        ("metadata_not_strings", _safetensors({"__metadata__": {"k": 1}, **GOOD}, bytes(12))),
        (
            "extra_field",
            _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, bytes(8)),
        ),
        (
            "negative_shape",
            _safetensors({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
        ),
    ],
)
def test_malformed_safetensors_are_unscannable(name: str, blob: bytes) -> None:
    result = scan_bytes(blob, label=name)
    assert result.format == "safetensors" and result.verdict == "unscannable", result.to_dict()


def test_valid_safetensors_is_safe() -> None:
    assert scan_bytes(_safetensors(GOOD, bytes(12))).safe
    assert scan_bytes(_safetensors({"__metadata__": {"k": "v"}, **GOOD}, bytes(12))).safe


def _onnx_with_external_data(folder: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def _relocate(path: Path, location: str) -> None:
    data = path.read_bytes()
    old = b"weights.bin"
    assert len(location) == len(old), "keep the protobuf lengths"
    path.write_bytes(data.replace(old, location.encode(), 1))


@pytest.mark.parametrize("location", ["../../x.bin", "/etc/passwd", "C:\\evil.bin"])
def test_onnx_external_data_leaving_the_model_folder_is_unsafe(tmp_path: Path, location: str) -> None:
    path = _onnx_with_external_data(tmp_path)
    assert scan_file(path).safe and detect_format(path) == "onnx"
    _relocate(path, location)
    result = scan_file(path)
    assert result.verdict == "unsafe" and "external-data-escape" in _hits(result), result.to_dict()


def test_onnx_external_data_symlink_escape_is_unsafe(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _onnx_with_external_data(model_dir)
    (model_dir / "weights.bin").unlink()
    (model_dir / "weights.bin").symlink_to(tmp_path / "outside.bin")
    result = scan_file(path)
    assert result.verdict == "unsafe" and "symlink" in result.findings[0].reason


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        ("empty", b""),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("seven_zip", b"7z\xbc\xaf\x27\x1c" + bytes(32)),
        ("text", b"This is a README, not a model.\n"),
        ("not_a_pickle", b"cmod\n\xf8\n"),
        ("broken_exec_pickle", b"cbuiltins\nexec\n(X>\nf = open('m', 'a'); f.close()tRX."),
        ("hdf5", b"\x89HDF\r\n\x1a\n" + bytes(64)),
        ("zstd", b"\x28\xb5\x2f\xfd" + bytes(32)),
        ("out_of_band_buffer", b"\x80\x05\x97."),
        ("mid_stream_proto", b"\x80\x02K\x01\x80\x04."),
    ],
)
def test_unknown_malformed_and_unsupported_content_is_unscannable(name: str, blob: bytes) -> None:
    result = scan_bytes(blob, label=name)
    assert result.verdict != "safe" and (result.error or result.findings), result.to_dict()


def test_archives_that_are_not_models_fail_closed(tmp_path: Path) -> None:
    tgz = tmp_path / "bundle.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("model.pkl")
        payload = call("os", "system", "true")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    # a gzipped tar is read member by member (it was unscannable before tar.gz was read)
    result = scan_file(tgz)
    assert result.verdict == "unsafe" and "os.system" in {f.import_name for f in result.findings}
    truncated = tmp_path / "t.pt.gz"
    truncated.write_bytes(gzip.compress(pickle.dumps({"a": 1}))[:-6])
    assert scan_file(truncated).verdict == "unscannable"


def test_torch_zip_storage_checks(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    storage = next(n for n in members if "/data/" in n)
    for mutate in ("drop", "resize"):
        changed = dict(members)
        if mutate == "drop":
            del changed[storage]
        else:
            changed[storage] = members[storage] + b"\x00" * 4
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, value in changed.items():
                zf.writestr(name, value)
        assert scan_bytes(buf.getvalue(), label=mutate).verdict == "unscannable", mutate


def test_legacy_checkpoint_storages_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert scan_bytes(data).safe
    assert scan_bytes(data[:-1]).verdict == "unscannable"
    assert scan_bytes(data + bytes(8)).verdict == "unscannable"


def test_detect_format_names(benign: list[Path]) -> None:
    expected = {
        "state_dict.pt": "torch-zip",
        "state_dict_legacy.pt": "pickle",
        "array.npy": "numpy",
        "arrays.npz": "npz",
        "model.safetensors": "safetensors",
        "plain_gz.pkl.gz": "compressed",
        "plain.pkl": "pickle",
    }
    names = {p.name: p for p in benign}
    for name, fmt in expected.items():
        assert detect_format(names[name]) == fmt, name


def test_scan_paths_walks_folders_and_rejects_missing_paths(benign: list[Path], tmp_path: Path) -> None:
    results = scan_paths([benign[0].parent])
    assert len(results) == len(benign) and all(r.safe for r in results)
    with pytest.raises(UsageError, match="no such file"):
        scan_paths([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no files"):
        scan_paths([tmp_path / "empty"])


def test_verify_safe_raises_distinct_errors(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(call("os", "system", shell(marker)))
    with pytest.raises(UnsafeFileError, match="os.system"):
        verify_safe(bad)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(UnscannableFileError):
        verify_safe(junk)
    assert issubclass(UnsafeFileError, Exception) and UnsafeFileError.exit_code == 1
    assert not marker.exists()


def test_joblib_array_bytes_that_plain_pickle_would_run_are_flagged(tmp_path: Path) -> None:
    """A joblib file is read two ways: joblib skips raw array bytes, ``pickle.load`` runs them.

    Without the alignment field (older joblib writes none), an array's bytes follow its
    wrapper's BUILD directly. Here those bytes are opcodes that call os.system: ``joblib.load``
    returns a harmless uint8 array, ``pickle.load(gzip.open(f))`` runs the command. Both
    readings are checked.
    """
    joblib = pytest.importorskip("joblib")
    marker = tmp_path / "PWNED"
    opcodes = b"cos\nsystem\n" + b"(V" + shell(marker).encode() + b"\ntR."
    buf = io.BytesIO()
    joblib.dump({"a": np.frombuffer(opcodes, dtype=np.uint8)}, buf)
    stream = buf.getvalue()
    build = stream.index(b"numpy_array_alignment_bytes\x94K\x10ub") + len(
        b"numpy_array_alignment_bytes\x94K\x10ub"
    )
    pad = stream[build]
    stream = stream[:build] + stream[build + 1 + pad :]  # no padding: the data follows BUILD
    stream = stream.replace(b"numpy_array_alignment_bytes", b"numpy_array_alignment_bytez")  # field absent
    path = tmp_path / "polyglot.joblib"
    path.write_bytes(gzip.compress(stream))
    result = scan_file(path)
    assert result.verdict == "unsafe" and "os.system" in _hits(result), result.to_dict()
    assert "plain pickle.load" in result.findings[0].reason
    aligned = tmp_path / "aligned.joblib"
    joblib.dump({"a": np.frombuffer(opcodes, dtype=np.uint8)}, aligned, compress=("gzip", 3))
    assert scan_file(aligned).safe  # joblib's padding byte stops plain pickle.load first
    script = (
        "import gzip, os, pickle, sys, joblib\n"
        "assert bytes(joblib.load(sys.argv[1])['a']).startswith(b'cos')\n"
        "assert not os.path.exists(sys.argv[2]), 'joblib ran it'\n"
        "pickle.load(gzip.open(sys.argv[1]))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(marker)], timeout=60, check=True, capture_output=True
    )
    assert marker.exists()  # the payload is live under plain pickle.load


def test_plain_keras_archive_is_safe(tmp_path: Path) -> None:
    from tests.scan.corpus import zip_of

    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "config": {"units": 3, "activation": "relu"},
                },
            ]
        },
    }
    path = tmp_path / "model.keras"
    path.write_bytes(
        zip_of(
            {
                "metadata.json": b'{"keras_version": "3.5.0"}',
                "config.json": json.dumps(config).encode(),
                "model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(64),
            }
        )
    )
    result = scan_file(path)
    assert result.format == "keras" and result.safe, result.to_dict()


@pytest.mark.parametrize(
    ("offset", "size", "stride", "numel", "safe"),
    [
        (0, (3, 4), (4, 1), 12, True),  # exactly fills the storage
        (8, (4,), (1,), 12, True),  # the last four elements
        (9, (4,), (1,), 12, False),  # one past the end
        (0, (4, 3), (1, 4), 12, True),  # a transposed view
        (0, (4, 3), (1, 5), 12, False),  # its last element is 3 + 2*5 = 13
        (0, (1000, 4), (0, 1), 4, True),  # an expanded (zero-stride) view
        (12, (0, 4), (4, 1), 12, True),  # empty, at the very end
        (13, (0,), (1,), 12, False),  # empty, but the offset is past the end
        (0, (3, 4), (4,), 12, False),  # size and stride of different lengths
        (-1, (2,), (1,), 12, False),  # a negative offset
    ],
)
def test_tensor_views_must_lie_inside_their_storage(offset, size, stride, numel, safe) -> None:
    from tests.scan.corpus import (
        EMPTY_DICT,
        MARK,
        NEWFALSE,
        REDUCE,
        TUPLE,
        _storage_pid,
        _tensor_zip,
        const,
        global0,
    )

    args = _storage_pid("FloatStorage", "0", numel) + const(offset) + const(size) + const(stride)
    rebuild = (
        global0("torch._utils", "_rebuild_tensor_v2") + MARK + args + NEWFALSE + EMPTY_DICT + TUPLE + REDUCE
    )
    result = scan_bytes(_tensor_zip(rebuild, numel), label="view.pt")
    codes = {f.code for f in result.findings}
    assert (result.verdict == "safe") is safe, result.to_dict()
    if not safe:
        assert codes & {"tensor-out-of-bounds", "tensor-unverifiable"}


def test_real_views_and_setitem_on_ordered_dicts_pass(tmp_path: Path) -> None:
    """torch.save of views (offsets, transposes, expands) and of OrderedDicts scans safe."""
    import warnings

    base = torch.arange(24.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized dtypes are deprecated, still saved and loaded
        quantized = torch.quantize_per_tensor(torch.rand(3, 4), 0.1, 0, torch.quint8)
    obj = {
        "tail": base[20:],
        "t": base.reshape(4, 6).t(),
        "expanded": torch.ones(1, 3).expand(5, 3),
        "strided": base[::5],
        "state": torch.nn.Linear(3, 2).state_dict(),
        "q": quantized,
    }
    for proto in (2, 4):
        path = tmp_path / f"views{proto}.pt"
        torch.save(obj, path, pickle_protocol=proto)
        result = scan_file(path)
        assert result.verdict == "safe", result.to_dict()


def test_pre_04_torch_tar_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    """A legacy tar checkpoint that torch.load (in a child process) loads scans safe; edits do not."""
    from tests.scan.corpus import STOP, legacy_torch_tar, proto, u

    good = tmp_path / "old.pt"
    good.write_bytes(legacy_torch_tar(proto(2) + u("1") + b"Q" + STOP))
    result = scan_file(good)
    assert (result.format, result.verdict) == ("torch-tar", "safe"), result.to_dict()
    script = "import sys, torch\nt = torch.load(sys.argv[1], weights_only=False)\nprint(t.tolist())\n"
    out = subprocess.run(
        [sys.executable, "-c", script, str(good)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[0.0, 0.0, 0.0, 0.0]"
    data = good.read_bytes()
    assert scan_bytes(data[:1600], label="cut.pt").verdict != "safe"  # inside the storages member
    unknown_key = legacy_torch_tar(proto(2) + u("7") + b"Q" + STOP)  # a persistent id no member defines
    assert scan_bytes(unknown_key, label="key.pt").verdict == "unsafe"


def test_code_in_archives_is_named(tmp_path: Path) -> None:
    from tests.scan.corpus import tar_of, zip_of

    cases = {
        "hub.zip": zip_of({"model/modeling_x.py": b"print(1)\n", "model/model.safetensors": b""}),
        "lib.tar": tar_of({"ext/_C.so": b"\x7fELF" + b"\0" * 60}),
        "run.tar": tar_of({"run": b"#!/bin/sh\necho\n"}),
    }
    for name, blob in cases.items():
        result = scan_bytes(blob, label=name)
        codes = {f.code for f in result.findings}
        assert "archive-code" in codes, (name, result.to_dict())
    inert = tar_of({"README.md": b"# a model\n", "labels.txt": b"cat\ndog\n"})
    assert scan_bytes(inert, label="inert.tar").verdict == "safe"


def test_a_scikit_learn_model_is_named_as_such_and_allow_accepts_it(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(rng.random((30, 3)), np.arange(30) % 2)
    path = tmp_path / "lr.joblib"
    joblib.dump(model, path)
    result = scan_file(path)
    assert result.verdict == "unsafe"
    first = result.findings[0]
    name = "sklearn.linear_model._logistic.LogisticRegression"
    assert first.code == "third-party-classes" and name in first.reason and "skops" in first.reason
    assert scan_file(path, allow=[name]).verdict == "safe"
    # A pickle that also runs a command is not summarised as an honest model.
    mixed = tmp_path / "mixed.pkl"
    mixed.write_bytes(pickle.dumps([model])[:-1] + b"0" + call("os", "system", "true", protocol=2)[2:])
    assert all(f.code != "third-party-classes" for f in scan_file(mixed).findings)
