"""Formats beside pickles (the list ModelAudit reads): honest files pass, malicious ones are flagged
naming what, code that is not in the file is unvetted, and unreadable bytes are unscannable with
the format named (never "unknown format")."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from dlsec.scan import detect_format, scan_file
from tests.scan.corpus import FORMAT_PAYLOADS, Payload, call, shell, write_payload
from tests.scan.corpus_formats import (
    MXNET_MLP,
    MXNET_MLP_PARAMS,
    UNVETTED,
    CntkArray,
    cntk_model,
    format_benign_files,
    metagraph,
    mxnet_params,
    mxnet_symbol,
    openvino_ir,
    pb,
    pdiparams,
    tflite,
)


def _hits(result) -> set[str]:
    return {f.import_name for f in result.findings if f.import_name} | {f.code for f in result.findings}


@pytest.mark.parametrize("payload", FORMAT_PAYLOADS, ids=[p.name for p in FORMAT_PAYLOADS])
def test_malicious_file_of_each_format_is_flagged(payload: Payload, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    result = scan_file(write_payload(payload, tmp_path, marker))
    assert result.verdict == "unsafe", (payload.name, payload.source, result.to_dict())
    assert payload.expect in _hits(result), (payload.name, result.to_dict())
    assert not marker.exists()


def test_honest_file_of_each_format_passes_and_is_named(tmp_path: Path) -> None:
    results = {p.name: scan_file(p) for p in format_benign_files(tmp_path)}
    assert {n: r.to_dict() for n, r in results.items() if not r.safe} == {}
    assert {n: r.format for n, r in results.items()} == {
        "model.tflite": "tflite",
        "model.pte": "executorch",
        "model.cbm": "catboost",
        "flax_params.msgpack": "flax-msgpack",
        "model.pmml": "pmml",
        "model.xml": "openvino",
        "model.bin": "openvino-weights",
        "model.mlmodel": "coreml",
        "inference.pdmodel": "paddle",
        "inference.pdiparams": "paddle-params",
        "xgb_model.json": "xgboost",
        "xgb_model.ubj": "xgboost",
        "lgbm_model.txt": "lightgbm",
        "model.skops": "skops",
        "model.ckpt.meta": "tf-metagraph",
        "mlp-symbol.json": "mxnet-symbol",
        "mlp-0000.params": "mxnet-params",
        "model.cntk": "cntk",
        "keras_metadata.pb": "keras-metadata",
        "tokenizer_config.json": "json",
        "chat_template.jinja": "chat-template",
    }


@pytest.mark.parametrize("name", sorted(UNVETTED))
def test_code_outside_the_file_is_unvetted_and_named(name: str, tmp_path: Path) -> None:
    suffix, build = UNVETTED[name]
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(build())
    result = scan_file(path)
    assert (result.verdict, result.error_kind) == ("unscannable", "unvetted"), result.to_dict()
    assert result.format in result.error and result.format != "unknown"


@pytest.mark.parametrize(
    "name",
    [
        "model.tflite",
        "model.pte",
        "model.cbm",
        "flax_params.msgpack",
        "model.mlmodel",
        "xgb_model.ubj",
        "mlp-0000.params",
    ],
)
def test_truncated_file_is_unscannable_naming_its_format(name: str, tmp_path: Path) -> None:
    (whole,) = [p for p in format_benign_files(tmp_path / "src") if p.name == name]
    path = tmp_path / name
    path.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 2 // 3])
    result = scan_file(path)
    assert result.verdict == "unscannable", result.to_dict()
    assert result.error_kind != "unknown-format", result.to_dict()


def test_openvino_const_past_its_weights_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_bytes(openvino_ir(size=4096))
    (tmp_path / "m.bin").write_bytes(b"\0" * 24)
    assert "tensor-out-of-bounds" in _hits(scan_file(tmp_path / "m.xml"))
    assert scan_file(tmp_path / "m.bin").verdict == "unscannable"


def test_paddle_parameters_must_end_with_their_last_tensor(tmp_path: Path) -> None:
    (tmp_path / "m.pdmodel").write_bytes(b"")
    (tmp_path / "m.pdiparams").write_bytes(pdiparams() + b"\x00" * 3)
    result = scan_file(tmp_path / "m.pdiparams")
    assert (result.format, result.verdict) == ("paddle-params", "unscannable"), result.to_dict()


def test_rar_archive_is_unscannable_not_unknown(tmp_path: Path) -> None:
    path = tmp_path / "bundle.rar"
    path.write_bytes(b"Rar!\x1a\x07\x01\x00" + b"\0" * 32)
    result = scan_file(path)
    assert (result.format, result.error_kind) == ("rar", "unreadable")


def test_members_of_a_gzipped_tar_are_scanned(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = call("os", "system", shell(marker), protocol=2)
        info = tarfile.TarInfo("layer/model.pkl")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    assert "os.system" in _hits(scan_file(path))


def test_tflite_inside_a_zip_is_read(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/model.tflite", tflite(["FlexWriteFile"]))
    assert "tf.raw_ops.WriteFile" in _hits(scan_file(path))


def test_tflite_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(tflite([]))
    assert detect_format(path) == "tflite"
    spoof = tmp_path / "model.tflite"
    spoof.write_bytes(call("os", "system", "true", protocol=2))
    assert "os.system" in _hits(scan_file(spoof))


def _mxnet_bad_dtype() -> bytes:
    data = bytearray(mxnet_params({"w": ((2,), 0)}))
    data[24 + 4 + 4 + 4 + 8 + 8 : 24 + 4 + 4 + 4 + 8 + 8 + 4] = (99).to_bytes(4, "little")  # the dtype flag
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("cut_in_header", mxnet_params({"w": ((64, 64), 0)})[:40], "truncated in array 0 shape"),
        ("trailing", mxnet_params(MXNET_MLP_PARAMS, extra=b"\x80\x04N."), "4 bytes remain"),
        ("bad_dtype", _mxnet_bad_dtype(), "unknown dtype 99"),
        (
            "legacy",
            mxnet_params({"w": ((2,), 0)}).replace(b"\xc9\xfa\x93\xf9", b"\x01\x00\x00\x00"),
            "pre-1.0",
        ),
    ],
)
def test_mxnet_params_are_walked_to_their_exact_end(name: str, data: bytes, why: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}-0000.params"
    path.write_bytes(data)
    result = scan_file(path)
    assert (result.format, result.verdict) == ("mxnet-params", "unscannable"), result.to_dict()
    assert why in result.error


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("short_array", cntk_model(weights=CntkArray((2, 3), values=5)), "holds 5 values"),
        ("unknown_field", cntk_model() + pb(9, b"x"), "field 9"),
        ("mistyped_value", cntk_model().replace(b"CompositeFunction8", b"CompositeFunctio\xff8"), "UTF-8"),
    ],
)
def test_cntk_model_that_does_not_follow_its_schema_is_unscannable(
    name: str, data: bytes, why: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.model"
    path.write_bytes(data)
    result = scan_file(path)
    assert (result.format, result.verdict, result.error_kind) == ("cntk", "unscannable", "malformed"), (
        result.to_dict()
    )
    assert why in result.error


def test_cntk_v1_model_is_named_and_unscannable(tmp_path: Path) -> None:
    path = tmp_path / "legacy.dnn"
    path.write_bytes("BCN\0".encode("utf-16-le") + "BVersion\0".encode("utf-16-le") + b"\x00" * 32)
    result = scan_file(path)
    assert (result.format, result.verdict, result.error_kind) == ("cntk-v1", "unscannable", "unreadable")


def test_metagraph_and_mxnet_symbol_inside_a_zip_are_read(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ckpt/model.ckpt.meta", metagraph(["Placeholder", "PyFunc"]))
        zf.writestr("mx/net-symbol.json", mxnet_symbol([*MXNET_MLP, ("Custom", {"op_type": "x"})]))
    hits = _hits(scan_file(path))
    assert {"tf.raw_ops.PyFunc", "mxnet.op.Custom.x"} <= hits


def test_graph_functions_are_not_custom_ops(tmp_path: Path) -> None:
    # A node may call a function of the graph's own library by name: that is not a custom op.
    path = tmp_path / "model.meta"
    path.write_bytes(metagraph(["Placeholder", "__inference_call"], ("Identity",)))
    assert scan_file(path).verdict == "safe"
