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
from dlsec.release._keys import (
    SigningKeys,
    VerifyKeys,
    generate_signing_keys,
    load_signing_keys,
    load_verify_keys,
)
from dlsec.release._registry import Policy, Registry, VersionRecord, default_key_dir, parse_ref
from dlsec.release._signing import (
    Manifest,
    Verified,
    default_signature_path,
    hash_model,
    sign_model,
    verify_model,
)

__all__ = [
    "AuditLog",
    "AuditVerification",
    "Database",
    "EncryptedHeader",
    "Entry",
    "Identity",
    "Manifest",
    "Policy",
    "Recipient",
    "Registry",
    "SigningKeys",
    "Verified",
    "VerifyKeys",
    "VersionRecord",
    "decrypt_file",
    "decrypt_stream",
    "default_key_dir",
    "default_signature_path",
    "encrypt_file",
    "generate_recipient_keys",
    "generate_signing_keys",
    "hash_model",
    "load_identity",
    "load_recipient",
    "load_signing_keys",
    "load_verify_keys",
    "open_database",
    "parse_ref",
    "read_header",
    "sign_model",
    "verify_model",
]

