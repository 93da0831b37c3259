"""Pickle opcodes read the way the loaders read them, frames included.

``pickletools.genops`` reads a pickle as one flat byte string and ignores the length that a
``FRAME`` opcode (protocol 4+) declares. The loaders do not all agree with it:

* CPython's C unpickler reading a file object *without* ``peek()`` (``io.BytesIO``, which is how
  ``torch.load`` reads ``data.pkl`` out of its zip) loads each frame into a buffer. When a read
  needs more than the buffer still holds, the rest of the buffer is dropped and the bytes are
  read afresh from the file, past the frame: an opcode that straddles the end of its frame is
  read from *other* bytes than a flat reading sees. Only the data of ``BINBYTES``-family
  opcodes (read with ``readinto``) continues across the boundary.
* The same unpickler reading a file object with ``peek()`` (``open(path, "rb")``) or a bytes
  object (``pickle.loads``) reads flat, like ``genops``.
* The pure-Python unpickler refuses a straddling opcode ("pickle exhausted before end of frame").

When every opcode lies wholly inside its frame or wholly outside all frames, and each frame ends
exactly at an opcode boundary, the three readings are the same. The analyser reads flat with
:func:`genops` and checks that rule with :class:`FrameTracker`; where the rule is broken it reads
the stream a second time through :class:`CFileView`, so that what the C unpickler would import
is named too.
"""

from __future__ import annotations

import pickletools
from collections.abc import Iterator
from typing import IO, Any, Protocol

__all__ = ["CFileView", "FrameTracker", "genops"]

_CODE2OP: dict[bytes, pickletools.OpcodeInfo] = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
# Opcodes whose payload the C unpickler reads with _Unpickler_ReadInto: what the frame buffer
# still holds, then the rest straight from the file (no bytes dropped).
_READINTO_PAYLOAD = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8, "BYTEARRAY8": 8}


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def readline(self, limit: int = -1, /) -> bytes: ...

    def tell(self) -> int: ...


class CFileView:
    """The bytes CPython's C unpickler reads from a file object that has no ``peek()``.

    It mirrors ``_Unpickler_Read`` (a read the buffer cannot satisfy drops what is left of it
    and reads afresh), ``_Unpickler_Readline`` (likewise for a line), ``_Unpickler_ReadInto``
    (bytes payloads continue across the buffer's end) and ``load_frame`` (the frame is read
    into the buffer, then reading restarts at its first byte). ``tell()`` is the file offset of
    the next byte the unpickler will read.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._buf = b""
        self._idx = 0
        self._base = f.tell()  # file offset of _buf[0]; the file is at _base + len(_buf)

    def tell(self) -> int:
        return self._base + self._idx

    def _drop(self) -> None:
        self._base += len(self._buf)
        self._buf, self._idx = b"", 0

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            raise ValueError("unbounded read")
        if n <= len(self._buf) - self._idx:
            out = self._buf[self._idx : self._idx + n]
            self._idx += n
            return out
        self._drop()
        out = self._f.read(n)
        self._buf, self._idx = out, len(out)
        return out

    def readline(self, limit: int = -1, /) -> bytes:
        nl = self._buf.find(b"\n", self._idx)
        if nl >= 0:
            out = self._buf[self._idx : nl + 1]
            self._idx = nl + 1
            return out
        self._drop()
        out = self._f.readline()
        self._buf, self._idx = out, len(out)
        return out

    def read_into(self, n: int) -> bytes:
        head = self._buf[self._idx : self._idx + n]
        self._idx += len(head)
        if len(head) == n:
            return head
        self._drop()
        tail = self._f.read(n - len(head))
        self._base += len(tail)
        return head + tail

    def frame(self, length: int) -> None:
        if length <= len(self._buf) - self._idx:
            return
        self._drop()
        data = self._f.read(length)
        if len(data) < length:
            raise ValueError("pickle data was truncated (a FRAME longer than the data)")
        self._buf, self._idx = data, 0


def genops(f: _Reader | CFileView) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int, int]]:
    """Yield ``(opcode, argument, start, end)`` for each opcode up to and including ``STOP``.

    Reads flat from a file object, or as the C unpickler does from a :class:`CFileView`.

    Raises:
        ValueError: an unknown opcode, a truncated argument or no ``STOP``.
    """
    c_view = isinstance(f, CFileView)
    while True:
        pos = f.tell()
        code = f.read(1)
        op = _CODE2OP.get(code)
        if op is None:
            if not code:
                raise ValueError("pickle exhausted before seeing STOP")
            raise ValueError(f"at position {pos}, opcode {code!r} unknown")
        if c_view and op.name in _READINTO_PAYLOAD:
            width = _READINTO_PAYLOAD[op.name]
            size_bytes = f.read(width)
            if len(size_bytes) < width:
                raise ValueError(f"{op.name} length truncated")
            n = int.from_bytes(size_bytes, "little")
            assert isinstance(f, CFileView)
            data = f.read_into(n)
            if len(data) < n:
                raise ValueError(f"{op.name} data truncated")
            arg: Any = bytearray(data) if op.name == "BYTEARRAY8" else data
        else:
            arg = None if op.arg is None else op.arg.reader(f)  # type: ignore[arg-type]  # duck-typed file
        if c_view and op.name == "FRAME":
            assert isinstance(f, CFileView)
            f.frame(int(arg))
        end = f.tell()
        yield op, arg, pos, end
        if op.name == "STOP":
            return


class FrameTracker:
    """Checks that frames and opcodes nest, so that every loader reads the same opcodes."""

    def __init__(self) -> None:
        self.frame_end: int | None = None
        self.frame_start = 0

    def check(self, name: str, arg: Any, pos: int, end: int) -> str | None:
        """Account for one opcode; return why the loaders would disagree on it, if they would."""
        if self.frame_end is not None and pos >= self.frame_end:
            self.frame_end = None  # the frame was used up exactly: what follows is unframed
        if name == "FRAME":
            if self.frame_end is not None:
                return (
                    f"FRAME at byte {pos} starts inside the frame that began at byte "
                    f"{self.frame_start} and ends at byte {self.frame_end}"
                )
            if not isinstance(arg, int) or arg < 0:
                return f"FRAME at byte {pos} declares an invalid length {arg!r}"
            self.frame_start, self.frame_end = end, end + arg
            return None
        if self.frame_end is not None and end > self.frame_end:
            return (
                f"{name} at byte {pos} runs to byte {end}, past the end of its frame at byte "
                f"{self.frame_end}: CPython's C unpickler reading a file (as torch.load does) "
                "drops the rest of the frame and reads other bytes than a flat reading"
            )
        if name == "STOP" and self.frame_end is not None and self.frame_end != end:
            return (
                f"the frame that began at byte {self.frame_start} declares "
                f"{self.frame_end - self.frame_start} bytes but the pickle stops at byte {end}, inside it"
            )
        return None

    def inside(self, pos: int) -> bool:
        """Whether byte ``pos`` is inside a frame (raw bytes read there bypass the frame buffer)."""
        return self.frame_end is not None and pos < self.frame_end
