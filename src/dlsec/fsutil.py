"""Atomic file writes and hashing: nothing is ever half-written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "sha256_file"]


def atomic_write_with(path: Path, write: Callable[[Path], None], *, mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    If ``write`` raises, the temporary file is removed and ``path`` is left as it was. The file
    gets ``mode`` (e.g. ``0o600`` for secrets), by default the usual ``0o666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write_with(Path(path), write, mode=mode)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def sha256_file(path: Path, *, chunk_size: int = 4 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks into one reused buffer.

    hashlib releases the GIL on large updates, so several files hash in parallel threads.
    """
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
