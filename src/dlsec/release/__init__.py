"""Release: the model-file scanner, safe conversion to safetensors, encryption at rest.

A model file is code until proven otherwise. :func:`scan_file` decides from the bytes what a
file is and, for every pickle in it, which globals it imports and calls, against an allowlist
of data constructors; nothing from the file is ever imported, unpickled or executed.
:func:`load_checkpoint` and :func:`convert_to_safetensors` load a checkpoint only after a safe
scan, with an unpickler bound to the same allowlist. :func:`encrypt_file` and
:func:`decrypt_file` seal files with chunked AES-256-GCM under a passphrase (scrypt) or a
recipient's X25519 + ML-KEM-768 key.

Example:
    >>> from dlsec.release import scan_file, verify_safe
    >>> scan_file("model.pt").verdict  # doctest: +SKIP
    'unsafe'
    >>> verify_safe("model.safetensors")  # raises UnsafeFileError / UnscannableFileError  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dlsec.release._allowlist import DEFAULT_ALLOWLIST, Allowlist
from dlsec.release._audit import AuditLog, AuditVerification, Entry
from dlsec.release._crypto import (
    EncryptedHeader,
    Identity,
    Recipient,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    generate_recipient_keys,
    load_identity,
    load_recipient,
    read_header,
)
from dlsec.release._db import Database, open_database
from dlsec.release._findings import Finding, ScanResult
from dlsec.release._formats import PICKLE_FORMATS, detect_format
from dlsec.release._keys import (
    SigningKeys,
    VerifyKeys,
    generate_signing_keys,
    load_signing_keys,
    load_verify_keys,
)
from dlsec.release._load import ConvertResult, convert_to_safetensors, ensure_safe, load_checkpoint
from dlsec.release._registry import Policy, Registry, VersionRecord, default_key_dir, parse_ref
from dlsec.release._scanner import scan_bytes, scan_file, scan_paths
from dlsec.release._signing import (
    Manifest,
    Verified,
    default_signature_path,
    hash_model,
    sign_model,
    verify_model,
)

__all__ = [
    "DEFAULT_ALLOWLIST",
    "PICKLE_FORMATS",
    "Allowlist",
    "AuditLog",
    "AuditVerification",
    "ConvertResult",
    "Database",
    "EncryptedHeader",
    "Entry",
    "Finding",
    "Identity",
    "Manifest",
    "Policy",
    "Recipient",
    "Registry",
    "ScanResult",
    "SigningKeys",
    "Verified",
    "VerifyKeys",
    "VersionRecord",
    "convert_to_safetensors",
    "decrypt_file",
    "decrypt_stream",
    "default_key_dir",
    "default_signature_path",
    "detect_format",
    "encrypt_file",
    "generate_recipient_keys",
    "generate_signing_keys",
    "hash_model",
    "load_checkpoint",
    "load_identity",
    "load_recipient",
    "load_signing_keys",
    "load_verify_keys",
    "open_database",
    "parse_ref",
    "read_header",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "sign_model",
    "verify_model",
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
    result = scan_file(path, allow=allow)
    ensure_safe(result)
    return result
