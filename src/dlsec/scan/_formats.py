"""Format detection from content: the bytes decide, never the file name.

Names returned: ``empty``, ``safetensors``, ``onnx``, ``pickle`` (raw pickles of any protocol,
legacy ``torch.save`` files, joblib), ``torch-zip``, ``torchscript``, ``numpy``,
``numpy-object``, ``npz``, ``keras``, ``torchserve-mar``, ``zip``, ``tar``, ``7z``, ``torch-tar``
(``torch.save`` before 0.4), ``nemo``, ``compressed`` (gzip, bz2, xz, lzma, zlib, zstd, lz4),
``gguf``, ``tf-savedmodel``, ``hdf5``, ``json``, ``pmml``, ``openvino`` (IR ``.xml``),
``tflite``, ``executorch``, ``flax-msgpack``, ``coreml``, ``coreml-weights``, ``paddle``
(``.pdmodel``), ``xgboost`` (JSON and UBJSON), ``lightgbm``, ``catboost``, ``skops``,
``tf-metagraph`` (``.meta``), ``mxnet-symbol`` (``*-symbol.json``), ``mxnet-params``,
``cntk`` (CNTK v2 ``Function.save``), ``keras-metadata`` (a Keras 2 SavedModel's
``keras_metadata.pb``), ``tf-checkpoint-index`` and ``tf-checkpoint-state``
(TensorFlow checkpoints), and the formats recognised but not read (``tensorrt``,
``rds``, ``torch7``, ``rknn``, ``rar``, ``cntk-v1``, ``ggml`` (llama.cpp before GGUF),
``executable``) and ``unknown``. Weights files that only their sibling names
(``openvino-weights``, ``paddle-params``, ``tf-checkpoint-data``, ``tf-fingerprint``) and
transformers' ``chat_template.jinja`` (``chat-template``) are found by :func:`sibling_format`.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import pickletools
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dlsec.scan._cntk import LEGACY_MAGIC as CNTK_V1_MAGIC
from dlsec.scan._cntk import looks_like_cntk
from dlsec.scan._flatbuf import executorch_like, tflite_like
from dlsec.scan._msgpack import MAP_MARKERS, looks_like_msgpack
from dlsec.scan._mxnet import PARAMS_MAGIC as MXNET_PARAMS_MAGIC
from dlsec.scan._mxnet import mxnet_symbol
from dlsec.scan._onnx import looks_like_onnx
from dlsec.scan._protomodels import looks_like_coreml, looks_like_paddle, mil_weights_like
from dlsec.scan._safetensors import looks_like_safetensors
from dlsec.scan._tfckpt import TABLE_MAGIC, checkpoint_data_index, looks_like_fingerprint
from dlsec.scan._treemodels import looks_like_lightgbm, looks_like_ubjson, xgboost_json
from dlsec.scan._xml import openvino_max_weight, xml_root

__all__ = [
    "COMPRESSION",
    "PICKLE_FORMATS",
    "ZIP_MAGICS",
    "Window",
    "classify_tar",
    "classify_zip",
    "compression_of",
    "buffer_of",
    "detect_format",
    "detect_head",
    "detect_stream",
    "looks_like_proto01_pickle",
    "sibling_format",
]

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
NPY_MAGIC = b"\x93NUMPY"
_SNIFF = 1 << 16
_MAX_JSON = 64 * 1024 * 1024
# Formats whose usual loader unpickles: what dlsec never loads without a scan.
PICKLE_FORMATS = frozenset(
    {
        "pickle",
        "torch-zip",
        "torchscript",
        "numpy-object",
        "compressed",
        "keras",
        "torch-tar",
        "nemo",
        "torchserve-mar",
        "skops",
    }
)
# Formats dlsec recognises by their bytes but does not read: each names why.
OPAQUE_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"Rar!\x1a\x07", "rar"),
    (CNTK_V1_MAGIC, "cntk-v1"),
    (b"RKNN", "rknn"),
    (b"ftrt", "tensorrt"),
    (b"RDX2\n", "rds"),
    (b"RDX3\n", "rds"),
    (b"RDA2\n", "rds"),
    (b"RDA3\n", "rds"),
    (b"X\n\x00\x00\x00\x02", "rds"),
    (b"X\n\x00\x00\x00\x03", "rds"),
    # llama.cpp before GGUF wrote its magic as a little-endian uint32 ("ggjt" -> b"tjgg");
    # ModelAudit's tables spell the same names in upper case, so both orders are recognised.
    *(
        (m, "ggml")
        for name in (b"ggml", b"ggmf", b"ggjt", b"ggla", b"ggsa")
        for m in (name[::-1], name.upper())
    ),
    (b"\x7fELF", "executable"),
    (b"MZ", "executable"),
    (b"\xcf\xfa\xed\xfe", "executable"),
    (b"\xce\xfa\xed\xfe", "executable"),
)
_MAX_TAR_NAMES = 100_000

# name -> magic prefix (zlib and raw lzma are checked separately: their magic is weaker)
COMPRESSION: dict[str, bytes] = {
    "gzip": b"\x1f\x8b",
    "bz2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "lz4": b"\x04\x22\x4d\x18",
}
# A pickle without PROTO (protocols 0 and 1; pickle does not check) may open with any opcode
# that needs nothing on the stack.
_FIRST_OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes if not op.stack_before)
_SNIFF_OK = ("exhausted", "not enough data", "no newline found")


def compression_of(head: bytes) -> str | None:
    """The compression that ``head`` starts with, if any."""
    for name, magic in COMPRESSION.items():
        if head.startswith(magic):
            if name == "bz2" and (len(head) < 4 or head[3:4] not in b"123456789"):
                continue
            return name
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return "zlib"
    # lzma "alone" (what joblib's 'lzma' writes): properties byte 0x5d, then a dictionary size
    if (
        len(head) >= 13
        and head[0] == 0x5D
        and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x00\x01", b"\x00\x00\x00\x04")
    ):
        return "lzma"
    return None


def looks_like_proto01_pickle(head: bytes, *, complete: bool = False) -> bool:
    """Whether ``head`` parses as pickle opcodes: up to a STOP, or to its end when it is a window.

    ``complete`` says ``head`` is the whole content, which must then reach its ``STOP``.
    """
    if not head or head[0] not in _FIRST_OPCODES:
        return False
    try:
        for _op, _arg, _pos in pickletools.genops(io.BytesIO(head)):
            pass
    except ValueError as exc:
        # Running out of the sniffed window is fine; a bad opcode is not.
        return not complete and any(text in str(exc) for text in _SNIFF_OK)
    except Exception:  # noqa: BLE001 - any decoding failure means "not a pickle"
        return False
    return True


def classify_tar(names: Sequence[str]) -> str:
    """Name a tar container by its members: ``torch-tar`` (torch.save before 0.4), ``nemo`` or ``tar``."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    if {"sys_info", "pickle", "storages", "tensors"} <= set(names):
        return "torch-tar"
    if "model_config.yaml" in base:
        return "nemo"
    return "tar"


def classify_zip(names: Sequence[str]) -> str:
    """Name a zip container by its members."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    if "MAR-INF/MANIFEST.json" in names:
        return "torchserve-mar"
    if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    if "data.pkl" in base or any(n.lower().endswith(".pkl") for n in names):
        return "torch-zip"
    if "schema.json" in names and any(n.endswith(".npy") for n in names) or names == ["schema.json"]:
        return "skops"
    if "config.json" in names and ("metadata.json" in names or any(n.endswith(".weights.h5") for n in names)):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def detect_head(head: bytes, size: int) -> str:
    """The format of content starting with ``head`` (zip containers need their member names)."""
    if not head:
        return "empty"
    if head[:4] in ZIP_MAGICS:
        return "zip"
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:6] == SEVEN_ZIP_MAGIC:
        return "7z"
    if tflite_like(head):
        return "tflite"
    if executorch_like(head):
        return "executorch"
    if head[:4] == b"CBM1":
        return "catboost"
    if head[:16] == MXNET_PARAMS_MAGIC:
        return "mxnet-params"
    if head.startswith(b'model_checkpoint_path: "'):
        return "tf-checkpoint-state"
    for magic, name in OPAQUE_MAGICS:
        if head.startswith(magic):
            return name
    if head[:4] == b"\x04\x00\x00\x00" and head[8:15] == b"\x03\x00\x00\x00V 1":
        return "torch7"
    if compression_of(head) is not None:
        return "compressed"
    if head.startswith(NPY_MAGIC):
        return "numpy"
    # A safetensors header of 128, 384, 640... bytes starts 0x80 0x00-0x05, like a pickle's PROTO:
    # such a file is routed to safetensors, and the scanner reads it as a pickle too.
    if looks_like_safetensors(head, size):
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return "pickle"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if len(head) >= 263 and head[257:262] == b"ustar":
        return "tar"
    if mil_weights_like(head):
        return "coreml-weights"
    if head[0] in MAP_MARKERS and looks_like_msgpack(head[:_SNIFF], complete=len(head) >= size):
        return "flax-msgpack"
    if looks_like_proto01_pickle(head[:_SNIFF], complete=len(head) >= size):
        return "pickle"
    if looks_like_lightgbm(head):
        return "lightgbm"
    if looks_like_ubjson(head):
        return "xgboost"
    root = xml_root(head[:_SNIFF])
    if root == "PMML":
        return "pmml"
    if root == "net":
        return "openvino"
    return "unknown"


def detect_stream(f: IO[bytes], size: int) -> str:
    """The format of the seekable stream ``f`` (``size`` bytes from its current position)."""
    origin = f.tell()
    head = f.read(_SNIFF)
    f.seek(origin)
    fmt = detect_head(head, size)
    if fmt == "zip":
        try:
            with zipfile.ZipFile(Window(f, origin)) as zf:
                return classify_zip(zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return "zip"
    if fmt == "tar":
        try:
            with tarfile.open(fileobj=Window(f, origin), mode="r:") as tf:
                return classify_tar(tf.getnames()[:_MAX_TAR_NAMES])
        except (tarfile.TarError, OSError, ValueError, EOFError):
            return "tar"
        finally:
            f.seek(origin)
    if fmt == "numpy":
        from dlsec.scan._arrays import read_npy_header
        from dlsec.scan._findings import Malformed

        try:
            header = read_npy_header(io.BytesIO(head), member=None)
        except Malformed:
            return "numpy"
        return "numpy-object" if header.dtype.hasobject else "numpy"
    if fmt == "unknown" and head[:1] in (b"\x08", b"\x12", b"\x0a"):
        from dlsec.scan._savedmodel import (
            looks_like_keras_metadata,
            looks_like_metagraph,
            looks_like_saved_model,
        )

        with buffer_of(f, origin, size) as view:
            if looks_like_onnx(view):
                return "onnx"
            if looks_like_cntk(view):
                return "cntk"
            if looks_like_saved_model(view):
                return "tf-savedmodel"
            if looks_like_coreml(view):
                return "coreml"
            if looks_like_paddle(view):
                return "paddle"
            if looks_like_metagraph(view):
                return "tf-metagraph"
            if looks_like_keras_metadata(view):
                return "keras-metadata"
            if looks_like_coreml(view, truncated_ok=True):
                return "coreml"
    if fmt == "unknown" and size >= 48:
        f.seek(origin + size - 8)
        tail = f.read(8)
        f.seek(origin)
        if tail == TABLE_MAGIC:
            return "tf-checkpoint-index"
    if fmt == "unknown" and size <= _MAX_JSON and head.lstrip()[:1] in (b"{", b"["):
        f.seek(origin)
        data = f.read(size)
        f.seek(origin)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return "unknown"
        if mxnet_symbol(doc):
            return "mxnet-symbol"
        return "xgboost" if xgboost_json(doc) else "json"
    return fmt


def sibling_format(path: Path, size: int) -> str | None:
    """A weights file that only the model beside it describes: OpenVINO ``.bin``, Paddle ``.pdiparams``."""
    if path.suffix.lower() == ".bin":
        xml = path.with_suffix(".xml")
        if xml.is_file() and openvino_max_weight(xml) is not None:
            return "openvino-weights"
    if path.suffix.lower() == ".pdiparams" or path.with_suffix(".pdmodel").is_file():
        return "paddle-params"
    if checkpoint_data_index(path) is not None:
        return "tf-checkpoint-data"
    if path.suffix.lower() == ".jinja":
        return "chat-template"  # transformers' chat_template.jinja, a text file named by its loader
    if path.name == "fingerprint.pb" and size <= _SNIFF:
        with open(path, "rb") as f:
            if looks_like_fingerprint(memoryview(f.read(_SNIFF))):
                return "tf-fingerprint"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name a file's format from its bytes (never by extension, never by loading it).

    Example:
        >>> detect_format("model.safetensors")  # doctest: +SKIP
        'safetensors'
    """
    path = Path(path)
    with open(path, "rb") as f:
        return detect_stream(f, os.fstat(f.fileno()).st_size)


class Window(io.RawIOBase):
    """``f`` seen from ``origin`` on (zip readers seek relative to the start of the archive)."""

    def __init__(self, f: IO[bytes], origin: int) -> None:
        super().__init__()
        self._f = f
        self._origin = origin

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            return self._f.seek(self._origin + offset) - self._origin
        return self._f.seek(offset, whence) - self._origin

    def tell(self) -> int:
        return self._f.tell() - self._origin

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def buffer_of(f: IO[bytes], origin: int, size: int) -> Iterator[memoryview]:
    """A read-only view of ``size`` bytes of ``f`` from ``origin``, memory-mapped when possible."""
    if isinstance(f, io.BytesIO):
        whole = f.getbuffer()
        part = whole[origin : origin + size].toreadonly()
        try:
            yield part
        finally:
            part.release()
            whole.release()
        return
    try:
        fileno = f.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        fileno = -1
    if fileno >= 0 and origin == 0 and size > 0:
        with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mm:
            whole = memoryview(mm)
            part = whole[:size]
            try:
                yield part
            finally:
                part.release()
                whole.release()
        return
    f.seek(origin)
    data = f.read(size)
    f.seek(origin)
    yield memoryview(data)
