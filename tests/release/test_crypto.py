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
