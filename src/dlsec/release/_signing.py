"""Model signing in the OpenSSF model-signing layout, with a hybrid post-quantum signature.

A model (one file, or a directory of files) is described by a manifest of per-file SHA-256
digests, hashed in parallel threads in large chunks. The manifest becomes an in-toto Statement v1
(predicate type ``https://model_signing/signature/v1.0``: resources sorted by name, the subject's
digest the SHA-256 over their raw digests in that order), serialised as the payload of a DSSE
envelope, inside a Sigstore bundle v0.3 JSON file whose verification material names the ECDSA
key by its fingerprint. This is the format `model_signing sign key` writes, so `model_signing
verify key --public_key ecdsa-p256.pub.pem` accepts our signatures.

The envelope carries two signatures over the same DSSE pre-authentication encoding (PAE):
ECDSA P-256 with SHA-256 first (the one model-signing checks), then ML-DSA-65. dlsec requires
both: a verifier that only trusts the classical half can be fooled by a quantum adversary, one
that only trusts ML-DSA by a flaw in a young algorithm.

The signature of a directory is ``DIR/model.sig`` (ignored when hashing, like ``.git`` paths);
of a single file, ``FILE.sig`` beside it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from dlsec.errors import (
    BadSignatureError,
    FileChangedError,
    FileMissingError,
    HybridSignatureError,
    MalformedSignatureError,
    SignatureMissingError,
    UnsignedFileError,
    UsageError,
    WrongKeyError,
)
from dlsec.fsutil import atomic_write_text, sha256_file
from dlsec.release._keys import SigningKeys, VerifyKeys, fingerprint

__all__ = [
    "Manifest",
    "Verified",
    "default_signature_path",
    "hash_model",
    "sign_model",
    "verify_model",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SIGNATURE_NAME = "model.sig"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
ECDSA_KEYID = "ecdsa-p256:"
MLDSA_KEYID = "ml-dsa-65:"


def default_signature_path(model: str | Path) -> Path:
    """``DIR/model.sig`` for a directory, ``FILE.sig`` for a file."""
    model = Path(model)
    return model / SIGNATURE_NAME if model.is_dir() else model.with_name(model.name + ".sig")


@dataclass(frozen=True)
class Manifest:
    """Per-file SHA-256 digests of a model, keyed by POSIX path relative to the model (``.`` for a file)."""

    name: str
    files: dict[str, str]
    ignore_paths: tuple[str, ...] = field(default=())

    @property
    def root_digest(self) -> str:
        """SHA-256 over the raw file digests in name order (the in-toto subject's digest)."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(bytes.fromhex(self.files[name]))
        return h.hexdigest()

    def statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 of the OpenSSF model-signing format."""
        serialization: dict[str, Any] = {"method": "files", "hash_type": "sha256", "allow_symlinks": False}
        if self.ignore_paths:
            serialization["ignore_paths"] = list(self.ignore_paths)
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.name, "digest": {"sha256": self.root_digest}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": serialization,
                "resources": [
                    {"name": n, "algorithm": "sha256", "digest": self.files[n]} for n in sorted(self.files)
                ],
            },
        }


def _model_files(model: Path, ignore: set[str]) -> list[tuple[str, Path]]:
    if model.is_symlink():
        raise UsageError(f"{model} is a symbolic link; sign the real file or directory")
    if model.is_file():
        return [(".", model)]
    if not model.is_dir():
        raise UsageError(f"{model}: no such file or directory")
    files = []
    for root, dirs, names in os.walk(model):
        rel_root = PurePosixPath(Path(root).relative_to(model).as_posix())
        dirs[:] = sorted(d for d in dirs if str(rel_root / d) not in ignore)  # "." / d is d
        for name in sorted(names + [d for d in dirs if Path(root, d).is_symlink()]):
            rel = str(rel_root / name)
            path = Path(root, name)
            if rel in ignore:
                continue
            if path.is_symlink():
                raise UsageError(f"{path} is a symbolic link; models with links cannot be signed safely")
            if path.is_file():
                files.append((rel, path))
    return files


def hash_model(
    model: str | Path,
    *,
    signature: str | Path | None = None,
    workers: int | None = None,
    ignore: tuple[str, ...] = (),
) -> Manifest:
    """Hash every file of ``model`` (a file or a directory), several files at once.

    The signature file, git metadata and ``ignore`` (paths relative to the model) are left out,
    and listed as ignored in the statement.
    """
    model = Path(model)
    ignored = set(GIT_PATHS) | {p.strip("/") for p in ignore}
    sig = Path(signature) if signature is not None else default_signature_path(model)
    if model.is_dir():
        with contextlib.suppress(ValueError):
            ignored.add(sig.resolve().relative_to(model.resolve()).as_posix())
    files = _model_files(model, ignored)
    if model.is_dir() and not files:
        raise UsageError(f"{model} holds no files to sign")
    n_workers = max(1, min(workers or (os.cpu_count() or 1), len(files)))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        digests = list(pool.map(sha256_file, [p for _, p in files]))
    name = model.resolve().name
    listed = tuple(sorted(ignored)) if model.is_dir() else ()
    return Manifest(name, {rel: d for (rel, _), d in zip(files, digests, strict=True)}, listed)


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def sign_model(
    model: str | Path, keys: SigningKeys, *, signature: str | Path | None = None, workers: int | None = None
) -> tuple[Path, Manifest]:
    """Sign ``model`` with both keys; write the bundle (atomically) and return its path and the manifest."""
    model = Path(model)
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    manifest = hash_model(model, signature=sig_path, workers=workers)
    payload = json.dumps(manifest.statement(), sort_keys=True, separators=(",", ":")).encode()
    message = pae(payload)
    ec_fp = fingerprint(keys.ecdsa.public_key())
    ml_fp = fingerprint(keys.mldsa.public_key())
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ec_fp}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [
                {
                    "sig": base64.b64encode(keys.ecdsa.sign(message, ec.ECDSA(hashes.SHA256()))).decode(),
                    "keyid": ECDSA_KEYID + ec_fp,
                },
                {"sig": base64.b64encode(keys.mldsa.sign(message)).decode(), "keyid": MLDSA_KEYID + ml_fp},
            ],
        },
    }
    atomic_write_text(sig_path, json.dumps(bundle, indent=2) + "\n")
    return sig_path, manifest


@dataclass(frozen=True)
class Verified:
    """A model whose files match a signature made by the trusted keys."""

    manifest: Manifest
    signature: Path
    key_fingerprints: dict[str, str]
    hybrid: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": True,
            "name": self.manifest.name,
            "root_digest": self.manifest.root_digest,
            "files": len(self.manifest.files),
            "signature": str(self.signature),
            "keys": self.key_fingerprints,
            "hybrid": self.hybrid,
        }


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedSignatureError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSignatureError(f"{what} is not valid base64") from None


def read_bundle(sig_path: Path) -> tuple[bytes, list[dict[str, Any]], str]:
    """Parse a bundle: (payload, signatures, key hint). Raises on anything malformed."""
    try:
        text = sig_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SignatureMissingError(f"{sig_path}: no signature; sign the model with `dlsec sign`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedSignatureError(f"{sig_path}: cannot read the signature ({exc})") from None
    try:
        bundle = json.loads(text)
        if bundle["mediaType"] != BUNDLE_MEDIA_TYPE:
            raise MalformedSignatureError(
                f"{sig_path}: not a Sigstore bundle v0.3 (media type {bundle['mediaType']!r})"
            )
        envelope = bundle["dsseEnvelope"]
        if envelope["payloadType"] != PAYLOAD_TYPE:
            raise MalformedSignatureError(f"{sig_path}: the DSSE payload is not an in-toto statement")
        sigs = envelope["signatures"]
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        if (
            not isinstance(sigs, list)
            or not all(isinstance(s, dict) for s in sigs)
            or not isinstance(hint, str)
        ):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError):
        raise MalformedSignatureError(
            f"{sig_path}: not a model-signing bundle (bad JSON or missing fields)"
        ) from None
    return _b64(envelope["payload"], f"{sig_path}: the payload"), sigs, hint


def _check_signatures(
    sig_path: Path, payload: bytes, sigs: list[dict[str, Any]], hint: str, keys: VerifyKeys
) -> None:
    ec_fp = fingerprint(keys.ecdsa)
    if hint != ec_fp:
        raise WrongKeyError(
            f"{sig_path}: signed by key {hint[:16]}..., not by the trusted ECDSA key {ec_fp[:16]}..."
        )
    message = pae(payload)
    if not sigs:
        raise BadSignatureError(f"{sig_path}: the envelope holds no signature")
    classical = [
        s for s in sigs if str(s.get("keyid", "")).startswith(ECDSA_KEYID) or s.get("keyid", "") == ""
    ]
    if not classical or sigs[0] is not classical[0]:
        raise HybridSignatureError(f"{sig_path}: the ECDSA P-256 signature (the first one) is missing")
    try:
        keys.ecdsa.verify(
            _b64(classical[0].get("sig"), "the ECDSA signature"), message, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise BadSignatureError(
            f"{sig_path}: the ECDSA signature does not verify "
            "(the signature or the signed statement was altered)"
        ) from None
    if keys.mldsa is None:
        return
    ml_fp = fingerprint(keys.mldsa)
    post_quantum = [s for s in sigs if str(s.get("keyid", "")).startswith(MLDSA_KEYID)]
    if not post_quantum:
        raise HybridSignatureError(f"{sig_path}: the ML-DSA-65 half of the hybrid signature is missing")
    if post_quantum[0]["keyid"] != MLDSA_KEYID + ml_fp:
        raise WrongKeyError(
            f"{sig_path}: the ML-DSA-65 signature was made by another key than the trusted one"
        )
    try:
        keys.mldsa.verify(_b64(post_quantum[0].get("sig"), "the ML-DSA-65 signature"), message)
    except InvalidSignature:
        raise HybridSignatureError(
            f"{sig_path}: the ML-DSA-65 half of the hybrid signature does not verify"
        ) from None


def _signed_manifest(sig_path: Path, payload: bytes) -> Manifest:
    try:
        statement = json.loads(payload)
        if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
            raise MalformedSignatureError(f"{sig_path}: not a model-signing v1.0 in-toto statement")
        (subject,) = statement["subject"]
        resources = statement["predicate"]["resources"]
        files = {}
        for r in resources:
            if r["algorithm"] != "sha256" or len(bytes.fromhex(r["digest"])) != 32:
                raise MalformedSignatureError(f"{sig_path}: resource {r['name']!r} is not a SHA-256 digest")
            files[str(r["name"])] = str(r["digest"])
        ignore = tuple(statement["predicate"]["serialization"].get("ignore_paths", ()))
        manifest = Manifest(str(subject["name"]), files, ignore)
        expected = subject["digest"]["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise MalformedSignatureError(f"{sig_path}: the signed statement is malformed") from None
    if manifest.root_digest != expected:
        raise MalformedSignatureError(
            f"{sig_path}: the statement's subject digest does not match its resources"
        )
    return manifest


def verify_model(
    model: str | Path,
    keys: VerifyKeys,
    *,
    signature: str | Path | None = None,
    workers: int | None = None,
) -> Verified:
    """Check ``model`` against its signature and the trusted ``keys``.

    The signatures are checked before any file is hashed. Raises a subclass of
    :class:`~dlsec.errors.SignatureError`: ``SignatureMissingError``, ``MalformedSignatureError``,
    ``WrongKeyError``, ``BadSignatureError``, ``HybridSignatureError`` (one half missing or
    altered), ``FileChangedError``, ``FileMissingError`` or ``UnsignedFileError``.
    """
    model = Path(model)
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    if not model.exists():
        raise UsageError(f"{model}: no such file or directory")
    payload, sigs, hint = read_bundle(sig_path)
    _check_signatures(sig_path, payload, sigs, hint, keys)
    expected = _signed_manifest(sig_path, payload)
    # The signed statement's ignore list is authenticated: honour it, as model_signing does.
    actual = hash_model(model, signature=sig_path, workers=workers, ignore=expected.ignore_paths)
    changed = sorted(n for n in expected.files if n in actual.files and actual.files[n] != expected.files[n])
    missing = sorted(set(expected.files) - set(actual.files))
    extra = sorted(set(actual.files) - set(expected.files))
    if changed:
        raise FileChangedError(f"{model}: {_listing(changed)} changed since signing")
    if missing:
        raise FileMissingError(f"{model}: {_listing(missing)} signed but missing")
    if extra:
        raise UnsignedFileError(f"{model}: {_listing(extra)} not covered by the signature")
    return Verified(actual, sig_path, keys.fingerprints, keys.mldsa is not None)


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{shown}{more}"
