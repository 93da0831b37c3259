"""The model-file scanner: every format by content, every pickle by opcode, fail closed.

One :class:`_Scan` per file walks the containers (zip, gzip/bz2/xz/lzma/zlib, NumPy, legacy
``torch.save``) down to the pickle streams and checks them with the opcode analyser. Tensor
data is never read: zip storages are checked against their central-directory sizes, legacy
storages and joblib arrays are skipped by length, safetensors and ONNX only have their headers
and structure parsed.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import io
import json
import lzma
import os
import re
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dlsec.errors import UsageError
from dlsec.scan._allowlist import DEFAULT_ALLOWLIST, STORAGE_ELEMENT_SIZES, Allowlist
from dlsec.scan._cntk import scan_cntk
from dlsec.scan._findings import SEVERITY_ORDER, Finding, Malformed, ScanResult
from dlsec.scan._flatbuf import scan_catboost, scan_executorch, scan_tflite
from dlsec.scan._formats import (
    Window,
    buffer_of,
    classify_tar,
    classify_zip,
    compression_of,
    detect_head,
    detect_stream,
    looks_like_proto01_pickle,
    sibling_format,
)
from dlsec.scan._gguf import check_template, scan_gguf
from dlsec.scan._msgpack import scan_msgpack
from dlsec.scan._mxnet import mxnet_symbol, scan_mxnet_params, scan_mxnet_symbol
from dlsec.scan._onnx import looks_like_onnx, scan_onnx_buffer
from dlsec.scan._pickle import (
    DictV,
    Global,
    PickleStream,
    ScanContext,
    _is_code_exec,
    analyse_stream,
    at_eof,
)
from dlsec.scan._protomodels import scan_coreml, scan_mil_weights, scan_paddle, scan_pdiparams
from dlsec.scan._safetensors import validate_safetensors
from dlsec.scan._savedmodel import (
    keras_metadata,
    looks_like_saved_model,
    scan_metagraph_buffer,
    scan_saved_model_buffer,
)
from dlsec.scan._tfckpt import (
    scan_checkpoint_data,
    scan_checkpoint_index,
    scan_checkpoint_state,
    scan_fingerprint,
)
from dlsec.scan._treemodels import UBJSON_LENGTH_MARKERS, read_lightgbm, read_ubjson, scan_skops_schema
from dlsec.scan._xml import openvino_max_weight, parse_xml, scan_openvino, scan_pmml

__all__ = ["scan_file", "scan_paths", "scan_bytes", "make_allowlist", "expand_paths"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_HEAD = 4096
_READ_WHOLE = 512 * 1024 * 1024
_MAX_SPOOL = 8 * 1024**3
_MAX_ZIP_DEPTH = 4
_MAX_JSON = 64 * 1024 * 1024
_PY_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyw", ".pyi", ".ipynb"})
_NATIVE_SUFFIXES = frozenset({".so", ".pyd", ".dll", ".dylib", ".exe", ".jar", ".whl"})
_SCRIPT_SUFFIXES = frozenset({".sh", ".bash", ".bat", ".cmd", ".ps1"})
_NATIVE_MAGICS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
# Config keys with which transformers (and kin) import code named in the config.
_REMOTE_CODE_KEYS = frozenset({"auto_map", "custom_pipelines"})
# Keras modules whose functions a config can name and deserialization then calls.
_KERAS_CALLABLE_MODULES = tuple(
    f"{root}{mod}"
    for root in ("keras.", "keras.src.")
    for mod in ("utils", "config", "saving", "backend", "ops")
)


def make_allowlist(allow: Iterable[str] | Allowlist = ()) -> Allowlist:
    """The default allowlist, extended with ``allow`` (``module.name`` strings)."""
    if isinstance(allow, Allowlist):
        return allow
    items = list(allow)
    return DEFAULT_ALLOWLIST.extended(items) if items else DEFAULT_ALLOWLIST


def _join(outer: str | None, inner: str) -> str:
    return inner if not outer else f"{outer} > {inner}"


class _ChainReader(io.RawIOBase):
    """``head`` then the rest of ``stream``: un-reads the bytes used to detect a format."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._stream = stream
        self._pos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._head.nbytes:
            n = min(len(buffer), self._head.nbytes)
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._stream.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self._pos += n
        return n


class _ZlibReader(io.RawIOBase):
    """A raw zlib stream (what joblib's default compressor writes), decompressed on read."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._d = zlib.decompressobj()
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        while not self._buf and not self._d.eof:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                raise EOFError("zlib stream ended before its end marker")
            self._buf = self._d.decompress(chunk, 1 << 20)
            while self._d.unconsumed_tail and not self._buf:
                self._buf = self._d.decompress(self._d.unconsumed_tail, 1 << 20)
        if not self._buf and self._d.unconsumed_tail:
            self._buf = self._d.decompress(self._d.unconsumed_tail, 1 << 20)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._pos += n
        if not n and self._d.eof and (self._d.unused_data or self._raw.read(1)):
            raise OSError("trailing bytes after the zlib stream")
        return n


class _LzmaReader(io.RawIOBase):
    """xz (one or more streams) or lzma-alone data, decompressed on read; trailing bytes are an error.

    ``lzma.LZMAFile`` stops quietly at bytes after the last stream; the scanner does not vouch for
    bytes it has not read, so they make the content unscannable.
    """

    _XZ_MAGIC = b"\xfd7zXZ\x00"

    def __init__(self, raw: IO[bytes], *, xz: bool) -> None:
        super().__init__()
        self._raw = raw
        self._format = lzma.FORMAT_XZ if xz else lzma.FORMAT_ALONE
        self._d = lzma.LZMADecompressor(format=self._format)
        self._input = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._d.eof:
                rest = self._d.unused_data + self._input
                self._input = b""
                while len(rest) < len(self._XZ_MAGIC) and (more := self._raw.read(1 << 16)):
                    rest += more
                if not rest:
                    return 0
                if self._format == lzma.FORMAT_XZ and rest.startswith(self._XZ_MAGIC):
                    self._d, self._input = lzma.LZMADecompressor(format=self._format), rest
                    continue
                raise OSError("trailing bytes after the compressed stream")
            if self._d.needs_input and not self._input:
                self._input = self._raw.read(1 << 16)
                if not self._input:
                    raise EOFError("compressed stream ended before its end marker")
            data, self._input = (self._input, b"") if self._d.needs_input else (b"", self._input)
            out = self._d.decompress(data, len(buffer))
            if out:
                n = len(out)
                buffer[:n] = out
                self._pos += n
                return n


def _peek(f: IO[bytes], n: int) -> bytes:
    """The next ``n`` bytes of ``f`` (fewer at its end), left unread."""
    peek = getattr(f, "peek", None)
    if peek is not None:
        data: bytes = peek(n)
        if len(data) >= n:
            return data[:n]
    pos = f.tell()
    data = f.read(n)
    f.seek(pos)
    return data


def _decompress(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]  # a binary reader, typed as GzipFile
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if kind in ("xz", "lzma"):
        return io.BufferedReader(_LzmaReader(raw, xz=kind == "xz"), buffer_size=1 << 16)
    if kind == "zlib":
        return io.BufferedReader(_ZlibReader(raw), buffer_size=1 << 16)
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:  # pragma: no cover - a declared dependency
            raise Malformed("zstd-compressed content needs the `zstandard` package to be scanned") from None
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(_Checked(reader), buffer_size=1 << 16)
    if kind == "lz4":
        try:
            import lz4.frame
        except ImportError:  # pragma: no cover - a declared dependency
            raise Malformed("lz4-compressed content needs the `lz4` package to be scanned") from None
        lz4_reader: IO[bytes] = lz4.frame.LZ4FrameFile(raw, mode="rb")
        return lz4_reader
    raise Malformed(f"{kind}-compressed content is not supported; decompress it and scan the result")


class _Checked(io.RawIOBase):
    """A decompressor's reader whose errors surface as ``OSError`` (corrupt or truncated data)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._reader.read(len(buffer))
        except Exception as exc:  # noqa: BLE001 - zstandard.ZstdError and kin: the data is corrupt
            raise OSError(f"corrupt compressed data ({exc})") from None
        n = len(data)
        buffer[:n] = data
        return n


# RuntimeError: lz4.frame's error for corrupt frames.
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, RuntimeError)


class _Scan:
    def __init__(self, allowlist: Allowlist) -> None:
        self.ctx = ScanContext(allowlist)
        self.flagged: set[str] = set()
        self.unvetted: dict[str, list[str]] = {}  # TorchScript code: members, classes, methods
        self.unvetted_parts: list[str] = []  # other code dlsec names but does not vet (custom ops...)
        self.path: Path | None = None  # the file, when scanning one (its siblings describe some formats)

    # -- findings ------------------------------------------------------------------------

    def add(
        self, severity: Any, code: str, reason: str, *, member: str | None, offset: int | None = None
    ) -> None:
        self.ctx.add(Finding(severity, code, reason, offset=offset, member=member))

    # -- entry points --------------------------------------------------------------------

    def top(self, f: IO[bytes], size: int, fmt: str, *, model_dir: Path | None) -> None:
        if fmt == "empty":
            raise Malformed("empty file")
        if fmt == "unknown":
            raise Malformed(
                "unknown format: not a pickle, PyTorch, NumPy, joblib, safetensors, ONNX or Keras file"
            )
        if fmt == "hdf5":
            self.hdf5(f, member=None)
            return
        if fmt == "onnx":
            with buffer_of(f, 0, size) as view:
                for finding in scan_onnx_buffer(view, model_dir=model_dir, member=None):
                    self.ctx.add(finding)
            return
        if fmt in _BUFFER_FORMATS:
            with buffer_of(f, 0, size) as view:
                self.buffer_format(view, fmt, member=None)
            return
        self.content(f, size, fmt, member=None, depth=0)

    def buffer_format(self, view: memoryview, fmt: str, *, member: str | None) -> None:
        """A format read whole from a buffer (memory-mapped for a file): see ``_BUFFER_FORMATS``."""
        _BUFFER_FORMATS[fmt](self, view, member)
        pickle_like = len(view) >= 2 and view[0] == 0x80 and view[1] <= 5
        if fmt != "executable" and (
            pickle_like
            or (
                fmt == "flax-msgpack"
                and looks_like_proto01_pickle(bytes(view[:_HEAD]), complete=len(view) <= _HEAD)
            )
        ):
            self.pickle_reading(io.BytesIO(view), 0, member=member, any_protocol=True)

    def unvet(self, parts: list[str]) -> None:
        self.unvetted_parts.extend(p for p in parts if p not in self.unvetted_parts)

    def embedded_pickle(self, data: memoryview, offset: int, member: str | None) -> None:
        where = _join(member, f"bytes at {offset}")
        try:
            analyse_stream(io.BytesIO(data), self.ctx, member=where)
        except Malformed:
            return  # binary data that merely starts like a pickle: no loader unpickles it

    def content(self, f: IO[bytes], size: int | None, fmt: str, *, member: str | None, depth: int) -> None:
        """Scan content of a known format read from ``f`` (seekable when ``size`` is known)."""
        if fmt == "pickle":
            self.pickles(f, member=member, size=size)
        elif fmt in ("numpy", "numpy-object"):
            self.npy(f, size, member=member)
        elif fmt == "safetensors":
            if size is None:
                raise Malformed("safetensors content of unknown size", member=member)
            start = f.tell()
            validate_safetensors(f, size, member=member)
            self.pickle_reading(f, start, member=member)
        elif fmt == "compressed":
            self.compressed(f, member=member, depth=depth)
        elif fmt in ("zip", "torch-zip", "torchscript", "npz", "keras", "torchserve-mar", "skops"):
            self.zip(f, member=member, depth=depth)
        elif fmt in ("tar", "torch-tar", "nemo"):
            self.tar(f, member=member, depth=depth)
        elif fmt == "7z":
            self.sevenzip(f, member=member, depth=depth)
        elif fmt == "json":
            self.json_hooks(f.read() if size is None else f.read(size), member=member)
        elif fmt == "gguf":
            self.gguf(f, member=member)
        elif fmt == "tf-savedmodel":
            data = f.read() if size is None else f.read(size)
            findings, unvetted = scan_saved_model_buffer(memoryview(data), member=member)
            for finding in findings:
                self.ctx.add(finding)
            self.unvet(unvetted)
        elif fmt == "onnx":
            data = f.read() if size is None else f.read(size)
            for finding in scan_onnx_buffer(memoryview(data), model_dir=None, member=member):
                self.ctx.add(finding)
        elif fmt in _BUFFER_FORMATS:
            if size is None or size > _READ_WHOLE:
                raise Malformed(
                    f"{fmt} content larger than dlsec reads in memory", member=member, kind="too-large"
                )
            self.buffer_format(memoryview(f.read(size)), fmt, member=member)
        elif fmt == "empty":
            raise Malformed("empty content", member=member)
        else:
            raise Malformed(f"content of unknown format ({fmt})", member=member)

    def pickle_reading(
        self, f: IO[bytes], start: int, *, member: str | None, any_protocol: bool = False
    ) -> None:
        """A safetensors file that starts like a pickle (0x80, protocol 0-5) is read as one too.

        Its header length alone makes honest files look so (128, 384, 640... bytes). If the
        bytes also parse as a whole pickle, the file is a polyglot: ``torch.load`` (without
        ``weights_only``) would unpickle it, so it is unsafe whatever its safetensors half says.
        """
        f.seek(start)
        head = f.read(2)
        if not any_protocol and (len(head) < 2 or head[0] != 0x80 or head[1] > 5):
            return
        f.seek(start)
        try:
            analyse_stream(f, self.ctx, member=member)
        except Malformed:
            return  # not a pickle: an honest safetensors header
        self.add(
            "critical",
            "polyglot",
            "the file is a valid model file of another format and also a complete pickle: a loader "
            "that sniffs the format (torch.load) would unpickle it",
            member=member,
            offset=0,
        )

    # -- pickles -------------------------------------------------------------------------

    def plain_pass(self, f: IO[bytes], *, member: str | None) -> None:
        """Read a joblib stream again as plain ``pickle.load`` would, up to where that fails."""
        self.ctx.plain_pass_needed = False
        try:
            while not at_eof(f):
                analyse_stream(f, self.ctx, member=member, plain=True)
        except Malformed:
            pass  # where plain pickle.load stops; what it would have run before is reported

    def pickles(self, f: IO[bytes], *, member: str | None, size: int | None) -> list[PickleStream]:
        start = f.tell() if f.seekable() else None
        streams = self._pickles(f, member=member, size=size)
        if self.ctx.plain_pass_needed and start is not None:
            end = f.tell()
            f.seek(start)
            self.plain_pass(f, member=member)
            f.seek(end)
        return streams

    def _pickles(self, f: IO[bytes], *, member: str | None, size: int | None) -> list[PickleStream]:
        streams: list[PickleStream] = []
        while not at_eof(f):
            if streams:
                head = _peek(f, _HEAD)
                if not (head[:1] == b"\x80" or looks_like_proto01_pickle(head, complete=len(head) < _HEAD)):
                    raise Malformed("trailing bytes after the pickle's STOP", member=member, offset=f.tell())
            stream = analyse_stream(f, self.ctx, member=member, size=size)
            streams.append(stream)
            if len(streams) == 1 and stream.value == LEGACY_MAGIC and stream.proto >= 2:
                streams.extend(self.legacy_torch(f, member=member, size=size))
                break
        if not streams:
            raise Malformed("no pickle found", member=member)
        return streams

    def legacy_torch(self, f: IO[bytes], *, member: str | None, size: int | None) -> list[PickleStream]:
        """The rest of a legacy ``torch.save`` file: 4 more pickles, then raw storages."""
        streams = []
        for what in ("protocol version", "system info", "object", "storage keys"):
            if at_eof(f):
                raise Malformed(f"legacy PyTorch file truncated before its {what}", member=member)
            streams.append(analyse_stream(f, self.ctx, member=member, size=size))
        version, sys_info, main, keys = (s.value for s in streams)
        if version != LEGACY_PROTOCOL:
            raise Malformed(f"legacy PyTorch file with protocol version {version!r}", member=member)
        little = sys_info.get("little_endian") if isinstance(sys_info, DictV) else None
        if not isinstance(little, bool):
            raise Malformed("legacy PyTorch file without system info", member=member)
        storages: dict[str, tuple[int, int]] = {}
        for pid in streams[2].storage_ids:
            elsize = STORAGE_ELEMENT_SIZES[pid[1].name]
            key, sized = pid[2], (pid[4], elsize)
            if storages.setdefault(key, sized) != sized:
                raise Malformed(f"legacy storage {key!r} declared with two sizes", member=member)
        if (
            not isinstance(keys, list)
            or not all(isinstance(k, str) for k in keys)
            or set(keys) != set(storages)
        ):
            raise Malformed("legacy storage keys do not match the storages the object uses", member=member)
        del main
        for key in keys:
            at = f.tell()
            raw = f.read(8)
            if len(raw) < 8:
                raise Malformed(f"legacy storage {key!r} truncated", member=member, offset=at)
            count = int.from_bytes(raw, "little" if little else "big", signed=True)
            numel, elsize = storages[key]
            if count != numel:
                raise Malformed(
                    f"legacy storage {key!r} has {count} elements, its id says {numel}",
                    member=member,
                    offset=at,
                )
            self.skip(f, numel * elsize, member=member, what=f"legacy storage {key!r}")
        if not at_eof(f):
            raise Malformed("trailing bytes after the last legacy storage", member=member, offset=f.tell())
        return streams

    @staticmethod
    def skip(f: IO[bytes], n: int, *, member: str | None, what: str) -> None:
        start = f.tell()
        if f.seekable():
            end = f.seek(0, io.SEEK_END)
            if end - start < n:
                raise Malformed(f"{what} truncated", member=member, offset=start)
            f.seek(start + n)
            return
        remaining = n
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                raise Malformed(f"{what} truncated", member=member, offset=start)
            remaining -= len(chunk)

    # -- NumPy ---------------------------------------------------------------------------

    def npy(self, f: IO[bytes], size: int | None, *, member: str | None) -> None:
        start = f.tell()
        from dlsec.scan._arrays import read_npy_header  # NumPy: only when there is an array to read

        header = read_npy_header(f, member=member)
        if header.dtype.hasobject:
            analyse_stream(f, self.ctx, member=member, size=size)
            if not at_eof(f):
                raise Malformed(
                    "trailing bytes after the object array's pickle", member=member, offset=f.tell()
                )
            return
        if size is not None:
            have = size - (header.data_offset - start)
            if have != header.nbytes:
                what = "truncated" if have < header.nbytes else "followed by trailing bytes"
                raise Malformed(
                    f"array data {what}: {have} bytes for a {header.dtype} array of shape {header.shape}",
                    member=member,
                    offset=header.data_offset,
                )
            return
        self.skip(f, header.nbytes, member=member, what="array data")
        if not at_eof(f):
            raise Malformed("trailing bytes after the array data", member=member)

    # -- compressed ----------------------------------------------------------------------

    def compressed(self, f: IO[bytes], *, member: str | None, depth: int) -> None:
        head_at = f.tell() if f.seekable() else 0
        kind = compression_of(_peek(f, 16))
        if kind is None:  # pragma: no cover - routed here only when a magic matched
            raise Malformed("unknown compression", member=member)
        where = _join(member, kind)
        if depth >= _MAX_ZIP_DEPTH:
            raise Malformed("containers nested too deeply", member=where)
        try:
            d = _decompress(kind, f)
            inner_head = d.read(_HEAD)
            fmt = detect_head(inner_head, 1 << 62)
            stream = io.BufferedReader(_ChainReader(inner_head, d), buffer_size=1 << 16)
            if fmt in ("pickle", "numpy", "numpy-object", "compressed"):
                self.content(stream, None, fmt, member=where, depth=depth + 1)
                if not at_eof(stream):
                    raise Malformed("trailing bytes after the compressed content", member=where)
                if self.ctx.plain_pass_needed and f.seekable():
                    # the stream cannot rewind: decompress again for the plain-pickle reading
                    f.seek(head_at)
                    self.plain_pass(io.BufferedReader(_ChainReader(b"", _decompress(kind, f))), member=where)
                return
            if fmt == "rds":
                raise Malformed(_OPAQUE["rds"], member=where, kind="unvetted")
            if fmt in ("zip", "safetensors", "tar", "7z") or inner_head[:1] == b"\x08":
                with tempfile.TemporaryFile() as spool:
                    size = self.spool(stream, spool, member=where)
                    spool.seek(0)
                    fmt = detect_stream(spool, size)
                    spool.seek(0)
                    if fmt in ("unknown", "json", "hdf5", "empty"):
                        raise Malformed(f"compressed content of format {fmt}", member=where)
                    self.content(spool, size, fmt, member=where, depth=depth + 1)
                return
            raise Malformed(f"compressed content of format {fmt}", member=where)
        except Malformed:
            raise
        except _DECOMPRESS_ERRORS as exc:
            raise Malformed(f"{kind} data is corrupt or truncated ({exc})", member=where) from None

    @staticmethod
    def spool(src: IO[bytes], dst: IO[bytes], *, member: str | None) -> int:
        total = 0
        while chunk := src.read(1 << 20):
            total += len(chunk)
            if total > _MAX_SPOOL:
                raise Malformed(f"decompressed content larger than {_MAX_SPOOL} bytes", member=member)
            dst.write(chunk)
        return total

    # -- zip containers ------------------------------------------------------------------

    def zip(self, f: IO[bytes], *, member: str | None, depth: int) -> None:
        if depth >= _MAX_ZIP_DEPTH:
            raise Malformed("containers nested too deeply", member=member)
        _check_zip_end(f, member)
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise Malformed(f"not a readable zip archive ({exc})", member=member) from None
        with zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            kind = classify_zip([i.filename for i in infos])
            self.zip_names(infos, member=member)
            if kind == "torchserve-mar":
                self.mar_manifest(
                    zf, by_name=[i for i in infos if i.filename == "MAR-INF/MANIFEST.json"], member=member
                )
            if kind in ("torch-zip", "torchscript"):
                self.torch_zip(zf, infos, kind, member=member, depth=depth)
            elif kind == "keras":
                self.keras(zf, infos, member=member, depth=depth)
            elif kind == "skops":
                self.skops(zf, infos, member=member, depth=depth)
            else:
                for info in infos:
                    self.member(zf, info, member=member, depth=depth)

    def zip_names(self, infos: list[zipfile.ZipInfo], *, member: str | None) -> None:
        for name, count in Counter(i.filename for i in infos).items():
            if count > 1:
                self.add(
                    "high",
                    "duplicate-member",
                    f"{count} members are named {name!r}; readers disagree on which one they load",
                    member=_join(member, name),
                )
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                self.add(
                    "medium",
                    "member-path",
                    f"member name {info.filename!r} points outside the archive when extracted",
                    member=_join(member, info.filename),
                )

    def gguf(self, f: IO[bytes], *, member: str | None) -> None:
        """GGUF metadata and chat templates (the reader memory-maps a real file; others are spooled)."""
        try:
            f.fileno()
            real = f.seekable()
        except (OSError, AttributeError, ValueError):
            real = False
        if real:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            for finding in scan_gguf(f, size, member=member):
                self.ctx.add(finding)
            return
        with tempfile.NamedTemporaryFile(suffix=".gguf") as spool:
            size = self.spool(f, spool, member=member)
            spool.flush()
            for finding in scan_gguf(spool.name, size, member=member):
                self.ctx.add(finding)

    # -- code inside containers --------------------------------------------------------------

    def code_member(self, name: str, head: bytes, where: str) -> None:
        """A member that is code (by what loaders import it as, or by its bytes) is a finding."""
        lower = name.lower()
        suffix = lower[lower.rfind(".") :] if "." in lower.rsplit("/", 1)[-1] else ""
        what = None
        if suffix in _PY_SUFFIXES:
            what = "Python code, which the archive's loader imports (TorchServe handlers, remote-code models)"
        elif suffix in _NATIVE_SUFFIXES or head[:4] in _NATIVE_MAGICS or head[:2] == b"MZ":
            what = "native code (a shared library or executable)"
        elif head[:2] == b"#!" or suffix in _SCRIPT_SUFFIXES:
            what = "a script"
        if what is not None:
            self.add(
                "high", "archive-code", f"member {name!r} is {what}; dlsec does not vet code", member=where
            )

    def json_hooks(self, data: bytes, *, member: str | None) -> None:
        """Configs that make a loader import code: Hugging Face ``auto_map`` and kin."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return  # not JSON after all: inert text
        for path, node in _walk_json(doc, ""):
            for key in _REMOTE_CODE_KEYS & set(node):
                self.add(
                    "high",
                    "remote-code-config",
                    f"{path or '(top level)'}.{key} names code that transformers imports with "
                    f"trust_remote_code ({str(node[key])[:120]})",
                    member=member,
                )
            if "chat_template" in node:
                _add_all(
                    self, _chat_template_findings(node["chat_template"], f"{path}.chat_template", member)
                )

    def mar_manifest(
        self, zf: zipfile.ZipFile, by_name: list[zipfile.ZipInfo], *, member: str | None
    ) -> None:
        """A TorchServe archive's entry points: the handler and model file it imports."""
        if len(by_name) != 1:
            raise Malformed("TorchServe archive without one MAR-INF/MANIFEST.json", member=member)
        where = _join(member, by_name[0].filename)
        try:
            manifest = json.loads(self.read_member(zf, by_name[0], where))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Malformed(f"TorchServe manifest is not JSON ({exc})", member=where) from None
        model = manifest.get("model") if isinstance(manifest, dict) else None
        if not isinstance(model, dict):
            raise Malformed("TorchServe manifest without a model section", member=where)
        for key in ("handler", "modelFile", "envelope", "requirementsFile"):
            value = model.get(key)
            if value:
                self.add(
                    "high",
                    "mar-entry-point",
                    f"the manifest's {key} {str(value)[:120]!r} is code TorchServe imports or installs "
                    "when it loads the archive",
                    member=where,
                )

    # -- tar containers ------------------------------------------------------------------

    def tar(self, f: IO[bytes], *, member: str | None, depth: int) -> None:
        if depth >= _MAX_ZIP_DEPTH:
            raise Malformed("containers nested too deeply", member=member)
        try:
            tf = tarfile.open(fileobj=Window(f, f.tell()), mode="r:")  # noqa: SIM115 - closed below
            members = tf.getmembers()
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            raise Malformed(f"not a readable tar archive ({exc})", member=member) from None
        with tf:
            names = [m.name for m in members]
            kind = classify_tar(names)
            for name, count in Counter(names).items():
                if count > 1:
                    self.add(
                        "high",
                        "duplicate-member",
                        f"{count} members are named {name!r}; the last one wins on extraction",
                        member=_join(member, name),
                    )
            files = []
            for m in members:
                where = _join(member, m.name)
                self.check_member_name(m.name, where)
                if m.issym() or m.islnk():
                    self.add(
                        "high",
                        "archive-link",
                        f"member {m.name!r} is a {'symbolic' if m.issym() else 'hard'} link to "
                        f"{m.linkname!r}: extracting it reads or writes outside the archive",
                        member=where,
                    )
                elif m.isdev() or m.isfifo():
                    self.add("high", "archive-device", f"member {m.name!r} is a device or FIFO", member=where)
                elif m.isfile():
                    files.append(m)
            if kind == "torch-tar":
                self.torch_tar(tf, {m.name: m for m in files}, member=member)
                return
            for m in files:
                self.tar_member(tf, m, member=member, depth=depth)

    def sevenzip(self, f: IO[bytes], *, member: str | None, depth: int) -> None:
        """A 7z archive: names and links checked, each member extracted to memory and scanned."""
        if depth >= _MAX_ZIP_DEPTH:
            raise Malformed("containers nested too deeply", member=member)
        try:
            import py7zr
            from py7zr.io import BytesIOFactory
        except ImportError:  # pragma: no cover - a declared dependency
            raise Malformed("7z archives need the `py7zr` package to be scanned", member=member) from None
        try:
            window: Any = Window(f, f.tell())  # a seekable view from the archive's first byte
            with py7zr.SevenZipFile(window, mode="r") as archive:
                if archive.needs_password():
                    raise Malformed("encrypted 7z archive: dlsec cannot read its members", member=member)
                infos = list(archive.files)
                regular = []
                for info in infos:
                    where = _join(member, info.filename)
                    self.check_member_name(info.filename, where)
                    if info.is_symlink:
                        self.add(
                            "high",
                            "archive-link",
                            f"member {info.filename!r} is a symbolic link",
                            member=where,
                        )
                    elif not info.is_directory:
                        regular.append(info)
                for name, count in Counter(i.filename for i in regular).items():
                    if count > 1:
                        self.add(
                            "high", "duplicate-member", f"{count} members are named {name!r}", member=member
                        )
                factory = BytesIOFactory(_READ_WHOLE)
                archive.extractall(factory=factory)
        except Malformed:
            raise
        except Exception as exc:  # noqa: BLE001 - py7zr raises many types for corrupt archives
            raise Malformed(
                f"not a readable 7z archive ({type(exc).__name__}: {str(exc)[:160]})", member=member
            ) from None
        for info in regular:
            where = _join(member, info.filename)
            product = factory.products.get(info.filename)
            if product is None or product.size() != info.uncompressed:
                raise Malformed("7z member missing or larger than dlsec reads in memory", member=where)
            product.seek(0)
            data = product.read()
            self.code_member(info.filename, data[:_HEAD], where)
            self.loose_member(io.BytesIO(data), len(data), info.filename, where, depth=depth)

    def check_member_name(self, name: str, where: str) -> None:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            self.add(
                "high",
                "member-path",
                f"member name {name!r} points outside the archive when extracted",
                member=where,
            )

    def loose_member(self, handle: IO[bytes], size: int, name: str, where: str, *, depth: int) -> None:
        """Scan one extracted archive member by its content (tar, 7z); inert data is left alone."""
        head = handle.read(_HEAD)
        handle.seek(0)
        if name.rsplit("/", 1)[-1] == "model_config.yaml":
            self.nemo_config(handle.read(min(size, _MAX_JSON)), member=where)
            return
        fmt = detect_head(head, size)
        if fmt == "unknown" and name.endswith(".json") and size <= _MAX_JSON:
            self.json_hooks(handle.read(), member=where)
            return
        if fmt == "unknown" and name.lower().endswith(".jinja") and size <= _MAX_JSON:
            _read_chat_template(self, memoryview(handle.read()), where)
            return
        if fmt == "unknown" and head[:1] in (b"\x08", b"\x12", b"\x0a") and size <= _READ_WHOLE:
            fmt = detect_stream(handle, size)  # ONNX, a SavedModel graph, Core ML, Paddle
            handle.seek(0)
        if fmt in ("empty", "hdf5", "unknown", "executable"):
            return  # data no loader unpickles (text, images, raw tensors), or code named by code_member
        if fmt in ("zip", "tar", "safetensors"):
            fmt = detect_stream(handle, size)
            handle.seek(0)
        self.content(handle, size, fmt, member=where, depth=depth + 1)

    def tar_member(self, tf: tarfile.TarFile, m: tarfile.TarInfo, *, member: str | None, depth: int) -> None:
        where = _join(member, m.name)
        handle = tf.extractfile(m)
        if handle is None:  # pragma: no cover - regular files always have one
            raise Malformed("cannot read tar member", member=where)
        with handle:
            self.code_member(m.name, handle.read(_HEAD), where)
            handle.seek(0)
            self.loose_member(handle, m.size, m.name, where, depth=depth)

    def nemo_config(self, data: bytes, *, member: str) -> None:
        """NeMo restores a model by importing every ``_target_`` its config names."""
        targets = sorted(set(re.findall(rb"(?m)^\s*_target_\s*:\s*['\"]?([\w.]+)", data)))
        for target in targets[:50]:
            self.add(
                "medium",
                "config-import-target",
                f"model_config.yaml names _target_ {target.decode()}, which NeMo imports and calls "
                "when it restores the model",
                member=member,
            )

    def torch_tar(
        self, tf: tarfile.TarFile, files: dict[str, tarfile.TarInfo], *, member: str | None
    ) -> None:
        """``torch.save`` before 0.4: storages and tensors with raw bytes between pickles, then the object."""
        for name in ("sys_info", "pickle", "storages", "tensors"):
            if name not in files:
                raise Malformed(f"pre-0.4 torch archive without a regular {name!r} member", member=member)

        def open_(name: str) -> IO[bytes]:
            handle = tf.extractfile(files[name])
            if handle is None:  # pragma: no cover
                raise Malformed(f"cannot read {name}", member=member)
            return handle

        def one(f: IO[bytes], where: str) -> Any:
            return analyse_stream(f, self.ctx, member=where).value

        where = _join(member, "storages")
        numel: dict[Any, int] = {}
        with open_("storages") as f:
            count = one(f, where)
            if not isinstance(count, int) or not 0 <= count <= 10**7:
                raise Malformed("pre-0.4 torch storages: bad count", member=where)
            for _ in range(count):
                header = one(f, where)
                if not (isinstance(header, tuple) and len(header) == 3 and isinstance(header[2], Global)):
                    raise Malformed("pre-0.4 torch storage header is not (key, location, type)", member=where)
                elsize = STORAGE_ELEMENT_SIZES.get(header[2].name)
                if elsize is None:
                    raise Malformed(
                        f"pre-0.4 torch storage of unknown type {header[2].qualname}", member=where
                    )
                raw = f.read(8)
                if len(raw) < 8:
                    raise Malformed("pre-0.4 torch storage truncated", member=where)
                n = int.from_bytes(raw, "little", signed=True)
                if n < 0:
                    raise Malformed("pre-0.4 torch storage of negative size", member=where)
                self.skip(f, n * elsize, member=where, what=f"storage {header[0]!r}")
                numel[header[0]] = n
            views = one(f, where)
            for view in views if isinstance(views, list) else [None]:
                if not (isinstance(view, tuple) and len(view) == 4 and view[1] in numel):
                    raise Malformed(
                        "pre-0.4 torch storage view is not (key, root, offset, numel)", member=where
                    )
                target, root, offset, n = view
                if not (isinstance(offset, int) and isinstance(n, int) and offset >= 0 and n >= 0):
                    raise Malformed("pre-0.4 torch storage view with a bad offset or size", member=where)
                if offset + n > numel[root]:
                    self.add(
                        "high",
                        "tensor-out-of-bounds",
                        f"storage view {target!r} covers elements {offset}..{offset + n} of a storage of "
                        f"{numel[root]}",
                        member=where,
                    )
                numel[target] = n
            if not at_eof(f):
                raise Malformed("trailing bytes after the storages", member=where)
        where = _join(member, "tensors")
        keys = set(numel)
        with open_("tensors") as f:
            count = one(f, where)
            if not isinstance(count, int) or not 0 <= count <= 10**7:
                raise Malformed("pre-0.4 torch tensors: bad count", member=where)
            for _ in range(count):
                header = one(f, where)
                if not (isinstance(header, tuple) and len(header) == 3 and header[1] in numel):
                    raise Malformed("pre-0.4 torch tensor header names no known storage", member=where)
                raw = f.read(8)
                if len(raw) < 8:
                    raise Malformed("pre-0.4 torch tensor truncated", member=where)
                ndim = int.from_bytes(raw[:4], "little", signed=True)
                if not 0 <= ndim <= 64:
                    raise Malformed(f"pre-0.4 torch tensor with {ndim} dimensions", member=where)
                raw = f.read(16 * ndim + 8)
                if len(raw) < 16 * ndim + 8:
                    raise Malformed("pre-0.4 torch tensor truncated", member=where)
                values = struct.unpack(f"<{2 * ndim + 1}q", raw)
                size, stride, offset = values[:ndim], values[ndim : 2 * ndim], values[-1]
                total = numel[header[1]]
                empty = 0 in size
                end = (
                    offset
                    if empty
                    else offset + sum((a - 1) * b for a, b in zip(size, stride, strict=True)) + 1
                )
                if min((offset, *size, *stride), default=0) < 0 or end > total:
                    self.add(
                        "high",
                        "tensor-out-of-bounds",
                        f"tensor {header[0]!r}: offset {offset}, size {list(size)}, stride {list(stride)} "
                        f"outside its storage of {total} elements",
                        member=where,
                    )
                keys.add(header[0])
            if not at_eof(f):
                raise Malformed("trailing bytes after the tensors", member=where)
        where = _join(member, "pickle")
        ints = frozenset(k for k in keys if isinstance(k, int) and not isinstance(k, bool))
        previous, self.ctx.tar_keys = self.ctx.tar_keys, ints
        try:
            with open_("pickle") as f:
                analyse_stream(f, self.ctx, member=where)
                if not at_eof(f):
                    raise Malformed("trailing bytes after the pickle's STOP", member=where)
        finally:
            self.ctx.tar_keys = previous
        with open_("sys_info") as f:
            analyse_stream(f, self.ctx, member=_join(member, "sys_info"))

    def open_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> IO[bytes]:
        if info.flag_bits & 0x1:
            # PyTorch ignores the encryption flag and reads the bytes as they are; so do we. If
            # they do not parse, the member really is encrypted and the file is unscannable.
            self.flagged.add(where)
            info = copy.copy(info)
            info.flag_bits &= ~0x1
        try:
            handle = zf.open(info)
        except zipfile.BadZipFile as exc:
            if "differ" not in str(exc):
                raise Malformed(f"cannot read zip member ({exc})", member=where) from None
            return self.renamed_member(zf, info, where)
        except (NotImplementedError, RuntimeError, ValueError, EOFError, OSError) as exc:
            raise Malformed(f"cannot read zip member ({exc})", member=where) from None
        # CRC is checked by us on what we read (PyTorch does not check it at all).
        handle._expected_crc = None  # type: ignore[attr-defined]  # noqa: SLF001
        return handle

    def renamed_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> IO[bytes]:
        """A member whose local header names it differently from the central directory (CVE-2025-1944).

        PyTorch's reader goes by the central directory and never reads the local name; so does
        the scan, which reads the bytes after the local header and reports the disagreement.
        """
        fp = zf.fp
        if fp is None or info.compress_size > _READ_WHOLE:
            raise Malformed("zip member with two names is too large to read", member=where)
        fp.seek(info.header_offset)
        header = fp.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise Malformed("zip member without its local header", member=where)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        local_name = fp.read(name_len).decode("utf-8", "replace")
        fp.seek(info.header_offset + 30 + name_len + extra_len)
        raw = fp.read(info.compress_size)
        self.add(
            "high",
            "zip-name-mismatch",
            f"the member's local header names it {local_name!r}, the central directory {info.filename!r}: "
            "readers disagree on which file this is (CVE-2025-1944)",
            member=where,
        )
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                return io.BytesIO(raw)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                return io.BytesIO(zlib.decompressobj(-15).decompress(raw, _READ_WHOLE))
        except zlib.error as exc:
            raise Malformed(f"cannot read zip member ({exc})", member=where) from None
        raise Malformed(f"zip member compressed with method {info.compress_type}", member=where)

    def read_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
        if info.file_size > _READ_WHOLE:
            raise Malformed(
                f"member of {info.file_size} bytes is too large to analyse in memory", member=where
            )
        try:
            with self.open_member(zf, info, where) as handle:
                data = handle.read()
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise Malformed(f"cannot read zip member ({exc})", member=where) from None
        if len(data) != info.file_size:
            raise Malformed("zip member size does not match its directory entry", member=where)
        if zlib.crc32(data) != info.CRC:
            self.add(
                "medium",
                "zip-crc-mismatch",
                "member bytes do not match their CRC-32 (edited after the archive was written; "
                "PyTorch loads it anyway)",
                member=where,
            )
        return data

    def member_head(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
        try:
            with self.open_member(zf, info, where) as handle:
                return handle.read(_HEAD)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise Malformed(f"cannot read zip member ({exc})", member=where) from None

    def member(
        self,
        zf: zipfile.ZipFile,
        info: zipfile.ZipInfo,
        *,
        member: str | None,
        depth: int,
        reader_ignores_flag: bool = False,
    ) -> None:
        """Scan one member of any archive by its content; inert data is left alone.

        ``reader_ignores_flag``: the archive's loader (PyTorch) reads members raw whatever their
        encryption flag says, so flagged data it cannot parse is inert there, not hidden.
        """
        where = _join(member, info.filename)
        head = self.member_head(zf, info, where)
        self.code_member(info.filename, head, where)
        fmt = detect_head(head, info.file_size)
        if fmt in ("empty", "hdf5"):
            return
        if fmt == "unknown" and info.filename.endswith(".json") and info.file_size <= _MAX_JSON:
            data = self.read_member(zf, info, where)
            if _is_mxnet_symbol(data):
                self.buffer_format(memoryview(data), "mxnet-symbol", member=where)
            else:
                self.json_hooks(data, member=where)
            return
        if fmt == "unknown" and info.filename.lower().endswith(".jinja") and info.file_size <= _MAX_JSON:
            _read_chat_template(self, memoryview(self.read_member(zf, info, where)), where)
            return
        if fmt == "unknown" and info.flag_bits & 0x1 and not reader_ignores_flag:
            # Inert data is left alone, but this may be ciphertext of anything: nothing was read.
            raise Malformed("member is encrypted: its content could not be read", member=where)
        if fmt == "executable":
            return  # named by code_member
        if fmt == "unknown":
            if head[:1] not in (b"\x08", b"\x0a") or info.file_size > _READ_WHOLE:
                return  # data no loader unpickles: images, text, raw tensors
            data = self.read_member(zf, info, where)
            inner = detect_stream(io.BytesIO(data), len(data))
            if inner in _BUFFER_FORMATS:
                self.buffer_format(memoryview(data), inner, member=where)
            elif looks_like_onnx(memoryview(data)):
                for finding in scan_onnx_buffer(memoryview(data), model_dir=None, member=where):
                    self.ctx.add(finding)
            elif looks_like_saved_model(memoryview(data)):
                self.content(io.BytesIO(data), len(data), "tf-savedmodel", member=where, depth=depth + 1)
            return
        if fmt == "pickle" and info.file_size <= _READ_WHOLE:
            data = self.read_member(zf, info, where)
            self.content(io.BytesIO(data), len(data), fmt, member=where, depth=depth + 1)
            return
        with self.open_member(zf, info, where) as handle:
            self.content(handle, info.file_size, fmt, member=where, depth=depth + 1)

    def torch_zip(
        self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], kind: str, *, member: str | None, depth: int
    ) -> None:
        torchscript = kind == "torchscript"
        storages: dict[str, int] = {}
        pickled: set[int] = set()
        for info in infos:
            if not info.filename.lower().endswith("pkl"):
                continue
            where = _join(member, info.filename)
            pickled.add(id(info))
            data = self.read_member(zf, info, where)
            stream = io.BytesIO(data)
            found = False
            while not at_eof(stream):
                result = analyse_stream(
                    stream, self.ctx, member=where, size=len(data), torchscript=torchscript
                )
                found = True
                prefix = info.filename.rsplit("/", 1)[0] + "/" if "/" in info.filename else ""
                for pid in result.storage_ids:
                    name = f"{prefix}data/{pid[2]}"
                    nbytes = pid[4] * STORAGE_ELEMENT_SIZES[pid[1].name]
                    if storages.setdefault(name, nbytes) != nbytes:
                        raise Malformed(f"storage {name!r} declared with two sizes", member=where)
            if not found:
                raise Malformed("empty pickle member", member=where)
        by_name = {i.filename: i for i in infos}
        for name, nbytes in storages.items():
            storage = by_name.get(name)
            if storage is None:
                raise Malformed(f"storage {name!r} referenced by the pickle is missing", member=member)
            if storage.file_size != nbytes:
                raise Malformed(
                    f"storage {name!r} holds {storage.file_size} bytes, the pickle says {nbytes}",
                    member=member,
                )
        for info in infos:
            if id(info) in pickled or info.filename in storages:
                continue  # tensor bytes are never read
            if torchscript and _is_torchscript_source(info.filename):
                # TorchScript source: a program dlsec does not vet, named rather than called unsafe.
                where = _join(member, info.filename)
                self.torchscript_source(self.read_member(zf, info, where), where)
                continue
            self.member(zf, info, member=member, depth=depth, reader_ignores_flag=True)

    def torchscript_source(self, data: bytes, where: str) -> None:
        """Name the classes and methods of a TorchScript source member (read as text, never run)."""
        text = data.decode("utf-8", errors="replace")
        self.unvetted.setdefault("members", []).append(where)
        self.unvetted.setdefault("classes", []).extend(_TS_CLASS.findall(text))
        self.unvetted.setdefault("methods", []).extend(_TS_DEF.findall(text))

    def keras_config(self, config: Any, where: str | None) -> None:
        """Layers that run code when a Keras model (``.keras`` or legacy ``.h5``) is rebuilt."""
        for path, node in _walk_json(config, "config"):
            class_name = node.get("class_name")
            if class_name == "Lambda":
                found = node.get("config")
                layer: dict[str, Any] = found if isinstance(found, dict) else {}
                name = layer.get("name")
                self.add(
                    "high",
                    "keras-lambda",
                    f"Lambda layer {name or path!r}: its function is {_lambda_kind(layer)}, which runs when "
                    "the model is loaded or called",
                    member=where,
                )
            if class_name == "TFSMLayer":
                self.add(
                    "high",
                    "keras-savedmodel-layer",
                    f"{path}: TFSMLayer loads a TensorFlow SavedModel (a program) from a path the file names",
                    member=where,
                )
            module = node.get("module")
            if not isinstance(module, str):
                continue
            if module != "keras" and not module.startswith("keras."):
                self.add(
                    "medium",
                    "keras-custom-object",
                    f"{path}: loading imports module {module!r}"
                    + (f" to rebuild {class_name!r}" if class_name else ""),
                    member=where,
                )
            elif module.startswith(_KERAS_CALLABLE_MODULES):
                self.add(
                    "high",
                    "keras-function-call",
                    f"{path}: deserializing calls {module}.{class_name} (utility functions, not layers: "
                    "how safe_mode was bypassed, CVE-2025-1550 and CVE-2025-8747)",
                    member=where,
                )

    def skops(
        self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], *, member: str | None, depth: int
    ) -> None:
        """A skops file: the types and functions its ``schema.json`` rebuilds, then its members."""
        schema = next(i for i in infos if i.filename == "schema.json")
        where = _join(member, "schema.json")
        allow = self.ctx.allowlist
        for finding in scan_skops_schema(
            self.read_member(zf, schema, where),
            member=where,
            is_code=lambda mod, name: (
                _is_code_exec(mod)
                and not allow.may_import(mod, name)
                and not (mod == "builtins" and name in _PLAIN_BUILTINS)
            ),
            may_import=allow.may_import,
        ):
            self.ctx.add(finding)
        for info in infos:
            if info is not schema:
                self.member(zf, info, member=member, depth=depth)

    def hdf5(self, f: IO[bytes], *, member: str | None) -> None:
        """A legacy Keras ``.h5``: its ``model_config`` attribute, checked like a ``.keras`` config."""
        try:
            import h5py
        except ImportError:  # pragma: no cover - a declared dependency
            raise Malformed("HDF5 files need the `h5py` package to be scanned", member=member) from None
        try:
            with h5py.File(f, "r") as h5:
                raw = h5.attrs.get("model_config")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise Malformed(f"not a readable HDF5 file ({str(exc)[:160]})", member=member) from None
        if raw is None:
            return  # weights only: HDF5 holds data, and no layer is rebuilt from this file
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            config = json.loads(text)
        except (ValueError, RecursionError):
            raise Malformed("Keras model_config attribute is not valid JSON", member=member) from None
        self.keras_config(config, _join(member, "model_config"))

    def keras(
        self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], *, member: str | None, depth: int
    ) -> None:
        where = _join(member, "config.json")
        config_info = next(i for i in infos if i.filename == "config.json")
        try:
            config = json.loads(self.read_member(zf, config_info, where))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Malformed("Keras config.json is not valid JSON", member=where) from None
        self.keras_config(config, where)
        for info in infos:
            if info is not config_info:
                self.member(zf, info, member=member, depth=depth)


def _lambda_kind(layer: dict[str, Any]) -> str:
    """What a Keras Lambda layer's function is: bytecode, a module-function reference, or source."""
    function = layer.get("function")
    kind = layer.get("function_type")
    if kind == "lambda" or isinstance(function, (list, tuple)):
        return "marshalled Python bytecode (base64 in the config)"
    if kind == "function" or isinstance(function, str):
        module = layer.get("module") or "?"
        return f"a reference to the function {module}.{function}, imported by name"
    return "Python code (bytecode or source)"


def _check_zip_end(f: IO[bytes], member: str | None) -> None:
    """The archive must end with its end-of-central-directory record (and its comment)."""
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    tail_len = min(end - start, (1 << 16) + 22)
    f.seek(end - tail_len)
    tail = f.read(tail_len)
    f.seek(start)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise Malformed("zip archive without its end record (truncated?)", member=member)
    (comment,) = struct.unpack("<H", tail[at + 20 : at + 22])
    if at + 22 + comment != len(tail):
        raise Malformed("trailing bytes after the zip archive", member=member, offset=end - tail_len + at)


def _walk_json(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    stack = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            yield where, value
            stack.extend((v, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def _finish(path: str, fmt: str, scan: _Scan, error: str | None) -> ScanResult:
    unique: dict[tuple[str, str | None, int | None, str | None], Finding] = {}
    for f in scan.ctx.findings:
        unique.setdefault((f.code, f.import_name, f.offset, f.member), f)
    findings = sorted(
        unique.values(),
        key=lambda f: (SEVERITY_ORDER[f.severity], f.member or "", f.offset if f.offset is not None else -1),
    )
    summary = _third_party_summary(findings)
    if summary is not None:
        findings.insert(0, summary)
    if scan.ctx.dropped:
        findings.append(Finding("low", "more-findings", f"{scan.ctx.dropped} more findings not listed"))
    return ScanResult(path, fmt, findings, error, sorted(scan.ctx.extras_used))


_PLAIN_BUILTINS = frozenset(
    {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "int",
        "float",
        "str",
        "bytes",
        "bytearray",
        "bool",
        "complex",
        "slice",
        "NoneType",
        "object",
        "type",
        "range",
    }
)
_OPAQUE = {
    "rds": "R serialized data (.rds/.RData): it can hold closures, promises and bytecode that R runs when "
    "the data is read or used (CVE-2024-27322); dlsec does not read R serialization",
    "torch7": "a Torch7 (Lua) file: it can hold Lua functions as bytecode, which torch.load in Lua runs; "
    "dlsec does not read Torch7 serialization",
    "rknn": "an RKNN model: a compiled Rockchip NPU program in a proprietary format dlsec cannot read",
    "tensorrt": "a TensorRT engine: compiled kernels in NVIDIA's proprietary format, which may embed plugin "
    "libraries and a lean runtime (native code); dlsec cannot read it. Ship the ONNX it was built from",
}


def _opaque(kind: str) -> Any:
    def read(scan: _Scan, view: memoryview, member: str | None) -> None:
        if kind == "tensorrt":
            _embedded_native(scan, view, member)
        scan.unvet([_OPAQUE[kind]])

    return read


def _embedded_native(scan: _Scan, view: memoryview, member: str | None) -> None:
    data = bytes(view[: min(len(view), _READ_WHOLE)])
    at = data.find(b"\x7fELF\x02\x01\x01", 4)
    if at >= 0:
        scan.add(
            "high",
            "embedded-native-code",
            f"an ELF shared library is embedded at byte {at}: a plugin the runtime loads and runs",
            member=member,
            offset=at,
        )


def _read_rar(scan: _Scan, view: memoryview, member: str | None) -> None:
    raise Malformed(
        "a RAR archive: dlsec has no RAR reader (the format is proprietary); extract it and scan the members",
        member=member,
        kind="unreadable",
    )


def _read_executable(scan: _Scan, view: memoryview, member: str | None) -> None:
    what = (
        "a Windows PE (or an Actually Portable Executable such as a llamafile)"
        if bytes(view[:2]) == b"MZ"
        else ("an ELF or Mach-O executable")
    )
    scan.add(
        "high",
        "native-executable",
        f"the file is {what}: native code, which runs when it is executed; dlsec does not vet native code",
        member=member,
        offset=0,
    )


def _read_msgpack(scan: _Scan, view: memoryview, member: str | None) -> None:
    def on_pickle(data: memoryview, offset: int) -> None:
        scan.embedded_pickle(data, offset, member)

    for finding in scan_msgpack(view, member=member, on_pickle=on_pickle):
        scan.ctx.add(finding)


def _read_xml(scan: _Scan, view: memoryview, member: str | None) -> None:
    root, findings = parse_xml(view, member=member)
    for finding in findings:
        scan.ctx.add(finding)
    if findings:
        return  # entity declarations end the parse: the document is not read further
    if root.tag == "PMML":
        for finding in scan_pmml(root, member=member):
            scan.ctx.add(finding)
        return
    weights = None
    if member is None and scan.path is not None and scan.path.with_suffix(".bin").is_file():
        weights = scan.path.with_suffix(".bin").stat().st_size
    found, unvetted = scan_openvino(root, member=member, weights_size=weights)
    for finding in found:
        scan.ctx.add(finding)
    scan.unvet(unvetted)


def _read_openvino_weights(scan: _Scan, view: memoryview, member: str | None) -> None:
    xml = scan.path.with_suffix(".xml") if scan.path is not None else None
    need = openvino_max_weight(xml) if xml is not None else None
    if need is None or need > len(view):
        raise Malformed(
            f"OpenVINO weights of {len(view)} bytes; the IR beside them reads {need} bytes", member=member
        )


def _graph_reader(read: Any) -> Any:
    """A reader for a format whose scan returns findings and unvetted parts (custom ops, layers)."""

    def reader(scan: _Scan, view: memoryview, member: str | None) -> None:
        findings, unvetted = read(view, member=member)
        for finding in findings:
            scan.ctx.add(finding)
        scan.unvet(unvetted)

    return reader


def _findings_reader(read: Any) -> Any:
    """A reader for a format whose scan returns its findings."""

    def reader(scan: _Scan, view: memoryview, member: str | None) -> None:
        _add_all(scan, read(view, member=member))

    return reader


def _add_all(scan: _Scan, findings: list[Finding]) -> None:
    for finding in findings:
        scan.ctx.add(finding)


def _read_cntk_v1(scan: _Scan, view: memoryview, member: str | None) -> None:
    raise Malformed(
        "a CNTK v1 (BrainScript) model: its binary layout is not published as a schema and dlsec does not "
        "read it; load it in CNTK 2 and save it again (Function.save), then scan that",
        member=member,
        kind="unreadable",
    )


def _read_keras_metadata(scan: _Scan, view: memoryview, member: str | None) -> None:
    for path, text in keras_metadata(view, member=member):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise Malformed(f"Keras metadata of {path[:80]!r} is not JSON", member=member) from None
        scan.keras_config(doc, member)


def _chat_template_findings(value: Any, where: str, member: str | None) -> list[Finding]:
    """A Hugging Face ``chat_template``: one Jinja2 string, or a list of ``{name, template}``.

    ``apply_chat_template`` renders it; the class of CVE-2024-34359 (GGUF) applies to any
    renderer that is not sandboxed, so it is checked as a GGUF template is.
    """
    templates: list[tuple[str, Any]] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            label = f"{where}[{name!r}]" if isinstance(name, str) else f"{where}[{i}]"
            templates.append((label, item.get("template") if isinstance(item, dict) else item))
    else:
        templates.append((where, value))
    findings = []
    for label, text in templates:
        if text is None:
            continue
        if not isinstance(text, str):
            raise Malformed(f"{label.lstrip('.')} is not a string ({type(text).__name__})", member=member)
        findings += [
            Finding("high", "template-injection", f"{label.lstrip('.')}: {reason}", member=member)
            for reason in check_template(text)
        ]
    return findings


def _read_chat_template(scan: _Scan, view: memoryview, member: str | None) -> None:
    try:
        text = bytes(view).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("a .jinja chat template that is not UTF-8 text", member=member) from None
    _add_all(scan, _chat_template_findings(text, "chat template", member))


def _read_ggml(scan: _Scan, view: memoryview, member: str | None) -> None:
    magic = bytes(view[:4])
    name = magic.decode("ascii") if magic.isupper() else magic[::-1].decode("ascii")
    raise Malformed(
        f"a legacy llama.cpp {name.upper()} file (before GGUF, 2023): its header is the model's own "
        "hyperparameters, not self-describing, so dlsec does not read it; convert it to GGUF "
        "(llama.cpp's convert_llama_ggml_to_gguf.py) and scan that",
        member=member,
        kind="unreadable",
    )


def _is_mxnet_symbol(data: bytes) -> bool:
    try:
        return mxnet_symbol(json.loads(data))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


_BUFFER_FORMATS: dict[str, Any] = {
    "tflite": _graph_reader(scan_tflite),
    "executorch": _graph_reader(scan_executorch),
    "catboost": lambda scan, view, member: scan_catboost(view, member=member),
    "flax-msgpack": _read_msgpack,
    "coreml": _graph_reader(scan_coreml),
    "coreml-weights": lambda scan, view, member: scan_mil_weights(view, member=member),
    "paddle": _findings_reader(scan_paddle),
    "paddle-params": lambda scan, view, member: scan_pdiparams(view, member=member),
    "tf-metagraph": _graph_reader(scan_metagraph_buffer),
    "keras-metadata": _read_keras_metadata,
    "mxnet-symbol": _graph_reader(scan_mxnet_symbol),
    "mxnet-params": _findings_reader(scan_mxnet_params),
    "cntk": _findings_reader(scan_cntk),
    "tf-checkpoint-index": lambda scan, view, member: _add_all(
        scan, scan_checkpoint_index(view, member=member, path=scan.path)
    ),
    "tf-checkpoint-data": lambda scan, view, member: _add_all(
        scan, scan_checkpoint_data(view, member=member, path=scan.path)
    ),
    "tf-checkpoint-state": _findings_reader(scan_checkpoint_state),
    "tf-fingerprint": _findings_reader(scan_fingerprint),
    "cntk-v1": _read_cntk_v1,
    "pmml": _read_xml,
    "openvino": _read_xml,
    "openvino-weights": _read_openvino_weights,
    "xgboost": lambda scan, view, member: _read_xgboost(view, member),
    "lightgbm": lambda scan, view, member: read_lightgbm(view, member=member),
    "rar": _read_rar,
    "ggml": _read_ggml,
    "chat-template": _read_chat_template,
    "executable": _read_executable,
    **{kind: _opaque(kind) for kind in _OPAQUE},
}


def _read_xgboost(view: memoryview, member: str | None) -> None:
    if bytes(view[:1]) == b"{" and len(view) > 1 and view[1] in UBJSON_LENGTH_MARKERS:
        read_ubjson(view, member=member)
        return
    try:
        json.loads(bytes(view))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("not a readable XGBoost JSON model", member=member) from None


_TS_CLASS = re.compile(r"^class\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
_TS_DEF = re.compile(r"^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


def _is_torchscript_source(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return "code" in parts[:2] and name.endswith(".py")


def _unvetted_reason(unvetted: dict[str, list[str]]) -> str:
    def listed(names: list[str], limit: int = 8) -> str:
        unique = sorted(set(names))
        more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
        return ", ".join(unique[:limit]) + more if unique else "none"

    return (
        f"TorchScript program in {len(unvetted.get('members', []))} source file(s): classes "
        f"{listed(unvetted.get('classes', []))}; methods {listed(unvetted.get('methods', []))}. Its code "
        "runs when the model is loaded and called, and dlsec does not vet TorchScript programs: export "
        "the weights to safetensors, or accept it with --allow-unscannable"
    )


# Libraries whose estimators are pickled as honest models: their classes cannot be proven safe
# by reading the pickle, but they are not an attack either.
_THIRD_PARTY_ML = ("sklearn", "xgboost", "lightgbm", "catboost", "imblearn", "category_encoders")
_CLASS_FINDINGS = frozenset({"unsafe-global", "unsafe-call", "build-on-non-instance", "calls-value"})


def _third_party_summary(findings: list[Finding]) -> Finding | None:
    """One finding that says plainly what a pickled scikit-learn (or similar) model is."""
    names = sorted({f.import_name for f in findings if f.import_name})
    if not names or any(f.code not in _CLASS_FINDINGS or f.severity == "critical" for f in findings):
        return None
    if not all(n.split(".")[0] in _THIRD_PARTY_ML for n in names):
        return None
    listed = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    allow = " ".join(f"--allow {n}" for n in names[:8])
    return Finding(
        "medium",
        "third-party-classes",
        f"a pickled model of {names[0].split('.')[0]} classes ({listed}): honest models look like this, "
        "but loading one imports and calls these classes and dlsec cannot prove them safe. Save it with "
        f"skops (skops.io.dump, loaded with its trusted-types check), or if you trust these classes scan "
        f"again with {allow}",
    )


def _scan_stream(
    f: IO[bytes],
    size: int,
    label: str,
    allowlist: Allowlist,
    model_dir: Path | None,
    path: Path | None = None,
) -> ScanResult:
    scan = _Scan(allowlist)
    scan.path = path
    fmt = "unknown"
    error: str | None = None
    kind: str | None = None
    try:
        fmt = detect_stream(f, size)
        if fmt == "unknown" and path is not None:
            fmt = sibling_format(path, size) or fmt
        f.seek(0)
        scan.top(f, size, fmt, model_dir=model_dir)
    except Malformed as exc:
        error, kind = exc.describe(), exc.kind
        if any(exc.member == m or (exc.member or "").startswith(m + "/") for m in scan.flagged):
            # A zip member flagged as encrypted that does not parse as plain bytes: its content
            # is ciphertext (or garbage PyTorch could not load either). Nothing of it was read.
            kind = "encrypted"
            error = f"zip member {exc.member} is encrypted: its content could not be read ({error})"
    except RecursionError:
        error, kind = "structure nested too deeply to analyse", "too-large"
    except MemoryError:
        error, kind = "too large to analyse in memory", "too-large"
    if error is None and (scan.unvetted or scan.unvetted_parts) and not scan.ctx.findings:
        reasons = [_unvetted_reason(scan.unvetted)] if scan.unvetted else []
        if scan.unvetted_parts:
            listed = scan.unvetted_parts[:8] + (
                [f"{len(scan.unvetted_parts) - 8} more"] if len(scan.unvetted_parts) > 8 else []
            )
            reasons.append(
                f"{fmt}: code dlsec does not vet ({'; '.join(listed)}); its implementation is not in the "
                "file, or not in a form dlsec reads: accept it with --allow-unscannable if you trust it"
            )
        error, kind = " ".join(reasons), "unvetted"
    result = _finish(label, fmt, scan, error)
    result.error_kind = kind if error is not None else None
    result.notes = (
        [
            f"zip member {m} is flagged as encrypted but stored in the clear; PyTorch ignores the flag "
            "and so does the scan, which read it whole"
            for m in sorted(scan.flagged)
        ]
        if error is None
        else []
    )
    return result


def scan_file(path: str | os.PathLike[str], *, allow: Iterable[str] | Allowlist = ()) -> ScanResult:
    """Scan one file; never imports, unpickles or executes anything from it.

    Args:
        path: the file.
        allow: extra ``module.name`` globals to accept (reported in ``allowed_by_user``).

    Returns:
        The :class:`ScanResult`: ``verdict`` is ``safe``, ``unsafe`` or ``unscannable``.

    Example:
        >>> result = scan_file("model.pt")  # doctest: +SKIP
        >>> result.verdict, [f.import_name for f in result.findings]  # doctest: +SKIP
        ('unsafe', ['os.system'])
    """
    path = Path(path)
    allowlist = make_allowlist(allow)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _check_extension(path, _scan_stream(f, size, str(path), allowlist, path.parent, path))
    except OSError as exc:
        reason = f"cannot read the file ({exc.strerror or exc})"
        return ScanResult(str(path), "unknown", error=reason, error_kind="unreadable")


# Extensions that name one format: a file that says one thing and holds another is a disguise
# (a pickle named .safetensors passes a loader that trusts the name), so it is not 'safe'.
# Names that cover many formats (.pt, .bin, .pkl, .ckpt, .zip...) are not checked.
_EXTENSION_FORMATS: dict[str, frozenset[str]] = {
    ".safetensors": frozenset({"safetensors"}),
    ".onnx": frozenset({"onnx"}),
    ".npy": frozenset({"numpy", "numpy-object"}),
    ".npz": frozenset({"npz", "zip"}),
    ".h5": frozenset({"hdf5"}),
    ".hdf5": frozenset({"hdf5"}),
    ".keras": frozenset({"keras", "zip", "hdf5"}),
    ".gguf": frozenset({"gguf"}),
    ".json": frozenset({"json", "xgboost", "mxnet-symbol"}),
    ".tflite": frozenset({"tflite"}),
    ".pte": frozenset({"executorch"}),
    ".pmml": frozenset({"pmml"}),
    ".mlmodel": frozenset({"coreml"}),
    ".pdmodel": frozenset({"paddle"}),
    ".cbm": frozenset({"catboost"}),
    ".ubj": frozenset({"xgboost"}),
    ".skops": frozenset({"skops"}),
    ".msgpack": frozenset({"flax-msgpack"}),
}


def _check_extension(path: Path, result: ScanResult) -> ScanResult:
    expected = _EXTENSION_FORMATS.get(path.suffix.lower())
    if expected is None or result.format in expected or result.error is not None or result.format == "empty":
        return result
    result.error = (
        f"named {path.suffix} but the bytes are {result.format}: a loader that trusts the name would "
        "misread it; rename it to what it is, or replace it"
    )
    result.error_kind = "extension-mismatch"
    return result


def scan_bytes(data: bytes, *, label: str = "<bytes>", allow: Iterable[str] | Allowlist = ()) -> ScanResult:
    """Scan an in-memory file (ONNX external data is checked without a model folder).

    Example:
        >>> scan_bytes(open("model.pt", "rb").read(), label="model.pt").verdict  # doctest: +SKIP
        'safe'
    """
    return _scan_stream(io.BytesIO(data), len(data), label, make_allowlist(allow), None)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named by ``paths``; folders are walked recursively (symlinked folders are not followed).

    Raises:
        UsageError: a path does not exist, or nothing is left to scan.
    """
    files: list[Path] = []
    given = [Path(p) for p in paths]
    if not given:
        raise UsageError("give at least one file or folder to scan")
    for p in given:
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.extend(Path(root) / n for n in sorted(names))
        elif p.exists():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    files = [f for f in files if f.is_file()]
    if not files:
        raise UsageError(f"no files to scan under {', '.join(map(str, given))}")
    return files


def scan_paths(
    paths: Iterable[str | os.PathLike[str]], *, allow: Iterable[str] | Allowlist = ()
) -> list[ScanResult]:
    """Scan files and folders (recursively), one :class:`ScanResult` per file.

    Example:
        >>> results = scan_paths(["checkpoints/"], allow=["argparse.Namespace"])  # doctest: +SKIP
        >>> all(r.safe for r in results)  # doctest: +SKIP
        True
    """
    allowlist = make_allowlist(allow)
    return [scan_file(p, allow=allowlist) for p in expand_paths(paths)]
