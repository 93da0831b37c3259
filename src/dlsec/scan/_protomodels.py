"""Core ML and PaddlePaddle models read as protobuf wire data, nothing executed.

Core ML (``.mlmodel``, or ``Data/com.apple.CoreML/model.mlmodel`` in an ``.mlpackage``): a
``Model`` holds ``specificationVersion`` (1), ``description`` (2) and one model type (fields 200
and up). A ``customModel`` (555) and a neural-network layer with ``custom`` params (layer field
500) name a class the app provides: code dlsec cannot see (``unvetted``, with the class). A
``serializedModel`` (3000) is an opaque blob (``unvetted``). A ``linkedModel`` (556) loads
another model by file name: a name that climbs out of the bundle is a finding. Pipelines
(200-202) are read model by model. The ``weight.bin`` of an ML program is checked by its
header (``storage_header`` then blob records marked ``0xDEADBEEF``).

PaddlePaddle (``.pdmodel``): a ``ProgramDesc`` of blocks (1) of ops (4) whose type is field 3.
``py_func`` calls a Python function, ``save``/``load`` ops read and write files named in their
attributes. ``.pdiparams`` beside a ``.pdmodel`` is read tensor by tensor: version, LoD, a
``TensorDesc`` and exactly the bytes its dtype and shape need.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import PurePosixPath

from dlsec.scan._findings import Finding, Malformed
from dlsec.scan._onnx import _I32, _I64, _LEN, _VARINT, _Bad, _fields, _varint

__all__ = [
    "looks_like_coreml",
    "looks_like_paddle",
    "mil_weights_like",
    "scan_coreml",
    "scan_mil_weights",
    "scan_paddle",
    "scan_pdiparams",
]

# Model.Type fields (Core ML Model.proto)
_COREML_TYPES = frozenset(
    {200, 201, 202, 300, 301, 302, 303, 304, 400, 401, 402, 403, 404, 500, 501, 502, 555, 556, 560}
    | set(range(600, 611))
    | {900, 2000, 2001, 2002, 2003, 2004, 2005, 2006, 3000}
)
_COREML_TOP = frozenset({1, 2, 10}) | _COREML_TYPES
_NEURAL_NETWORKS = frozenset({303, 403, 500})
_MAX_DEPTH = 16


def _children(buf: memoryview, start: int, end: int, field: int) -> Iterator[tuple[int, int]]:
    for f, wire, s, e in _fields(buf, start, end):
        if f == field and wire == _LEN:
            yield s, e


def _text(buf: memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", "replace")


def looks_like_coreml(buf: memoryview, *, truncated_ok: bool = False) -> bool:
    """Whether the bytes are a Core ML ``Model``: version first, known fields, one model type."""
    if not len(buf) or buf[0] != 0x08:
        return False
    fields: list[tuple[int, int]] = []
    try:
        for f, w, _, _ in _fields(buf, 0, len(buf)):
            fields.append((f, w))
    except _Bad:
        # Cut short after its version and description: a truncated Core ML model (the reader says so).
        return (
            truncated_ok
            and fields[:2] == [(1, _VARINT), (2, _LEN)]
            and all(f in _COREML_TOP for f, _ in fields)
        )
    types = [f for f, _ in fields if f in _COREML_TYPES]
    return (
        bool(fields)
        and fields[0] == (1, _VARINT)
        and all(f in _COREML_TOP for f, _ in fields)
        and len(types) == 1
    )


def scan_coreml(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and unvetted parts (custom classes, opaque blobs) of a Core ML model.

    Raises:
        Malformed: the bytes are not a readable Core ML model.
    """
    if not looks_like_coreml(buf):
        raise Malformed("not a readable Core ML model (protobuf does not parse as a Model)", member=member)
    findings: list[Finding] = []
    unvetted: list[str] = []
    try:
        _coreml_model(buf, 0, len(buf), "model", 0, findings, unvetted, member)
    except _Bad as exc:
        raise Malformed(f"not a readable Core ML model ({exc})", member=member) from None
    return findings, unvetted


def _coreml_model(
    buf: memoryview,
    start: int,
    end: int,
    path: str,
    depth: int,
    findings: list[Finding],
    unvetted: list[str],
    member: str | None,
) -> None:
    if depth > _MAX_DEPTH:
        raise _Bad("pipelines nested too deeply")
    for field, wire, s, e in _fields(buf, start, end):
        if wire != _LEN or field not in _COREML_TYPES:
            continue
        if field in (200, 201):  # PipelineClassifier / PipelineRegressor: pipeline = 1
            for ps, pe in _children(buf, s, e, 1):
                for i, (ms, me) in enumerate(_children(buf, ps, pe, 1)):
                    _coreml_model(buf, ms, me, f"{path}.pipeline[{i}]", depth + 1, findings, unvetted, member)
        elif field == 202:  # Pipeline: models = 1
            for i, (ms, me) in enumerate(_children(buf, s, e, 1)):
                _coreml_model(buf, ms, me, f"{path}.pipeline[{i}]", depth + 1, findings, unvetted, member)
        elif field in _NEURAL_NETWORKS:
            for name, cls in _custom_layers(buf, s, e):
                unvetted.append(f"Core ML custom layer {name!r} (class {cls!r}) in {path}")
        elif field == 555:
            names = [_text(buf, cs, ce) for cs, ce in _children(buf, s, e, 10)]
            unvetted.append(f"Core ML custom model (class {names[0] if names else '?'!r}) in {path}")
        elif field == 556:
            for name in _linked_names(buf, s, e):
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    findings.append(
                        Finding(
                            "high",
                            "linked-model-path",
                            f"{path} links the model file {name[:120]!r}, outside the model's bundle",
                            member=member,
                        )
                    )
        elif field == 3000:
            ident = [_text(buf, cs, ce) for cs, ce in _children(buf, s, e, 1)]
            unvetted.append(
                f"Core ML serialized model {ident[0] if ident else '?'!r} (an opaque blob) in {path}"
            )


def _custom_layers(buf: memoryview, start: int, end: int) -> Iterator[tuple[str, str]]:
    """``(layer name, class)`` of custom layers, at any depth (control-flow layers nest networks)."""
    stack = [(start, end, 0)]
    while stack:
        s, e, depth = stack.pop()
        for ls, le in _children(buf, s, e, 1):  # NeuralNetwork*.layers
            try:
                layer = list(_fields(buf, ls, le))
            except _Bad:
                continue  # not a layer message: bytes of another field 1
            name = next((_text(buf, a, b) for f, w, a, b in layer if f == 1 and w == _LEN), "?")
            for f, w, a, b in layer:
                if w != _LEN:
                    continue
                if f == 500:
                    classes = [_text(buf, cs, ce) for cs, ce in _children(buf, a, b, 10)]
                    yield name, classes[0] if classes else "?"
                elif depth < _MAX_DEPTH:
                    stack.extend(_nested_networks(buf, a, b, depth + 1))


def _nested_networks(buf: memoryview, start: int, end: int, depth: int) -> Iterator[tuple[int, int, int]]:
    """Sub-messages of a layer's parameters that may be networks (branch and loop bodies)."""
    try:
        for _f, w, s, e in _fields(buf, start, end):
            if w == _LEN and e > s:
                yield s, e, depth
    except _Bad:
        return


def _linked_names(buf: memoryview, start: int, end: int) -> Iterator[str]:
    # LinkedModel.linkedModelFile (1) -> LinkedModelFile.linkedModelFileName (1) and
    # linkedModelSearchPath (2) -> StringParameter.defaultValue (1)
    for fs, fe in _children(buf, start, end, 1):
        for field in (1, 2):
            for ps, pe in _children(buf, fs, fe, field):
                for vs, ve in _children(buf, ps, pe, 1):
                    yield _text(buf, vs, ve)


_MIL_SENTINEL = 0xDEADBEEF


def mil_weights_like(head: bytes) -> bool:
    """A Core ML ML-program weight file: ``storage_header`` (count, version 2) then a blob record."""
    return (
        len(head) >= 68
        and struct.unpack_from("<I", head, 4)[0] == 2
        and struct.unpack_from("<I", head, 64)[0] == _MIL_SENTINEL
    )


def scan_mil_weights(buf: memoryview, *, member: str | None) -> None:
    """Each blob record (``0xDEADBEEF``, dtype, size, offset) must point inside the file."""
    count = struct.unpack_from("<I", buf, 0)[0]
    pos = 64
    for i in range(count):
        if pos + 64 > len(buf):
            raise Malformed(f"Core ML weight record {i} truncated", member=member, offset=pos)
        sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", buf, pos)
        if sentinel != _MIL_SENTINEL:
            raise Malformed(f"Core ML weight record {i} without its sentinel", member=member, offset=pos)
        if offset < pos + 64 or offset + size > len(buf):
            raise Malformed(f"Core ML weight blob {i} lies outside the file", member=member, offset=pos)
        pos = offset + size
        pos += -pos % 64


# -- PaddlePaddle ---------------------------------------------------------------------------

_PADDLE_TOP = {1: _LEN, 4: _LEN, 5: _LEN}
_PADDLE_RISKY = {
    "py_func": ("critical", "calls a Python function registered by the program's author"),
    "save": ("high", "writes a file named in its attributes"),
    "save_combine": ("high", "writes a file named in its attributes"),
    "load": ("high", "reads a file named in its attributes"),
    "load_combine": ("high", "reads a file named in its attributes"),
}


def _paddle_ops(buf: memoryview) -> Iterator[str]:
    for bs, be in _children(buf, 0, len(buf), 1):  # blocks
        for os_, oe in _children(buf, bs, be, 4):  # ops
            types = [_text(buf, ts, te) for ts, te in _children(buf, os_, oe, 3)]
            if len(types) != 1:
                raise _Bad("an op without exactly one type")
            yield types[0]


def looks_like_paddle(buf: memoryview) -> bool:
    """Whether the bytes are a Paddle ``ProgramDesc``: blocks, version and op version map, ops typed."""
    if not len(buf) or buf[0] != 0x0A:
        return False
    try:
        fields = [(f, w) for f, w, _, _ in _fields(buf, 0, len(buf))]
        if not fields or any(_PADDLE_TOP.get(f) != w for f, w in fields) or fields[0][0] != 1:
            return False
        first = next(_children(buf, 0, len(buf), 1))
        block = {f: w for f, w, _, _ in _fields(buf, *first)}
        if block.get(1) != _VARINT or block.get(2) != _VARINT:
            return False
        return any(True for _ in _paddle_ops(buf))
    except (_Bad, StopIteration):
        return False


def scan_paddle(buf: memoryview, *, member: str | None) -> list[Finding]:
    """Findings for the ops of a PaddlePaddle program.

    Raises:
        Malformed: not a readable ``ProgramDesc``.
    """
    if not looks_like_paddle(buf):
        raise Malformed("not a readable PaddlePaddle program (ProgramDesc)", member=member)
    try:
        ops = list(_paddle_ops(buf))
    except _Bad as exc:  # pragma: no cover - looks_like_paddle walked the same ops
        raise Malformed(f"not a readable PaddlePaddle program ({exc})", member=member) from None
    findings = []
    for op in sorted(set(ops)):
        if op in _PADDLE_RISKY:
            severity, what = _PADDLE_RISKY[op]
            findings.append(
                Finding(
                    severity,  # type: ignore[arg-type]
                    "paddle-op",
                    f"the program uses the {op} op ({ops.count(op)}x), which {what} when it runs",
                    import_name=f"paddle.ops.{op}",
                    member=member,
                )
            )
    return findings


# VarType.Type -> element size
_PADDLE_DTYPES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 19: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}


def scan_pdiparams(buf: memoryview, *, member: str | None) -> int:
    """Walk a ``.pdiparams`` file (``save_combine``) tensor by tensor to its exact end; the count.

    Raises:
        Malformed: a record does not parse or the bytes do not end with the last tensor.
    """
    pos, n, count = 0, len(buf), 0

    def take(k: int, what: str) -> int:
        nonlocal pos
        if pos + k > n:
            raise Malformed(f"PaddlePaddle parameters truncated in tensor {count}'s {what}", member=member)
        pos += k
        return pos - k

    while pos < n:
        if struct.unpack_from("<I", buf, take(4, "version"))[0] != 0:
            raise Malformed(f"PaddlePaddle tensor {count} has an unknown version", member=member)
        lod_levels = struct.unpack_from("<Q", buf, take(8, "LoD"))[0]
        if lod_levels > 64:
            raise Malformed(f"PaddlePaddle tensor {count} with {lod_levels} LoD levels", member=member)
        for _ in range(lod_levels):
            take(struct.unpack_from("<Q", buf, take(8, "LoD"))[0], "LoD")
        if struct.unpack_from("<I", buf, take(4, "version"))[0] != 0:
            raise Malformed(f"PaddlePaddle tensor {count} has an unknown tensor version", member=member)
        size = struct.unpack_from("<i", buf, take(4, "descriptor"))[0]
        if size < 0:
            raise Malformed(f"PaddlePaddle tensor {count} with a negative descriptor size", member=member)
        start = take(size, "descriptor")
        dtype, dims = None, []
        try:
            for f, w, s, e in _fields(buf, start, start + size):
                if f == 1 and w == _VARINT:
                    dtype = s
                elif f == 2 and w == _VARINT:
                    dims.append(s)
                elif f == 2 and w == _LEN:  # packed
                    p = s
                    while p < e:
                        v, p = _varint(buf, p, e)
                        dims.append(v)
                elif w in (_I32, _I64):
                    continue
        except _Bad as exc:
            raise Malformed(f"PaddlePaddle tensor {count} descriptor ({exc})", member=member) from None
        if dtype not in _PADDLE_DTYPES:
            raise Malformed(f"PaddlePaddle tensor {count} of unknown dtype {dtype}", member=member)
        nbytes = _PADDLE_DTYPES[dtype]
        for d in dims:
            d = d - (1 << 64) if d >= 1 << 63 else d
            if d < 0:
                raise Malformed(f"PaddlePaddle tensor {count} with a negative dimension", member=member)
            nbytes *= d
        take(nbytes, "data")
        count += 1
    return count
