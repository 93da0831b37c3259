"""MessagePack checkpoints (Flax ``flax.serialization``, older Orbax ``checkpoint`` files) read as data.

The structure is walked directly on the bytes, as ``msgpack.unpackb`` frames it, without
materialising any value: a multi-GB checkpoint is one pass over its headers, tensor bytes are
skipped by length. (The ``msgpack`` package would copy every tensor into a Python object.)

Flax decodes three extension types with its own ``ext_hook``: 1 an ndarray ``(shape, dtype
name, bytes)``, 2 a complex number, 3 a NumPy scalar; -1 is msgpack's timestamp. Any other
extension type is decoded by whatever hook the loader installs, so it is a finding; so is an
ndarray whose dtype is not numeric (object arrays are how pickles ride inside NumPy). A binary
value that is a complete pickle is handed back to be analysed as one.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from dlsec.scan._findings import Finding, Malformed

__all__ = ["MAP_MARKERS", "MsgpackReport", "looks_like_msgpack", "scan_msgpack"]

MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_MAX_DEPTH = 64
_FLAX_EXT = {1: "ndarray", 2: "complex", 3: "numpy scalar", -1: "timestamp"}
_NUMERIC_DTYPE = re.compile(
    r"^[<>|=]?(?:[biufc?]\d*|bool|u?int(?:8|16|32|64)|float(?:16|32|64)|bfloat16|complex(?:64|128)|"
    r"float8_e4m3fn|float8_e5m2|float8_e4m3fnuz|float8_e5m2fnuz|float8_e4m3b11fnuz|int4|uint4|[mM]8(?:\[\w+\])?)$"
)


class _Bad(Exception):
    pass


class _Short(_Bad):
    """The bytes end inside a value (fine for a sniffed window)."""


@dataclass
class MsgpackReport:
    findings: list[Finding] = field(default_factory=list)
    blobs: list[tuple[int, int]] = field(default_factory=list)  # binary values that start like a pickle


class _Walker:
    def __init__(self, buf: memoryview, report: MsgpackReport | None, member: str | None) -> None:
        self.buf = buf
        self.n = len(buf)
        self.report = report
        self.member = member

    def need(self, pos: int, k: int) -> None:
        if pos + k > self.n:
            raise _Short(f"value at byte {pos} runs past the end")

    def uint(self, pos: int, k: int) -> int:
        self.need(pos, k)
        return int.from_bytes(self.buf[pos : pos + k], "big")

    def skip(self, pos: int, depth: int) -> int:
        """Position after the value at ``pos``."""
        if depth > _MAX_DEPTH:
            raise _Bad("values nested too deeply")
        self.need(pos, 1)
        b = self.buf[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            return pos
        if 0x80 <= b <= 0x8F:
            return self.items(pos, 2 * (b & 0x0F), depth)
        if 0x90 <= b <= 0x9F:
            return self.items(pos, b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.raw(pos, b & 0x1F, "str")
        if b == 0xC1:
            raise _Bad(f"reserved byte 0xc1 at {pos - 1}")
        if b in (0xC4, 0xC5, 0xC6):
            k = 1 << (b - 0xC4)
            return self.raw(pos + k, self.uint(pos, k), "bin")
        if b in (0xC7, 0xC8, 0xC9):
            k = 1 << (b - 0xC7)
            return self.ext(pos + k + 1, self.uint(pos, k), pos + k, depth)
        if b in (0xCA, 0xCB):
            return self.raw(pos, 4 if b == 0xCA else 8, None)
        if 0xCC <= b <= 0xD3:
            return self.raw(pos, 1 << ((b - 0xCC) % 4), None)
        if 0xD4 <= b <= 0xD8:
            return self.ext(pos + 1, 1 << (b - 0xD4), pos, depth)
        if b in (0xD9, 0xDA, 0xDB):
            k = 1 << (b - 0xD9)
            return self.raw(pos + k, self.uint(pos, k), "str")
        if b in (0xDC, 0xDD):
            k = 2 if b == 0xDC else 4
            return self.items(pos + k, self.uint(pos, k), depth)
        k = 2 if b == 0xDE else 4  # 0xDE, 0xDF: maps
        return self.items(pos + k, 2 * self.uint(pos, k), depth)

    def items(self, pos: int, count: int, depth: int) -> int:
        if count > self.n - pos:
            raise _Short(f"{count} values announced at byte {pos}, more than the bytes left")
        for _ in range(count):
            pos = self.skip(pos, depth + 1)
        return pos

    def raw(self, pos: int, length: int, kind: str | None) -> int:
        self.need(pos, length)
        if kind == "str":
            try:
                bytes(self.buf[pos : pos + length]).decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad(f"string at byte {pos} is not UTF-8") from None
        elif (
            kind == "bin"
            and self.report is not None
            and length >= 2
            and self.buf[pos] == 0x80
            and self.buf[pos + 1] <= 5
        ):
            self.report.blobs.append((pos, pos + length))
        return pos + length

    def ext(self, pos: int, length: int, type_at: int, depth: int) -> int:
        self.need(type_at, 1)
        code = struct.unpack_from("b", self.buf, type_at)[0]
        self.need(pos, length)
        if self.report is not None:
            if code not in _FLAX_EXT:
                self.report.findings.append(
                    Finding(
                        "medium",
                        "msgpack-ext-type",
                        f"extension type {code} at byte {type_at}: Flax decodes types 1-3 only, so this "
                        "value is decoded by a custom ext_hook, which does what its author wrote",
                        offset=type_at,
                        member=self.member,
                    )
                )
            elif code == 1:
                self.ndarray(pos, pos + length, depth)
        return pos + length

    def ndarray(self, start: int, end: int, depth: int) -> None:
        """Flax's ndarray: msgpack of ``[shape, dtype name, bytes]``."""
        inner = _Walker(self.buf[:end], None, self.member)
        b = self.buf[start] if start < end else 0
        if b != 0x93:
            raise _Bad(f"ndarray extension at byte {start} is not [shape, dtype, data]")
        pos = inner.skip(start + 1, depth + 1)  # shape
        dtype_at = pos
        pos = inner.skip(pos, depth + 1)
        head = self.buf[dtype_at]
        text_at = dtype_at + 1 if 0xA0 <= head <= 0xBF else dtype_at + 2 if head == 0xD9 else -1
        name = bytes(self.buf[text_at:pos]).decode("utf-8", "replace") if text_at > 0 else "?"
        pos = inner.skip(pos, depth + 1)
        if pos != end:
            raise _Bad(f"ndarray extension at byte {start} has trailing bytes")
        if not _NUMERIC_DTYPE.match(name) and self.report is not None:
            self.report.findings.append(
                Finding(
                    "high",
                    "msgpack-object-dtype",
                    f"ndarray at byte {start} has dtype {name[:60]!r}, not a numeric type: object arrays "
                    "carry Python objects, which loaders unpickle",
                    offset=start,
                    member=self.member,
                )
            )


def looks_like_msgpack(head: bytes, *, complete: bool) -> bool:
    """Whether ``head`` is one msgpack map (to its exact end, or cut short, when ``complete``)."""
    if not head or head[0] not in MAP_MARKERS:
        return False
    walker = _Walker(memoryview(head), None, None)
    try:
        end = walker.skip(0, 0)
    except _Short:
        # A window, or a whole file cut short: it is msgpack as far as it goes (the reader then
        # says it is truncated). Short files that run out are not taken for msgpack.
        return not complete or len(head) >= 64
    except _Bad:
        return False
    return end == len(head) if complete else True


def scan_msgpack(
    buf: memoryview, *, member: str | None, on_pickle: Callable[[memoryview, int], None]
) -> list[Finding]:
    """Findings for a msgpack checkpoint; ``on_pickle(bytes, offset)`` analyses embedded pickles.

    Raises:
        Malformed: the bytes are not exactly one msgpack map.
    """
    report = MsgpackReport()
    walker = _Walker(buf, report, member)
    try:
        end = walker.skip(0, 0)
    except _Bad as exc:
        raise Malformed(f"not a readable msgpack checkpoint ({exc})", member=member) from None
    if end != len(buf):
        raise Malformed("trailing bytes after the msgpack checkpoint", member=member, offset=end)
    for start, stop in report.blobs:
        on_pickle(buf[start:stop], start)
    return report.findings
