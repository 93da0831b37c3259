"""``dlsec gen``: signed samples from a built-in generator, C2PA checks, watermarks, detection.

``dlsec gen verify`` exits 0 when every file's manifest is intact and trusted, 1 when one is
missing, tampered, untrusted or invalid (naming which), and 2 when a file is bad input (corrupt,
unreadable, not PNG or JPEG); bad input wins, since the check could not run on that file.
``dlsec gen detect`` follows the same rule: 1 when an image is flagged as generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import JsonOpt, app, emit_json, err_console, out_console, settings
from dlsec.errors import EXIT_FINDING, EXIT_OK, EXIT_USAGE, Error, UsageError

group = typer.Typer(
    help="Generative models: C2PA-signed samples, provenance checks, watermarks, detection.",
    no_args_is_help=True,
)
app.add_typer(group, name="gen")
watermark_group = typer.Typer(
    help="Invisible watermarks: the learned one (HiDDeN-style) or DWT-DCT (invisible-watermark).",
    no_args_is_help=True,
)
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="learned (32 bits, any image of 32x32 or more) or dwtdct (256x256 or more).",
    ),
]
group.add_typer(watermark_group, name="watermark")


@group.command("sample")
def gen_sample(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the signed PNG files.")],
    model: Annotated[
        str, typer.Option("--model", help="Built-in generator: zoo-gan or zoo-vae.")
    ] = "zoo-gan",
    n: Annotated[int, typer.Option("--n", min=1, max=10000, help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latent draws.")] = 0,
    size: Annotated[
        int, typer.Option("--size", help="Width and height in pixels (upscaled; 256+ for a watermark).")
    ] = 256,
    watermark: Annotated[
        str | None,
        typer.Option("--watermark", help="Embed this text as a watermark before signing."),
    ] = None,
    watermark_method: Annotated[
        str, typer.Option("--watermark-method", help="learned or dwtdct (the default).")
    ] = "dwtdct",
    json_out: JsonOpt = False,
) -> None:
    """Draw images from a generator; each PNG carries a signed C2PA manifest (generator, weights digest).

    Example:

    \b
        dlsec gen sample --model zoo-gan --n 16 --out samples
    """
    from dlsec.generative import write_samples

    message = watermark.encode("utf-8") if watermark is not None else None
    files = write_samples(
        model,
        out,
        n=n,
        seed=seed,
        size=size,
        watermark=message,
        watermark_method=watermark_method,
        home=settings(ctx).home,
    )
    rows = [{"path": str(f.path), "sha256": f.sha256} for f in files]
    if json_out:
        emit_json({"model": model, "seed": seed, "files": rows})
        return
    out_console().print(f"{len(files)} signed image(s) from {escape(model)} written to {escape(str(out))}")


@group.command("verify")
def gen_verify(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Images (PNG or JPEG) to check.")],
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="Also trust this root certificate (PEM); repeatable."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate each image's C2PA manifest; exit 1 naming what failed (tampered, stripped, untrusted).

    Example:

    \b
        dlsec gen verify samples/zoo-gan-0-0000.png
    """
    from dlsec.generative import ProvenanceError, verify_provenance

    home = settings(ctx).home
    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for path in files:
        try:
            report = verify_provenance(path, home=home, trust=trust)
        except ProvenanceError as exc:
            results.append(
                {"path": str(path), "valid": False, "error": type(exc).__name__, "reason": str(exc)}
            )
            code = max(code, EXIT_FINDING)
        except Error as exc:
            results.append(
                {"path": str(path), "valid": False, "error": type(exc).__name__, "reason": str(exc)}
            )
            code = max(code, EXIT_USAGE)
        else:
            results.append(report.to_dict())
    if json_out:
        emit_json({"files": results, "valid": code == EXIT_OK})
    else:
        out, err = out_console(), err_console()
        for row in results:
            if row["valid"]:
                gen = row["generator"]
                out.print(
                    f"ok    {escape(row['path'])}: signed by {escape(row['signer'])}; "
                    f"{escape(str(gen.get('name')))} {escape(str(gen.get('version')))}, "
                    f"weights sha256 {escape(str(gen.get('weights_sha256')))}"
                )
            else:
                err.print(f"FAIL  {row['reason']}", markup=False)
    if code:
        raise typer.Exit(code)


def _read(path: Path) -> Any:
    from dlsec.generative import read_rgb

    return read_rgb(path)


@watermark_group.command("embed")
def watermark_embed(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Image (PNG or JPEG).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Text to embed (UTF-8).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Watermarked PNG to write.")],
    method: MethodOpt = "dwtdct",
    json_out: JsonOpt = False,
) -> None:
    """Embed an invisible watermark; write a PNG (a C2PA manifest in the input is not kept).

    Example:

    \b
        dlsec gen watermark embed in.png -m dlsc --method learned -o marked.png
    """
    from dlsec.fsutil import atomic_write_bytes
    from dlsec.generative import get_watermark, render_png

    rgb = _read(image)
    data = message.encode("utf-8")
    marker = get_watermark(method, home=settings(ctx).home)
    marked = marker.embed(rgb, data)
    atomic_write_bytes(out, render_png(marked))
    payload = {
        "path": str(out),
        "method": method,
        "bits": len(data) * 8,
        "capacity_bits": marker.capacity(rgb.shape),
    }
    if json_out:
        emit_json(payload)
        return
    out_console().print(
        f"{len(data) * 8}-bit watermark embedded in {escape(str(out))} "
        f"(capacity {payload['capacity_bits']} bits); detect with --method {method} --bits {len(data) * 8}"
    )


@watermark_group.command("detect")
def watermark_detect(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Image (PNG or JPEG).")],
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect", help="The text that should be there: report bit accuracy, exit 1 if absent."
        ),
    ] = None,
    bits: Annotated[
        int | None, typer.Option("--bits", help="Number of bits to read (default: the length of --expect).")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.5, max=1.0, help="Bit accuracy that counts as found.")
    ] = 0.9,
    method: MethodOpt = "dwtdct",
    json_out: JsonOpt = False,
) -> None:
    """Read a watermark; with --expect, report bit accuracy and exit 1 when it is not found.

    Example:

    \b
        dlsec gen watermark detect marked.png --method learned --expect dlsc
    """
    from dlsec.generative import WatermarkMissingError, bit_accuracy, get_watermark, message_bits

    expected = message_bits(expect.encode("utf-8")) if expect is not None else None
    if bits is None:
        if expected is None:
            raise UsageError("say how many bits to read: --bits N, or --expect TEXT")
        bits = len(expected)
    if expected is not None and bits != len(expected):
        raise UsageError(f"--bits {bits} differs from the {len(expected)} bits of --expect")
    rgb = _read(image)
    found = get_watermark(method, home=settings(ctx).home).detect(rgb, bits)
    payload: dict[str, Any] = {
        "path": str(image),
        "method": method,
        "bits": "".join(map(str, found.tolist())),
    }
    if bits % 8 == 0:
        import numpy as np

        raw = np.packbits(found).tobytes()
        payload["hex"] = raw.hex()
        payload["text"] = raw.decode("utf-8", errors="replace")
    accuracy = None
    if expected is not None:
        accuracy = bit_accuracy(found, expected)
        payload.update(bit_accuracy=accuracy, found=accuracy >= threshold, threshold=threshold)
    if json_out:
        emit_json(payload)
    else:
        text = payload.get("text")
        line = f"{escape(str(image))}: read {bits} bits" + (
            f" ({escape(repr(text))})" if text is not None else ""
        )
        if accuracy is not None:
            line += f"; bit accuracy {accuracy:.3f} against the expected message"
        out_console().print(line)
    if accuracy is not None and accuracy < threshold:
        raise WatermarkMissingError(
            f"{image}: expected watermark not found (bit accuracy {accuracy:.3f} < {threshold})"
        )


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_files(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their PNG and JPEG files (sorted, not recursive)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{path}: no PNG or JPEG files in this folder")
            out.extend(found)
        else:
            out.append(path)
    return out


@group.command("detect")
def gen_detect(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Images (PNG or JPEG) or folders of them.")],
    detector: Annotated[
        str,
        typer.Option("--detector", help="spectrum-gan (trained on zoo-gan) or spectrum-vae (on zoo-vae)."),
    ] = "spectrum-gan",
    json_out: JsonOpt = False,
) -> None:
    """Flag generated images (a CNN on the image and its spectrum); exit 1 when one is flagged.

    The threshold holds a 1% false positive rate on held-out real digits.

    Example:

    \b
        dlsec gen detect samples/ --detector spectrum-gan
    """
    from dlsec.generative import load_synthetic_detector, read_rgb

    files = _image_files(paths)
    det = load_synthetic_detector(detector, home=settings(ctx).home)
    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for path in files:
        try:
            rgb = read_rgb(path)
        except Error as exc:
            results.append({"path": str(path), "error": type(exc).__name__, "reason": str(exc)})
            code = max(code, EXIT_USAGE)
            continue
        score = float(det.score([rgb])[0])
        flagged = score > det.threshold_
        results.append({"path": str(path), "score": score, "generated": flagged})
        if flagged:
            code = max(code, EXIT_FINDING)
    flagged_n = sum(1 for r in results if r.get("generated"))
    if json_out:
        emit_json({"detector": detector, "threshold": det.threshold_, "flagged": flagged_n, "files": results})
    else:
        out, err = out_console(), err_console()
        for row in results:
            if "error" in row:
                err.print(f"ERROR {row['reason']}", markup=False)
            else:
                verdict = "GENERATED" if row["generated"] else "real     "
                out.print(f"{verdict} {row['score']:+7.2f}  {row['path']}", markup=False)
        out.print(
            f"{flagged_n} of {len(results)} flagged as generated by {escape(detector)} "
            f"(threshold {det.threshold_:+.2f}, 1% false positives on real digits)"
        )
    if code:
        raise typer.Exit(code)
