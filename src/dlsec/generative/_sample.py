"""Generated images as files: render a sample to an RGB PNG, optionally watermark it, then sign it."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlsec.errors import UsageError
from dlsec.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from dlsec.generative._provenance import GeneratorInfo

__all__ = [
    "SampleFile",
    "assemble_png",
    "png_chunks",
    "read_rgb",
    "render_png",
    "signed_samples",
    "to_rgb",
    "write_samples",
]


@dataclass(frozen=True)
class SampleFile:
    """One written image: its path and the SHA-256 of its bytes."""

    path: Path
    sha256: str


def to_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """A grey image in [0, 1] as an RGB uint8 array of ``size`` x ``size`` (nearest-neighbour upscaling)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise UsageError(f"expected a single-channel image of shape (H, W), not {array.shape}")
    if size < array.shape[0] or size % array.shape[0] or size % array.shape[1]:
        raise UsageError(f"--size must be a multiple of the generator's {array.shape[0]} pixels, not {size}")
    factor = size // array.shape[0]
    grey = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    grey = np.kron(grey, np.ones((factor, factor), dtype=np.uint8))
    return np.repeat(grey[:, :, None], 3, axis=2)


def render_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 array (no metadata, so equal pixels give equal bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, "PNG")
    return buf.getvalue()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(type, data)`` chunks of a PNG, in order (CRCs not checked; a cut final chunk is dropped)."""
    out, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def assemble_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """PNG bytes from ``(type, data)`` chunks, each with its length and a correct CRC.

    How tampered copies of a signed image are made: chunks dropped, reordered or replaced, the
    file still well-formed, so only provenance verification can tell.
    """
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    return PNG_SIGNATURE + body


def signed_samples(
    generator_name: str,
    *,
    n: int,
    seed: int = 0,
    size: int = 256,
    watermark: bytes | None = None,
    watermark_method: str = "dwtdct",
    home: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[GeneratorInfo, list[tuple[str, bytes]]]:
    """Draw ``n`` images from a built-in generator, each a C2PA-signed PNG in memory.

    Returns the generator's identity (name, version, weights SHA-256, as in every manifest) and
    ``(file name, PNG bytes)`` per image. With ``watermark``, a watermark (``watermark_method``:
    ``"dwtdct"`` or ``"learned"``) is embedded before signing (signing last, so the manifest
    covers the watermarked pixels). What :func:`write_samples` writes and the gateway serves.
    """
    from dlsec.generative._gan import load_generator
    from dlsec.generative._provenance import GeneratorInfo, sign_image
    from dlsec.generative._watermark import get_watermark

    marker = get_watermark(watermark_method, home=home) if watermark is not None else None
    generator = load_generator(generator_name, home=home)
    info = GeneratorInfo(generator.name, generator.version, generator.weights_sha256)
    out: list[tuple[str, bytes]] = []
    for i, image in enumerate(generator.sample(n, seed=seed)):
        rgb = to_rgb(image, size)
        if marker is not None and watermark is not None:
            rgb = marker.embed(rgb, watermark)
        name = f"{generator.name}-{seed}-{i:04d}.png"
        out.append((name, sign_image(render_png(rgb), info, title=name, home=home)))
        if progress is not None:
            progress(i + 1, n)
    return info, out


def write_samples(
    generator_name: str,
    out: str | Path,
    *,
    n: int,
    seed: int = 0,
    size: int = 256,
    watermark: bytes | None = None,
    watermark_method: str = "dwtdct",
    home: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SampleFile]:
    """Draw ``n`` images from a built-in generator and write each as a C2PA-signed PNG in ``out``.

    With ``watermark``, a watermark (``watermark_method``: ``"dwtdct"`` or ``"learned"``) is
    embedded before signing (signing last, so the manifest covers the watermarked pixels).

    Example:
        >>> files = write_samples("zoo-gan", "out", n=4)    # doctest: +SKIP
    """
    import hashlib

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _, images = signed_samples(
        generator_name,
        n=n,
        seed=seed,
        size=size,
        watermark=watermark,
        watermark_method=watermark_method,
        home=home,
        progress=progress,
    )
    return [
        SampleFile(atomic_write_bytes(folder / name, signed), hashlib.sha256(signed).hexdigest())
        for name, signed in images
    ]


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file (PNG or JPEG) as an RGB uint8 array; a corrupt or other file is a ``DataError``."""
    from PIL import Image, UnidentifiedImageError

    from dlsec.errors import DataError

    path = Path(path)
    try:
        head = path.open("rb").read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")):
        raise DataError(f"{path}: unsupported format (PNG and JPEG images are read)")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt image ({exc})") from exc
