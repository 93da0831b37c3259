"""CNTK v2 models (``Function.save``: ``.model``, ``.cntk``, ``.dnn``) read as protobuf, nothing executed.

The file is one ``CNTK.proto.Dictionary`` (CNTK's ``Source/CNTKv2LibraryDll/proto/CNTK.proto``):
``version`` (1) and a map (2) of string keys to ``DictionaryValue``s, each a ``version`` (1), a
``value_type`` (2) and one value (3-13: bool, int, size_t, float, double, string, NDShape, Axis,
Vector, Dictionary, NDArrayView). The whole file is parsed against that schema; a field the
schema does not have, a value of another type than its ``value_type`` says, or a dense float or
double array whose values do not match its shape leaves the file ``unscannable``.

A model is a ``CompositeFunction`` dictionary whose ``primitive_functions`` are dictionaries
too. A user-defined function (``type`` ``UserDefinedFunction``) keeps its state under
``user_defined_state``: a Python ``UserFunction`` names its ``module`` and ``class``, which
``Function.load`` imports to call the class's ``deserialize``; a native one names a library
(``module``) and its exported ``deserialize_method``, which CNTK loads and calls. Both run code
from outside the file when the model is loaded: critical findings. A user-defined function
without either is rebuilt by a callback registered under its op name: a finding too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dlsec.scan._findings import Finding, Malformed
from dlsec.scan._onnx import _I32, _I64, _LEN, _VARINT, _Bad, _fields, _varint

__all__ = ["LEGACY_MAGIC", "looks_like_cntk", "scan_cntk"]

LEGACY_MAGIC = b"B\x00C\x00N\x00\x00\x00"  # CNTK v1 (BrainScript) models: UTF-16 "BCN"
# DictionaryValue.value_type -> the field that holds that value, and its wire type
_VALUE_FIELDS = {
    1: (3, _VARINT),
    2: (4, _VARINT),
    3: (5, _VARINT),
    4: (6, _I32),
    5: (7, _I64),
    6: (8, _LEN),
    7: (9, _LEN),
    8: (10, _LEN),
    9: (11, _LEN),
    10: (12, _LEN),
    11: (13, _LEN),
}
_FIELD_TYPES = {field: (vtype, wire) for vtype, (field, wire) in _VALUE_FIELDS.items()}
_DTYPES = {0, 1, 2, 4, 5, 6}  # NDArrayView.DataType
_STORAGE = {0, 1, 2}  # dense, sparse CSC, sparse block column
_MAX_DEPTH = 256
_UDF = "UserDefinedFunction"


@dataclass(frozen=True)
class _Array:
    dtype: int
    shape: tuple[int, ...]


class _Parser:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    def text(self, s: int, e: int) -> str:
        try:
            return bytes(self.buf[s:e]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("a string that is not UTF-8") from None

    def dictionary(self, s: int, e: int, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise _Bad("dictionaries nested too deeply")
        out: dict[str, Any] = {}
        for f, w, a, b in _fields(self.buf, s, e):
            if f == 1 and w == _VARINT:
                continue
            if f != 2 or w != _LEN:
                raise _Bad(f"Dictionary field {f} (wire {w}) is not in CNTK.proto")
            key, value = "", None
            for kf, kw, ka, kb in _fields(self.buf, a, b):
                if kf == 1 and kw == _LEN:
                    key = self.text(ka, kb)
                elif kf == 2 and kw == _LEN:
                    value = self.value(ka, kb, depth + 1)
                else:
                    raise _Bad(f"Dictionary entry field {kf} is not in CNTK.proto")
            out[key] = value
        return out

    def value(self, s: int, e: int, depth: int) -> Any:
        vtype, held = 0, None
        value: Any = None
        for f, w, a, b in _fields(self.buf, s, e):
            if f == 1 and w == _VARINT:
                continue
            if f == 2 and w == _VARINT:
                vtype = a
                continue
            if f not in _FIELD_TYPES or _FIELD_TYPES[f][1] != w:
                raise _Bad(f"DictionaryValue field {f} (wire {w}) is not in CNTK.proto")
            if held is not None:
                raise _Bad("DictionaryValue with two values")
            held = _FIELD_TYPES[f][0]
            if f == 8:
                value = self.text(a, b)
            elif f == 9:
                value = self.shape(a, b)
            elif f == 10:
                value = self.axis(a, b)
            elif f == 11:
                value = self.vector(a, b, depth)
            elif f == 12:
                value = self.dictionary(a, b, depth)
            elif f == 13:
                value = self.array(a, b)
            else:
                value = a if w == _VARINT else None
        if vtype not in _VALUE_FIELDS and vtype != 0:
            raise _Bad(f"DictionaryValue of unknown type {vtype}")
        if held is not None and held != vtype:
            raise _Bad(f"DictionaryValue of type {vtype} holds a value of type {held}")
        return value

    def vector(self, s: int, e: int, depth: int) -> list[Any]:
        out = []
        for f, w, a, b in _fields(self.buf, s, e):
            if f != 1 or w != _LEN:
                raise _Bad(f"Vector field {f} is not in CNTK.proto")
            out.append(self.value(a, b, depth + 1))
        return out

    def shape(self, s: int, e: int) -> tuple[int, ...]:
        dims: list[int] = []
        for f, w, a, b in _fields(self.buf, s, e):
            if f == 1 and w == _LEN:
                p = a
                while p < b:
                    v, p = _varint(self.buf, p, b)
                    dims.append(v)
            elif f == 1 and w == _VARINT:
                dims.append(a)
            else:
                raise _Bad(f"NDShape field {f} is not in CNTK.proto")
        return tuple(dims)

    def axis(self, s: int, e: int) -> str:
        name = ""
        for f, w, a, b in _fields(self.buf, s, e):
            if f in (1, 3) and w == _VARINT:
                continue
            if f == 2 and w == _LEN:
                name = self.text(a, b)
            else:
                raise _Bad(f"Axis field {f} is not in CNTK.proto")
        return name

    def array(self, s: int, e: int) -> _Array:
        dtype, storage = 0, 0
        shape: tuple[int, ...] = ()
        values: list[tuple[int, int, int]] = []
        for f, w, a, b in _fields(self.buf, s, e):
            if f == 1 and w == _VARINT:
                dtype = a
            elif f == 2 and w == _VARINT:
                storage = a
            elif f == 3 and w == _LEN:
                shape = self.shape(a, b)
            elif f in (4, 5, 6, 7) and w == _LEN:
                for vf, vw, va, vb in _fields(self.buf, a, b):
                    if vf != 1 or vw not in (_LEN, _I32, _I64, _VARINT):
                        raise _Bad(f"NDArrayView values field {vf} is not in CNTK.proto")
                    values.append((f, vw, vb - va))
            else:
                raise _Bad(f"NDArrayView field {f} is not in CNTK.proto")
        if dtype not in _DTYPES or storage not in _STORAGE:
            raise _Bad(f"NDArrayView of unknown data type {dtype} or storage {storage}")
        if storage == 0 and dtype in (1, 2):
            width, field = (4, 4) if dtype == 1 else (8, 5)
            held = sum(n // width if w == _LEN else 1 for f, w, n in values if f == field)
            count = 1
            for d in shape:
                count *= d
            if any(f != field for f, _, _ in values) or (values and held != count):
                raise _Bad(f"a dense array of shape {shape} holds {held} values")
        return _Array(dtype, shape)


def looks_like_cntk(buf: memoryview) -> bool:
    """Whether the bytes are a CNTK ``Dictionary`` naming a function (keys ``type`` and ``uid``).

    Fields beyond the schema's are left to :func:`scan_cntk`, which refuses them: such a file is
    a CNTK model dlsec cannot read, not an unknown format.
    """
    if not len(buf) or buf[0] not in (0x08, 0x12):
        return False
    keys = set()
    try:
        for f, w, a, b in _fields(buf, 0, len(buf)):
            if (f, w) != (2, _LEN):
                continue
            entry = list(_fields(buf, a, b))
            if not entry or entry[0][:2] != (1, _LEN):
                return False
            keys.add(bytes(buf[entry[0][2] : entry[0][3]]))
    except _Bad:
        return False
    return {b"type", b"uid"} <= keys


def _walk(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            yield value, where
            stack.extend((v, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def scan_cntk(buf: memoryview, *, member: str | None) -> list[Finding]:
    """Findings for the user-defined functions of a CNTK v2 model.

    Raises:
        Malformed: the bytes do not parse as a CNTK Dictionary.
    """
    try:
        model = _Parser(buf).dictionary(0, len(buf), 0)
    except _Bad as exc:
        raise Malformed(f"not a readable CNTK model ({exc})", member=member) from None
    except struct.error:  # pragma: no cover - _fields checks every length first
        raise Malformed("not a readable CNTK model", member=member) from None
    findings: list[Finding] = []
    flagged: set[int] = set()
    for d, where in _walk(model, "model"):
        module, cls, method = d.get("module"), d.get("class"), d.get("deserialize_method")
        if isinstance(module, str) and isinstance(cls, str):
            flagged.add(id(d))
            op = str(d.get("op_name", "?"))[:80]
            findings.append(
                Finding(
                    "critical",
                    "cntk-python-udf",
                    f"{where} is a Python user function (op {op!r}): Function.load imports "
                    f"{module[:120]}.{cls[:80]} and calls its deserialize",
                    import_name=f"{module[:120]}.{cls[:80]}",
                    member=member,
                )
            )
        elif isinstance(module, str) and isinstance(method, str):
            flagged.add(id(d))
            findings.append(
                Finding(
                    "critical",
                    "cntk-native-udf",
                    f"{where} is a native user function: CNTK loads the library {module[:120]!r} and calls "
                    f"its {method[:80]!r} when the model is loaded",
                    import_name=f"{module[:120]}:{method[:80]}",
                    member=member,
                )
            )
    for d, where in _walk(model, "model"):
        if d.get("type") != _UDF:
            continue
        state = d.get("user_defined_state")
        inner = [x for x, _ in _walk(state, "")] if isinstance(state, dict) else []
        if not any(id(x) in flagged for x in inner):
            name = str(d.get("name", "?"))[:80]
            findings.append(
                Finding(
                    "high",
                    "cntk-user-function",
                    f"{where} is a user-defined function ({name!r}) that CNTK rebuilds "
                    "with a deserializer registered in the loading process: code outside the file",
                    member=member,
                )
            )
    return findings
