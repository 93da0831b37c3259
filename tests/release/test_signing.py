"""Signing: keys, the model-signing layout, every way verification must fail, interoperability."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from dlsec.errors import (
    BadSignatureError,
    FileChangedError,
    FileMissingError,
    HybridSignatureError,
    KeyFileError,
    MalformedSignatureError,
    SignatureMissingError,
    UnsignedFileError,
    UsageError,
    WrongKeyError,
)
from dlsec.release import (
    generate_signing_keys,
    hash_model,
    load_signing_keys,
    load_verify_keys,
    sign_model,
    verify_model,
)

PASS = "correct horse battery staple"


@pytest.fixture(scope="module")
def keydirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("keys-a"), tmp_path_factory.mktemp("keys-b")
    generate_signing_keys(a, passphrase=PASS, scrypt_log_n=10, overwrite=True)
    generate_signing_keys(b, passphrase=PASS, scrypt_log_n=10, overwrite=True)
    return a, b


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "shards").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(3000))
    (root / "config.json").write_text('{"arch": "mlp"}')
    (root / "shards" / "part-0.bin").write_bytes(b"\x01" * 70000)
    return root


def _signed(model: Path, keydir: Path) -> Path:
    sig, _ = sign_model(model, load_signing_keys(keydir, passphrase=PASS))
    return sig


def _bundle(sig: Path) -> dict:
    return json.loads(sig.read_text())


def _write(sig: Path, bundle: dict) -> None:
    sig.write_text(json.dumps(bundle))


def test_keys_are_encrypted_pem_with_private_files_owner_only(keydirs):
    a, _ = keydirs
    for name in ("ecdsa-p256.key.pem", "ml-dsa-65.key.pem"):
        text = (a / name).read_text()
        assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert stat.S_IMODE((a / name).stat().st_mode) == 0o600
    assert (a / "ecdsa-p256.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signing_keys(a, passphrase="not it")
    record = json.loads((a / "keys.json").read_text())
    pub = load_verify_keys(a)
    pem = (a / "ecdsa-p256.pub.pem").read_bytes()
    assert record["ecdsa-p256"]["fingerprint"] == hashlib.sha256(pem).hexdigest()
    assert pub.fingerprints["ml-dsa-65"] == record["ml-dsa-65"]["fingerprint"]


def test_manifest_digests_and_root_match_a_hand_computation(model_dir):
    manifest = hash_model(model_dir)
    files = {
        "config.json": model_dir / "config.json",
        "model.safetensors": model_dir / "model.safetensors",
        "shards/part-0.bin": model_dir / "shards" / "part-0.bin",
    }
    assert manifest.files == {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
    root = hashlib.sha256(b"".join(bytes.fromhex(manifest.files[k]) for k in sorted(files))).hexdigest()
    assert manifest.root_digest == root
    statement = manifest.statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"] == [{"name": "model", "digest": {"sha256": root}}]


def test_sign_then_verify_directory_and_file(model_dir, keydirs):
    a, _ = keydirs
    sig = _signed(model_dir, a)
    assert sig == model_dir / "model.sig"
    bundle = _bundle(sig)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    kinds = [s["keyid"].split(":")[0] for s in bundle["dsseEnvelope"]["signatures"]]
    assert kinds == ["ecdsa-p256", "ml-dsa-65"]
    verified = verify_model(model_dir, load_verify_keys(a))
    assert verified.hybrid and len(verified.manifest.files) == 3
    single = model_dir / "model.safetensors"
    file_sig = _signed(single, a)
    assert file_sig.name == "model.safetensors.sig"
    assert verify_model(single, load_verify_keys(a)).manifest.files.keys() == {"."}


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "shards/part-0.bin"])
def test_one_flipped_byte_in_any_file_fails_naming_it(model_dir, keydirs, victim):
    a, _ = keydirs
    _signed(model_dir, a)
    path = model_dir / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FileChangedError, match=victim):
        verify_model(model_dir, load_verify_keys(a))


def test_removed_and_added_files_fail_with_their_own_errors(model_dir, keydirs):
    a, _ = keydirs
    _signed(model_dir, a)
    (model_dir / "extra.py").write_text("print('hi')")
    with pytest.raises(UnsignedFileError, match="extra.py"):
        verify_model(model_dir, load_verify_keys(a))
    (model_dir / "extra.py").unlink()
    (model_dir / "config.json").unlink()
    with pytest.raises(FileMissingError, match="config.json"):
        verify_model(model_dir, load_verify_keys(a))


def test_wrong_key_missing_and_malformed_signatures(model_dir, keydirs):
    a, b = keydirs
    with pytest.raises(SignatureMissingError):
        verify_model(model_dir, load_verify_keys(a))
    sig = _signed(model_dir, a)
    with pytest.raises(WrongKeyError):
        verify_model(model_dir, load_verify_keys(b))
    good = sig.read_text()
    sig.write_text(good[: len(good) // 2])
    with pytest.raises(MalformedSignatureError):
        verify_model(model_dir, load_verify_keys(a))
    bundle = json.loads(good)
    bundle["dsseEnvelope"]["payload"] = "%%%not base64"
    _write(sig, bundle)
    with pytest.raises(MalformedSignatureError):
        verify_model(model_dir, load_verify_keys(a))


def test_swapped_signature_and_altered_statement_fail(model_dir, keydirs, tmp_path):
    a, _ = keydirs
    sig = _signed(model_dir, a)
    other = tmp_path / "other"
    other.mkdir()
    (other / "w.bin").write_bytes(b"other weights")
    other_bundle = _bundle(_signed(other, a))
    bundle = _bundle(sig)
    # The signature values of another model, over our statement: the ECDSA half fails first.
    bundle["dsseEnvelope"]["signatures"] = other_bundle["dsseEnvelope"]["signatures"]
    _write(sig, bundle)
    with pytest.raises(BadSignatureError):
        verify_model(model_dir, load_verify_keys(a))
    # A statement edited to match tampered files: the signatures no longer cover it.
    bundle = _bundle(_signed(model_dir, a))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _write(sig, bundle)
    with pytest.raises(BadSignatureError):
        verify_model(model_dir, load_verify_keys(a))
    # Another model's whole, valid signature: the signature checks, the files do not.
    _write(sig, other_bundle)
    with pytest.raises((FileChangedError, FileMissingError)):
        verify_model(model_dir, load_verify_keys(a))


@pytest.mark.parametrize("half", [0, 1])
def test_hybrid_fails_when_either_half_is_removed_or_altered(model_dir, keydirs, half):
    a, _ = keydirs
    sig = _signed(model_dir, a)
    bundle = _bundle(sig)
    removed = json.loads(json.dumps(bundle))
    del removed["dsseEnvelope"]["signatures"][half]
    _write(sig, removed)
    with pytest.raises(HybridSignatureError):
        verify_model(model_dir, load_verify_keys(a))
    altered = json.loads(json.dumps(bundle))
    raw = bytearray(base64.b64decode(altered["dsseEnvelope"]["signatures"][half]["sig"]))
    raw[10] ^= 0x40
    altered["dsseEnvelope"]["signatures"][half]["sig"] = base64.b64encode(bytes(raw)).decode()
    _write(sig, altered)
    with pytest.raises(BadSignatureError if half == 0 else HybridSignatureError):
        verify_model(model_dir, load_verify_keys(a))


def test_model_signing_verifies_our_signature_and_we_verify_theirs(model_dir, keydirs, tmp_path):
    verifying = pytest.importorskip("model_signing.verifying")
    signing = pytest.importorskip("model_signing.signing")
    hashing = pytest.importorskip("model_signing.hashing")
    a, _ = keydirs
    sig = _signed(model_dir, a)

    def theirs_verify() -> None:
        verifying.Config().use_elliptic_key_verifier(public_key=a / "ecdsa-p256.pub.pem").verify(
            model_dir, sig
        )

    theirs_verify()  # raises on failure
    original = (model_dir / "config.json").read_text()
    (model_dir / "config.json").write_text('{"arch": "evil"}')
    with pytest.raises(ValueError):
        theirs_verify()
    (model_dir / "config.json").write_text(original)
    # The other way: model_signing signs with a plain PEM key, we verify (classical only).
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = ec.generate_private_key(ec.SECP256R1())
    key_path, pub_path = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pub_path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    theirs = tmp_path / "theirs.sig"
    signing.Config().use_elliptic_key_signer(private_key=key_path).set_hashing_config(
        hashing.Config().set_ignored_paths(paths=[theirs, model_dir / "model.sig"])
    ).sign(model_dir, theirs)
    keys = load_verify_keys(pub_path, require_hybrid=False)
    assert verify_model(model_dir, keys, signature=theirs).manifest.files.keys() >= {"config.json"}
    with pytest.raises(KeyFileError):
        load_verify_keys(pub_path)  # the default demands the hybrid pair


def _mutate(sig: Path, change) -> None:  # noqa: ANN001
    bundle = _bundle(sig)
    change(bundle["dsseEnvelope"]["signatures"])
    _write(sig, bundle)


def _flip(entry: dict) -> None:
    raw = bytearray(base64.b64decode(entry["sig"]))
    raw[10] ^= 0x40
    entry["sig"] = base64.b64encode(bytes(raw)).decode()


def test_each_signature_failure_names_the_signature_and_what_is_wrong(model_dir, keydirs):
    """The one-line messages, exactly (the README promises they name the file or key).

    Written against the mutants mutmut left alive (benchmarks/mutation.py --only signing).
    """
    a, b = keydirs
    sig = _signed(model_dir, a)
    good = sig.read_text()
    keys = load_verify_keys(a)
    ec_fp = keys.fingerprints["ecdsa-p256"]
    cases = [
        (lambda s: s.clear(), BadSignatureError, "the envelope holds no signature"),
        (lambda s: s.reverse(), HybridSignatureError, "the ECDSA P-256 signature (the first one) is missing"),
        (lambda s: _flip(s[0]), BadSignatureError,
         "the ECDSA signature does not verify (the signature or the signed statement was altered)"),
        (lambda s: s.pop(), HybridSignatureError, "the ML-DSA-65 half of the hybrid signature is missing"),
        (lambda s: _flip(s[1]), HybridSignatureError,
         "the ML-DSA-65 half of the hybrid signature does not verify"),
        (lambda s: s[0].update(sig=5), MalformedSignatureError, "the ECDSA signature is not a base64 string"),
        (lambda s: s[1].update(sig="%%"), MalformedSignatureError,
         "the ML-DSA-65 signature is not valid base64"),
        (lambda s: s[1].update(keyid=s[1]["keyid"][:-1] + ("1" if s[1]["keyid"][-1] == "0" else "0")),
         WrongKeyError,
         "the ML-DSA-65 signature was made by another key than the trusted one"),
    ]  # fmt: skip
    for change, error, text in cases:
        sig.write_text(good)
        _mutate(sig, change)
        with pytest.raises(error) as caught:
            verify_model(model_dir, keys)
        assert str(caught.value) in (f"{sig}: {text}", text), (text, str(caught.value))
    sig.write_text(good)
    other = load_verify_keys(b)
    with pytest.raises(WrongKeyError) as caught:
        verify_model(model_dir, other)
    other_fp = other.fingerprints["ecdsa-p256"]
    assert str(caught.value) == (
        f"{sig}: signed by key {ec_fp[:16]}..., not by the trusted ECDSA key {other_fp[:16]}..."
    )
    with pytest.raises(UsageError, match=r"nowhere: no such file or directory$"):
        verify_model(model_dir.parent / "nowhere", keys)


def test_an_ecdsa_signature_without_a_keyid_is_the_classical_half(model_dir, keydirs):
    a, _ = keydirs
    sig = _signed(model_dir, a)
    _mutate(sig, lambda s: (s.pop(), s[0].pop("keyid")))
    hybrid = load_verify_keys(a)
    verified = verify_model(model_dir, type(hybrid)(hybrid.ecdsa, None))
    assert verified.hybrid is False


def test_a_signature_stored_inside_the_model_under_another_name_is_not_a_model_file(model_dir, keydirs):
    a, _ = keydirs
    custom = model_dir / "release.sig"
    sign_model(model_dir, load_signing_keys(a, passphrase=PASS), signature=custom)
    verified = verify_model(model_dir, load_verify_keys(a), signature=custom)
    assert set(verified.manifest.files) == {"model.safetensors", "config.json", "shards/part-0.bin"}
    assert verified.to_dict() == {
        "verified": True,
        "name": "model",
        "root_digest": verified.manifest.root_digest,
        "files": 3,
        "signature": str(custom),
        "keys": load_verify_keys(a).fingerprints,
        "hybrid": True,
    }


# ---------------------------------------------------------------- written against mutation survivors
# (benchmarks/mutation.py --only signing): the exact statement, the ignore rules, the bundle's
# canonical bytes and every malformed-bundle message.


def _resign(sig: Path, keydir: Path, statement: dict) -> None:
    """Replace the bundle's statement with ``statement``, signed properly by ``keydir``'s keys."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from dlsec.release._signing import pae

    keys = load_signing_keys(keydir, passphrase=PASS)
    payload = json.dumps(statement).encode()
    bundle = _bundle(sig)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    first, second = bundle["dsseEnvelope"]["signatures"]
    first["sig"] = base64.b64encode(keys.ecdsa.sign(pae(payload), ec.ECDSA(hashes.SHA256()))).decode()
    second["sig"] = base64.b64encode(keys.mldsa.sign(pae(payload))).decode()
    _write(sig, bundle)


def test_the_statement_and_the_bundle_are_exactly_the_model_signing_format(model_dir, keydirs):
    a, _ = keydirs
    sig, manifest = sign_model(model_dir, load_signing_keys(a, passphrase=PASS))
    text = sig.read_text()
    bundle = json.loads(text)
    assert text == json.dumps(bundle, indent=2) + "\n"  # the file as written, two-space indent
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    statement = json.loads(payload)
    # Canonical JSON: sorted keys, no spaces, the bytes the signatures cover.
    assert payload == json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore", "model.sig"],
    }
    assert statement == manifest.statement()
    # A single file lists no ignored paths.
    single = hash_model(model_dir / "config.json")
    assert single.ignore_paths == ()
    assert "ignore_paths" not in single.statement()["predicate"]["serialization"]
    assert list(single.files) == ["."]


def test_ignored_paths_leave_out_directories_and_files_and_only_them(tmp_path):
    root = tmp_path / "m"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref")
    (root / "logs").mkdir()
    (root / "logs" / "a.txt").write_text("log")
    for name in ("a.bin", "b.bin", "c.bin"):
        (root / name).write_bytes(name.encode())
    # A directory given with or without its trailing slash; the first file in name order.
    for ignore in (("logs", "a.bin"), ("logs/", "/a.bin")):
        manifest = hash_model(root, ignore=ignore)
        assert sorted(manifest.files) == ["b.bin", "c.bin"], ignore
        assert set(manifest.ignore_paths) >= {".git", "logs", "a.bin"}
    # Only slashes are stripped from an ignore path, never other characters at its ends.
    (root / "X.binX").write_bytes(b"x")
    assert sorted(hash_model(root, ignore=("X.binX", "logs")).files) == ["a.bin", "b.bin", "c.bin"]
    (root / "X.binX").unlink()
    with pytest.raises(UsageError) as caught:
        hash_model(root, ignore=("logs", "a.bin", "b.bin", "c.bin"))
    assert str(caught.value) == f"{root} holds no files to sign"


def test_links_and_missing_models_are_refused_with_their_messages(tmp_path):
    root = tmp_path / "m"
    (root / "real").mkdir(parents=True)
    (root / "w.bin").write_bytes(b"w")
    (tmp_path / "outside").mkdir()
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(UsageError) as caught:
        hash_model(root)
    linked = root / "linked"
    assert str(caught.value) == f"{linked} is a symbolic link; models with links cannot be signed safely"
    (root / "linked").unlink()
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    with pytest.raises(UsageError) as caught:
        hash_model(tmp_path / "alias")
    assert str(caught.value) == f"{tmp_path / 'alias'} is a symbolic link; sign the real file or directory"
    with pytest.raises(UsageError) as caught:
        hash_model(tmp_path / "nowhere")
    assert str(caught.value) == f"{tmp_path / 'nowhere'}: no such file or directory"


def test_re_signing_with_a_signature_inside_the_model_never_signs_the_old_signature(model_dir, keydirs):
    a, _ = keydirs
    custom = model_dir / "release.sig"
    keys = load_signing_keys(a, passphrase=PASS)
    sign_model(model_dir, keys, signature=custom)
    _, manifest = sign_model(model_dir, keys, signature=custom)  # the old bundle is there now
    assert "release.sig" in manifest.ignore_paths and "release.sig" not in manifest.files
    assert verify_model(model_dir, load_verify_keys(a), signature=custom).manifest.files == manifest.files


def test_changed_files_are_listed_three_by_name_then_counted(tmp_path, keydirs):
    a, _ = keydirs
    root = tmp_path / "m"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}.bin").write_bytes(b"%d" % i)
    sig = _signed(root, a)
    keys = load_verify_keys(a)
    for i in range(3):
        (root / f"f{i}.bin").write_bytes(b"changed")
    with pytest.raises(FileChangedError) as caught:
        verify_model(root, keys)
    assert str(caught.value) == f"{root}: 'f0.bin', 'f1.bin', 'f2.bin' changed since signing"
    (root / "f3.bin").write_bytes(b"changed")  # four: the fourth is counted, not named
    with pytest.raises(FileChangedError) as caught:
        verify_model(root, keys)
    assert str(caught.value) == f"{root}: 'f0.bin', 'f1.bin', 'f2.bin' and 1 more changed since signing"
    for i in range(5):
        (root / f"f{i}.bin").write_bytes(b"changed")
    with pytest.raises(FileChangedError) as caught:
        verify_model(root, keys)
    assert str(caught.value) == f"{root}: 'f0.bin', 'f1.bin', 'f2.bin' and 2 more changed since signing"
    assert sig.exists()


def test_each_malformed_bundle_has_its_own_message(model_dir, keydirs):
    a, _ = keydirs
    keys = load_verify_keys(a)
    sig = model_dir / "model.sig"
    with pytest.raises(SignatureMissingError) as caught:
        verify_model(model_dir, keys)
    assert str(caught.value) == f"{sig}: no signature; sign the model with `dlsec sign`"
    _signed(model_dir, a)
    good = sig.read_text()
    bundle_fields = "not a model-signing bundle (bad JSON or missing fields)"
    cases = [
        (lambda b: b.update(mediaType="text/plain"), "not a Sigstore bundle v0.3 (media type 'text/plain')"),
        (lambda b: b["dsseEnvelope"].update(payloadType="text/plain"),
         "the DSSE payload is not an in-toto statement"),
        (lambda b: b["dsseEnvelope"].update(signatures=[1, 2]), bundle_fields),
        (lambda b: b["dsseEnvelope"].update(signatures={}), bundle_fields),
        (lambda b: b["verificationMaterial"]["publicKey"].update(hint=7), bundle_fields),
        (lambda b: b.pop("dsseEnvelope"), bundle_fields),
        (lambda b: b["dsseEnvelope"].update(payload="%%%"), "the payload is not valid base64"),
    ]  # fmt: skip
    for change, text in cases:
        bundle = json.loads(good)
        change(bundle)
        _write(sig, bundle)
        with pytest.raises(MalformedSignatureError) as caught:
            verify_model(model_dir, keys)
        assert str(caught.value) == f"{sig}: {text}"
    sig.unlink()
    sig.mkdir()  # unreadable as a file
    with pytest.raises(MalformedSignatureError) as caught:
        verify_model(model_dir, keys)
    assert str(caught.value).startswith(f"{sig}: cannot read the signature (")


def test_each_malformed_signed_statement_has_its_own_message(model_dir, keydirs):
    a, _ = keydirs
    keys = load_verify_keys(a)
    sig = _signed(model_dir, a)
    good = json.loads(base64.b64decode(_bundle(sig)["dsseEnvelope"]["payload"]))
    first = good["predicate"]["resources"][0]["name"]

    def resource(**change: str) -> dict:
        s = json.loads(json.dumps(good))
        s["predicate"]["resources"][0].update(change)
        return s

    wrong_predicate = {**good, "predicateType": "https://example.com/other"}
    wrong_subject = json.loads(json.dumps(good))
    wrong_subject["subject"][0]["digest"]["sha256"] = "00" * 32
    cases = [
        (wrong_predicate, "not a model-signing v1.0 in-toto statement"),
        ({**good, "_type": "https://example.com/other"}, "not a model-signing v1.0 in-toto statement"),
        # The right length under another algorithm's name, and SHA-256 with the wrong length.
        (resource(algorithm="sha512"), f"resource {first!r} is not a SHA-256 digest"),
        (resource(digest="00" * 31), f"resource {first!r} is not a SHA-256 digest"),
        ({k: v for k, v in good.items() if k != "subject"}, "the signed statement is malformed"),
        (wrong_subject, "the statement's subject digest does not match its resources"),
    ]
    for statement, text in cases:
        _resign(sig, a, statement)
        with pytest.raises(MalformedSignatureError) as caught:
            verify_model(model_dir, keys)
        assert str(caught.value) == f"{sig}: {text}"
    _resign(sig, a, good)  # the helper itself signs correctly
    assert verify_model(model_dir, keys).manifest.files == {
        r["name"]: r["digest"] for r in good["predicate"]["resources"]
    }


def test_a_signature_moved_into_the_model_after_signing_is_not_a_model_file(model_dir, keydirs, tmp_path):
    """Signed elsewhere, so the statement's ignore list does not name it; verification still leaves
    the signature file itself out of the files it hashes."""
    a, _ = keydirs
    outside = tmp_path / "elsewhere.sig"
    _, manifest = sign_model(model_dir, load_signing_keys(a, passphrase=PASS), signature=outside)
    assert "release.sig" not in manifest.ignore_paths
    inside = model_dir / "release.sig"
    inside.write_bytes(outside.read_bytes())
    verified = verify_model(model_dir, load_verify_keys(a), signature=inside)
    assert verified.manifest.files == manifest.files and "release.sig" not in verified.manifest.files
