"""Release: signatures (classical plus post-quantum) and encryption at rest for model artifacts.

:func:`sign_model` signs a model file or folder into a manifest of digests that
:func:`verify_model` checks against trusted keys (ECDSA P-256 and ML-DSA-65, both required);
:func:`encrypt_file` and :func:`decrypt_file` seal files with chunked AES-256-GCM under a
passphrase (scrypt) or a recipient's X25519 + ML-KEM-768 key. Scanning lives in
:mod:`dlsec.scan`, the registry and audit log in :mod:`dlsec.store`.

Example:
    >>> from dlsec.release import sign_model, verify_model
    >>> sign_model("model.safetensors", keys)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve
from dlsec.release._keys import (
    SigningKeys,
    VerifyKeys,
    generate_signing_keys,
    load_signing_keys,
    load_verify_keys,
)
from dlsec.release._signing import (
    SIGNATURE_NAME,
    Manifest,
    Verified,
    default_signature_path,
    hash_model,
    sign_model,
    verify_model,
)

if TYPE_CHECKING:
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

# Encryption at rest resolves lazily (PEP 562): `dlsec verify` needs the signatures only.
_EXPORTS = dict.fromkeys(
    (
        "EncryptedHeader",
        "Identity",
        "Recipient",
        "decrypt_file",
        "decrypt_stream",
        "encrypt_file",
        "generate_recipient_keys",
        "load_identity",
        "load_recipient",
        "read_header",
    ),
    "_crypto",
)


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)


__all__ = [
    "EncryptedHeader",
    "Identity",
    "Manifest",
    "Recipient",
    "SigningKeys",
    "Verified",
    "VerifyKeys",
    "decrypt_file",
    "decrypt_stream",
    "SIGNATURE_NAME",
    "default_signature_path",
    "encrypt_file",
    "generate_recipient_keys",
    "generate_signing_keys",
    "hash_model",
    "load_identity",
    "load_recipient",
    "load_signing_keys",
    "load_verify_keys",
    "read_header",
    "sign_model",
    "verify_model",
]
