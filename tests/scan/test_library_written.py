"""Model files written by the frameworks themselves (``tests/scan/fixtures/``), not built from schemas.

``benchmarks/fixtures/write_fixtures.py`` wrote them with TensorFlow, MXNet, XGBoost, LightGBM,
CatBoost, skops, coremltools, Flax, PaddlePaddle and OpenVINO in throwaway venvs
and recorded in each folder's ``MANIFEST.json`` the library version and, per file, the format,
verdict and finding the scanner must give. Honest files must be ``safe``; files whose graphs run
Python, touch files or name code outside the file must be flagged naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dlsec.scan import detect_format, scan_file

FIXTURES = Path(__file__).parent / "fixtures"
# Named by the file beside them (the model, the checkpoint index), not by their own bytes.
_SIBLING_FORMATS = ("openvino-weights", "paddle-params", "tf-checkpoint-data", "tf-fingerprint")
CASES: list[tuple[str, str, dict[str, Any]]] = [
    (folder.name, name, expect)
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "MANIFEST.json").is_file())
    for name, expect in sorted(json.loads((folder / "MANIFEST.json").read_text())["files"].items())
]


def test_every_library_has_honest_and_malicious_files() -> None:
    by_library: dict[str, set[str]] = {}
    for library, _name, expect in CASES:
        by_library.setdefault(library, set()).add(expect["verdict"])
    assert all("safe" in verdicts for verdicts in by_library.values()), by_library
    # Libraries that can write a graph that runs code or touches files wrote one.
    assert all("unsafe" in by_library[lib] for lib in ("tensorflow", "mxnet", "skops", "paddle")), by_library


@pytest.mark.parametrize(("library", "name", "expect"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_library_written_file(library: str, name: str, expect: dict[str, Any]) -> None:
    path = FIXTURES / library / name
    assert path.stat().st_size < 200_000
    result = scan_file(path)
    assert result.format == expect["format"], result.to_dict()
    if expect["format"] not in _SIBLING_FORMATS:
        assert detect_format(path) == expect["format"]
    assert result.verdict == expect["verdict"], result.to_dict()
    if "expect" in expect:
        hits = {f.code for f in result.findings} | {f.import_name for f in result.findings if f.import_name}
        assert expect["expect"] in hits, result.to_dict()
    if "error_kind" in expect:
        assert result.error_kind == expect["error_kind"], result.to_dict()


@pytest.mark.parametrize("name", ["checkpoint.meta", "savedmodel_dense.pb"])
def test_library_written_graph_loses_its_verdict_when_cut(name: str, tmp_path: Path) -> None:
    data = (FIXTURES / "tensorflow" / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    assert scan_file(path).verdict == "unscannable"


def test_library_written_params_lose_their_verdict_when_one_byte_changes(tmp_path: Path) -> None:
    data = bytearray((FIXTURES / "mxnet" / "mlp-0000.params").read_bytes())
    data[32:36] = (40).to_bytes(4, "little")  # the first array's ndim, past what MXNet writes
    path = tmp_path / "mlp-0000.params"
    path.write_bytes(bytes(data))
    result = scan_file(path)
    assert (result.format, result.verdict) == ("mxnet-params", "unscannable"), result.to_dict()


@pytest.mark.parametrize("folder", ["savedmodel", "tf1"])
def test_whole_tensorflow_folder_scans_safe(folder: str) -> None:
    # Every file TensorFlow writes for a SavedModel or a TF1 checkpoint is read, none is "unknown".
    from dlsec.scan import scan_paths

    results = scan_paths([FIXTURES / "tensorflow" / folder])
    assert len(results) >= 4
    assert {r.path: r.verdict for r in results if r.verdict != "safe"} == {}


def _varints(data: bytes, pos: int, n: int) -> tuple[list[int], int]:
    out = []
    for _ in range(n):
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(value)
    return out, pos


def test_checkpoint_index_with_a_compressed_block_is_unscannable(tmp_path: Path) -> None:
    # The footer's index handle leads to the first data block; its trailer's first byte is the
    # compression type. TensorFlow writes 0 (none); 1 (Snappy) is not read, so not vetted.
    data = bytearray((FIXTURES / "tensorflow" / "tf1" / "model.ckpt-3.index").read_bytes())
    (_meta_off, _meta_size, index_off, _index_size), _ = _varints(bytes(data), len(data) - 48, 4)
    (_shared, fresh, _length), pos = _varints(bytes(data), index_off, 3)
    (block_off, block_size), _ = _varints(bytes(data), pos + fresh, 2)
    assert data[block_off + block_size] == 0
    data[block_off + block_size] = 1
    path = tmp_path / "model.ckpt-3.index"
    path.write_bytes(bytes(data))
    result = scan_file(path)
    assert (result.format, result.verdict, result.error_kind) == (
        "tf-checkpoint-index",
        "unscannable",
        "unreadable",
    )
    assert "compressed" in result.error
