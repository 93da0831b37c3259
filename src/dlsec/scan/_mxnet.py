"""MXNet models read without MXNet: the symbol graph (``*-symbol.json``) and NDArray files (``.params``).

The symbol is JSON: ``nodes`` (each an ``op``, a ``name``, ``inputs`` and string ``attrs``;
control-flow nodes carry ``subgraphs``, symbols of their own), ``arg_nodes`` and ``heads``.
Binding it runs each node's op. ``Custom`` runs the Python ``CustomOpProp`` registered under
the node's ``op_type`` (``mx.operator.register``) in the loading process: a critical finding.
``_cvimread`` reads the image file its attributes name. An op MXNet does not register
(:data:`dlsec.scan._opnames.MXNET_OPS`) is a custom op from a library loaded outside the file
(``mx.library.load``): code dlsec does not vet. An op name that is not an identifier is the
shape of CVE-2022-24294 (MXNet before 1.9.1 matched op names with a regular expression that
backtracks catastrophically): a finding.

A ``.params`` file is ``NDArray::Save`` of a list (MXNet's ``src/ndarray/ndarray.cc``): the
list magic ``0x112`` and a reserved word (uint64 each), the count, each array (magic
``0xF993FAC9``, or ``0xF993FACA`` for NumPy shape semantics; storage type; the storage shape of
a sparse array; the shape as an int32 ``ndim`` and int64 dimensions; the context; the dtype;
each auxiliary array's dtype and shape; the data; the auxiliary data), then the names (a
count, each a length and bytes). Every record is walked to the exact end of the file. An array
whose shape needs more bytes than the file has left is a finding: ``NDArray::Load`` allocates
the declared size before it reads, so such a header exhausts memory (the class of the TFLite and
OpenVINO out-of-bounds findings).
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from dlsec.scan._findings import Finding, Malformed, Severity
from dlsec.scan._opnames import MXNET_OPS, MXNET_VERSION

__all__ = ["PARAMS_MAGIC", "mxnet_symbol", "scan_mxnet_params", "scan_mxnet_symbol"]

PARAMS_MAGIC = struct.pack("<QQ", 0x112, 0)
_V2, _V3 = 0xF993FAC9, 0xF993FACA
# mshadow type flags -> element size
_DTYPE_SIZES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 8: 2, 9: 2, 10: 4, 11: 8, 12: 2}
_AUX_COUNT = {0: 0, 1: 1, 2: 2}  # default, row_sparse (indices), csr (indptr, indices)
_DEVICES = {1, 2, 3, 5}  # cpu, gpu, cpu_pinned, cpu_shared
_MAX_NDIM = 32
_OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_RISKY: dict[str, tuple[Severity, str]] = {
    "Custom": ("critical", "runs the Python operator registered as {op_type!r} (mx.operator.register)"),
    "_npi_Custom": ("critical", "runs the Python operator registered as {op_type!r} (mx.operator.register)"),
    "_CustomFunction": ("critical", "runs a Python autograd Function"),
    "_cvimread": ("high", "reads the image file {filename!r}"),
    "_npi_cvimread": ("high", "reads the image file {filename!r}"),
}
_MAX_UNVETTED = 20
_MAX_DEPTH = 16


def mxnet_symbol(doc: Any) -> bool:
    """Whether parsed JSON is an MXNet symbol: ``nodes`` of ``op``/``name``/``inputs`` and ``heads``."""
    if not isinstance(doc, dict) or "heads" not in doc or not isinstance(doc.get("nodes"), list):
        return False
    nodes = doc["nodes"]
    return bool(nodes) and all(
        isinstance(n, dict) and isinstance(n.get("op"), str) and "name" in n and "inputs" in n for n in nodes
    )


def _nodes(doc: Any, path: str, depth: int, member: str | None) -> list[tuple[str, dict[str, Any]]]:
    if depth > _MAX_DEPTH:
        raise Malformed("MXNet subgraphs nested too deeply", member=member)
    if not mxnet_symbol(doc):
        raise Malformed(f"MXNet symbol {path or '(top level)'} is not a graph of op nodes", member=member)
    out = []
    for i, node in enumerate(doc["nodes"]):
        where = f"{path}nodes[{i}]"
        out.append((where, node))
        subgraphs = node.get("subgraphs", [])
        if not isinstance(subgraphs, list):
            raise Malformed(f"MXNet node {where} has subgraphs that are not a list", member=member)
        for j, sub in enumerate(subgraphs):
            out.extend(_nodes(sub, f"{where}.subgraphs[{j}].", depth + 1, member))
    return out


def _attrs(node: dict[str, Any]) -> dict[str, str]:
    # Symbols written before MXNet 1.0 keep op parameters under "param" or "attr".
    merged: dict[str, str] = {}
    for key in ("param", "attr", "attrs"):
        value = node.get(key)
        if isinstance(value, dict):
            merged.update({str(k): str(v) for k, v in value.items()})
    return merged


def scan_mxnet_symbol(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and custom ops (code dlsec does not vet) of an MXNet symbol JSON.

    Raises:
        Malformed: the bytes are not an MXNet symbol.
    """
    try:
        doc = json.loads(bytes(buf))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("not a readable MXNet symbol (invalid JSON)", member=member) from None
    findings: list[Finding] = []
    custom: dict[str, str] = {}
    for where, node in _nodes(doc, "", 0, member):
        op, name = node["op"], str(node.get("name"))[:80]
        if op == "null":  # a variable (argument or auxiliary state)
            continue
        if op in _RISKY:
            severity, what = _RISKY[op]
            attrs = _attrs(node)
            op_type = attrs.get("op_type", "?")[:80]
            text = what.format(op_type=op_type, filename=attrs.get("filename", "?")[:120])
            findings.append(
                Finding(
                    severity,
                    "mxnet-op",
                    f"node {name!r} ({where}) uses the {op} op, which {text} when the graph is bound",
                    import_name=f"mxnet.op.{op}" + (f".{op_type}" if "op_type" in attrs else ""),
                    member=member,
                )
            )
        elif not _OP_NAME.match(op):
            findings.append(
                Finding(
                    "high",
                    "mxnet-op-name",
                    f"node {name!r} ({where}) names an op that is not an identifier ({len(op)} characters: "
                    f"{op[:40]!r}...); MXNet before 1.9.1 matched such names with a regular expression that "
                    "backtracks without end (CVE-2022-24294)",
                    member=member,
                )
            )
        elif op not in MXNET_OPS:
            custom.setdefault(op, name)
    unvetted = [
        f"custom op {op!r} (node {name!r}; not one of MXNet {MXNET_VERSION}'s ops: a library loaded "
        "outside the file implements it)"
        for op, name in sorted(custom.items())[:_MAX_UNVETTED]
    ]
    if len(custom) > _MAX_UNVETTED:
        unvetted.append(f"{len(custom) - _MAX_UNVETTED} more custom ops")
    return findings, unvetted


class _Reader:
    def __init__(self, buf: memoryview, member: str | None) -> None:
        self.buf, self.pos, self.member = buf, 0, member

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > len(self.buf):
            raise Malformed(
                f"MXNet parameters truncated in {what} (needs {n} bytes, {len(self.buf) - self.pos} left)",
                member=self.member,
                offset=self.pos,
            )
        self.pos += n
        return self.pos - n

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def shape(self, what: str) -> list[int]:
        ndim = self.unpack("<i", what)
        if ndim > _MAX_NDIM or ndim < -1:
            raise Malformed(f"MXNet {what} with {ndim} dimensions", member=self.member, offset=self.pos - 4)
        return [self.unpack("<q", what) for _ in range(max(ndim, 0))] if ndim >= 0 else [-1]

    def bad(self, reason: str) -> Malformed:
        return Malformed(f"MXNet parameters: {reason}", member=self.member, offset=self.pos)


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def scan_mxnet_params(buf: memoryview, *, member: str | None) -> list[Finding]:
    """Walk an MXNet ``.params`` file record by record to its exact end; findings for sizes past it.

    Raises:
        Malformed: a record does not parse, the file ends inside a header, or bytes remain.
    """
    r = _Reader(buf, member)
    if bytes(buf[:16]) != PARAMS_MAGIC:
        raise Malformed("not an MXNet NDArray list (magic 0x112 and a reserved zero word)", member=member)
    r.take(16, "header")
    count = r.unpack("<Q", "array count")
    if count > len(buf) // 8:
        raise r.bad(f"{count} arrays cannot fit in {len(buf)} bytes")
    for i in range(count):
        what = f"array {i}"
        magic = r.unpack("<I", what)
        if magic not in (_V2, _V3):
            raise r.bad(f"{what} is in the pre-1.0 layout (magic {magic:#x}), which dlsec does not read")
        stype = r.unpack("<i", what)
        if stype not in _AUX_COUNT:
            raise r.bad(f"{what} has unknown storage type {stype}")
        n_aux = _AUX_COUNT[stype]
        storage = r.shape(f"{what} storage shape") if n_aux else None
        shape = r.shape(f"{what} shape")
        # The loader stops after an unknown shape (an empty array): -1 under NumPy semantics,
        # and under the legacy ones (magic V2) also 0.
        unknown = any(d < 0 for d in shape) or (magic == _V2 and (not shape or 0 in shape))
        if unknown:
            continue
        if r.unpack("<i", f"{what} device") not in _DEVICES:
            raise r.bad(f"{what} names an unknown device type")
        r.take(4, f"{what} device id")
        dtype = r.unpack("<i", f"{what} dtype")
        if dtype not in _DTYPE_SIZES:
            raise r.bad(f"{what} has unknown dtype {dtype}")
        aux = []
        for j in range(n_aux):
            aux_type = r.unpack("<i", f"{what} aux {j} dtype")
            aux_shape = r.shape(f"{what} aux {j} shape")
            if aux_type not in _DTYPE_SIZES or any(d < 0 for d in aux_shape):
                raise r.bad(f"{what} aux {j} has an unknown dtype or shape")
            aux.append(_DTYPE_SIZES[aux_type] * _count(aux_shape))
        data_shape = storage if storage is not None else shape
        if any(d < 0 for d in data_shape):
            raise r.bad(f"{what} has a negative storage dimension")
        need = _DTYPE_SIZES[dtype] * _count(data_shape) + sum(aux)
        if need > len(buf) - r.pos:
            return [
                Finding(
                    "high",
                    "tensor-out-of-bounds",
                    f"{what} declares {need} bytes of data (shape {tuple(data_shape)}) but "
                    f"{len(buf) - r.pos} remain in the file: MXNet allocates that much before reading",
                    offset=r.pos,
                    member=member,
                )
            ]
        r.take(need, f"{what} data")
    names = r.unpack("<Q", "name count")
    if names not in (0, count):
        raise r.bad(f"{names} names for {count} arrays")
    for i in range(names):
        length = r.unpack("<Q", f"name {i}")
        start = r.take(length, f"name {i}")
        try:
            bytes(buf[start : start + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise r.bad(f"name {i} is not text") from None
    if r.pos != len(buf):
        raise r.bad(f"{len(buf) - r.pos} bytes remain after the last name")
    return []
