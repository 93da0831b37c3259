"""Signing keys: a classical ECDSA P-256 pair and a post-quantum ML-DSA-65 pair, as PEM files.

``dlsec keys generate --out DIR`` writes::

    DIR/ecdsa-p256.pub.pem   SubjectPublicKeyInfo (share it; what `model_signing verify key` takes)
    DIR/ml-dsa-65.pub.pem    SubjectPublicKeyInfo
    DIR/ecdsa-p256.key.pem   encrypted PKCS#8 (mode 0600)
    DIR/ml-dsa-65.key.pem    encrypted PKCS#8 (mode 0600)
    DIR/keys.json            fingerprints and the passphrase KDF parameters

The private keys are standard encrypted PKCS#8 PEM. Its key derivation in pyca/cryptography is
PBKDF2 with 2,048 rounds, too few for a key file that may leak, so the PEM password is not the
passphrase itself but ``scrypt(passphrase, salt, N = 2**17, r = 8, p = 1)`` (base64), with the salt
and parameters in ``keys.json``. Only pyca/cryptography primitives are used.

A key's fingerprint is the SHA-256 of its public PEM, the "hint" that the OpenSSF model-signing
format records in a signature bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dlsec.errors import KeyFileError, UsageError
from dlsec.fsutil import atomic_write_bytes, atomic_write_text

__all__ = [
    "SigningKeys",
    "VerifyKeys",
    "fingerprint",
    "generate_signing_keys",
    "load_signing_keys",
    "load_verify_keys",
]

ECDSA_PUB = "ecdsa-p256.pub.pem"
ECDSA_KEY = "ecdsa-p256.key.pem"
MLDSA_PUB = "ml-dsa-65.pub.pem"
MLDSA_KEY = "ml-dsa-65.key.pem"
META = "keys.json"
FORMAT = "dlsec-signing-keys/1"
_SCRYPT_LOG_N = range(10, 23)


def _pub_pem(key: ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey) -> str:
    """SHA-256 (hex) of the key's SubjectPublicKeyInfo PEM: the model-signing key hint."""
    return hashlib.sha256(_pub_pem(key)).hexdigest()


@dataclass(frozen=True)
class VerifyKeys:
    """The public halves: what a verifier trusts."""

    ecdsa: ec.EllipticCurvePublicKey
    mldsa: mldsa.MLDSA65PublicKey | None

    @property
    def fingerprints(self) -> dict[str, str]:
        out = {"ecdsa-p256": fingerprint(self.ecdsa)}
        if self.mldsa is not None:
            out["ml-dsa-65"] = fingerprint(self.mldsa)
        return out


@dataclass(frozen=True)
class SigningKeys:
    """Both private keys, unlocked."""

    ecdsa: ec.EllipticCurvePrivateKey
    mldsa: mldsa.MLDSA65PrivateKey

    def public(self) -> VerifyKeys:
        return VerifyKeys(self.ecdsa.public_key(), self.mldsa.public_key())


def _pem_password(passphrase: str | bytes, kdf: dict[str, Any]) -> bytes:
    secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not secret:
        raise UsageError("the passphrase is empty")
    derived = Scrypt(
        salt=base64.b64decode(kdf["salt"]), length=32, n=1 << kdf["log_n"], r=kdf["r"], p=kdf["p"]
    )
    return base64.b64encode(derived.derive(secret))


def generate_signing_keys(
    out: str | Path, *, passphrase: str | bytes, scrypt_log_n: int = 17, overwrite: bool = False
) -> dict[str, Any]:
    """Create an ECDSA P-256 and an ML-DSA-65 key pair in ``out``; return the ``keys.json`` record.

    Example:
        >>> info = generate_signing_keys("keys", passphrase="correct horse")  # doctest: +SKIP
        >>> info["ecdsa-p256"]["fingerprint"]  # doctest: +SKIP
    """
    out = Path(out)
    if scrypt_log_n not in _SCRYPT_LOG_N:
        raise UsageError(f"scrypt_log_n must be in [{_SCRYPT_LOG_N.start}, {_SCRYPT_LOG_N.stop - 1}]")
    names = (ECDSA_PUB, ECDSA_KEY, MLDSA_PUB, MLDSA_KEY, META)
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise UsageError(f"{out / existing[0]} exists; pass --force to replace the keys in {out}")
    kdf = {
        "name": "scrypt",
        "salt": base64.b64encode(os.urandom(16)).decode(),
        "log_n": scrypt_log_n,
        "r": 8,
        "p": 1,
    }
    password = _pem_password(passphrase, kdf)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ml_key = mldsa.MLDSA65PrivateKey.generate()
    encryption = serialization.BestAvailableEncryption(password)
    for key, key_name, pub_name in ((ec_key, ECDSA_KEY, ECDSA_PUB), (ml_key, MLDSA_KEY, MLDSA_PUB)):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        atomic_write_bytes(out / key_name, pem, mode=0o600)
        atomic_write_bytes(out / pub_name, _pub_pem(key.public_key()))
    record = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kdf": kdf,
        "ecdsa-p256": {
            "public": ECDSA_PUB,
            "private": ECDSA_KEY,
            "fingerprint": fingerprint(ec_key.public_key()),
        },
        "ml-dsa-65": {
            "public": MLDSA_PUB,
            "private": MLDSA_KEY,
            "fingerprint": fingerprint(ml_key.public_key()),
        },
    }
    atomic_write_text(out / META, json.dumps(record, indent=2) + "\n")
    return record


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no {what} here; create keys with `dlsec keys generate --out DIR`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def load_signing_keys(directory: str | Path, *, passphrase: str | bytes) -> SigningKeys:
    """Unlock the private keys in ``directory`` (written by :func:`generate_signing_keys`)."""
    directory = Path(directory)
    try:
        meta = json.loads(_read(directory / META, "key metadata (keys.json)"))
        if meta.get("format") != FORMAT:
            raise ValueError
        kdf = meta["kdf"]
        if kdf.get("name") != "scrypt" or kdf["log_n"] not in _SCRYPT_LOG_N:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"{directory / META}: not a dlsec signing key record") from None
    password = _pem_password(passphrase, kdf)
    keys = []
    for name, kind in ((ECDSA_KEY, ec.EllipticCurvePrivateKey), (MLDSA_KEY, mldsa.MLDSA65PrivateKey)):
        data = _read(directory / name, "private key")
        try:
            key = serialization.load_pem_private_key(data, password)
        except (ValueError, TypeError):
            raise KeyFileError(
                f"{directory / name}: wrong passphrase, or not an encrypted private key"
            ) from None
        if not isinstance(key, kind):
            raise KeyFileError(f"{directory / name}: not a {name.split('.')[0]} private key")
        keys.append(key)
    ec_key, ml_key = keys
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey) and isinstance(ml_key, mldsa.MLDSA65PrivateKey)
    if not isinstance(ec_key.curve, ec.SECP256R1):
        raise KeyFileError(f"{directory / ECDSA_KEY}: the ECDSA key must be on P-256")
    return SigningKeys(ec_key, ml_key)


def _load_public(path: Path) -> ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, mldsa.MLDSA65PublicKey):
        return key
    raise KeyFileError(f"{path}: expected an ECDSA P-256 or ML-DSA-65 public key")


def load_verify_keys(source: str | Path, *, require_hybrid: bool = True) -> VerifyKeys:
    """The public keys to verify with: a key directory, or one ECDSA public PEM file.

    With ``require_hybrid`` (the default) the ML-DSA-65 key must be there too.
    """
    source = Path(source)
    if source.is_file():
        key = _load_public(source)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyFileError(f"{source}: give the key directory to verify a hybrid signature")
        if require_hybrid:
            raise KeyFileError(
                f"{source}: a hybrid signature needs both public keys; give the key directory instead"
            )
        return VerifyKeys(key, None)
    ec_pub = _load_public(source / ECDSA_PUB)
    ml_path = source / MLDSA_PUB
    ml_pub = None if not ml_path.exists() and not require_hybrid else _load_public(ml_path)
    if not isinstance(ec_pub, ec.EllipticCurvePublicKey) or not (
        ml_pub is None or isinstance(ml_pub, mldsa.MLDSA65PublicKey)
    ):
        raise KeyFileError(f"{source}: the public key files hold the wrong kinds of keys")
    return VerifyKeys(ec_pub, ml_pub)
