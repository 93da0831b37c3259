"""Errors raised by dlsec.

One package-wide base, :class:`Error`, and a distinct type for each kind of failure. Each
carries the process exit code the CLI maps it to: 2 for bad usage or bad input, 1 for a
security finding or a failed gate. The message is one line that says what is wrong and how
to fix it; it never contains secrets.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_FINDING",
    "EXIT_USAGE",
    "EXIT_UNSCANNABLE",
    "Error",
    "UsageError",
    "DataError",
    "SpecError",
    "ModelLoadError",
    "UnsafeModelFileError",
    "NotFittedError",
    "SecurityFinding",
    "KeyFileError",
    "UnsafeFileError",
    "UnscannableFileError",
    "DecryptionError",
]

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
EXIT_UNSCANNABLE = 3  # dlsec scan: nothing unsafe found, but a file could not be read completely


class Error(Exception):
    """Base class of every error dlsec raises on purpose."""

    exit_code: int = EXIT_USAGE


class UsageError(Error):
    """A command or function was called with arguments that cannot work."""


class SpecError(UsageError):
    """An input spec is inconsistent (bounds, shape, normalisation, classes)."""


class DataError(UsageError):
    """A dataset could not be loaded or failed validation."""


class ModelLoadError(UsageError):
    """A model reference could not be resolved to a model."""


class UnsafeModelFileError(ModelLoadError):
    """A model file is in a format that can execute code when loaded (pickle and kin).

    dlsec never loads such files; it refuses them and points at ``dlsec scan`` and
    safetensors.
    """


class NotFittedError(UsageError):
    """A fitted object (detector, sanitiser) was used before ``fit``."""


class SecurityFinding(Error):
    """Base for verdicts that mean 'unsafe': tampering, failed gates, malicious content."""

    exit_code = EXIT_FINDING


class KeyFileError(UsageError):
    """A key file is missing, unreadable or not a key of the expected kind."""


class UnsafeFileError(SecurityFinding):
    """A scanned file can run code when loaded: it reaches a callable off the allowlist, or worse.

    Raised by the release gate (``dlsec.scan.verify_safe``, ``dlsec convert``); the scan
    report lists each finding with its import, byte offset and reason.
    """


class UnscannableFileError(SecurityFinding):
    """A file could not be scanned (truncated, malformed or of an unknown format), so it is not safe.

    The scanner fails closed: what it cannot read completely, it never calls safe.
    """


class DecryptionError(SecurityFinding):
    """An encrypted file failed authentication: wrong key or passphrase, or a tampered byte.

    Nothing is written when this is raised: the partial plaintext is discarded.
    """


class SignatureError(SecurityFinding):
    """A signature does not verify. Subclasses say why; the message names the file or key."""


class SignatureMissingError(SignatureError):
    """There is no signature to verify (an unsigned model is never trusted)."""


class MalformedSignatureError(SignatureError):
    """The signature file cannot be parsed, or its signed statement is inconsistent."""


class WrongKeyError(SignatureError):
    """The signature was made with another key than the one verification trusts."""


class BadSignatureError(SignatureError):
    """A signature value does not verify over the signed statement (altered or swapped)."""


class HybridSignatureError(SignatureError):
    """One half of a hybrid (ECDSA P-256 + ML-DSA-65) signature is missing or does not verify."""


class FileChangedError(SignatureError):
    """A signed file's content no longer matches its digest."""


class FileMissingError(SignatureError):
    """A signed file is no longer there."""


class UnsignedFileError(SignatureError):
    """A file is present that the signature does not cover."""


class RegistryError(UsageError):
    """A registry request cannot be served (unknown model, version or alias; bad state change)."""


class PolicyError(SecurityFinding):
    """A registry policy rule refused an action (e.g. promoting an unsigned or unsafe version)."""


class ModelOutOfServiceError(SecurityFinding):
    """A quarantined or retired model version was asked to be used."""


class AuditLogError(SecurityFinding):
    """The audit log failed verification: an entry or checkpoint was changed, removed or inserted."""
