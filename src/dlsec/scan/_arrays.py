"""NumPy ``.npy`` headers and joblib array records, read without ``allow_pickle``.

A ``.npy`` header is a Python dict literal (parsed with ``ast.literal_eval``, which evaluates
literals only). Numeric arrays must be followed by exactly ``prod(shape) * itemsize`` bytes;
object arrays are followed by a pickle, which the pickle analyser reads.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from dlsec.scan._findings import Malformed

__all__ = ["NPY_MAGIC", "NpyHeader", "read_npy_header", "joblib_array_nbytes", "JoblibArray"]

NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 16
_DTYPE_NAME = re.compile(r"^[<>|=]?[A-Za-z][A-Za-z0-9]*(\[[A-Za-z0-9]+\])?$")


@dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(f: IO[bytes], *, member: str | None) -> NpyHeader:
    """Parse a ``.npy`` header from ``f`` (positioned at the magic); ``f`` ends at the data.

    Raises:
        Malformed: bad magic, version, header literal, dtype or shape.
    """
    start = f.tell()

    def bad(reason: str) -> Malformed:
        return Malformed(f"not a valid .npy file: {reason}", offset=start, member=member)

    head = f.read(8)
    if len(head) < 8 or head[:6] != NPY_MAGIC:
        raise bad("bad magic")
    major, minor = head[6], head[7]
    if (major, minor) == (1, 0):
        raw = f.read(2)
        if len(raw) < 2:
            raise bad("truncated header")
        (hlen,) = struct.unpack("<H", raw)
        encoding = "latin1"
    elif (major, minor) in ((2, 0), (3, 0)):
        raw = f.read(4)
        if len(raw) < 4:
            raise bad("truncated header")
        (hlen,) = struct.unpack("<I", raw)
        encoding = "latin1" if major == 2 else "utf8"
    else:
        raise bad(f"unknown format version {major}.{minor}")
    if hlen > _MAX_HEADER:
        raise bad(f"header of {hlen} bytes is larger than {_MAX_HEADER}")
    text_bytes = f.read(hlen)
    if len(text_bytes) < hlen:
        raise bad("truncated header")
    try:
        text = text_bytes.decode(encoding)
        d = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError):
        raise bad("header is not a dict literal") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise bad("header keys must be descr, fortran_order and shape")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise bad(f"bad shape {shape!r}")
    if not isinstance(d["fortran_order"], bool):
        raise bad("fortran_order is not a bool")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (TypeError, ValueError, KeyError):
        raise bad(f"bad dtype {d['descr']!r}") from None
    return NpyHeader(dtype, shape, d["fortran_order"], f.tell())


@dataclass(frozen=True)
class JoblibArray:
    nbytes: int
    aligned: bool
    has_object: bool


def joblib_array_nbytes(
    state: Any, malformed: Callable[[str, int | None], Malformed], pos: int
) -> JoblibArray:
    """Size of the raw array data joblib writes after a ``NumpyArrayWrapper`` (from its state)."""
    from dlsec.scan._pickle import DictV, Global, Instance

    assert isinstance(state, DictV)
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise malformed("joblib array wrapper with a non-constant shape", pos)
    dtype = state.get("dtype")
    if not (
        isinstance(dtype, Instance)
        and isinstance(dtype.func, Global)
        and dtype.func.qualname == "numpy.dtype"
        and isinstance(dtype.args, tuple)
        and dtype.args
        and isinstance(dtype.args[0], str)
        and _DTYPE_NAME.match(dtype.args[0])
    ):
        raise malformed("joblib array wrapper with a dtype dlsec cannot read", pos)
    try:
        base = np.dtype(dtype.args[0])
    except (TypeError, ValueError):
        raise malformed(f"joblib array with unknown dtype {dtype.args[0]!r}", pos) from None
    itemsize = base.itemsize
    dstate = getattr(dtype, "state", None)
    if isinstance(dstate, tuple) and len(dstate) >= 6:
        if dstate[3] is not None or dstate[2] is not None:
            raise malformed("joblib structured arrays are not supported", pos)
        if isinstance(dstate[5], int) and not isinstance(dstate[5], bool) and dstate[5] > 0:
            itemsize = dstate[5]
    has_object = base.hasobject
    aligned = state.get("numpy_array_alignment_bytes") is not None
    return JoblibArray(math.prod(shape) * itemsize, aligned, has_object)
