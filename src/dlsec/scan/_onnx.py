"""ONNX models read as protobuf wire data: structure and external-data paths, nothing executed.

The ``onnx`` package is not needed at run time: the few fields that matter are walked directly
(model -> graph -> initializers, node attributes, sub-graphs, functions, training graphs).
A tensor stored outside the model names its file in ``external_data`` (key ``location``);
onnxruntime resolves it against the model's folder, so a location that is absolute, climbs
out with ``..`` or resolves (through symlinks) outside that folder reads any file the loader
can read. Each such location is a finding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from dlsec.scan._findings import Finding, Malformed

__all__ = ["looks_like_onnx", "scan_onnx_buffer"]

# Wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# message name -> {field number: (expected wire type, nested message name or None)}
_MODEL = {
    1: (_VARINT, None),
    2: (_LEN, None),
    3: (_LEN, None),
    4: (_LEN, None),
    5: (_VARINT, None),
    6: (_LEN, None),
    7: (_LEN, "graph"),
    8: (_LEN, None),
    14: (_LEN, None),
    20: (_LEN, "training"),
    25: (_LEN, "function"),
    26: (_LEN, None),
}
_SCHEMA: dict[str, dict[int, tuple[int, str | None]]] = {
    "model": _MODEL,
    "graph": {1: (_LEN, "node"), 5: (_LEN, "tensor"), 15: (_LEN, "sparse")},
    "node": {5: (_LEN, "attribute")},
    "attribute": {
        5: (_LEN, "tensor"),
        6: (_LEN, "graph"),
        10: (_LEN, "tensor"),
        11: (_LEN, "graph"),
        22: (_LEN, "sparse"),
        23: (_LEN, "sparse"),
    },
    "sparse": {1: (_LEN, "tensor"), 2: (_LEN, "tensor")},
    "function": {7: (_LEN, "node"), 11: (_LEN, "attribute")},
    "training": {1: (_LEN, "graph"), 2: (_LEN, "graph")},
    "tensor": {13: (_LEN, "entry")},
    "entry": {1: (_LEN, None), 2: (_LEN, None)},
}
_MAX_NESTING = 64


class _Bad(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field, wire type, value start, value end)``; varints yield their value as start."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Bad("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire == _I64:
            if pos + 8 > end:
                raise _Bad("truncated fixed64")
            yield field, wire, pos, pos + 8
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise _Bad("truncated fixed32")
            yield field, wire, pos, pos + 4
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Bad("length-delimited field runs past its message")
            yield field, wire, pos, pos + length
            pos += length
        else:
            raise _Bad(f"unsupported wire type {wire}")
    if pos != end:  # pragma: no cover - the loop only exits at end
        raise _Bad("message overruns its length")


def looks_like_onnx(buf: memoryview) -> bool:
    """Whether the bytes parse as a ModelProto at the top level (known fields, a graph, exact end)."""
    if not len(buf) or buf[0] != 0x08:  # field 1 (ir_version), varint: what every writer emits first
        return False
    seen_graph = False
    try:
        for field, wire, _, _ in _fields(buf, 0, len(buf)):
            expected = _MODEL.get(field)
            if expected is None or expected[0] != wire:
                return False
            seen_graph = seen_graph or field == 7
    except _Bad:
        return False
    return seen_graph


@dataclass(frozen=True)
class _Location:
    value: str
    offset: int


def _locations(buf: memoryview) -> Iterator[_Location]:
    stack: list[tuple[str, int, int, int]] = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_NESTING:
            raise _Bad("graphs nested too deeply")
        schema = _SCHEMA[kind]
        key: bytes | None = None
        value: bytes | None = None
        value_at = start
        for field, wire, vstart, vend in _fields(buf, start, end):
            spec = schema.get(field)
            if spec is None:
                continue
            if wire != spec[0]:
                raise _Bad(f"field {field} of {kind} has wire type {wire}, expected {spec[0]}")
            if kind == "entry":
                if field == 1:
                    key = bytes(buf[vstart:vend])
                else:
                    value, value_at = bytes(buf[vstart:vend]), vstart
                continue
            nested = spec[1]
            if nested is not None:
                stack.append((nested, vstart, vend, depth + 1))
        if kind == "entry" and key == b"location":
            try:
                text = (value or b"").decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad("external data location is not UTF-8") from None
            yield _Location(text, value_at)


def _escapes(location: str, model_dir: Path | None) -> str | None:
    """Why ``location`` leaves the model folder, or ``None`` when it stays inside."""
    if not location:
        return "an empty location"
    if "\x00" in location:
        return "a NUL byte"
    for pure in (PurePosixPath(location), PureWindowsPath(location)):
        if pure.is_absolute() or pure.drive or pure.root:
            return "an absolute path"
        if ".." in pure.parts:
            return "a '..' component"
    if model_dir is not None:
        base = model_dir.resolve()
        target = Path(os.path.realpath(model_dir / location))
        if target != base and base not in target.parents:
            return f"a symlink that resolves to {target}"
    return None


def scan_onnx_buffer(buf: memoryview, *, model_dir: Path | None, member: str | None) -> list[Finding]:
    """Findings for one ONNX model's bytes; ``model_dir`` resolves external data (None in archives).

    Raises:
        Malformed: the protobuf is truncated or not shaped like a ModelProto.
    """
    if not looks_like_onnx(buf):
        raise Malformed("not a valid ONNX model (protobuf does not parse as a ModelProto)", member=member)
    findings: list[Finding] = []
    try:
        for loc in _locations(buf):
            why = _escapes(loc.value, model_dir)
            if why is not None:
                findings.append(
                    Finding(
                        "high",
                        "external-data-escape",
                        f"external data location {loc.value!r} leaves the model folder ({why}): "
                        "loading it reads a file chosen by the model's author",
                        offset=loc.offset,
                        member=member,
                    )
                )
    except _Bad as exc:
        raise Malformed(f"not a valid ONNX model ({exc})", member=member) from None
    return findings
