"""C2PA provenance for generated images: sign a manifest into each PNG, verify it with c2pa-python.

Signing credentials live under ``<home>/keys/c2pa/``, created on first use (or by ``dlsec keys c2pa
create``), rotated by ``dlsec keys c2pa rotate``, with pyca/cryptography (nothing is hand-rolled;
c2pa-python's native library signs and verifies)::

    signer.chain.pem   the end-entity certificate, then the intermediate CA (what C2PA embeds)
    signer.key.pem     the end-entity ECDSA P-256 key, PKCS#8 (mode 0600)
    trust/*.pem        the trust list: root CA certificates whose chains dlsec accepts

The chain follows the C2PA certificate profile (spec 2.x section 14.5, as c2pa-rs checks it):
X.509 v3, ECDSA with SHA-256 on P-256, a self-signed root kept out of the embedded chain, an
intermediate CA, and an end-entity certificate with a critical ``digitalSignature`` key usage,
extended key usages emailProtection and documentSigning, and both key identifiers. The root and
intermediate private keys are discarded once the end-entity certificate is issued: no CA key
rests on disk, and a new chain means a new root added to the trust list.

The end-entity key is stored unencrypted (mode 0600), like a service's TLS key: a generator
stamps every output unattended (the gateway will too), so no passphrase prompt can sit in the
path. Verification needs no secret.

Verification reads the manifest with c2pa-python's own :class:`c2pa.Reader`, trusting only the
roots in the trust list, with remote manifest and OCSP fetches off (never a download at run
time), and fails closed: a missing manifest, a hash mismatch, a bad signature or a signer
outside the trust list each raise their own :class:`~dlsec.errors.SecurityFinding`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsec.core.home import default_key_dir
from dlsec.errors import DataError, KeyFileError, SecurityFinding
from dlsec.fsutil import atomic_write_bytes

__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "GENERATOR_ASSERTION",
    "ContentTamperedError",
    "GeneratorInfo",
    "InvalidManifestError",
    "ManifestMissingError",
    "ProvenanceError",
    "ProvenanceReport",
    "UntrustedSignerError",
    "c2pa_key_dir",
    "c2pa_signer_info",
    "ensure_c2pa_signer",
    "new_c2pa_chain",
    "rotate_c2pa_signer",
    "trust_c2pa_root",
    "sign_image",
    "verify_provenance",
]

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR_ASSERTION = "org.dlsec.generator"
CHAIN_FILE = "signer.chain.pem"
KEY_FILE = "signer.key.pem"
TRUST_DIR = "trust"
_VALIDITY = dt.timedelta(days=730)
_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# Reading never fetches: no remote manifests, no OCSP.
_NO_FETCH = {"remote_manifest_fetch": False, "ocsp_fetch": False}


class ProvenanceError(SecurityFinding):
    """A generated image's C2PA provenance does not verify. Subclasses say why."""


class ManifestMissingError(ProvenanceError):
    """The image carries no C2PA manifest (never signed, or stripped)."""


class ContentTamperedError(ProvenanceError):
    """The image's bytes no longer match the hash its manifest signed (pixels changed)."""


class UntrustedSignerError(ProvenanceError):
    """The manifest's signature verifies, but its certificate chain is not in dlsec's trust list."""


class InvalidManifestError(ProvenanceError):
    """The manifest is malformed, its signature does not verify, or its certificate is unusable."""


@dataclass(frozen=True)
class GeneratorInfo:
    """What a manifest records about the generator that made an image."""

    name: str
    version: str
    weights_sha256: str


@dataclass(frozen=True)
class ProvenanceReport:
    """A verified manifest: who signed it and what it says about the generator."""

    path: str
    state: str
    signer: str
    generator: dict[str, Any]
    digital_source_type: str | None
    claim_generator: str
    validation: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "valid": True,
            "state": self.state,
            "signer": self.signer,
            "generator": self.generator,
            "digital_source_type": self.digital_source_type,
            "claim_generator": self.claim_generator,
        }


# --------------------------------------------------------------------------- credentials


def c2pa_key_dir(home: str | Path | None = None) -> Path:
    """``<home>/keys/c2pa``: the signing chain, its key and the trust list."""
    return default_key_dir(home) / "c2pa"


def new_c2pa_chain(common_name: str = "dlsec generator") -> tuple[bytes, bytes, bytes]:
    """A fresh root -> intermediate -> end-entity chain for C2PA signing.

    Returns ``(root_pem, chain_pem, key_pem)``: the root certificate (a trust anchor), the
    end-entity then intermediate certificates (what a manifest embeds), and the end-entity's
    unencrypted PKCS#8 key. The CA keys are not returned.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dlsec"),
            ]
        )

    def usage(*, signer: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not signer,
            crl_sign=not signer,
            encipher_only=False,
            decipher_only=False,
        )

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        path_length: int | None,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
            .add_extension(usage(signer=not ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        )
        if not ca:
            ekus = [ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier(_DOCUMENT_SIGNING)]
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    tag = os.urandom(4).hex()
    root = issue(
        f"dlsec C2PA root {tag}", root_key, f"dlsec C2PA root {tag}", root_key, path_length=1, ca=True
    )
    inter = issue(f"dlsec C2PA CA {tag}", ca_key, f"dlsec C2PA root {tag}", root_key, path_length=0, ca=True)
    leaf = issue(common_name, leaf_key, f"dlsec C2PA CA {tag}", ca_key, path_length=None, ca=False)
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return root.public_bytes(pem), leaf.public_bytes(pem) + inter.public_bytes(pem), key_pem


def _leaf_still_valid(chain_pem: bytes, key_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise KeyFileError(
            f"C2PA signing credentials are unreadable ({exc}); remove them to start anew"
        ) from exc
    if leaf.public_key() != key.public_key():
        raise KeyFileError("C2PA signing key does not match its certificate; remove both to start anew")
    return leaf.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def ensure_c2pa_signer(home: str | Path | None = None) -> tuple[bytes, bytes]:
    """The C2PA signing chain and key under the home, created (and their root trusted) if absent.

    Returns ``(chain_pem, key_pem)``. An expiring chain is replaced by a new one whose root joins
    the trust list; older roots stay trusted so that earlier images still verify.
    """
    folder = c2pa_key_dir(home)
    chain_path, key_path = folder / CHAIN_FILE, folder / KEY_FILE
    if chain_path.is_file() and key_path.is_file():
        chain_pem, key_pem = chain_path.read_bytes(), key_path.read_bytes()
        if _leaf_still_valid(chain_pem, key_pem):
            return chain_pem, key_pem
    return _install_chain(folder)


def _install_chain(folder: Path) -> tuple[bytes, bytes]:
    """A new chain under ``folder``: its root joins the trust list, then the key (0600) and chain."""
    root_pem, chain_pem, key_pem = new_c2pa_chain()
    atomic_write_bytes(folder / TRUST_DIR / f"{_fingerprint(root_pem)[:16]}.pem", root_pem)
    atomic_write_bytes(folder / KEY_FILE, key_pem, mode=0o600)
    atomic_write_bytes(folder / CHAIN_FILE, chain_pem)
    return chain_pem, key_pem


def _fingerprint(pem: bytes) -> str:
    """SHA-256 of a PEM certificate's DER bytes (what ``openssl x509 -fingerprint -sha256`` prints)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def _describe(cert: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes

    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(timespec="seconds"),
        "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def c2pa_signer_info(home: str | Path | None = None) -> dict[str, Any]:
    """What signs generated images: the end-entity and CA certificates, the key file's mode, the
    trust list (each root's subject and fingerprint, and whether the current chain leads to it).

    Raises:
        KeyFileError: no signer yet (``dlsec keys c2pa create``), or unreadable credentials.
    """
    from cryptography import x509

    folder = c2pa_key_dir(home)
    chain_path, key_path = folder / CHAIN_FILE, folder / KEY_FILE
    if not (chain_path.is_file() and key_path.is_file()):
        raise KeyFileError(f"no C2PA signer under {folder}; create one with: dlsec keys c2pa create")
    chain_pem = chain_path.read_bytes()
    valid = _leaf_still_valid(chain_pem, key_path.read_bytes())
    certs = x509.load_pem_x509_certificates(chain_pem)
    issuer_of_chain = certs[-1].issuer
    trust = []
    for path in sorted((folder / TRUST_DIR).glob("*.pem")):
        try:
            root = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError as exc:
            raise KeyFileError(f"{path}: unreadable trust anchor ({exc})") from exc
        trust.append({**_describe(root), "file": str(path), "current": root.subject == issuer_of_chain})
    return {
        "folder": str(folder),
        "signer": _describe(certs[0]),
        "chain": [_describe(c) for c in certs[1:]],
        "key_file": str(key_path),
        "key_mode": oct(key_path.stat().st_mode & 0o777),
        "valid": valid,
        "trusted": any(t["current"] for t in trust),
        "trust": trust,
    }


def rotate_c2pa_signer(home: str | Path | None = None, *, retire_old: bool = False) -> dict[str, Any]:
    """Replace the C2PA signing key and chain with a fresh one (new root, intermediate and leaf).

    The new root joins the trust list. The old roots stay trusted, so that images signed before
    still verify, unless ``retire_old`` (a compromised key): then they leave the trust list and
    images signed under them verify as signed by an untrusted signer.
    """
    folder = c2pa_key_dir(home)
    old = sorted((folder / TRUST_DIR).glob("*.pem")) if retire_old else []
    _install_chain(folder)
    info = c2pa_signer_info(home)
    current = {t["file"] for t in info["trust"] if t["current"]}
    retired = []
    for path in old:
        if str(path) not in current:
            path.unlink()
            retired.append(path.name)
    return {**c2pa_signer_info(home), "retired": retired}


def trust_c2pa_root(pem: str | Path, home: str | Path | None = None) -> dict[str, Any]:
    """Add a root CA certificate (PEM) to the C2PA trust list; returns its description.

    Raises:
        KeyFileError: not a readable PEM certificate, or not a CA certificate.
    """
    from cryptography import x509

    path = Path(pem)
    try:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a readable PEM certificate ({exc})") from exc
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise KeyFileError(
            f"{path}: not a CA certificate (basicConstraints CA:TRUE); trust roots, not signers"
        )
    fingerprint = _fingerprint(data)
    target = atomic_write_bytes(c2pa_key_dir(home) / TRUST_DIR / f"{fingerprint[:16]}.pem", data)
    return {**_describe(cert), "file": str(target)}


def _trust_anchors(home: str | Path | None, extra: list[Path] | None) -> str:
    folder = c2pa_key_dir(home) / TRUST_DIR
    paths = sorted(folder.glob("*.pem")) if folder.is_dir() else []
    paths += list(extra or [])
    pems = []
    for path in paths:
        try:
            pems.append(Path(path).read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: unreadable trust anchor ({exc})") from exc
    return "\n".join(pems)


# --------------------------------------------------------------------------- sign


def sign_image(
    png: bytes,
    generator: GeneratorInfo,
    *,
    title: str = "generated.png",
    home: str | Path | None = None,
    when: dt.datetime | None = None,
) -> bytes:
    """Embed a signed C2PA manifest in PNG bytes and return the signed PNG.

    The manifest holds a ``c2pa.created`` action with digitalSourceType
    ``trainedAlgorithmicMedia`` and the generator as software agent, and an
    ``org.dlsec.generator`` assertion with the generator's name, version, the SHA-256 of its
    weights and the time.

    Example:
        >>> info = GeneratorInfo("zoo-gan", "1", weights_sha256="ab" * 32)   # doctest: +SKIP
        >>> signed = sign_image(png_bytes, info)                             # doctest: +SKIP
    """
    import c2pa

    from dlsec import __version__

    if not png.startswith(_PNG):
        raise DataError("only PNG images are signed; write the image as PNG first")
    chain_pem, key_pem = ensure_c2pa_signer(home)
    created = (when or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    agent = {"name": generator.name, "version": generator.version}
    manifest = {
        "claim_generator_info": [{"name": "dlsec", "version": __version__}],
        "title": title,
        "format": "image/png",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": agent,
                            "when": created,
                        }
                    ]
                },
            },
            {
                "label": GENERATOR_ASSERTION,
                "data": {**agent, "weights_sha256": generator.weights_sha256, "created": created},
            },
        ],
    }
    settings = {"builder": {"thumbnail": {"enabled": False}}, "verify": _NO_FETCH}
    try:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain_pem, key_pem, None)
        )
        with c2pa.Context.from_dict(settings) as context, c2pa.Builder(manifest, context=context) as builder:
            out = io.BytesIO()
            builder.sign(signer, "image/png", io.BytesIO(png), out)
    except c2pa.C2paError as exc:
        raise DataError(f"C2PA signing failed: {exc}") from exc
    return out.getvalue()


# --------------------------------------------------------------------------- verify


def _decodes(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return False
    return True


def _codes(results: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    active = (results or {}).get("activeManifest") or {}
    out = list(active.get(kind) or [])
    for ingredient in (results or {}).get("ingredientDeltas") or []:
        out += list((ingredient.get("validationDeltas") or {}).get(kind) or [])
    return out


def verify_provenance(
    path: str | Path,
    *,
    home: str | Path | None = None,
    trust: list[Path] | None = None,
) -> ProvenanceReport:
    """Validate an image's C2PA manifest with c2pa-python's Reader; raise unless it is intact and trusted.

    The signer must chain to a root in dlsec's trust list (``<home>/keys/c2pa/trust``) or in
    ``trust`` (extra PEM files). An empty trust list trusts no one.

    Raises:
        DataError: the file is unreadable, not a PNG or JPEG, or not a decodable image (exit 2).
        ManifestMissingError: no manifest (never signed, or stripped).
        ContentTamperedError: the image bytes differ from what was signed.
        UntrustedSignerError: the signature verifies but its chain is not trusted.
        InvalidManifestError: any other validation failure (bad signature, malformed manifest).

    Example:
        >>> verify_provenance("out/sample-000.png").generator["name"]    # doctest: +SKIP
        'zoo-gan'
    """
    import c2pa

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if data.startswith(_PNG):
        mime = "image/png"
    elif data.startswith(_JPEG):
        mime = "image/jpeg"
    else:
        raise DataError(f"{path}: unsupported format (dlsec gen verify reads PNG and JPEG images)")
    settings: dict[str, Any] = {"verify": {"verify_trust": True, **_NO_FETCH}}
    anchors = _trust_anchors(home, trust)
    if anchors.strip():  # an empty list trusts no one (and c2pa refuses an empty PEM string)
        settings["trust"] = {"trust_anchors": anchors}
    try:
        with (
            c2pa.Context.from_dict(settings) as context,
            c2pa.Reader(mime, io.BytesIO(data), context=context) as reader,
        ):
            state = reader.get_validation_state() or ""
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
    except c2pa.C2paError.ManifestNotFound as exc:
        if not _decodes(data):
            raise DataError(f"{path}: corrupt image (it does not decode)") from exc
        raise ManifestMissingError(f"{path}: no C2PA manifest (never signed, or stripped)") from exc
    except c2pa.C2paError as exc:
        if not _decodes(data):
            raise DataError(f"{path}: corrupt image (it does not decode)") from exc
        raise InvalidManifestError(f"{path}: the C2PA manifest cannot be read ({exc})") from exc
    failures = _codes(results, "failure")
    codes = sorted({str(item.get("code", "")) for item in failures})
    if any(code.startswith("assertion.dataHash") or code.endswith(".mismatch") for code in codes):
        raise ContentTamperedError(f"{path}: content changed after signing ({', '.join(codes)})")
    if codes == ["signingCredential.untrusted"]:
        raise UntrustedSignerError(
            f"{path}: signed by a certificate chain that is not in dlsec's C2PA trust list"
        )
    if codes or state != "Trusted":
        detail = ", ".join(codes) or f"validation state {state or 'unknown'}"
        raise InvalidManifestError(f"{path}: the C2PA manifest does not validate ({detail})")
    if not _decodes(data):
        raise DataError(f"{path}: corrupt image (it does not decode)")
    generator: dict[str, Any] = {}
    source_type = None
    for assertion in manifest.get("assertions") or []:
        label = str(assertion.get("label", ""))
        if label == GENERATOR_ASSERTION:
            generator = dict(assertion.get("data") or {})
        elif label.startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                if action.get("action") == "c2pa.created":
                    source_type = action.get("digitalSourceType")
    signature = manifest.get("signature_info") or {}
    claim = manifest.get("claim_generator_info") or [{}]
    return ProvenanceReport(
        path=str(path),
        state=state,
        signer=str(signature.get("common_name") or signature.get("issuer") or ""),
        generator=generator,
        digital_source_type=source_type,
        claim_generator=" ".join(str(claim[0].get(k, "")) for k in ("name", "version")).strip(),
        validation=json.loads(json.dumps(results)),
    )
