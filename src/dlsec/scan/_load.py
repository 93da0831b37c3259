"""Loading a checkpoint only after it scans safe, with an unpickler bound to the same allowlist.

The file is read into memory once. The scanner judges those bytes; each pickle stream is then
analysed again on the exact bytes about to be unpickled (so the check and the load cannot see
different data, even if the file changes on disk), and unpickled by :class:`_AllowlistUnpickler`,
whose ``find_class`` refuses every global the analyser would refuse. Storages are rebuilt
from the zip members (or legacy records) by dlsec's own code; ``torch.load`` is never called.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from dlsec.errors import UnsafeFileError, UnscannableFileError, UsageError
from dlsec.scan._allowlist import STORAGE_ELEMENT_SIZES, Allowlist, resolve_name
from dlsec.scan._findings import Malformed, ScanResult
from dlsec.scan._pickle import PickleStream, ScanContext, analyse_stream, at_eof
from dlsec.scan._scanner import LEGACY_MAGIC, make_allowlist, scan_bytes

__all__ = ["ConvertResult", "load_checkpoint", "convert_to_safetensors", "ensure_safe"]

_LOADABLE = ("torch-zip", "pickle", "numpy", "npz", "safetensors")


def ensure_safe(result: ScanResult) -> None:
    """Raise unless ``result`` is ``safe``.

    Raises:
        UnsafeFileError: the scan has findings.
        UnscannableFileError: the file could not be scanned completely.
    """
    if result.verdict == "unsafe":
        worst = result.findings[0]
        more = f" (and {len(result.findings) - 1} more)" if len(result.findings) > 1 else ""
        raise UnsafeFileError(f"{result.path}: unsafe: {worst.reason}{more}; see `dlsec scan {result.path}`")
    if result.verdict == "unscannable":
        raise UnscannableFileError(f"{result.path}: cannot be scanned ({result.error}), so it is not loaded")


class _AllowlistUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only allowlisted globals."""

    def __init__(
        self,
        file: IO[bytes],
        *,
        allowlist: Allowlist,
        proto: int,
        label: str,
        persistent: Callable[[Any], Any] | None,
    ) -> None:
        super().__init__(file, fix_imports=False, encoding="latin1")
        self._allowlist = allowlist
        self._proto = proto
        self._label = label
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        module, name = resolve_name(self._proto, module, name)
        if not self._allowlist.may_import(module, name):
            raise UnsafeFileError(f"{self._label}: refusing to import {module}.{name} (not on the allowlist)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafeFileError(f"{self._label}: unexpected persistent id in a plain pickle")
        return self._persistent(pid)


def _checked_stream(data: bytes, start: int, allowlist: Allowlist, label: str) -> PickleStream:
    """Analyse the stream at ``start`` of ``data`` again; it must be clean."""
    ctx = ScanContext(allowlist)
    try:
        stream = analyse_stream(io.BytesIO(data[start:]), ctx, member=label)
    except Malformed as exc:
        raise UnscannableFileError(f"{label}: {exc.describe()}") from None
    if ctx.findings:
        raise UnsafeFileError(f"{label}: {ctx.findings[0].reason}")
    return stream


def _unpickle(
    data: bytes, start: int, allowlist: Allowlist, label: str, persistent: Callable[[Any], Any] | None
) -> tuple[Any, int]:
    stream = _checked_stream(data, start, allowlist, label)
    end = start + stream.end
    unpickler = _AllowlistUnpickler(
        io.BytesIO(data[start:end]),
        allowlist=allowlist,
        proto=stream.proto,
        label=label,
        persistent=persistent,
    )
    try:
        return unpickler.load(), end
    except (UnsafeFileError, UnscannableFileError):
        raise
    except Exception as exc:  # noqa: BLE001 - allowlisted constructors raise their own errors
        raise UsageError(f"{label}: the checkpoint does not rebuild ({type(exc).__name__}: {exc})") from None


def _typed_storage(raw: bytes, storage_type: Any, numel: int, label: str) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage's deprecation notice
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
    nbytes = numel * torch._utils._element_size(dtype)
    if len(raw) != nbytes:
        raise UnscannableFileError(f"{label}: storage holds {len(raw)} bytes, expected {nbytes}")
    untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _load_torch_zip(data: bytes, allowlist: Allowlist, label: str) -> Any:
    zf = zipfile.ZipFile(io.BytesIO(data))
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise UsageError(f"{label}: expected one data.pkl in the archive, found {len(pickles)}")
    name = pickles[0]
    prefix = name[: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in zf.namelist() and zf.read(byteorder).strip() not in (b"little", b""):
        raise UsageError(f"{label}: big-endian checkpoints are not supported")
    cache: dict[str, Any] = {}

    def persistent(pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeFileError(f"{label}: unexpected persistent id")
        _, storage_type, key, _location, numel = pid
        if key not in cache:
            cache[key] = _typed_storage(zf.read(f"{prefix}data/{key}"), storage_type, numel, label)
        return cache[key]

    pickle_bytes = zf.read(name)
    value, end = _unpickle(pickle_bytes, 0, allowlist, f"{label}:{name}", persistent)
    if end != len(pickle_bytes):
        raise UsageError(f"{label}: data.pkl holds more than one pickle")
    return value


def _load_pickle(data: bytes, allowlist: Allowlist, label: str) -> Any:
    first = _checked_stream(data, 0, allowlist, label)
    if first.value != LEGACY_MAGIC:
        value, end = _unpickle(data, 0, allowlist, label, None)
        if end != len(data):
            raise UsageError(f"{label}: the file holds more than one pickle; dlsec converts single pickles")
        return value
    # Legacy torch.save: magic, protocol, sys_info, object, storage keys, then raw storages.
    offsets = [0]
    streams = []
    f = io.BytesIO(data)
    ctx = ScanContext(allowlist)
    for _ in range(5):
        if at_eof(f):
            raise UnscannableFileError(f"{label}: legacy checkpoint truncated")
        start = f.tell()
        try:
            streams.append(analyse_stream(f, ctx, member=label))
        except Malformed as exc:
            raise UnscannableFileError(f"{label}: {exc.describe()}") from None
        offsets.append(start)
    main_start = offsets[4]
    keys = streams[4].value
    little = True
    sys_info = streams[2].value
    for k, v in getattr(sys_info, "pairs", []):
        if k == "little_endian":
            little = bool(v)
    if not little:
        raise UsageError(f"{label}: big-endian checkpoints are not supported")
    sizes = {pid[2]: pid for pid in streams[3].storage_ids}
    raw: dict[str, bytes] = {}
    pos = f.tell()
    for key in keys:
        count = int.from_bytes(data[pos : pos + 8], "little", signed=True)
        pid = sizes[key]
        nbytes = count * STORAGE_ELEMENT_SIZES[pid[1].name]
        raw[key] = data[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes
    cache: dict[str, Any] = {}

    def persistent(pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeFileError(f"{label}: unexpected persistent id")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise UsageError(f"{label}: legacy storage views are not supported")
        if key not in cache:
            cache[key] = _typed_storage(raw[key], storage_type, numel, label)
        return cache[key]

    value, _ = _unpickle(data, main_start, allowlist, label, persistent)
    return value


def load_checkpoint(path: str | Path, *, allow: Iterable[str] | Allowlist = ()) -> Any:
    """Load a checkpoint only if it scans safe, with the same allowlist enforced while unpickling.

    Supports PyTorch zip and legacy checkpoints, single raw pickles, ``.npy``/``.npz`` (numeric)
    and safetensors. Never calls ``torch.load``.

    Raises:
        UnsafeFileError: the scan found something (nothing is unpickled).
        UnscannableFileError: the file could not be scanned completely.
        UsageError: a format dlsec does not load this way.

    Example:
        >>> state = load_checkpoint("model.pt")  # doctest: +SKIP
        >>> sorted(state)[:2]  # doctest: +SKIP
        ['fc.bias', 'fc.weight']
    """
    return _load(Path(path), make_allowlist(allow))[0]


def _load(path: Path, allowlist: Allowlist) -> tuple[Any, str, str]:
    """``(object, format, sha256 of the bytes loaded)``."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    data = path.read_bytes()
    result = scan_bytes(data, label=str(path), allow=allowlist)
    ensure_safe(result)
    fmt = result.format
    label = str(path)
    digest = hashlib.sha256(data).hexdigest()
    if fmt == "torch-zip":
        return _load_torch_zip(data, allowlist, label), fmt, digest
    if fmt == "pickle":
        return _load_pickle(data, allowlist, label), fmt, digest
    if fmt == "numpy":
        return np.load(io.BytesIO(data), allow_pickle=False), fmt, digest
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}, fmt, digest
    if fmt == "safetensors":
        from safetensors.torch import load

        return load(data), fmt, digest
    raise UsageError(f"{path}: dlsec does not load {fmt} files; supported: {', '.join(_LOADABLE)}")


@dataclass
class ConvertResult:
    """What ``convert_to_safetensors`` wrote."""

    source: str
    output: str
    format: str
    tensors: int
    skipped: list[str] = field(default_factory=list)
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "format": self.format,
            "tensors": self.tensors,
            "skipped": list(self.skipped),
            "sha256": self.sha256,
        }


def _select(obj: Any, select: str | None, label: str) -> Any:
    if not select:
        return obj
    for part in select.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list | tuple) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise UsageError(f"{label}: --select {select!r}: no key {part!r}")
    return obj


def _flatten(obj: Any, prefix: str, out: dict[str, Any], skipped: list[str]) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        name = prefix or "tensor"
        if name in out:
            raise UsageError(f"two tensors flatten to the same name {name!r}")
        out[name] = obj
    elif isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        _flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, out, skipped)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out, skipped)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _flatten(value, f"{prefix}.{i}" if prefix else str(i), out, skipped)
    else:
        skipped.append(prefix or "<root>")


def convert_to_safetensors(
    source: str | Path,
    output: str | Path,
    *,
    allow: Iterable[str] | Allowlist = (),
    select: str | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert a checkpoint to safetensors, only after it scans safe; the write is atomic.

    Nested dicts and lists are flattened to dotted names (``model.fc.weight``); values that are
    not tensors (epochs, strings, ...) are listed in ``skipped``. ``select`` picks a sub-tree
    first (``--select model``).

    Raises:
        UnsafeFileError: the source scans unsafe (nothing is unpickled, nothing is written).
        UnscannableFileError: the source cannot be scanned completely.
        UsageError: nothing to convert, a tensor safetensors cannot store, or the output exists.

    Example:
        >>> convert_to_safetensors("ckpt.pt", "model.safetensors", select="model")  # doctest: +SKIP
        ConvertResult(source='ckpt.pt', output='model.safetensors', format='torch-zip', tensors=4, ...)
    """
    import torch
    from safetensors.torch import save_file

    from dlsec.fsutil import atomic_write_with

    source, output = Path(source), Path(output)
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --force to replace it")
    if output.resolve() == source.resolve():
        raise UsageError("the output would overwrite the checkpoint being converted")
    loaded, fmt, source_sha = _load(source, make_allowlist(allow))
    obj = _select(loaded, select, str(source))
    tensors: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    _flatten(obj, "", tensors, skipped)
    seen: set[int] = set()
    ready: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        t = tensor.detach()
        if t.is_sparse or t.is_quantized or t.layout != torch.strided or t.device.type != "cpu":
            skipped.append(f"{name} ({t.layout}, {t.dtype}: not storable in safetensors)")
            continue
        ptr = t.untyped_storage().data_ptr()
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if (ptr in seen and t.numel()) or not whole:
            t = t.contiguous().clone()
        seen.add(ptr)
        ready[name] = t
    if not ready:
        raise UsageError(f"{source}: no tensors to convert (skipped: {', '.join(skipped[:5]) or 'nothing'})")
    meta = {
        "format": "pt",
        "dlsec.converted_from": source.name,
        "dlsec.source_sha256": source_sha,
    }
    if skipped:
        meta["dlsec.skipped"] = json.dumps(skipped[:100])

    def write(tmp: Path) -> None:
        try:
            save_file(ready, str(tmp), metadata=meta)
        except (ValueError, TypeError, RuntimeError, KeyError) as exc:
            raise UsageError(f"{source}: safetensors cannot store these tensors ({exc})") from None

    atomic_write_with(output, write)
    from dlsec.fsutil import sha256_file

    return ConvertResult(str(source), str(output), fmt, len(ready), skipped, sha256_file(output))
