"""safetensors header validation: the only checks a safetensors file needs, done strictly.

A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensor
bytes. It holds no code, but a malformed header can still crash or confuse loaders, so a file
is accepted only when the header is a JSON object with no duplicate keys, every dtype is known,
every shape matches its byte range, the ranges tile the data area exactly (contiguous, in
order, non-overlapping) and nothing follows the last tensor.
"""

from __future__ import annotations

import json
import math
import struct
from typing import IO, Any

from dlsec.scan._findings import Malformed

__all__ = ["DTYPE_BITS", "MAX_HEADER", "validate_safetensors", "looks_like_safetensors"]

MAX_HEADER = 100 * 1024 * 1024
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """A plausible header length followed by ``{``: enough to route the file to validation."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(size - 8, MAX_HEADER) and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def validate_safetensors(f: IO[bytes], size: int, *, member: str | None = None) -> dict[str, str]:
    """Check a safetensors file read from ``f`` (at its start) of ``size`` bytes; return its metadata.

    Only the header is read: tensor bytes are never touched.

    Raises:
        Malformed: with the first problem found.
    """

    def bad(reason: str, offset: int | None = None) -> Malformed:
        return Malformed(f"invalid safetensors file: {reason}", offset=offset, member=member)

    raw = f.read(8)
    if len(raw) < 8:
        raise bad("shorter than its 8-byte header length", 0)
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER or n > size - 8:
        raise bad(f"header length {n} exceeds the file ({size} bytes) or {MAX_HEADER} bytes", 0)
    text = f.read(n)
    if len(text) < n:
        raise bad("truncated header", 8)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"header is not valid JSON ({exc})", 8) from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object", 8)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise bad("__metadata__ must map strings to strings", 8)
    data_size = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise bad(f"tensor {name!r} has a bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"tensor {name!r} has bad data_offsets {offsets!r}")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or offsets[1] - offsets[0] != bits // 8:
            raise bad(
                f"tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, offsets span "
                f"{offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            what = "overlaps the previous tensor" if begin < cursor else f"leaves a gap at byte {cursor}"
            raise bad(f"tensor {name!r} {what}")
        cursor = end
    if cursor > data_size:
        raise bad(f"tensors need {cursor} bytes of data, the file has {data_size}")
    if cursor < data_size:
        raise bad(f"{data_size - cursor} trailing bytes after the last tensor")
    return {str(k): str(v) for k, v in (metadata or {}).items()}
