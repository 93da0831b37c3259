"""The scanner's findings as a SARIF 2.1.0 log, for GitHub code scanning and other viewers.

One result per finding, and one per unscannable file, each located at the file scanned (a model
file is binary: the region is its first line, the byte offset and archive member are in the
message and the properties). A file that could not be scanned is also a tool-execution
notification of the run's invocation, with its reason, and the invocation's ``verdict`` is then
``partial`` (``fail`` when a file is unsafe). Validated against the OASIS schema in the tests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dlsec.scan._findings import UNSCANNABLE_KINDS, Finding, ScanResult

__all__ = ["scan_sarif", "SARIF_SCHEMA_URI"]

SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
# GitHub code scanning ranks alerts by this property (CVSS-like, 0.0-10.0).
_SECURITY_SEVERITY = {"critical": "9.8", "high": "8.0", "medium": "5.5", "low": "3.0"}


def _uri(path: str) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    return quote(p.as_posix(), safe="/")


def _location(path: str) -> list[dict[str, Any]]:
    uri = _uri(path)
    artifact = {"uri": uri} if uri.startswith("file:") else {"uri": uri, "uriBaseId": "SRCROOT"}
    return [{"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": 1}}}]


def _fingerprint(*parts: object) -> dict[str, str]:
    digest = hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()
    return {"dlsecScan/v1": digest}


def _where(finding: Finding) -> str:
    bits = []
    if finding.member:
        bits.append(f"in {finding.member}")
    if finding.offset is not None:
        bits.append(f"at byte {finding.offset}")
    return f" ({', '.join(bits)})" if bits else ""


def scan_verdict(results: Iterable[ScanResult]) -> dict[str, Any]:
    """The run's verdict as a whole: ``fail`` when a file is unsafe, ``partial`` when a file could
    not be scanned (what did not run never passes), else ``pass``; ``complete`` says every file was
    read through. ``dlsec scan --format json`` and the SARIF invocation both carry it.

    Example:
        >>> scan_verdict([])
        {'verdict': 'pass', 'complete': True}
    """
    unsafe = unscannable = False
    for result in results:
        unsafe = unsafe or bool(result.findings)
        unscannable = unscannable or (not result.findings and result.error is not None)
    return {
        "verdict": "fail" if unsafe else "partial" if unscannable else "pass",
        "complete": not unscannable,
    }


def scan_sarif(
    results: Iterable[ScanResult],
    *,
    version: str,
    allow_unscannable: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A SARIF 2.1.0 log of ``results``: every finding, and every unscannable file.

    Args:
        results: what :func:`dlsec.scan.scan_paths` returned.
        version: the dlsec version, recorded as the tool's.
        allow_unscannable: report unscannable files as warnings instead of errors.
        root: the folder the run started in (``originalUriBaseIds``); default the current one.
    """
    rules: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    results = list(results)
    for result in results:
        for f in result.findings:
            rule_id = f"dlsec.scan/{f.code}"
            rules.setdefault(
                rule_id,
                {
                    "id": rule_id,
                    "name": "".join(w.capitalize() for w in f.code.split("-")),
                    "shortDescription": {"text": f"Model file: {f.code.replace('-', ' ')}"},
                    "defaultConfiguration": {"level": _LEVEL[f.severity]},
                    "properties": {
                        "tags": ["security", "model-file"],
                        "security-severity": _SECURITY_SEVERITY[f.severity],
                    },
                },
            )
            imported = f" [{f.import_name}]" if f.import_name else ""
            out.append(
                {
                    "ruleId": rule_id,
                    "level": _LEVEL[f.severity],
                    "message": {"text": f"{result.path}: {f.reason}{imported}{_where(f)}"},
                    "locations": _location(result.path),
                    "partialFingerprints": _fingerprint(result.path, f.code, f.import_name, f.member),
                    "properties": {
                        "severity": f.severity,
                        "import": f.import_name,
                        "member": f.member,
                        "byteOffset": f.offset,
                        "format": result.format,
                    },
                }
            )
        if not result.findings and result.error is not None:
            kind = result.error_kind or "malformed"
            rule_id = f"dlsec.scan/unscannable-{kind}"
            level = "warning" if allow_unscannable else "error"
            rules.setdefault(
                rule_id,
                {
                    "id": rule_id,
                    "name": "Unscannable" + "".join(w.capitalize() for w in kind.split("-")),
                    "shortDescription": {"text": f"Unscannable model file: {UNSCANNABLE_KINDS[kind]}"},
                    "defaultConfiguration": {"level": level},
                    "properties": {"tags": ["security", "model-file"], "security-severity": "7.0"},
                },
            )
            out.append(
                {
                    "ruleId": rule_id,
                    "level": level,
                    "message": {"text": f"{result.path}: unscannable ({kind}): {result.error}"},
                    "locations": _location(result.path),
                    "partialFingerprints": _fingerprint(result.path, kind),
                    "properties": {"kind": kind, "format": result.format},
                }
            )
            notifications.append(
                {
                    "level": "warning" if allow_unscannable else "error",
                    "message": {"text": f"not scanned: {result.path}: {kind}: {result.error}"},
                    "descriptor": {"id": rule_id},
                    "locations": _location(result.path),
                    "properties": {"kind": kind},
                }
            )
    base = Path(root) if root is not None else Path.cwd()
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dlsec",
                        "version": version,
                        "rules": list(rules.values()),
                    }
                },
                "originalUriBaseIds": {"SRCROOT": {"uri": base.resolve().as_uri() + "/"}},
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                        "properties": scan_verdict(results),
                    }
                ],
                "results": out,
            }
        ],
    }
