"""FlatBuffers models read without their runtimes: TensorFlow Lite, ExecuTorch and CatBoost.

A FlatBuffer starts with the offset of its root table; a table starts with the (signed) offset
back to its vtable, whose entries give each field's position in the table. Every offset read
here is checked against the buffer, so a crafted file is ``Malformed``, never an out-of-range
read. Nothing is executed: the operators a model names are listed and judged.

- TensorFlow Lite (identifier ``TFL3``): built-in operators are kernels of the runtime. A
  ``Flex`` custom operator runs a TensorFlow op through the Flex delegate (Select TF ops), judged
  like a SavedModel op; any other custom operator is a native kernel the application registers,
  which dlsec cannot see (``unvetted``). Buffers stored past the FlatBuffer (models over 2 GB)
  must lie inside the file.
- ExecuTorch (``.pte``, identifier ``ET12``): operators outside the core ATen and ExecuTorch
  namespaces are custom kernels, and delegate blobs are programs for a backend (``unvetted``
  unless the backend is a known interpreter such as XNNPACK); segments must lie inside the file.
- CatBoost (``.cbm``): the ``CBM1`` header's core size must fit the file and the core must be a
  FlatBuffer whose root table is in range; the model holds trees and numbers only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from dlsec.scan._findings import Finding, Malformed
from dlsec.scan._savedmodel import RISKY_OPS

__all__ = ["FlatBuffer", "scan_catboost", "scan_executorch", "scan_tflite", "tflite_like", "executorch_like"]

_MAX_VECTOR = 1 << 24


class _Bad(Exception):
    pass


class FlatBuffer:
    """Bounds-checked access to one FlatBuffer in ``buf``."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.size = len(buf)

    def _u(self, fmt: str, pos: int) -> int:
        n = struct.calcsize(fmt)
        if pos < 0 or pos + n > self.size:
            raise _Bad(f"offset {pos} outside the buffer")
        value: int = struct.unpack_from(fmt, self.buf, pos)[0]
        return value

    def root(self) -> int:
        return self._deref(0)

    def _deref(self, pos: int) -> int:
        target = pos + self._u("<I", pos)
        if target >= self.size:
            raise _Bad(f"reference at {pos} points outside the buffer")
        return target

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of ``table``, or ``None`` when absent."""
        vtable = table - self._u("<i", table)
        vsize = self._u("<H", vtable)
        if vsize < 4 or vsize % 2:
            raise _Bad(f"vtable at {vtable} of size {vsize}")
        tsize = self._u("<H", vtable + 2)
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        off = self._u("<H", vtable + slot)
        if not off:
            return None
        if off >= tsize or table + off >= self.size:
            raise _Bad(f"field {index} of the table at {table} lies outside it")
        return table + off

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        at = self.field(table, index)
        return default if at is None else self._u(fmt, at)

    def table(self, table: int, index: int) -> int | None:
        at = self.field(table, index)
        return None if at is None else self._deref(at)

    def vector(self, table: int, index: int) -> tuple[int, int] | None:
        """``(first element position, length)`` of a vector field."""
        at = self.field(table, index)
        if at is None:
            return None
        start = self._deref(at)
        length = self._u("<I", start)
        if length > _MAX_VECTOR:
            raise _Bad(f"vector of {length} elements")
        return start + 4, length

    def tables(self, table: int, index: int) -> Iterator[int]:
        vec = self.vector(table, index)
        if vec is None:
            return
        start, length = vec
        if start + 4 * length > self.size:
            raise _Bad("vector runs past the buffer")
        for i in range(length):
            yield self._deref(start + 4 * i)

    def bytes_len(self, table: int, index: int, width: int = 1) -> int:
        vec = self.vector(table, index)
        if vec is None:
            return 0
        start, length = vec
        if start + width * length > self.size:
            raise _Bad("vector runs past the buffer")
        return length

    def string(self, table: int, index: int) -> str | None:
        vec = self.vector(table, index)
        if vec is None:
            return None
        start, length = vec
        if start + length > self.size:
            raise _Bad("string runs past the buffer")
        try:
            return bytes(self.buf[start : start + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("string is not UTF-8") from None


def tflite_like(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"TFL3"


def executorch_like(head: bytes) -> bool:
    return len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit()


_TFLITE_CUSTOM = 32
# Custom operators that ship inside the TensorFlow Lite runtime itself.
_TFLITE_BUILTIN_CUSTOM = frozenset(
    {"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram", "MaxPoolingWithArgmax2D", "MaxUnpooling2D"}
)


def scan_tflite(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and unvetted custom operators of a TensorFlow Lite model.

    Raises:
        Malformed: the FlatBuffer is not a readable TFLite model.
    """
    fb = FlatBuffer(buf)
    findings: list[Finding] = []
    unvetted: list[str] = []
    try:
        model = fb.root()
        fb.scalar(model, 0, "<I")  # version
        codes = []
        for code in fb.tables(model, 1):
            builtin = max(fb.scalar(code, 0, "<b"), fb.scalar(code, 3, "<i"))
            codes.append((builtin, fb.string(code, 1)))
        subgraphs = list(fb.tables(model, 2))
        if not subgraphs:
            raise _Bad("no subgraph")
        for graph in subgraphs:
            for op in fb.tables(graph, 3):
                if fb.scalar(op, 0, "<I") >= len(codes):
                    raise _Bad("an operator names an operator code that does not exist")
        for i, buffer in enumerate(fb.tables(model, 4)):
            fb.bytes_len(buffer, 0)
            offset, size = fb.scalar(buffer, 1, "<Q"), fb.scalar(buffer, 2, "<Q")
            if offset > 1 and offset + size > len(buf):
                findings.append(
                    Finding(
                        "high",
                        "buffer-out-of-bounds",
                        f"buffer {i} says it holds {size} bytes at offset {offset}, past the end of the "
                        f"{len(buf)}-byte file",
                        member=member,
                    )
                )
    except _Bad as exc:
        raise Malformed(f"not a readable TensorFlow Lite model ({exc})", member=member) from None
    for builtin, custom in sorted(set(codes), key=str):
        if builtin != _TFLITE_CUSTOM:
            continue
        name = custom or ""
        if name.startswith("Flex"):
            tf_op = name[4:]
            if tf_op in RISKY_OPS:
                severity, what = RISKY_OPS[tf_op]
                findings.append(
                    Finding(
                        severity,
                        "tflite-flex-op",
                        f"custom operator {name} runs the TensorFlow op {tf_op} through the Flex delegate "
                        f"(Select TF ops), which {what} when the model is invoked",
                        import_name=f"tf.raw_ops.{tf_op}",
                        member=member,
                    )
                )
        elif name not in _TFLITE_BUILTIN_CUSTOM:
            unvetted.append(f"TensorFlow Lite custom operator {name or '(unnamed)'!r}")
    return findings, unvetted


# Operator namespaces whose kernels ship with ExecuTorch's portable and optimized libraries.
_ET_CORE_NAMESPACES = ("aten::", "dim_order_ops::", "quantized_decomposed::", "executorch_prim::", "et_vk::")
# Backends whose delegate blob is a graph interpreted by the backend, not native code.
_ET_KNOWN_BACKENDS = frozenset(
    {"XnnpackBackend", "CoreMLBackend", "MPSBackend", "VulkanBackend", "QnnBackend"}
)


def scan_executorch(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and unvetted parts (custom kernels, unknown delegates) of an ExecuTorch program.

    Raises:
        Malformed: the FlatBuffer is not a readable ExecuTorch program.
    """
    fb = FlatBuffer(buf)
    findings: list[Finding] = []
    unvetted: list[str] = []
    try:
        program = fb.root()
        plans = list(fb.tables(program, 1))
        if not plans:
            raise _Bad("no execution plan")
        for plan in plans:
            plan_name = fb.string(plan, 0) or "?"
            for op in fb.tables(plan, 6):
                name = fb.string(op, 0) or ""
                fb.string(op, 1)
                if not name.startswith(_ET_CORE_NAMESPACES):
                    unvetted.append(f"ExecuTorch custom operator {name!r} (method {plan_name})")
            for delegate in fb.tables(plan, 7):
                backend = fb.string(delegate, 0) or ""
                if backend not in _ET_KNOWN_BACKENDS:
                    unvetted.append(f"ExecuTorch delegate for backend {backend!r} (method {plan_name})")
        for i, segment in enumerate(fb.tables(program, 4)):
            offset, size = fb.scalar(segment, 0, "<Q"), fb.scalar(segment, 1, "<Q")
            if offset + size > len(buf):
                findings.append(
                    Finding(
                        "high",
                        "buffer-out-of-bounds",
                        f"data segment {i} ({size} bytes at offset {offset} past the segment base) may lie "
                        f"past the end of the {len(buf)}-byte file",
                        member=member,
                    )
                )
    except _Bad as exc:
        raise Malformed(f"not a readable ExecuTorch program ({exc})", member=member) from None
    return findings, sorted(set(unvetted))


def scan_catboost(buf: memoryview, *, member: str | None) -> None:
    """A CatBoost model: ``CBM1``, the core's size, then the core FlatBuffer (trees and numbers).

    Raises:
        Malformed: the header or the core's root table is out of range.
    """
    if len(buf) < 8 or bytes(buf[:4]) != b"CBM1":
        raise Malformed("not a CatBoost model (no CBM1 header)", member=member)
    (core,) = struct.unpack_from("<I", buf, 4)
    if core < 8 or 8 + core > len(buf):
        raise Malformed(f"CatBoost core of {core} bytes does not fit the file", member=member)
    fb = FlatBuffer(buf[8 : 8 + core])
    try:
        root = fb.root()
        fb.string(root, 0)  # the format version string
    except _Bad as exc:
        raise Malformed(f"not a readable CatBoost model ({exc})", member=member) from None
