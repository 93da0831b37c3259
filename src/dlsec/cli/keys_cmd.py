"""``dlsec keys generate``, ``dlsec sign`` and ``dlsec verify``: signed model artifacts.

Passphrases never come from the command line: ``--passphrase-file``, ``$DLSEC_PASSPHRASE`` or a
prompt. Key generation is recorded in the audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import ForceOpt, JsonOpt, PassFileOpt, _passphrase, app, emit_json, out_console, settings
from dlsec.core.home import default_key_dir
from dlsec.errors import UsageError
from dlsec.release import generate_signing_keys, load_signing_keys, load_verify_keys, sign_model, verify_model

keys_app = typer.Typer(help="Signing keys (and, with the gateway, API keys).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

RegistryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        envvar="DLSEC_REGISTRY_URL",
        help="Registry database URL (default: SQLite under the dlsec home).",
    ),
]
SignatureOpt = Annotated[
    Path | None,
    typer.Option("--signature", help="Signature file (default: DIR/model.sig, or FILE.sig beside a file)."),
]


@keys_app.command("generate")
def keys_generate(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Key directory (default: HOME/keys, what verify trusts)."),
    ] = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an ECDSA P-256 and an ML-DSA-65 signing key pair (private keys passphrase-encrypted).

    Example:

    \b
        dlsec keys generate
    """
    from dlsec.store import Registry

    home = settings(ctx).home
    directory = out if out is not None else default_key_dir(home)
    secret = _passphrase(passphrase_file, confirm=True, prompt="passphrase for the new signing keys")
    record = generate_signing_keys(directory, passphrase=secret, overwrite=force)
    fingerprints = {alg: record[alg]["fingerprint"] for alg in ("ecdsa-p256", "ml-dsa-65")}
    registry = Registry.open(registry_url, home=home)
    try:
        registry.audit.append(
            "keys.generate", str(directory.resolve()), {"fingerprints": fingerprints}, publish=True
        )
    finally:
        registry.close()
    if json_out:
        emit_json({"directory": str(directory), "fingerprints": fingerprints})
        return
    console = out_console()
    console.print(f"signing keys written to {escape(str(directory))}")
    for alg, fp in fingerprints.items():
        console.print(f"  {alg:11s} {fp}")
    console.print("share the *.pub.pem files; keep the *.key.pem files and the passphrase secret")


@app.command()
def sign(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Model file or directory to sign.")],
    key: Annotated[Path | None, typer.Option("--key", help="Key directory (default: HOME/keys).")] = None,
    signature: SignatureOpt = None,
    passphrase_file: PassFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sign a model: per-file SHA-256 manifest, in-toto statement, DSSE with ECDSA P-256 + ML-DSA-65.

    Example:

    \b
        dlsec keys generate
        dlsec sign runs/bc
    """
    directory = key if key is not None else default_key_dir(settings(ctx).home)
    if not model.exists():
        raise typer.BadParameter(f"{model}: no such file or directory", param_hint="MODEL")
    secret = _passphrase(passphrase_file, confirm=False, prompt=f"passphrase for {directory}")
    keys = load_signing_keys(directory, passphrase=secret)
    sig_path, manifest = sign_model(model, keys, signature=signature)
    payload = {
        "signature": str(sig_path),
        "name": manifest.name,
        "root_digest": manifest.root_digest,
        "files": len(manifest.files),
        "keys": keys.public().fingerprints,
    }
    if json_out:
        emit_json(payload)
        return
    out_console().print(
        f"signed {escape(str(model))}: {len(manifest.files)} file(s), root {manifest.root_digest[:16]}..., "
        f"signature {escape(str(sig_path))} (ECDSA P-256 + ML-DSA-65)"
    )


@app.command()
def verify(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Model file or directory to verify.")],
    pub: Annotated[
        Path | None,
        typer.Option("--pub", help="Trusted public keys: a key directory (default: HOME/keys)."),
    ] = None,
    signature: SignatureOpt = None,
    classical_only: Annotated[
        bool,
        typer.Option(
            "--classical-only",
            help="Accept an ECDSA-only signature (e.g. from model_signing); weaker than the hybrid default.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Verify a model's signature and files; exit 1 (naming what is wrong) unless everything matches.

    Example:

    \b
        dlsec verify runs/bc
    """
    source = pub if pub is not None else default_key_dir(settings(ctx).home)
    keys = load_verify_keys(source, require_hybrid=not classical_only)
    if classical_only and not source.is_file():
        keys = type(keys)(keys.ecdsa, None)
    verified = verify_model(model, keys, signature=signature)
    if json_out:
        emit_json(verified.to_dict())
        return
    kind = "hybrid ECDSA P-256 + ML-DSA-65" if verified.hybrid else "ECDSA P-256 only"
    out_console().print(
        f"verified {escape(str(model))}: {len(verified.manifest.files)} file(s) match, {kind} signature by "
        f"{verified.key_fingerprints['ecdsa-p256'][:16]}..."
    )


c2pa_app = typer.Typer(
    help="The C2PA signing key and X.509 chain that stamp generated images, and the trust list.",
    no_args_is_help=True,
)
keys_app.add_typer(c2pa_app, name="c2pa")


def _audit(
    registry_url: str | None, home: Path | None, action: str, subject: str, details: dict[str, Any]
) -> None:
    from dlsec.store import Registry

    registry = Registry.open(registry_url, home=home)
    try:
        registry.audit.append(action, subject, details, publish=True)
    finally:
        registry.close()


def _print_signer(info: dict[str, Any]) -> None:
    console = out_console()
    signer = info["signer"]
    state = "[green]valid[/]" if info["valid"] else "[yellow]expiring: rotate it[/]"
    trusted = "[green]in the trust list[/]" if info["trusted"] else "[red]NOT in the trust list[/]"
    console.print(f"signer {escape(signer['subject'])} ({state}, chain {trusted})")
    console.print(f"  issuer {escape(signer['issuer'])}, until {signer['not_after']}")
    console.print(f"  sha256 {signer['sha256']}")
    console.print(f"  key    {escape(info['key_file'])} (mode {info['key_mode']})")
    console.print(f"trust list ({len(info['trust'])} root(s)):")
    for root in info["trust"]:
        mark = " (current chain)" if root["current"] else ""
        console.print(f"  {root['sha256'][:32]}...  {escape(root['subject'])}{mark}")


@c2pa_app.command("create")
def c2pa_create(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing signer (same as rotate).")
    ] = False,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create the C2PA signing key (0600) and a root, CA and signer certificate; trust the root.

    Example:

    \b
        dlsec keys c2pa create
    """
    from dlsec.generative import c2pa_key_dir, c2pa_signer_info, ensure_c2pa_signer, rotate_c2pa_signer

    home = settings(ctx).home
    folder = c2pa_key_dir(home)
    if (folder / "signer.key.pem").exists() and not force:
        raise UsageError(
            f"a C2PA signer exists under {folder}; rotate it (dlsec keys c2pa rotate) or pass --force"
        )
    if force:
        info = rotate_c2pa_signer(home)
    else:
        ensure_c2pa_signer(home)
        info = c2pa_signer_info(home)
    _audit(registry_url, home, "keys.c2pa.create", str(folder), {"signer_sha256": info["signer"]["sha256"]})
    if json_out:
        emit_json(info)
        return
    _print_signer(info)


@c2pa_app.command("rotate")
def c2pa_rotate(
    ctx: typer.Context,
    retire_old: Annotated[
        bool,
        typer.Option(
            "--retire-old",
            help="Remove the old roots from the trust list (a compromised key): images they signed become "
            "untrusted.",
        ),
    ] = False,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replace the C2PA signing key and chain; the old roots stay trusted unless --retire-old.

    Example:

    \b
        dlsec keys c2pa rotate --retire-old
    """
    from dlsec.generative import rotate_c2pa_signer

    home = settings(ctx).home
    info = rotate_c2pa_signer(home, retire_old=retire_old)
    _audit(
        registry_url,
        home,
        "keys.c2pa.rotate",
        info["folder"],
        {"signer_sha256": info["signer"]["sha256"], "retired": info["retired"]},
    )
    if json_out:
        emit_json(info)
        return
    _print_signer(info)
    if info["retired"]:
        out_console().print(
            f"retired {len(info['retired'])} old root(s): images they signed now verify as untrusted"
        )


@c2pa_app.command("show")
def c2pa_show(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show the C2PA signer certificate, its key file and the trust list.

    Example:

    \b
        dlsec keys c2pa show
    """
    from dlsec.generative import c2pa_signer_info

    info = c2pa_signer_info(settings(ctx).home)
    if json_out:
        emit_json(info)
        return
    _print_signer(info)


@c2pa_app.command("trust")
def c2pa_trust(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="A root CA certificate (PEM) whose chains to accept.")],
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a root CA certificate to the C2PA trust list (images its chains sign then verify).

    Example:

    \b
        dlsec keys c2pa trust partner-root.pem
    """
    from dlsec.generative import trust_c2pa_root

    home = settings(ctx).home
    added = trust_c2pa_root(root, home)
    _audit(registry_url, home, "keys.c2pa.trust", added["file"], {"root_sha256": added["sha256"]})
    if json_out:
        emit_json(added)
        return
    out_console().print(f"trusted {escape(added['subject'])} (sha256 {added['sha256']})")
