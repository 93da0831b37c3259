"""TensorFlow checkpoints read without TensorFlow: the files beside a SavedModel or a ``.meta``.

A checkpoint (``variables/variables.index`` in a SavedModel, ``model.ckpt.index`` beside a TF1
``model.ckpt.meta``) is a tensor bundle (``tensorflow/core/util/tensor_bundle``): an SSTable
(``tensorflow/core/lib/io/table``: data blocks of prefix-compressed keys, an index block of
block handles, a 48-byte footer ending in the magic ``0xdb4775248b80fb57``) mapping ``""`` to a
``BundleHeaderProto`` (``num_shards`` 1) and each tensor name to a ``BundleEntryProto``
(``dtype`` 1, ``shape`` 2, ``shard_id`` 3, ``offset`` 4, ``size`` 5, ``crc32c`` 6, ``slices`` 7).
The tensors' bytes are in ``<prefix>.data-<shard>-of-<num_shards>``. Every block and entry is
parsed; a tensor whose bytes lie past its data file is a finding (TensorFlow allocates the
tensor before reading it); a compressed block or an entry that does not parse is unscannable.

Beside them: ``fingerprint.pb`` (``FingerprintDef``: hashes, a version, a UUID) and the TF1
``checkpoint`` text file naming the latest checkpoint. Neither names code.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from dlsec.scan._findings import Finding, Malformed
from dlsec.scan._onnx import _I32, _LEN, _VARINT, _Bad, _fields, _varint

__all__ = [
    "TABLE_MAGIC",
    "checkpoint_data_index",
    "looks_like_fingerprint",
    "scan_checkpoint_data",
    "scan_checkpoint_index",
    "scan_checkpoint_state",
    "scan_fingerprint",
]

TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
_FOOTER = 48
_TRAILER = 5  # compression type and masked CRC32C after each block
# types.proto DataType -> element size (strings, resources and variants vary)
_DTYPE_SIZES = {
    1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2,
    15: 2, 16: 2, 17: 2, 18: 16, 19: 2, 22: 4, 23: 8, 24: 1, 25: 1,
}  # fmt: skip
_VARIABLE = {7, 20, 21}
_DATA_NAME = re.compile(r"(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<shards>\d{5})\Z")
_STATE_LINE = re.compile(
    rb"(model_checkpoint_path|all_model_checkpoint_paths|all_model_checkpoint_timestamps|"
    rb'last_preserved_timestamp): ("([^"\\]|\\.)*"|[0-9.eE+-]+)\Z'
)


@dataclass(frozen=True)
class _Entry:
    name: str
    shard: int
    offset: int
    size: int


def _block(buf: memoryview, offset: int, size: int, member: str | None) -> list[tuple[bytes, int, int]]:
    """``(key, value start, value end)`` of one SSTable block."""
    end = offset + size
    if end + _TRAILER > len(buf) or size < 4:
        raise Malformed(
            "TensorFlow checkpoint index: a block lies outside the file", member=member, offset=offset
        )
    if buf[end] != 0:
        raise Malformed(
            "TensorFlow checkpoint index with a compressed block, which dlsec does not read",
            member=member,
            offset=end,
            kind="unreadable",
        )
    restarts = struct.unpack_from("<I", buf, end - 4)[0]
    limit = end - 4 - 4 * restarts
    if restarts < 1 or limit < offset:
        raise Malformed(
            "TensorFlow checkpoint index: a block's restart array is broken", member=member, offset=offset
        )
    out, key, pos = [], b"", offset
    try:
        while pos < limit:
            shared, pos = _varint(buf, pos, limit)
            fresh, pos = _varint(buf, pos, limit)
            length, pos = _varint(buf, pos, limit)
            if shared > len(key) or pos + fresh + length > limit:
                raise _Bad("an entry runs past its block")
            key = key[:shared] + bytes(buf[pos : pos + fresh])
            out.append((key, pos + fresh, pos + fresh + length))
            pos += fresh + length
    except _Bad as exc:
        raise Malformed(f"TensorFlow checkpoint index: {exc}", member=member, offset=pos) from None
    return out


def _handle(buf: memoryview, start: int, end: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, start, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _entry(buf: memoryview, name: str, start: int, end: int) -> _Entry:
    dtype = shard = offset = size = 0
    dims: list[int] = []
    sliced = unknown_rank = False
    for f, w, a, b in _fields(buf, start, end):
        if (f, w) == (1, _VARINT):
            dtype = a
        elif (f, w) == (2, _LEN):
            for df, dw, da, db in _fields(buf, a, b):
                if (df, dw) == (2, _LEN):
                    dims.extend(v for vf, vw, v, _ in _fields(buf, da, db) if (vf, vw) == (1, _VARINT))
                elif (df, dw) == (3, _VARINT):
                    unknown_rank = bool(da)
        elif (f, w) == (3, _VARINT):
            shard = a
        elif (f, w) == (4, _VARINT):
            offset = a
        elif (f, w) == (5, _VARINT):
            size = a
        elif (f, w) == (6, _I32):
            continue
        elif (f, w) == (7, _LEN):
            sliced = True
        else:
            raise _Bad(f"tensor {name!r} has field {f} (wire {w}), not in BundleEntryProto")
    if dtype in _DTYPE_SIZES and not (sliced or unknown_rank):
        count = 1
        for d in dims:
            count *= d
        if count * _DTYPE_SIZES[dtype] != size:
            raise _Bad(f"tensor {name!r} of shape {tuple(dims)} stores {size} bytes")
    elif dtype not in _DTYPE_SIZES and dtype not in _VARIABLE and dtype < 26:
        raise _Bad(f"tensor {name!r} has unknown dtype {dtype}")
    return _Entry(name, shard, offset, size)


def read_index(buf: memoryview, *, member: str | None) -> tuple[int, list[_Entry]]:
    """The shard count and the tensors of a checkpoint index.

    Raises:
        Malformed: the SSTable or an entry does not parse.
    """
    if len(buf) < _FOOTER or bytes(buf[-8:]) != TABLE_MAGIC:
        raise Malformed("not a TensorFlow checkpoint index (no SSTable footer)", member=member)
    foot = len(buf) - _FOOTER
    try:
        _meta_off, _meta_size, pos = _handle(buf, foot, len(buf) - 8)
        index_off, index_size, _ = _handle(buf, pos, len(buf) - 8)
    except _Bad as exc:
        raise Malformed(f"TensorFlow checkpoint index footer ({exc})", member=member, offset=foot) from None
    shards: int | None = None
    entries: list[_Entry] = []
    for _key, vs, ve in _block(buf, index_off, index_size, member):
        try:
            block_off, block_size, _ = _handle(buf, vs, ve)
        except _Bad as exc:
            raise Malformed(f"TensorFlow checkpoint index block handle ({exc})", member=member) from None
        for key, s, e in _block(buf, block_off, block_size, member):
            try:
                if key == b"":
                    header = {f: v for f, w, v, _ in _fields(buf, s, e) if w == _VARINT}
                    shards = header.get(1, 0)
                else:
                    entries.append(_entry(buf, key.decode("utf-8", "replace"), s, e))
            except _Bad as exc:
                raise Malformed(f"TensorFlow checkpoint index: {exc}", member=member) from None
    if not shards:
        raise Malformed("TensorFlow checkpoint index without its header (shard count)", member=member)
    bad = [e.name for e in entries if e.shard >= shards]
    if bad:
        raise Malformed(f"TensorFlow checkpoint tensor {bad[0]!r} names a shard past {shards}", member=member)
    return shards, entries


def _data_path(index: Path, shard: int, shards: int) -> Path:
    return index.with_name(f"{index.name.removesuffix('.index')}.data-{shard:05d}-of-{shards:05d}")


def _past_end(entries: list[_Entry], shard: int, size: int, what: str, member: str | None) -> list[Finding]:
    over = [e for e in entries if e.shard == shard and e.offset + e.size > size]
    return [
        Finding(
            "high",
            "tensor-out-of-bounds",
            f"tensor {e.name[:80]!r} lies at bytes {e.offset}-{e.offset + e.size} of {what}, which has "
            f"{size}: TensorFlow allocates it before reading",
            member=member,
        )
        for e in over[:8]
    ]


def scan_checkpoint_index(buf: memoryview, *, member: str | None, path: Path | None) -> list[Finding]:
    """Walk a checkpoint index; with its data files beside it, every tensor must lie inside them."""
    shards, entries = read_index(buf, member=member)
    findings: list[Finding] = []
    if path is not None and member is None:
        for shard in range(shards):
            data = _data_path(path, shard, shards)
            if data.is_file():
                findings += _past_end(entries, shard, data.stat().st_size, data.name, member)
    return findings


def checkpoint_data_index(path: Path) -> Path | None:
    """The index that describes ``path``, when ``path`` is named as a checkpoint data shard."""
    match = _DATA_NAME.match(path.name)
    if match is None:
        return None
    index = path.with_name(f"{match['prefix']}.index")
    return index if index.is_file() else None


def scan_checkpoint_data(buf: memoryview, *, member: str | None, path: Path | None) -> list[Finding]:
    """A data shard: its index (beside it) must parse and place every tensor inside it."""
    index = checkpoint_data_index(path) if path is not None else None
    match = _DATA_NAME.match(path.name) if path is not None else None
    if index is None or match is None:
        raise Malformed("TensorFlow checkpoint data without its index: nothing describes it", member=member)
    shards, entries = read_index(memoryview(index.read_bytes()), member=index.name)
    if int(match["shards"]) != shards:
        raise Malformed(
            f"named as one of {int(match['shards'])} shards; its index has {shards}", member=member
        )
    return _past_end(entries, int(match["shard"]), len(buf), "this file", member)


def scan_checkpoint_state(buf: memoryview, *, member: str | None) -> list[Finding]:
    """The TF1 ``checkpoint`` file: text-format ``CheckpointState``, one known field a line."""
    for i, line in enumerate(bytes(buf).splitlines()):
        if line.strip() and not _STATE_LINE.match(line.strip()):
            raise Malformed(
                f"TensorFlow checkpoint state line {i + 1} is not a CheckpointState field", member=member
            )
    return []


def looks_like_fingerprint(buf: memoryview) -> bool:
    """A ``FingerprintDef``: hashes (1-5), a version (6) and a UUID (7), nothing else."""
    try:
        fields = [(f, w) for f, w, _, _ in _fields(buf, 0, len(buf))]
    except _Bad:
        return False
    allowed = {(n, _VARINT) for n in range(1, 6)} | {(6, _LEN), (7, _LEN)}
    return bool(fields) and set(fields) <= allowed and (1, _VARINT) in fields


def scan_fingerprint(buf: memoryview, *, member: str | None) -> list[Finding]:
    if not looks_like_fingerprint(buf):
        raise Malformed("not a readable SavedModel fingerprint (FingerprintDef)", member=member)
    return []
