"""Release commands: ``scan``, ``convert``, ``encrypt``, ``decrypt``, ``encrypt-keygen``.

Secrets never come from the command line: a passphrase is read from ``--passphrase-file``,
else from ``DLSEC_PASSPHRASE``, else from a hidden prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import (
    ForceOpt,
    JsonOpt,
    PassFileOpt,
    _passphrase,
    app,
    emit_json,
    err_console,
    out_console,
)
from dlsec.errors import EXIT_FINDING, EXIT_UNSCANNABLE, UsageError
from dlsec.fsutil import atomic_write_text
from dlsec.scan import ScanResult

AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        help="Also accept this global (module.name) in pickles; repeatable. Reported in the output.",
    ),
]
_VERDICT_STYLE = {"safe": "green", "unsafe": "bold red", "unscannable": "yellow"}
_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}


def _findings_text(result: ScanResult) -> str:
    if result.findings:
        worst = result.findings[0]
        more = f" (+{len(result.findings) - 1} more)" if len(result.findings) > 1 else ""
        return f"{worst.reason}{more}"
    return result.error or ""


_SCAN_FORMATS = ("table", "json", "sarif")


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (scanned recursively).")],
    allow: AllowOpt = None,
    allow_unscannable: Annotated[
        bool,
        typer.Option(
            "--allow-unscannable",
            help="Report files that could not be read completely as a warning (exit 0), not exit 3.",
        ),
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output: table (default), json or sarif (SARIF 2.1.0).")
    ] = "table",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the json or sarif output to this file instead of stdout."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Scan model files for code that runs when loaded: safe, unsafe or unscannable.

    The format comes from the bytes, never the name. A file is unsafe when loading it would
    import or call something off the allowlist (the global or opcode is named); unscannable
    when it could not be read completely: an encrypted archive member, a truncated or unknown
    format, or content that does not match its extension. Exit 0 all safe, 1 a file is unsafe,
    3 a file is unscannable (0 with --allow-unscannable), 2 bad usage.

    Example:

    \b
        dlsec scan model.pt checkpoints/ --format sarif --output dlsec.sarif
    """
    from dlsec.scan import scan_paths, scan_sarif, scan_verdict

    if json_out:
        fmt = "json"
    if fmt not in _SCAN_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(_SCAN_FORMATS)}, got {fmt!r}")
    if output is not None and fmt == "table":
        raise UsageError("--output writes json or sarif: add --format json or --format sarif")
    allowed = list(allow or [])
    results = scan_paths(paths, allow=allowed)
    unsafe = [r for r in results if r.verdict == "unsafe"]
    unscannable = [r for r in results if r.verdict == "unscannable"]
    if fmt == "table":
        _scan_table(results, allowed, allow_unscannable)
    else:
        if fmt == "json":
            records = []
            for r in results:
                record: dict[str, Any] = r.to_dict()
                if allowed:
                    record["allowlist_extended"] = allowed
                records.append(record)
            counts = {v: sum(r.verdict == v for r in results) for v in ("safe", "unsafe", "unscannable")}
            payload: Any = {**scan_verdict(results), "counts": counts, "files": records}
        else:
            import dlsec

            payload = scan_sarif(results, version=dlsec.__version__, allow_unscannable=allow_unscannable)
        if output is None:
            emit_json(payload)
        else:
            atomic_write_text(output, json.dumps(payload, indent=2) + "\n")
            err_console().print(
                f"{len(results)} file(s): {len(unsafe)} unsafe, {len(unscannable)} unscannable; "
                f"{fmt} written to {output}",
                markup=False,
            )
    if unsafe:
        raise typer.Exit(EXIT_FINDING)
    if unscannable and not allow_unscannable:
        raise typer.Exit(EXIT_UNSCANNABLE)


def _scan_table(results: list[ScanResult], allowed: list[str], allow_unscannable: bool) -> None:
    console = out_console()
    if allowed:
        console.print(
            f"[yellow]note:[/] --allow extended the allowlist with {escape(', '.join(allowed))}; "
            "files that pass only because of it are marked"
        )
    table = Table("verdict", "format", "path", "detail", title="dlsec scan")
    for r in results:
        detail = _findings_text(r)
        if r.error_kind is not None and not r.findings:
            detail = f"{r.error_kind}: {detail}"
        if r.allowed_by_user:
            detail = (detail + "; " if detail else "") + f"allowed by --allow: {', '.join(r.allowed_by_user)}"
        if r.notes:
            detail = (detail + "; " if detail else "") + "; ".join(r.notes)
        style = _VERDICT_STYLE[r.verdict]
        table.add_row(f"[{style}]{r.verdict}[/]", r.format, escape(r.path), escape(detail))
    console.print(table)
    for r in results:
        if not r.findings:
            continue
        findings = Table("severity", "code", "import", "offset", "where", "reason", title=escape(r.path))
        for f in r.findings[:20]:
            findings.add_row(
                f"[{_SEVERITY_STYLE[f.severity]}]{f.severity}[/]",
                f.code,
                escape(f.import_name or ""),
                "" if f.offset is None else str(f.offset),
                escape(f.member or ""),
                escape(f.reason),
            )
        console.print(findings)
    counts = {v: sum(r.verdict == v for r in results) for v in ("safe", "unsafe", "unscannable")}
    console.print(
        f"{len(results)} file(s): {counts['safe']} safe, {counts['unsafe']} unsafe, "
        f"{counts['unscannable']} unscannable"
        + (" (allowed by --allow-unscannable)" if allow_unscannable and counts["unscannable"] else "")
    )


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="The checkpoint (.pt, .pth, .bin, .npy, .npz...).")],
    to: Annotated[Path, typer.Option("--to", help="The .safetensors file to write.")],
    select: Annotated[
        str | None,
        typer.Option(
            "--select", help="Convert only this sub-tree of the checkpoint (dotted key, e.g. model)."
        ),
    ] = None,
    allow: AllowOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a checkpoint to safetensors, only after it scans safe (never with torch.load).

    Example:

    \b
        dlsec convert model.pt --to model.safetensors
    """
    from dlsec.scan import convert_to_safetensors

    result = convert_to_safetensors(source, to, allow=list(allow or []), select=select, overwrite=force)
    if json_out:
        emit_json(result.to_dict())
        return
    console = out_console()
    console.print(
        f"converted {escape(str(source))} ({result.format}) to {escape(result.output)}: "
        f"{result.tensors} tensor(s)"
    )
    if result.skipped:
        shown = ", ".join(result.skipped[:8]) + (" ..." if len(result.skipped) > 8 else "")
        console.print(f"[yellow]not tensors, left out:[/] {escape(shown)}")


@app.command()
def encrypt(
    source: Annotated[Path, typer.Argument(help="The file to encrypt.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: SOURCE.enc).")
    ] = None,
    recipient: Annotated[
        Path | None,
        typer.Option("--recipient", help="Encrypt for this public key (.pub.pem from encrypt-keygen)."),
    ] = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encrypt a file with AES-256-GCM in authenticated chunks (passphrase or recipient key).

    Example:

    \b
        dlsec encrypt model.safetensors --recipient recipient.pub.pem
    """
    from dlsec.release import encrypt_file

    output = out if out is not None else source.with_name(source.name + ".enc")
    if recipient is not None:
        if passphrase_file is not None:
            raise UsageError("--recipient and --passphrase-file exclude each other")
        encrypt_file(source, output, recipient=recipient, overwrite=force)
        mode = "recipient"
    else:
        if not source.is_file():
            raise UsageError(f"{source}: no such file")
        secret = _passphrase(passphrase_file, confirm=True, prompt="passphrase")
        encrypt_file(source, output, passphrase=secret, overwrite=force)
        mode = "passphrase"
    payload = {"input": str(source), "output": str(output), "mode": mode, "bytes": output.stat().st_size}
    if json_out:
        emit_json(payload)
    else:
        out_console().print(f"encrypted {escape(str(source))} -> {escape(str(output))} ({mode})")


@app.command()
def decrypt(
    source: Annotated[Path, typer.Argument(help="The encrypted file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: SOURCE without .enc).")
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option("--identity", help="Private key (.key.pem) for files encrypted with --recipient."),
    ] = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Decrypt a file; wrong key or any tampered byte is an error (exit 1) and writes nothing.

    Example:

    \b
        dlsec decrypt model.safetensors.enc --identity recipient.key.pem --out restored.safetensors
    """
    from dlsec.release import decrypt_file, read_header

    if out is None:
        if source.suffix != ".enc":
            raise UsageError("give --out: the input does not end in .enc")
        out = source.with_suffix("")
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    header = read_header(source)
    if header.mode == "recipient":
        if identity is None:
            raise UsageError(f"{source} is encrypted for a recipient key; pass --identity KEY.pem")
        secret = _passphrase(passphrase_file, confirm=False, prompt=f"passphrase for {identity}")
        decrypt_file(source, out, identity=identity, identity_passphrase=secret, overwrite=force)
    else:
        if identity is not None:
            raise UsageError(f"{source} is encrypted with a passphrase, not for --identity")
        secret = _passphrase(passphrase_file, confirm=False, prompt="passphrase")
        decrypt_file(source, out, passphrase=secret, overwrite=force)
    payload = {"input": str(source), "output": str(out), "mode": header.mode, "bytes": out.stat().st_size}
    if json_out:
        emit_json(payload)
    else:
        out_console().print(f"decrypted {escape(str(source))} -> {escape(str(out))}")


@app.command(name="encrypt-keygen")
def encrypt_keygen(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Key name: writes OUT.pub.pem and OUT.key.pem (mode 0600).")
    ],
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a recipient key pair (X25519 + ML-KEM-768); the private key is passphrase-encrypted.

    Example:

    \b
        dlsec encrypt-keygen --out recipient
    """
    from dlsec.release import generate_recipient_keys

    secret = _passphrase(passphrase_file, confirm=True, prompt="passphrase for the new private key")
    pub, key = generate_recipient_keys(out, passphrase=secret, overwrite=force)
    if json_out:
        emit_json({"public_key": str(pub), "private_key": str(key)})
        return
    console = out_console()
    console.print(f"public key (share it):  {escape(str(pub))}")
    console.print(f"private key (keep it):  {escape(str(key))}")
    err_console().print("encrypt with: dlsec encrypt FILE --recipient " + str(pub), markup=False)
