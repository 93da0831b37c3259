"""Encryption at rest: round trips; every flipped byte, truncation, reordering and wrong key fails."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from dlsec.errors import DecryptionError, KeyFileError, UsageError
from dlsec.release import (
    Identity,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    generate_recipient_keys,
    load_identity,
    load_recipient,
    read_header,
)

CHUNK = 4096
FAST = {"chunk_size": CHUNK, "scrypt_log_n": 10}  # tests only: the default N is 2**17


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def identity() -> Identity:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    return Identity(x25519.X25519PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate())


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_passphrase_round_trip(tmp_path: Path, size: int) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(size))
    enc = encrypt_file(src, tmp_path / "model.enc", passphrase="correct horse", **FAST)
    header = read_header(enc)
    assert header.mode == "passphrase" and header.chunk_size == CHUNK
    blocks = max(1, -(-size // CHUNK))
    assert enc.stat().st_size == len(header.raw) + size + 16 * blocks
    out = decrypt_file(enc, tmp_path / "back.bin", passphrase="correct horse")
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_recipient_round_trip_with_key_files(tmp_path: Path) -> None:
    pub, key = generate_recipient_keys(tmp_path / "keys" / "alice", passphrase="alice pass")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN DLSEC IDENTITY" in key.read_bytes() and b"PRIVATE KEY" not in key.read_bytes()
    src = tmp_path / "data.npz"
    src.write_bytes(os.urandom(10_000))
    enc = encrypt_file(src, tmp_path / "data.enc", recipient=pub, chunk_size=CHUNK)
    header = read_header(enc)
    assert header.mode == "recipient" and header.key_id == load_recipient(pub).key_id
    out = decrypt_file(enc, tmp_path / "data.out", identity=key, identity_passphrase="alice pass")
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(DecryptionError, match="wrong passphrase"):
        load_identity(key, passphrase="not alice")
    identity = load_identity(key, passphrase="alice pass")
    assert identity.x25519.private_bytes_raw() not in key.read_bytes()
    tampered = tmp_path / "tampered.key.pem"
    lines = key.read_bytes().splitlines(keepends=True)
    lines[-2] = (
        lines[-2][:5] + (b"A" if lines[-2][5:6] != b"A" else b"B") + lines[-2][6:]
    )  # in the sealed keys
    tampered.write_bytes(b"".join(lines))
    with pytest.raises(DecryptionError):
        load_identity(tampered, passphrase="alice pass")
    with pytest.raises(KeyFileError, match="not a dlsec identity"):
        load_identity(pub, passphrase="alice pass")
    with pytest.raises(UsageError, match="exists"):
        generate_recipient_keys(tmp_path / "keys" / "alice", passphrase="x")


def _sealed(tmp_path: Path, identity: Identity, size: int) -> tuple[Path, bytes]:
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(size))
    enc = encrypt_file(src, tmp_path / "sealed.enc", recipient=identity.recipient(), chunk_size=CHUNK)
    return enc, src.read_bytes()


def _fails(tmp_path: Path, data: bytes, identity: Identity) -> bool:
    bad = tmp_path / "tampered.enc"
    bad.write_bytes(data)
    out = tmp_path / "out.bin"
    try:
        decrypt_file(bad, out, identity=identity, overwrite=True)
    except DecryptionError:
        return not out.exists() and not _leftovers(tmp_path)
    return False


def test_every_single_byte_flip_fails(tmp_path: Path, identity: Identity) -> None:
    enc, plain = _sealed(tmp_path, identity, CHUNK + 100)  # two chunks
    data = enc.read_bytes()

    def opens(blob: bytes) -> bool:
        try:
            decrypt_stream(io.BytesIO(blob), io.BytesIO(), identity=identity)
        except DecryptionError:
            return False
        return True

    assert opens(data)
    survivors = [
        i for i in range(len(data)) if opens(data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1 :])
    ]
    assert not survivors
    # Through the file API: a sample of flips (header, both chunks, both tags) leaves no output.
    for i in (0, 12, 40, len(data) // 2, len(data) - CHUNK - 20, len(data) - 1):
        flipped = bytearray(data)
        flipped[i] ^= 0x80
        assert _fails(tmp_path, bytes(flipped), identity), i
    assert decrypt_file(enc, tmp_path / "ok.bin", identity=identity).read_bytes() == plain


def test_truncation_reordering_and_appending_fail(tmp_path: Path, identity: Identity) -> None:
    enc, plain = _sealed(tmp_path, identity, 3 * CHUNK + 50)
    data = enc.read_bytes()
    head_len = len(read_header(enc).raw)
    record = CHUNK + 16
    body = data[head_len:]
    chunks = [body[i : i + record] for i in range(0, len(body), record)]
    assert len(chunks) == 4
    cases = {
        "drop last chunk": data[: head_len + 3 * record],
        "drop a middle chunk": data[:head_len] + chunks[0] + chunks[2] + chunks[3],
        "swap two chunks": data[:head_len] + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "append a chunk": data + chunks[1],
        "repeat the final chunk": data + chunks[3],
        "cut mid-chunk": data[: head_len + record + 100],
        "cut one byte": data[:-1],
        "header only": data[:head_len],
        "cut inside the header": data[: head_len - 5],
        "extra byte": data + b"\x00",
    }
    for name, tampered in cases.items():
        assert _fails(tmp_path, tampered, identity), name
    out = decrypt_file(enc, tmp_path / "ok.bin", identity=identity)
    assert out.read_bytes() == plain


def test_wrong_keys_fail_and_write_nothing(tmp_path: Path, identity: Identity) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"weights" * 1000)
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="right", **FAST)
    out = tmp_path / "out.bin"
    with pytest.raises(DecryptionError, match="wrong key or passphrase"):
        decrypt_file(enc, out, passphrase="wrong")
    assert not out.exists() and not _leftovers(tmp_path)
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    other = Identity(x25519.X25519PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate())
    enc2 = encrypt_file(src, tmp_path / "r.enc", recipient=identity.recipient(), chunk_size=CHUNK)
    with pytest.raises(DecryptionError, match="another recipient"):
        decrypt_file(enc2, out, identity=other)
    with pytest.raises(UsageError, match="identity"):
        decrypt_file(enc2, out, passphrase="right")
    with pytest.raises(UsageError, match="passphrase"):
        decrypt_file(enc, out, identity=identity)
    with pytest.raises(DecryptionError, match="not a dlsec-encrypted file"):
        decrypt_file(src, out, passphrase="right")
    assert not out.exists() and not _leftovers(tmp_path)


def test_key_files_and_arguments_are_checked(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"x")
    with pytest.raises(UsageError, match="either a passphrase or a recipient"):
        encrypt_file(src, tmp_path / "o.enc")
    with pytest.raises(KeyFileError):
        encrypt_file(src, tmp_path / "o.enc", recipient=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(KeyFileError, match="two PEM blocks"):
        load_recipient(junk)
    with pytest.raises(UsageError, match="power of two"):
        encrypt_file(src, tmp_path / "o.enc", passphrase="p", chunk_size=1000)
    with pytest.raises(UsageError, match="empty"):
        encrypt_file(src, tmp_path / "o.enc", passphrase="")
    encrypt_file(src, tmp_path / "o.enc", passphrase="p", **FAST)
    with pytest.raises(UsageError, match="exists"):
        encrypt_file(src, tmp_path / "o.enc", passphrase="p", **FAST)


# ------------------------------------------------------------- written against mutation survivors
# (benchmarks/mutation.py --only crypto): every header field's bounds, each with its message; the
# identity file's bounds; the key derivation against an independent scrypt; the key-file layout.


def _tamper_message(what: str) -> str:
    return f"not a dlsec-encrypted file, or its header was tampered with ({what})"


def _header(
    *, magic: bytes = b"DLSECENC", version: int = 1, mode: int = 1, log2: int = 12, reserved: int = 0
) -> bytes:
    from dlsec.release._crypto import _FIXED

    return _FIXED.pack(magic, version, mode, log2, reserved, b"\x00" * 7)


def _scrypt_part(log_n: int = 10, r: int = 8, p: int = 1) -> bytes:
    from dlsec.release._crypto import _PASS

    return _PASS.pack(b"s" * 16, log_n, r, p)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (_header()[:-1], "too short"),
        (_header(magic=b"DLSECENX") + _scrypt_part(), "bad magic, version or chunk size"),
        (_header(version=2) + _scrypt_part(), "bad magic, version or chunk size"),
        (_header(reserved=1) + _scrypt_part(), "bad magic, version or chunk size"),
        (_header(log2=11) + _scrypt_part(), "bad magic, version or chunk size"),
        (_header(log2=27) + _scrypt_part(), "bad magic, version or chunk size"),
        (_header() + _scrypt_part()[:-1], "truncated"),
        (_header(mode=2) + b"\x00" * 100, "truncated"),
        (_header() + _scrypt_part(log_n=9), "unreasonable scrypt parameters"),
        (_header() + _scrypt_part(log_n=23), "unreasonable scrypt parameters"),
        (_header() + _scrypt_part(r=0), "unreasonable scrypt parameters"),
        (_header() + _scrypt_part(r=33), "unreasonable scrypt parameters"),
        (_header() + _scrypt_part(p=0), "unreasonable scrypt parameters"),
        (_header() + _scrypt_part(p=17), "unreasonable scrypt parameters"),
        (_header(mode=3) + _scrypt_part(), "unknown mode 3"),
    ],
)
def test_each_bad_header_field_is_refused_with_its_reason(tmp_path: Path, data: bytes, what: str) -> None:
    path = tmp_path / "bad.enc"
    path.write_bytes(data)
    with pytest.raises(DecryptionError) as caught:
        read_header(path)
    assert str(caught.value) == _tamper_message(what)


@pytest.mark.parametrize(("log2", "log_n", "r", "p"), [(12, 10, 1, 1), (26, 22, 32, 16)])
def test_header_bounds_are_inclusive(tmp_path: Path, log2: int, log_n: int, r: int, p: int) -> None:
    path = tmp_path / "edge.enc"
    path.write_bytes(_header(log2=log2) + _scrypt_part(log_n, r, p))
    header = read_header(path)
    assert (header.mode, header.chunk_size, header.scrypt_log_n, header.scrypt_r, header.scrypt_p) == (
        "passphrase",
        1 << log2,
        log_n,
        r,
        p,
    )


def test_the_file_key_is_scrypt_as_specified() -> None:
    import hashlib

    from dlsec.release._crypto import _scrypt

    salt = bytes(range(16))
    expected = hashlib.scrypt(b"pass", salt=salt, n=1 << 10, r=8, p=1, dklen=32)  # an independent scrypt
    assert _scrypt(b"pass", salt, 10, 8, 1) == expected


def test_a_passphrase_as_bytes_is_the_same_as_its_utf8_text(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"weights" * 100)
    encrypt_file(src, tmp_path / "a.enc", passphrase="pässword", **FAST)
    decrypt_file(tmp_path / "a.enc", tmp_path / "a.out", passphrase="pässword".encode())
    assert (tmp_path / "a.out").read_bytes() == src.read_bytes()
    with pytest.raises(UsageError) as caught:
        encrypt_file(src, tmp_path / "b.enc", passphrase=b"")
    assert str(caught.value) == "the passphrase is empty"
    (tmp_path / "exists.out").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists"):  # decrypting never overwrites by default
        decrypt_file(tmp_path / "a.enc", tmp_path / "exists.out", passphrase="pässword")
    assert (tmp_path / "exists.out").read_bytes() == b"keep me"


def _identity_file(path: Path, blob: bytes) -> Path:
    import base64

    path.write_bytes(
        b"-----BEGIN DLSEC IDENTITY-----\n" + base64.encodebytes(blob) + b"-----END DLSEC IDENTITY-----\n"
    )
    return path


def test_recipient_key_files_have_the_documented_names_layout_and_defaults(tmp_path: Path) -> None:
    import base64
    import hashlib
    import re

    from dlsec.release._crypto import _ID_HEAD, _ID_PEM, _PEM_BLOCK

    pub, key = generate_recipient_keys(tmp_path / "alice", passphrase="pw")  # the default N = 2**17
    assert (pub.name, key.name) == ("alice.pub.pem", "alice.key.pem")
    data = pub.read_bytes()
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    assert len(blocks) == 2 and data == b"".join(blocks)  # two PEM blocks, nothing between them
    match = _ID_PEM.search(key.read_bytes())
    assert match is not None
    _, _, log_n, r, p, _ = _ID_HEAD.unpack(
        base64.b64decode(b"".join(match.group(1).split()))[: _ID_HEAD.size]
    )
    assert (log_n, r, p) == (17, 8, 1)
    recipient = load_recipient(pub)
    raw = recipient.x25519.public_bytes_raw() + recipient.mlkem.public_bytes_raw()
    assert (
        recipient.key_id == hashlib.sha256(b"dlsec-recipient/1" + raw).digest()[:16]
    )  # the file format's id
    with pytest.raises(UsageError) as caught:
        generate_recipient_keys(tmp_path / "bob", passphrase="pw", scrypt_log_n=23)
    assert str(caught.value) == "scrypt_log_n must be in [10, 22]"
    with pytest.raises(KeyFileError) as caught:
        load_recipient(tmp_path)  # a directory
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path))}: cannot read the recipient public key \(.+\)", str(caught.value)
    )


def test_identity_files_are_checked_field_by_field(tmp_path: Path) -> None:
    from dlsec.release._crypto import _ID_HEAD

    pub, key = generate_recipient_keys(tmp_path / "id", passphrase="pw", scrypt_log_n=10)
    assert load_identity(key, passphrase="pw").recipient().key_id == load_recipient(pub).key_id
    # A character outside base64 is refused, never skipped.
    text = key.read_bytes().replace(b"-----\n", b"-----\n!", 1)
    (tmp_path / "junk.key.pem").write_bytes(text)
    with pytest.raises(KeyFileError) as caught:
        load_identity(tmp_path / "junk.key.pem", passphrase="pw")
    assert str(caught.value).endswith(": not a dlsec identity (expected a DLSEC IDENTITY block)")

    def head(*, magic: bytes = b"DLSECID1", log_n: int = 10, r: int = 8, p: int = 1) -> bytes:
        return _ID_HEAD.pack(magic, b"s" * 16, log_n, r, p, b"n" * 12)

    unsupported = ": not a dlsec identity, or an unsupported version"
    for blob, error, text in [
        (head() + b"t" * 15, KeyFileError, ": not a dlsec identity (expected a DLSEC IDENTITY block)"),
        (
            head() + b"t" * 16,
            DecryptionError,
            ": wrong passphrase for this identity (or a tampered key file)",
        ),
        (head(magic=b"DLSECID2") + b"t" * 16, KeyFileError, unsupported),
        (head(log_n=9) + b"t" * 16, KeyFileError, unsupported),
        (head(r=0) + b"t" * 16, KeyFileError, unsupported),
        (head(r=33) + b"t" * 16, KeyFileError, unsupported),
        (head(p=0) + b"t" * 16, KeyFileError, unsupported),
        (head(p=17) + b"t" * 16, KeyFileError, unsupported),
        (head(r=1, p=1) + b"t" * 16, DecryptionError, ": wrong passphrase"),  # bounds are inclusive
        (head(r=32, p=16) + b"t" * 16, DecryptionError, ": wrong passphrase"),
    ]:
        path = _identity_file(tmp_path / "crafted.key.pem", blob)
        with pytest.raises(error) as caught:
            load_identity(path, passphrase="pw")
        assert str(caught.value).startswith(f"{path}{text}"), (blob[8:], str(caught.value))


def test_key_files_with_the_wrong_keys_or_contents_are_named(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dlsec.release._crypto import _ID_HEAD, _scrypt

    def pem(key: object) -> bytes:
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]

    x_pub = pem(x25519.X25519PrivateKey.generate().public_key())
    ec_pub = pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    bad_block = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    for name, data, text in [
        ("garbage.pub.pem", x_pub + bad_block, "a PEM block is not a public key"),
        ("ec.pub.pem", x_pub + ec_pub, "expected one X25519 and one ML-KEM-768 public key"),
        ("two-x.pub.pem", x_pub + x_pub, "expected one X25519 and one ML-KEM-768 public key"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(KeyFileError) as caught:
            load_recipient(tmp_path / name)
        assert str(caught.value) == f"{tmp_path / name}: {text}"
    with pytest.raises(KeyFileError) as caught:
        load_identity(tmp_path, passphrase="pw")  # a directory
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the identity (")
    # Sealed properly under the passphrase, but not the 96 bytes of two private keys.
    head = _ID_HEAD.pack(b"DLSECID1", b"s" * 16, 10, 8, 1, b"n" * 12)
    sealed = AESGCM(_scrypt(b"pw", b"s" * 16, 10, 8, 1)).encrypt(b"n" * 12, b"k" * 95, head)
    path = _identity_file(tmp_path / "short.key.pem", head + sealed)
    with pytest.raises(KeyFileError) as caught:
        load_identity(path, passphrase="pw")
    assert str(caught.value) == f"{path}: unexpected identity contents"


# ------------------------------------------------- the file format, read by an independent reader
# Written from the module docstring's specification with pyca/cryptography's primitives only, so
# any change to the key derivation, the nonces or the associated data breaks compatibility here
# even when dlsec's own encrypt and decrypt change together (mutation survivors).


def _reference_open(data: bytes, secret_of: object) -> bytes:
    import hashlib
    import struct

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    magic, version, mode, log2, reserved, prefix = struct.unpack(">8sBBBB7s", data[:19])
    assert (magic, version, reserved) == (b"DLSECENC", 1, 0)
    head_len = 19 + (19 if mode == 1 else 16 + 32 + 1088)
    header, body = data[:head_len], data[head_len:]
    secret = secret_of(mode, header[19:])  # type: ignore[operator]
    info = b"dlsec-enc/1 file key" + hashlib.sha256(header).digest()
    aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret))
    record = (1 << log2) + 16
    records = [body[i : i + record] for i in range(0, len(body), record)] or [b""]
    out = []
    for i, sealed in enumerate(records):
        final = i == len(records) - 1
        flag = b"\x01" if final else b"\x00"
        nonce = prefix + i.to_bytes(4, "big") + flag
        out.append(aead.decrypt(nonce, sealed, i.to_bytes(8, "big") + flag))
    return b"".join(out)


@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK + 5])
def test_a_passphrase_file_opens_with_an_independent_reader(tmp_path: Path, size: int) -> None:
    import hashlib
    import struct

    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(size))
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="pass", **FAST)

    def scrypt_secret(mode: int, rest: bytes) -> bytes:
        assert mode == 1
        salt, log_n, r, p = struct.unpack(">16sBBB", rest)
        assert (log_n, r, p) == (10, 8, 1)
        return hashlib.scrypt(b"pass", salt=salt, n=1 << log_n, r=r, p=p, dklen=32)

    assert _reference_open(enc.read_bytes(), scrypt_secret) == src.read_bytes()


def test_a_recipient_file_opens_with_an_independent_reader(tmp_path: Path, identity: Identity) -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519

    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(CHUNK + 9))
    enc = encrypt_file(src, tmp_path / "r.enc", recipient=identity.recipient(), chunk_size=CHUNK)

    def kem_secret(mode: int, rest: bytes) -> bytes:
        assert mode == 2 and len(rest) == 16 + 32 + 1088
        ephemeral = x25519.X25519PublicKey.from_public_bytes(rest[16:48])
        return identity.x25519.exchange(ephemeral) + identity.mlkem.decapsulate(rest[48:])

    assert _reference_open(enc.read_bytes(), kem_secret) == src.read_bytes()


class _Trickle(io.RawIOBase):
    """A raw stream that reads or takes at most ``step`` bytes per call, as pipes and sockets may."""

    def __init__(self, data: bytes = b"", step: int = 7) -> None:
        self.data, self.step, self.pos, self.out = data, step, 0, bytearray()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(b), self.step - 2)
        self.out += bytes(b[:n])
        return n


def test_short_reads_and_writes_lose_no_byte(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(2 * CHUNK + 333))
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="pass", **FAST)
    source, sink = _Trickle(enc.read_bytes(), step=7), _Trickle(step=7)
    decrypt_stream(source, sink, passphrase="pass")
    assert bytes(sink.out) == src.read_bytes()


def test_cut_and_tampered_chunks_have_their_messages(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(CHUNK + 100))
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="pass", **FAST)
    data = enc.read_bytes()
    cut = io.BytesIO(data[: len(data) - 100 - 16 + 10])  # the last record shorter than its tag
    with pytest.raises(DecryptionError) as caught:
        decrypt_stream(cut, io.BytesIO(), passphrase="pass", label="m.enc")
    assert str(caught.value) == "m.enc: truncated or tampered (chunk 1 is incomplete)"
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError) as caught:
        decrypt_stream(io.BytesIO(bytes(flipped)), io.BytesIO(), passphrase="pass")
    assert str(caught.value) == (
        "<stream>: wrong key or passphrase, or the file was tampered with (chunk 1 does not authenticate)"
    )


def test_chunk_sizes_are_powers_of_two_from_4_kib_to_64_mib(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"w" * 10)
    for size in (5000, 3 * 4096, 1 << 11, 1 << 27):
        with pytest.raises(UsageError) as caught:
            encrypt_file(src, tmp_path / "o.enc", passphrase="p", chunk_size=size, scrypt_log_n=10)
        assert str(caught.value) == "chunk_size must be a power of two between 4 KiB and 64 MiB"
    for size in (1 << 12, 1 << 26):
        enc = encrypt_file(src, tmp_path / f"{size}.enc", passphrase="p", chunk_size=size, scrypt_log_n=10)
        assert read_header(enc).chunk_size == size


def test_argument_and_key_messages_are_exact(tmp_path: Path, identity: Identity) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"weights")
    messages = {
        "give either a passphrase or a recipient public key (--recipient)": {},
        "scrypt_log_n must be in [10, 22]": {"passphrase": "p", "scrypt_log_n": 23},
    }
    for message, kwargs in messages.items():
        with pytest.raises(UsageError) as caught:
            encrypt_file(src, tmp_path / "o.enc", **kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == message
    enc = encrypt_file(src, tmp_path / "r.enc", recipient=identity.recipient(), chunk_size=CHUNK)
    _, key = generate_recipient_keys(tmp_path / "keys" / "bob", passphrase="bob pass")
    with pytest.raises(UsageError) as caught:
        decrypt_file(enc, tmp_path / "out.bin", identity=key)
    assert str(caught.value) == "the identity file needs its passphrase"
    missing = tmp_path / "keys" / "nobody.key.pem"
    with pytest.raises(KeyFileError) as caught:
        load_identity(missing, passphrase="x")
    assert str(caught.value) == f"{missing}: cannot read the identity (No such file or directory)"
    with pytest.raises(KeyFileError) as caught:
        load_recipient(tmp_path / "keys" / "nobody.pub.pem")
    assert "(No such file or directory)" in str(caught.value) and "Errno" not in str(caught.value)


def test_a_tampered_encapsulation_and_a_tampered_file_name_their_source(
    tmp_path: Path, identity: Identity
) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"weights" * 10)
    enc = encrypt_file(src, tmp_path / "r.enc", recipient=identity.recipient(), chunk_size=CHUNK)
    data = bytearray(enc.read_bytes())
    data[19 + 16 + 32 + 5] ^= 1  # inside the ML-KEM ciphertext: decapsulation gives another secret
    data[19 + 16 + 3] ^= 1  # inside the X25519 ephemeral key
    bad = tmp_path / "bad.enc"
    bad.write_bytes(bytes(data))
    with pytest.raises(DecryptionError) as caught:
        decrypt_file(bad, tmp_path / "out.bin", identity=identity)
    assert str(caught.value).startswith(f"{bad}: ")
    assert not (tmp_path / "out.bin").exists()


def test_the_default_scrypt_cost_is_2_to_the_17(tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"w")
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="p")
    assert read_header(enc).scrypt_log_n == 17


def test_the_chunk_count_limit_holds_when_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsec.release import _crypto

    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(CHUNK + 1))  # two chunks
    enc = encrypt_file(src, tmp_path / "p.enc", passphrase="pass", **FAST)
    monkeypatch.setattr(_crypto, "_MAX_CHUNKS", 1)
    with pytest.raises(DecryptionError) as caught:
        decrypt_stream(io.BytesIO(enc.read_bytes()), io.BytesIO(), passphrase="pass", label="m")
    assert str(caught.value) == "m: truncated or tampered (chunk 1 is incomplete)"


def test_paths_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    with pytest.raises(UsageError) as missing:
        encrypt_file(tmp_path / "absent.bin", tmp_path / "x.enc", passphrase="pw", **FAST)
    assert str(missing.value) == f"{tmp_path / 'absent.bin'}: no such file"
    enc = encrypt_file(src, tmp_path / "model.enc", passphrase="pw", **FAST)
    before = enc.read_bytes()
    with pytest.raises(UsageError) as exists:
        encrypt_file(src, enc, passphrase="pw", **FAST)
    assert str(exists.value) == f"{enc} exists; pass --force to replace it"
    # With overwrite, another existing file is replaced...
    assert encrypt_file(src, enc, passphrase="pw", overwrite=True, **FAST) == enc
    assert enc.read_bytes() != before  # a fresh salt and nonce prefix
    # ...but never the input itself, by the same path or another one that resolves to it.
    for same in (src, tmp_path / "." / "model.bin"):
        with pytest.raises(UsageError) as itself:
            encrypt_file(src, same, passphrase="pw", overwrite=True, **FAST)
        assert str(itself.value) == "the output would overwrite the input"
        with pytest.raises(UsageError, match="^the output would overwrite the input$"):
            decrypt_file(enc, enc, passphrase="pw", overwrite=True)
    assert src.read_bytes() == b"weights"
    # A new output that does not exist yet is fine, with or without overwrite.
    back = decrypt_file(enc, tmp_path / "back.bin", passphrase="pw", overwrite=True)
    assert back.read_bytes() == b"weights"


def test_a_key_encapsulation_that_does_not_open_is_named(tmp_path: Path, identity: Identity) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(100))
    enc = encrypt_file(src, tmp_path / "model.enc", recipient=identity.recipient(), chunk_size=CHUNK)
    header = read_header(enc)
    data = enc.read_bytes()
    at = data.index(header.ephemeral)
    # X25519 refuses the all-zero point (a low-order point gives an all-zero shared secret).
    (tmp_path / "bad.enc").write_bytes(data[:at] + bytes(32) + data[at + 32 :])
    with pytest.raises(DecryptionError) as err:
        decrypt_file(tmp_path / "bad.enc", tmp_path / "out.bin", identity=identity)
    assert str(err.value) == f"{tmp_path / 'bad.enc'}: the key encapsulation does not open (tampered header)"
    assert not (tmp_path / "out.bin").exists()


def test_the_first_error_wins_over_a_later_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Chunk 1 does not authenticate while the writer thread is still writing chunk 0 and then
    fails: the caller sees the tampering, not the write error that came after it."""
    import threading

    from dlsec.release import _crypto

    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(2 * CHUNK))
    data = bytearray(encrypt_file(src, tmp_path / "model.enc", passphrase="pw", **FAST).read_bytes())
    data[-5] ^= 1  # inside chunk 1, the last
    second_buffer = threading.Event()
    real_buffer = _crypto._Writer.buffer
    calls = []

    def buffer(self: object) -> bytearray:
        out = real_buffer(self)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 2:  # the buffer for chunk 1: the writer's error has not been seen
            second_buffer.set()
        return out

    monkeypatch.setattr(_crypto._Writer, "buffer", buffer)

    class FailingDisk(io.RawIOBase):
        def fileno(self) -> int:  # a real descriptor, so the writer runs on its thread
            return 0

        def write(self, b: object) -> int:
            assert second_buffer.wait(30)
            raise OSError("no space left on device")

    with pytest.raises(DecryptionError, match=r"chunk 1 does not authenticate"):
        decrypt_stream(io.BytesIO(bytes(data)), FailingDisk(), passphrase="pw")
    assert len(calls) == 2


def test_a_stream_whose_write_returns_none_took_everything(tmp_path: Path) -> None:
    """File-likes that predate ``RawIOBase`` return ``None`` from ``write`` once they took it all."""
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 * CHUNK + 5))
    enc = encrypt_file(src, tmp_path / "model.enc", passphrase="pw", **FAST)

    class LegacySink(io.BytesIO):
        def write(self, b: object) -> None:  # type: ignore[override]
            super().write(b)  # type: ignore[arg-type]
            assert self.tell() <= src.stat().st_size, "a chunk was written twice"

    sink = LegacySink()
    with enc.open("rb") as f:
        decrypt_stream(f, sink, passphrase="pw")
    assert sink.getvalue() == src.read_bytes()


def test_the_chunk_count_limit_holds_when_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsec.release import _crypto

    monkeypatch.setattr(_crypto, "_MAX_CHUNKS", 2)
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(2 * CHUNK))  # exactly the limit: two chunks
    enc = encrypt_file(src, tmp_path / "two.enc", passphrase="pw", **FAST)
    assert decrypt_file(enc, tmp_path / "back.bin", passphrase="pw").read_bytes() == src.read_bytes()
    src.write_bytes(os.urandom(2 * CHUNK + 1))  # one byte more: a third chunk
    with pytest.raises(UsageError) as caught:
        encrypt_file(src, tmp_path / "three.enc", passphrase="pw", **FAST)
    assert str(caught.value) == "file too large for one encrypted stream"
    assert not (tmp_path / "three.enc").exists() and not _leftovers(tmp_path)


class _FullDisk(io.RawIOBase):
    """An output with a real descriptor (so the writer runs on its thread) that refuses every write."""

    def fileno(self) -> int:
        return 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        raise OSError(28, "No space left on device")


def test_a_failed_write_is_an_error_never_a_short_output(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(100))  # one chunk: the error can only surface when the writer closes
    enc = encrypt_file(src, tmp_path / "model.enc", passphrase="pw", **FAST)
    with pytest.raises(OSError, match="No space left on device"), enc.open("rb") as f:
        decrypt_stream(f, _FullDisk(), passphrase="pw")


def test_an_encryption_error_wins_over_the_writers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 0 goes to a writer that fails; chunk 1 is over the limit: the caller sees the limit
    (no buffer is taken in between, so the writer's error is only seen when it closes)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dlsec.release import _crypto

    monkeypatch.setattr(_crypto, "_MAX_CHUNKS", 1)
    with pytest.raises(UsageError, match="^file too large for one encrypted stream$"):
        _crypto._seal(io.BytesIO(os.urandom(CHUNK + 1)), _FullDisk(), AESGCM(bytes(32)), bytes(7), CHUNK)


def test_more_chunks_than_the_writer_has_buffers(tmp_path: Path) -> None:
    """Nine chunks through files: the writer's four buffers are each recycled and reused."""
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(9 * CHUNK + 3))
    enc = encrypt_file(src, tmp_path / "model.enc", passphrase="pw", **FAST)
    assert decrypt_file(enc, tmp_path / "back.bin", passphrase="pw").read_bytes() == src.read_bytes()
