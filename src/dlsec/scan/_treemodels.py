"""Gradient-boosted tree models saved in their own formats, and scikit-learn models saved with skops.

XGBoost (``save_model``: JSON, or UBJSON ``.ubj``, the default since 2.1) and LightGBM (text)
hold trees and numbers: loading one builds no object from a name in the file. They are
recognised by content, named, and read to their end (UBJSON value by value, without copying
arrays). A skops file (a zip with ``schema.json``) names every type and function it rebuilds:
functions and types from modules that run code are findings, and so are ``MethodNode`` and
``OperatorFuncNode`` (the published bypasses of skops' trusted-types check); third-party
classes outside skops' defaults (builtins, NumPy, SciPy, scikit-learn) are named as such.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

from dlsec.scan._findings import Finding, Malformed

__all__ = [
    "UBJSON_LENGTH_MARKERS",
    "looks_like_lightgbm",
    "looks_like_ubjson",
    "read_lightgbm",
    "read_ubjson",
    "scan_skops_schema",
]

_MAX_DEPTH = 128
_UBJ_FIXED = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8, b"d": 4, b"D": 8, b"C": 1}
_UBJ_NOVALUE = frozenset({b"Z", b"N", b"T", b"F"})


class _Short(Exception):
    pass


class _Ubj:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.n = len(buf)

    def byte(self, pos: int) -> bytes:
        if pos >= self.n:
            raise _Short(f"UBJSON ends at byte {pos}")
        return bytes(self.buf[pos : pos + 1])

    def int_at(self, pos: int) -> tuple[int, int]:
        marker = self.byte(pos)
        fmt = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}.get(marker)
        if fmt is None:
            raise ValueError(f"length at byte {pos} is not an integer")
        size = struct.calcsize(fmt)
        if pos + 1 + size > self.n:
            raise _Short("UBJSON integer truncated")
        value = struct.unpack_from(fmt, self.buf, pos + 1)[0]
        if value < 0:
            raise ValueError(f"negative length at byte {pos}")
        return value, pos + 1 + size

    def skip_typed(self, pos: int, marker: bytes, depth: int) -> int:
        if marker in _UBJ_NOVALUE:
            return pos
        if marker in _UBJ_FIXED:
            end = pos + _UBJ_FIXED[marker]
            if end > self.n:
                raise _Short("UBJSON value truncated")
            return end
        if marker in (b"S", b"H"):
            length, pos = self.int_at(pos)
            if pos + length > self.n:
                raise _Short("UBJSON string truncated")
            return pos + length
        if marker in (b"[", b"{"):
            return self.container(pos, marker == b"{", depth + 1)
        raise ValueError(f"unknown UBJSON marker {marker!r} at byte {pos - 1}")

    def value(self, pos: int, depth: int) -> int:
        marker = self.byte(pos)
        return self.skip_typed(pos + 1, marker, depth)

    def key(self, pos: int) -> int:
        length, pos = self.int_at(pos)
        if pos + length > self.n:
            raise _Short("UBJSON key truncated")
        return pos + length

    def container(self, pos: int, is_object: bool, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise ValueError("UBJSON nested too deeply")
        typed: bytes | None = None
        if self.byte(pos) == b"$":
            typed = self.byte(pos + 1)
            pos += 2
            if self.byte(pos) != b"#":
                raise ValueError("typed UBJSON container without a count")
        if self.byte(pos) == b"#":
            count, pos = self.int_at(pos + 1)
            if typed is not None and typed in _UBJ_FIXED and not is_object:
                end = pos + count * _UBJ_FIXED[typed]
                if end > self.n:
                    raise _Short("UBJSON array truncated")
                return end
            for _ in range(count):
                if is_object:
                    pos = self.key(pos)
                pos = (
                    self.skip_typed(pos + 1, self.byte(pos), depth)
                    if typed is None
                    else self.skip_typed(pos, typed, depth)
                )
            return pos
        while True:
            closing = b"}" if is_object else b"]"
            if self.byte(pos) == closing:
                return pos + 1
            if self.byte(pos) == b"N":
                pos += 1
                continue
            if is_object:
                pos = self.key(pos)
            pos = self.value(pos, depth)


def looks_like_ubjson(head: bytes) -> bool:
    """XGBoost's UBJSON model: an object whose first key is ``learner`` or ``version``.

    The key's length may be any UBJSON integer: XGBoost 1.x and 2.x write ``U``, 3.x writes
    ``L`` (int64).
    """
    if len(head) < 4 or head[:1] != b"{":
        return False
    for key in (b"learner", b"version"):
        for marker, fmt in _LENGTH_MARKERS.items():
            size = struct.calcsize(fmt)
            if head[1:2] == marker and head[2 : 2 + size + len(key)] == struct.pack(fmt, len(key)) + key:
                return True
    return False


_LENGTH_MARKERS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}
UBJSON_LENGTH_MARKERS = b"".join(_LENGTH_MARKERS)


def read_ubjson(buf: memoryview, *, member: str | None) -> None:
    """Walk one UBJSON value to the exact end of ``buf``.

    Raises:
        Malformed: not exactly one well-formed UBJSON value.
    """
    try:
        end = _Ubj(buf).value(0, 0)
    except _Short as exc:
        raise Malformed(f"XGBoost UBJSON model truncated ({exc})", member=member) from None
    except (ValueError, struct.error) as exc:
        raise Malformed(f"not a readable XGBoost UBJSON model ({exc})", member=member) from None
    if end != len(buf):
        raise Malformed("trailing bytes after the XGBoost UBJSON model", member=member, offset=end)


def looks_like_lightgbm(head: bytes) -> bool:
    return head.startswith((b"tree\nversion=v", b"tree\r\nversion=v"))


def read_lightgbm(data: bytes | memoryview, *, member: str | None) -> None:
    """A LightGBM text model: UTF-8 ``key=value`` sections, trees, and its end marker.

    Raises:
        Malformed: not text, or no trees, or no end marker.
    """
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("LightGBM model is not UTF-8 text", member=member) from None
    if "\nTree=" not in text and "\ntree_sizes=" not in text:
        raise Malformed("LightGBM model without trees", member=member)
    if "end of trees" not in text:
        raise Malformed("LightGBM model truncated (no 'end of trees')", member=member)
    last = text.rstrip("\r\n").rsplit("\n", 1)[-1]
    if last != "end of parameters" and not last.startswith("pandas_categorical:"):
        raise Malformed(
            "LightGBM model does not end with its parameters (truncated or extended)", member=member
        )


def xgboost_json(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("learner"), dict) and "version" in doc


# skops' default trusted roots: what skops.io.load accepts without `trusted=`.
_SKOPS_TRUSTED_ROOTS = ("builtins", "numpy", "scipy", "sklearn", "collections")
_SKOPS_NODES_CALL = {
    "MethodNode": "CVE-2025-54413: a method of an object is looked up by name and called",
    "OperatorFuncNode": "CVE-2025-54412: an operator function (attrgetter, "
    "methodcaller...) is built and called",
}


def _nodes(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    stack: list[tuple[Any, str]] = [(doc, "schema")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                yield where, node
            stack.extend((v, f"{where}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))


def scan_skops_schema(data: bytes, *, member: str, is_code: Any, may_import: Any) -> list[Finding]:
    """Findings for a skops ``schema.json``; ``is_code`` and ``may_import`` judge ``(module, name)``.

    Raises:
        Malformed: the schema is not JSON.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("skops schema.json is not JSON", member=member) from None
    findings = []
    third_party: set[str] = set()
    for where, node in _nodes(doc):
        loader = str(node.get("__loader__"))
        module, cls = str(node.get("__module__", "")), str(node.get("__class__", ""))
        content = node.get("content")
        if loader in _SKOPS_NODES_CALL:
            findings.append(
                Finding(
                    "critical",
                    "skops-call-node",
                    f"{where}: a {loader} ({module}.{cls}); {_SKOPS_NODES_CALL[loader]} when the file is "
                    "loaded",
                    import_name=f"{module}.{cls}",
                    member=member,
                )
            )
            continue
        names = [(module, cls)]
        if loader == "FunctionNode" and isinstance(content, dict):
            names = [(str(content.get("module_path", module)), str(content.get("function", cls)))]
        for mod, name in names:
            qual = f"{mod}.{name}"
            if is_code(mod, name):
                findings.append(
                    Finding(
                        "critical",
                        "unsafe-global",
                        f"{where}: skops rebuilds {qual} ({loader}), which runs code when the file is loaded "
                        "with it trusted",
                        import_name=qual,
                        member=member,
                    )
                )
            elif mod.split(".")[0] not in _SKOPS_TRUSTED_ROOTS and not may_import(mod, name):
                third_party.add(qual)
    if third_party:
        listed = sorted(third_party)
        findings.append(
            Finding(
                "medium",
                "skops-untrusted-type",
                f"skops rebuilds types outside its trusted defaults ({', '.join(listed[:8])}): loading calls "
                "them once they are passed in trusted=; scan again with --allow for those you trust",
                import_name=listed[0],
                member=member,
            )
        )
    return findings
