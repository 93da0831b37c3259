"""Scan: the model-file scanner, and loading checkpoints only through it.

A model file is code until proven otherwise. :func:`scan_file` decides from the bytes what a
file is and, for every pickle in it, which globals it imports and calls, against an allowlist
of data constructors; nothing from the file is ever imported, unpickled or executed.
:func:`load_checkpoint` and :func:`convert_to_safetensors` load a checkpoint only after a safe
scan, with an unpickler bound to the same allowlist.

This package sits just above ``dlsec.errors`` (see ``docs/architecture.md``): every loader in
dlsec goes through it, so it depends on nothing else of dlsec.

Example:
    >>> from dlsec.scan import scan_file, verify_safe
    >>> scan_file("model.pt").verdict  # doctest: +SKIP
    'unsafe'
    >>> verify_safe("model.safetensors")  # raises UnsafeFileError / UnscannableFileError  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve
from dlsec.scan._allowlist import DEFAULT_ALLOWLIST, Allowlist
from dlsec.scan._findings import UNSCANNABLE_KINDS, Finding, ScanResult
from dlsec.scan._formats import PICKLE_FORMATS, detect_format
from dlsec.scan._sarif import scan_sarif, scan_verdict
from dlsec.scan._scanner import scan_bytes, scan_file, scan_paths

if TYPE_CHECKING:
    from dlsec.scan._load import ConvertResult, convert_to_safetensors, ensure_safe, load_checkpoint

# The loaders need NumPy; a scan does not, so `dlsec scan` starts without it (PEP 562).
_LOADERS = ("ConvertResult", "convert_to_safetensors", "ensure_safe", "load_checkpoint")
_EXPORTS = dict.fromkeys(_LOADERS, "_load")


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)


__all__ = [
    "UNSCANNABLE_KINDS",
    "scan_sarif",
    "scan_verdict",
    "DEFAULT_ALLOWLIST",
    "PICKLE_FORMATS",
    "Allowlist",
    "ConvertResult",
    "Finding",
    "ScanResult",
    "convert_to_safetensors",
    "detect_format",
    "ensure_safe",
    "load_checkpoint",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "verify_safe",
]


def verify_safe(path: str | os.PathLike[str], *, allow: Iterable[str] | Allowlist = ()) -> ScanResult:
    """Scan ``path`` and raise unless it is safe (the gate every loader goes through).

    Raises:
        UnsafeFileError: the scan has findings.
        UnscannableFileError: the file could not be scanned completely.

    Example:
        >>> verify_safe("model.safetensors").verdict  # doctest: +SKIP
        'safe'
    """
    from dlsec.scan._load import ensure_safe

    result = scan_file(path, allow=allow)
    ensure_safe(result)
    return result
