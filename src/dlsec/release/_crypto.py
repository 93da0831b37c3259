"""Encryption at rest: chunked AES-256-GCM, keyed by a passphrase or a hybrid X25519 + ML-KEM-768 KEM.

Only pyca/cryptography primitives are composed here (``AESGCM``, ``Scrypt``, ``X25519``,
``MLKEM768``, ``HKDF``); nothing is hand-rolled.

File layout (``dlsec-enc/1``)::

    header   magic "DLSECENC" | version 1 | mode | log2(chunk size) | 0 | nonce prefix (7 bytes)
             mode 1 (passphrase): scrypt salt (16) | log2 N | r | p
             mode 2 (recipient):  key id (16) | X25519 ephemeral key (32) | ML-KEM-768 ciphertext (1088)
    chunks   AES-256-GCM(plaintext chunk) || tag, each ``chunk size + 16`` bytes except the last

The file key is ``HKDF-SHA256(secret, info = "dlsec-enc/1 file key" || SHA-256(header))``, where
the secret is the scrypt output or the two shared secrets (X25519 then ML-KEM) concatenated: any
change to the header changes the key. Chunk ``i`` is sealed under the nonce
``prefix || i (4 bytes) || final`` with associated data ``i (8 bytes) || final``, ``final`` being 1
only for the last chunk (the STREAM construction): a flipped byte, a dropped, swapped or
appended chunk, or a truncation all fail authentication. An empty file is one empty final chunk.

Recipient keys (``dlsec encrypt-keygen``): ``NAME.pub.pem`` holds two standard
SubjectPublicKeyInfo PEM blocks (X25519, ML-KEM-768); ``NAME.key.pem`` (mode 0600) holds one
``DLSEC IDENTITY`` block: both private keys sealed with AES-256-GCM under a scrypt key from
the passphrase (PKCS#8 encryption in pyca/cryptography uses PBKDF2 with 2,048 rounds, too few
for a key file that may leak).
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dlsec.errors import DecryptionError, KeyFileError, UsageError
from dlsec.fsutil import atomic_write_bytes, atomic_write_with

__all__ = [
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
]

MAGIC = b"DLSECENC"
VERSION = 1
MODE_PASSPHRASE = 1
MODE_RECIPIENT = 2
TAG = 16
_FIXED = struct.Struct(">8sBBBB7s")  # magic, version, mode, log2 chunk, reserved, nonce prefix
_PASS = struct.Struct(">16sBBB")  # salt, log2 N, r, p
_X25519_LEN = 32
_MLKEM768_CT = 1088
_KEY_ID = 16
_RECIP_LEN = _KEY_ID + _X25519_LEN + _MLKEM768_CT
_CHUNK_LOG2 = range(12, 27)  # 4 KiB .. 64 MiB
_SCRYPT_LOG_N = range(10, 23)
_MAX_CHUNKS = 1 << 32
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)
Secret = str | bytes


def _secret(value: Secret) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data:
        raise UsageError("the passphrase is empty")
    return data


# -- recipient keys ------------------------------------------------------------------------


def _key_id(x_pub: bytes, kem_pub: bytes) -> bytes:
    return hashlib.sha256(b"dlsec-recipient/1" + x_pub + kem_pub).digest()[:_KEY_ID]


@dataclass(frozen=True)
class Recipient:
    """A recipient's public keys: X25519 and ML-KEM-768 (both must be broken to read a file)."""

    x25519: x25519.X25519PublicKey
    mlkem: mlkem.MLKEM768PublicKey

    @property
    def key_id(self) -> bytes:
        return _key_id(self.x25519.public_bytes_raw(), self.mlkem.public_bytes_raw())


@dataclass(frozen=True)
class Identity:
    """A recipient's private keys (what ``decrypt --identity`` unlocks with its passphrase)."""

    x25519: x25519.X25519PrivateKey
    mlkem: mlkem.MLKEM768PrivateKey

    def recipient(self) -> Recipient:
        return Recipient(self.x25519.public_key(), self.mlkem.public_key())


def _pem_blocks(path: Path, kind: str) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {kind} ({exc.strerror or exc})") from None
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if len(blocks) != 2:
        raise KeyFileError(f"{path}: not a dlsec {kind} (expected two PEM blocks: X25519 and ML-KEM-768)")
    return blocks


def load_recipient(path: str | Path) -> Recipient:
    """Read a recipient public key file written by :func:`generate_recipient_keys`.

    Raises:
        KeyFileError: missing file, or not an X25519 + ML-KEM-768 public key pair.

    Example:
        >>> load_recipient("keys/alice.pub.pem").key_id.hex()  # doctest: +SKIP
        '3f9c0a...'
    """
    path = Path(path)
    keys = []
    for block in _pem_blocks(path, "recipient public key"):
        try:
            keys.append(serialization.load_pem_public_key(block))
        except (ValueError, TypeError):
            raise KeyFileError(f"{path}: a PEM block is not a public key") from None
    x_keys = [k for k in keys if isinstance(k, x25519.X25519PublicKey)]
    m_keys = [k for k in keys if isinstance(k, mlkem.MLKEM768PublicKey)]
    if len(x_keys) != 1 or len(m_keys) != 1:
        raise KeyFileError(f"{path}: expected one X25519 and one ML-KEM-768 public key")
    return Recipient(x_keys[0], m_keys[0])


_ID_MAGIC = b"DLSECID1"
_ID_HEAD = struct.Struct(">8s16sBBB12s")  # magic, scrypt salt, log2 N, r, p, AES-GCM nonce
_ID_PEM = re.compile(rb"-----BEGIN DLSEC IDENTITY-----\r?\n(.*?)-----END DLSEC IDENTITY-----", re.S)


def load_identity(path: str | Path, *, passphrase: Secret) -> Identity:
    """Unlock a private key file written by :func:`generate_recipient_keys`.

    The file holds both private keys sealed with AES-256-GCM under a scrypt key derived from
    the passphrase (a wrong passphrase fails authentication; it never decrypts to garbage).

    Raises:
        KeyFileError: missing file, or not a dlsec identity.
        DecryptionError: wrong passphrase, or a tampered key file.

    Example:
        >>> me = load_identity("keys/alice.key.pem", passphrase=os.environ["PASS"])  # doctest: +SKIP
        >>> decrypt_file("model.enc", "model.safetensors", identity=me)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the identity ({exc.strerror or exc})") from None
    match = _ID_PEM.search(text)
    try:
        blob = base64.b64decode(b"".join(match.group(1).split()), validate=True) if match else b""
    except ValueError:
        blob = b""
    if len(blob) < _ID_HEAD.size + TAG:
        raise KeyFileError(f"{path}: not a dlsec identity (expected a DLSEC IDENTITY block)")
    magic, salt, log_n, r, p, nonce = _ID_HEAD.unpack(blob[: _ID_HEAD.size])
    if magic != _ID_MAGIC or log_n not in _SCRYPT_LOG_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise KeyFileError(f"{path}: not a dlsec identity, or an unsupported version")
    key = _scrypt(_secret(passphrase), salt, log_n, r, p)
    try:
        raw = AESGCM(key).decrypt(nonce, blob[_ID_HEAD.size :], blob[: _ID_HEAD.size])
    except InvalidTag:
        raise DecryptionError(
            f"{path}: wrong passphrase for this identity (or a tampered key file)"
        ) from None
    if len(raw) != 32 + 64:
        raise KeyFileError(f"{path}: unexpected identity contents")
    return Identity(
        x25519.X25519PrivateKey.from_private_bytes(raw[:32]),
        mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[32:]),
    )


def generate_recipient_keys(
    prefix: str | Path, *, passphrase: Secret, scrypt_log_n: int = 17, overwrite: bool = False
) -> tuple[Path, Path]:
    """Create ``PREFIX.pub.pem`` (share it) and ``PREFIX.key.pem`` (passphrase-sealed, mode 0600).

    The public file holds two standard SubjectPublicKeyInfo PEM blocks (X25519, ML-KEM-768).
    The private file holds both private keys sealed with AES-256-GCM under
    ``scrypt(passphrase, N = 2**scrypt_log_n, r = 8, p = 1)``.

    Returns:
        ``(public key path, private key path)``.

    Example:
        >>> pub, key = generate_recipient_keys("keys/alice", passphrase="correct horse")  # doctest: +SKIP
        >>> encrypt_file("model.safetensors", "model.enc", recipient=pub)  # doctest: +SKIP
    """
    prefix = Path(prefix)
    pub_path = prefix.with_name(prefix.name + ".pub.pem")
    key_path = prefix.with_name(prefix.name + ".key.pem")
    for target in (pub_path, key_path):
        if target.exists() and not overwrite:
            raise UsageError(f"{target} exists; pass --force to replace it")
    if scrypt_log_n not in _SCRYPT_LOG_N:
        raise UsageError(f"scrypt_log_n must be in [{_SCRYPT_LOG_N.start}, {_SCRYPT_LOG_N.stop - 1}]")
    secret = _secret(passphrase)
    x_key = x25519.X25519PrivateKey.generate()
    m_key = mlkem.MLKEM768PrivateKey.generate()
    salt, nonce = os.urandom(16), os.urandom(12)
    head = _ID_HEAD.pack(_ID_MAGIC, salt, scrypt_log_n, 8, 1, nonce)
    sealed = AESGCM(_scrypt(secret, salt, scrypt_log_n, 8, 1)).encrypt(
        nonce, x_key.private_bytes_raw() + m_key.private_bytes_raw(), head
    )
    body = base64.encodebytes(head + sealed)
    private = b"-----BEGIN DLSEC IDENTITY-----\n" + body + b"-----END DLSEC IDENTITY-----\n"
    public = b"".join(
        k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k in (x_key, m_key)
    )
    atomic_write_bytes(key_path, private, mode=0o600)
    atomic_write_bytes(pub_path, public)
    return pub_path, key_path


# -- header ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedHeader:
    """The parsed header of an encrypted file."""

    mode: Literal["passphrase", "recipient"]
    chunk_size: int
    nonce_prefix: bytes
    raw: bytes
    salt: bytes = b""
    scrypt_log_n: int = 0
    scrypt_r: int = 0
    scrypt_p: int = 0
    key_id: bytes = b""
    ephemeral: bytes = b""
    kem_ciphertext: bytes = b""


def _tampered(what: str) -> DecryptionError:
    return DecryptionError(f"not a dlsec-encrypted file, or its header was tampered with ({what})")


def _read_exactly(f: IO[bytes], n: int) -> bytes:
    """``n`` bytes of ``f``, fewer only at its end (a pipe or socket may return less per read)."""
    buf = bytearray(n)
    return bytes(buf[: _read_full(f, buf)])


def _read_header(f: IO[bytes]) -> EncryptedHeader:
    fixed = _read_exactly(f, _FIXED.size)
    if len(fixed) < _FIXED.size:
        raise _tampered("too short")
    magic, version, mode, log2, reserved, prefix = _FIXED.unpack(fixed)
    if magic != MAGIC or version != VERSION or reserved != 0 or log2 not in _CHUNK_LOG2:
        raise _tampered("bad magic, version or chunk size")
    if mode == MODE_PASSPHRASE:
        rest = _read_exactly(f, _PASS.size)
        if len(rest) < _PASS.size:
            raise _tampered("truncated")
        salt, log_n, r, p = _PASS.unpack(rest)
        if log_n not in _SCRYPT_LOG_N or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise _tampered("unreasonable scrypt parameters")
        return EncryptedHeader(
            "passphrase",
            1 << log2,
            prefix,
            fixed + rest,
            salt=salt,
            scrypt_log_n=log_n,
            scrypt_r=r,
            scrypt_p=p,
        )
    if mode == MODE_RECIPIENT:
        rest = _read_exactly(f, _RECIP_LEN)
        if len(rest) < _RECIP_LEN:
            raise _tampered("truncated")
        return EncryptedHeader(
            "recipient",
            1 << log2,
            prefix,
            fixed + rest,
            key_id=rest[:_KEY_ID],
            ephemeral=rest[_KEY_ID : _KEY_ID + _X25519_LEN],
            kem_ciphertext=rest[_KEY_ID + _X25519_LEN :],
        )
    raise _tampered(f"unknown mode {mode}")


def read_header(path: str | Path) -> EncryptedHeader:
    """Parse an encrypted file's header (to learn whether it needs a passphrase or an identity).

    Raises:
        DecryptionError: not a dlsec-encrypted file.

    Example:
        >>> read_header("model.enc").mode  # doctest: +SKIP
        'recipient'
    """
    with open(path, "rb") as f:
        return _read_header(f)


def _file_key(secret: bytes, header: bytes) -> AESGCM:
    info = b"dlsec-enc/1 file key" + hashlib.sha256(header).digest()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
    return AESGCM(key)


def _scrypt(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=p).derive(passphrase)


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def _aad(index: int, final: bool) -> bytes:
    return index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _write_all(dst: IO[bytes], view: memoryview) -> None:
    """Write all of ``view`` (unbuffered files may take it in parts)."""
    while view.nbytes:
        n = dst.write(view)
        view = view[n if n is not None else view.nbytes :]


def _read_full(f: IO[bytes], buf: bytearray | memoryview) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]  # IO[bytes] lacks readinto; binary files have it
        if not n:
            break
        got += n
    return got


# -- encrypt / decrypt -------------------------------------------------------------------------


def encrypt_file(
    source: str | Path,
    output: str | Path,
    *,
    passphrase: Secret | None = None,
    recipient: Recipient | str | Path | None = None,
    chunk_size: int = 1 << 20,
    scrypt_log_n: int = 17,
    overwrite: bool = False,
) -> Path:
    """Encrypt ``source`` to ``output`` (written to a temporary name, then renamed).

    Give exactly one of ``passphrase`` (scrypt, N = 2**scrypt_log_n, r = 8, p = 1) or
    ``recipient`` (a :class:`Recipient` or its ``.pub.pem`` file).

    Example:
        >>> encrypt_file("model.safetensors", "model.enc", passphrase="correct horse")  # doctest: +SKIP
        PosixPath('model.enc')
    """
    source, output = Path(source), Path(output)
    if (passphrase is None) == (recipient is None):
        raise UsageError("give either a passphrase or a recipient public key (--recipient)")
    if chunk_size <= 0 or chunk_size & (chunk_size - 1) or chunk_size.bit_length() - 1 not in _CHUNK_LOG2:
        raise UsageError("chunk_size must be a power of two between 4 KiB and 64 MiB")
    if scrypt_log_n not in _SCRYPT_LOG_N:
        raise UsageError(f"scrypt_log_n must be in [{_SCRYPT_LOG_N.start}, {_SCRYPT_LOG_N.stop - 1}]")
    _check_paths(source, output, overwrite)
    log2 = chunk_size.bit_length() - 1
    prefix = os.urandom(7)
    if passphrase is not None:
        mode = MODE_PASSPHRASE
        salt = os.urandom(16)
        rest = _PASS.pack(salt, scrypt_log_n, 8, 1)
        header = _FIXED.pack(MAGIC, VERSION, mode, log2, 0, prefix) + rest
        secret = _scrypt(_secret(passphrase), salt, scrypt_log_n, 8, 1)
    else:
        target = recipient if isinstance(recipient, Recipient) else load_recipient(Path(str(recipient)))
        mode = MODE_RECIPIENT
        ephemeral = x25519.X25519PrivateKey.generate()
        ss_x = ephemeral.exchange(target.x25519)
        ss_kem, kem_ct = target.mlkem.encapsulate()
        rest = target.key_id + ephemeral.public_key().public_bytes_raw() + kem_ct
        header = _FIXED.pack(MAGIC, VERSION, mode, log2, 0, prefix) + rest
        secret = ss_x + ss_kem
    aead = _file_key(secret, header)

    def write(tmp: Path) -> None:
        with open(source, "rb", buffering=0) as src, open(tmp, "wb", buffering=0) as dst:
            _write_all(dst, memoryview(header))
            _seal(src, dst, aead, prefix, chunk_size)

    return atomic_write_with(output, write)


class _Writer:
    """Writes sealed or opened chunks on a background thread.

    Encryption of chunk ``i + 1`` overlaps the file system's work on chunk ``i`` (the write
    system call releases the GIL). Buffers are recycled: memory stays at ``depth`` chunks
    whatever the file size. (Flushing to disk every few chunks was measured slower than one
    ``fsync`` at the end, which the atomic write does.)
    """

    def __init__(self, dst: IO[bytes], size: int, *, depth: int = 4) -> None:
        self._dst = dst
        try:
            dst.fileno()
            threaded = True
        except (OSError, AttributeError, ValueError):
            threaded = False  # in-memory output: writes are copies, no thread needed
        if not threaded:
            depth = 1
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(bytearray(size))
        self._todo: queue.Queue[tuple[bytearray, int] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="dlsec-writer", daemon=True)
            self._thread.start()

    def buffer(self) -> bytearray:
        if self._error is not None:
            raise self._error
        return self._free.get()

    def submit(self, buf: bytearray, n: int) -> None:
        if self._thread is None:
            try:
                _write_all(self._dst, memoryview(buf)[:n])
            finally:
                self._free.put(buf)
            return
        self._todo.put((buf, n))

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, n = item
            try:
                if self._error is None:
                    _write_all(self._dst, memoryview(buf)[:n])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                self._free.put(buf)

    def close(self, *, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        if raise_error and self._error is not None:
            raise self._error


def _seal(src: IO[bytes], dst: IO[bytes], aead: AESGCM, prefix: bytes, chunk_size: int) -> None:
    current, ahead = bytearray(chunk_size), bytearray(chunk_size)
    writer = _Writer(dst, chunk_size + TAG)
    try:
        n = _read_full(src, current)
        index = 0
        while True:
            n_next = _read_full(src, ahead) if n == chunk_size else 0
            final = n_next == 0
            if index >= _MAX_CHUNKS:
                raise UsageError("file too large for one encrypted stream")
            nonce, aad = _nonce(prefix, index, final), _aad(index, final)
            out = writer.buffer()
            aead.encrypt_into(nonce, memoryview(current)[:n], aad, memoryview(out)[: n + TAG])
            writer.submit(out, n + TAG)
            if final:
                break
            current, ahead, n = ahead, current, n_next
            index += 1
    except BaseException:
        writer.close(raise_error=False)  # the first error wins
        raise
    writer.close()


def decrypt_file(
    source: str | Path,
    output: str | Path,
    *,
    passphrase: Secret | None = None,
    identity: Identity | str | Path | None = None,
    identity_passphrase: Secret | None = None,
    overwrite: bool = False,
) -> Path:
    """Decrypt ``source`` to ``output``; nothing is written unless every chunk authenticates.

    A passphrase-encrypted file needs ``passphrase``; a file for a recipient needs ``identity``
    (an :class:`Identity`, or its ``.key.pem`` file unlocked with ``identity_passphrase``).

    Raises:
        DecryptionError: wrong key or passphrase, or any tampered, missing, swapped or extra byte.

    Example:
        >>> decrypt_file("model.enc", "model.safetensors", passphrase="correct horse")  # doctest: +SKIP
        PosixPath('model.safetensors')
    """
    source, output = Path(source), Path(output)
    _check_paths(source, output, overwrite)
    read_header(source)  # not ours, or tampered: fail before creating anything

    def write(tmp: Path) -> None:
        with open(source, "rb", buffering=0) as src, open(tmp, "wb", buffering=0) as dst:
            decrypt_stream(
                src,
                dst,
                passphrase=passphrase,
                identity=identity,
                identity_passphrase=identity_passphrase,
                label=str(source),
            )

    return atomic_write_with(output, write, mode=0o600)


def decrypt_stream(
    src: IO[bytes],
    dst: IO[bytes],
    *,
    passphrase: Secret | None = None,
    identity: Identity | str | Path | None = None,
    identity_passphrase: Secret | None = None,
    label: str = "<stream>",
) -> None:
    """Decrypt ``src`` into ``dst`` chunk by chunk (the caller discards ``dst`` on error).

    Raises:
        DecryptionError: wrong key or passphrase, or any tampered, missing, swapped or extra byte.

    Example:
        >>> out = io.BytesIO()  # doctest: +SKIP
        >>> decrypt_stream(open("model.enc", "rb"), out, passphrase="correct horse")  # doctest: +SKIP
    """
    header = _read_header(src)
    if header.mode == "passphrase":
        if passphrase is None:
            raise UsageError(f"{label} is encrypted with a passphrase; give the passphrase, not --identity")
        secret = _scrypt(
            _secret(passphrase), header.salt, header.scrypt_log_n, header.scrypt_r, header.scrypt_p
        )
    else:
        if identity is None:
            raise UsageError(f"{label} is encrypted for a recipient key; pass --identity KEY.pem")
        if not isinstance(identity, Identity):
            if identity_passphrase is None:
                raise UsageError("the identity file needs its passphrase")
            identity = load_identity(Path(str(identity)), passphrase=identity_passphrase)
        if identity.recipient().key_id != header.key_id:
            raise DecryptionError(
                f"{label} is encrypted for another recipient (key id {header.key_id.hex()}, "
                f"yours is {identity.recipient().key_id.hex()})"
            )
        try:
            ss_x = identity.x25519.exchange(x25519.X25519PublicKey.from_public_bytes(header.ephemeral))
            ss_kem = identity.mlkem.decapsulate(header.kem_ciphertext)
        except ValueError:
            raise DecryptionError(f"{label}: the key encapsulation does not open (tampered header)") from None
        secret = ss_x + ss_kem
    _open(src, dst, _file_key(secret, header.raw), header, label)


def _open(src: IO[bytes], dst: IO[bytes], aead: AESGCM, header: EncryptedHeader, label: str) -> None:
    record = header.chunk_size + TAG
    current, ahead = bytearray(record), bytearray(record)
    writer = _Writer(dst, header.chunk_size)
    try:
        n = _read_full(src, current)
        index = 0
        while True:
            n_next = _read_full(src, ahead) if n == record else 0
            final = n_next == 0
            if n < TAG or index >= _MAX_CHUNKS:
                raise DecryptionError(f"{label}: truncated or tampered (chunk {index} is incomplete)")
            nonce, aad = _nonce(header.nonce_prefix, index, final), _aad(index, final)
            out = writer.buffer()
            try:
                aead.decrypt_into(nonce, memoryview(current)[:n], aad, memoryview(out)[: n - TAG])
            except InvalidTag:
                raise DecryptionError(
                    f"{label}: wrong key or passphrase, or the file was tampered with (chunk {index} "
                    "does not authenticate)"
                ) from None
            writer.submit(out, n - TAG)
            if final:
                break
            current, ahead, n = ahead, current, n_next
            index += 1
    except BaseException:
        writer.close(raise_error=False)  # the first error wins
        raise
    writer.close()


def _check_paths(source: Path, output: Path, overwrite: bool) -> None:
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --force to replace it")
    if output.exists() and output.resolve() == source.resolve():
        raise UsageError("the output would overwrite the input")
