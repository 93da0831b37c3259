"""Findings and scan results: what the scanner reports about one file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Finding",
    "ScanResult",
    "Severity",
    "Verdict",
    "Malformed",
    "SEVERITY_ORDER",
    "UNSCANNABLE_KINDS",
]

Severity = Literal["critical", "high", "medium", "low"]
Verdict = Literal["safe", "unsafe", "unscannable"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}

# Why a file is 'unscannable' (ScanResult.error_kind): each says what to do about it.
UNSCANNABLE_KINDS: dict[str, str] = {
    "encrypted": "an archive member is encrypted: nothing in it was read",
    "truncated": "the file ends before its structure does",
    "unknown-format": "the bytes are no model format dlsec reads",
    "extension-mismatch": "the content is not what the file's extension says",
    "too-large": "a part is larger than dlsec analyses in memory",
    "unreadable": "the file could not be opened or read",
    "malformed": "the bytes do not parse as the format they claim",
    "unvetted": "code dlsec does not vet (a TorchScript program), named but not proven safe or unsafe",
}


@dataclass(frozen=True)
class Finding:
    """One reason a file is unsafe.

    Attributes:
        severity: ``critical`` (runs code on load), ``high``, ``medium`` or ``low``.
        code: a stable identifier of the check, e.g. ``unsafe-call`` or ``build-on-global``.
        reason: one sentence a person can act on.
        import_name: the global involved (``module.name``), when there is one.
        offset: byte offset of the opcode or record, within ``member`` (or the file).
        member: where inside the file: a zip member, ``gzip``, a nested pickle; ``None`` for
            the file itself.
    """

    severity: Severity
    code: str
    reason: str
    import_name: str | None = None
    offset: int | None = None
    member: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "import": self.import_name,
            "offset": self.offset,
            "member": self.member,
            "reason": self.reason,
        }


@dataclass
class ScanResult:
    """The verdict on one file: ``safe`` only when nothing was found and everything was read.

    Attributes:
        path: the file scanned.
        format: the format found from the bytes (``pickle``, ``torch-zip``, ``safetensors``...).
        findings: every reason the file is unsafe, most severe first.
        error: why the file could not be read completely (truncated, malformed, unknown).
        allowed_by_user: imports that passed only because of ``--allow``.
        error_kind: with ``error``, one of :data:`UNSCANNABLE_KINDS`.
        notes: facts worth knowing that do not make the file unsafe (a zip member flagged as
            encrypted but stored in the clear, which PyTorch reads anyway).
    """

    path: str
    format: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    allowed_by_user: list[str] = field(default_factory=list)
    error_kind: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.error is not None and self.error_kind is None:
            self.error_kind = "malformed"

    @property
    def verdict(self) -> Verdict:
        if self.findings:
            return "unsafe"
        if self.error is not None:
            return "unscannable"
        return "safe"

    @property
    def safe(self) -> bool:
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "error": self.error,
            "error_kind": self.error_kind,
            "allowed_by_user": list(self.allowed_by_user),
            "notes": list(self.notes),
        }


class Malformed(Exception):
    """Internal: the bytes cannot be parsed; the file is reported ``unscannable``."""

    def __init__(
        self, reason: str, *, offset: int | None = None, member: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.member = member
        self.kind = kind if kind is not None else _kind_of(reason)

    def describe(self) -> str:
        where = f" in {self.member}" if self.member else ""
        at = f" at byte {self.offset}" if self.offset is not None else ""
        return f"{self.reason}{where}{at}"


def _kind_of(reason: str) -> str:
    """The kind of an unscannable file, from the scanner's own wording of what went wrong."""
    text = reason.lower()
    if "encrypted" in text:
        return "encrypted"
    if any(w in text for w in ("truncated", "exhausted", "ended without", "end record", "remain")):
        return "truncated"
    if "larger than" in text or "too large" in text:
        return "too-large"
    if "unknown format" in text or "empty file" in text:
        return "unknown-format"
    return "malformed"
