"""The baseline invisible watermark: DWT-DCT through the ``invisible-watermark`` library.

The library (``imwatermark``) embeds each bit in the largest AC coefficient of a 4x4 DCT block of
the Haar DWT approximation of the U channel (YUV), quantised with step 36; bits repeat over the
blocks, and detection averages each bit's votes. It works on images of at least 256x256 pixels;
a message with more bits than the image has blocks cannot be embedded, and dlsec says so rather
than letting the library wrap silently.

Images here are RGB ``uint8`` arrays of shape (H, W, 3); the library's BGR order stays inside.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dlsec.errors import SecurityFinding, UsageError

__all__ = [
    "WATERMARK_METHODS",
    "DwtDctWatermark",
    "WatermarkCapacityError",
    "WatermarkMethod",
    "WatermarkMissingError",
    "bit_accuracy",
    "detect_watermark",
    "embed_watermark",
    "get_watermark",
    "message_bits",
    "watermark_capacity",
]

_MIN_PIXELS = 256 * 256  # the library refuses smaller images
_BLOCK = 4
_METHOD = "dwtDct"


class WatermarkCapacityError(UsageError):
    """The message has more bits than the image can carry."""


class WatermarkMissingError(SecurityFinding):
    """The expected watermark was not found (bit accuracy below the threshold)."""


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UsageError(
            f"a watermark needs an RGB uint8 image of shape (H, W, 3), not {array.dtype} {array.shape}"
        )
    if array.shape[0] * array.shape[1] < _MIN_PIXELS:
        raise UsageError(
            f"image of {array.shape[1]}x{array.shape[0]} is too small for the DWT-DCT watermark "
            "(at least 256x256 pixels); sample with --size 256 or more"
        )
    return array


def watermark_capacity(shape: tuple[int, ...]) -> int:
    """The most bits an image of ``shape`` (H, W, ...) carries: one per 4x4 block of the DWT band."""
    rows, cols = (shape[0] // 4 * 4) // 2, (shape[1] // 4 * 4) // 2
    return (rows // _BLOCK) * (cols // _BLOCK)


def message_bits(message: bytes) -> np.ndarray:
    """The bits of ``message``, most significant first (the library's order)."""
    return np.unpackbits(np.frombuffer(message, dtype=np.uint8))


def _imwatermark() -> Any:
    """The invisible-watermark package, or a one-line error saying how to install it.

    It is installed without its declared dependencies (the GUI ``opencv-python`` and torch):
    ``make setup`` runs ``pip install --no-deps invisible-watermark`` beside the headless OpenCV.
    """
    try:
        import imwatermark
    except ImportError as exc:
        raise UsageError(
            f"the DWT-DCT watermark needs invisible-watermark ({exc}); "
            "pip install --no-deps invisible-watermark opencv-python-headless PyWavelets"
        ) from None
    return imwatermark


def embed_watermark(image: np.ndarray, message: bytes) -> np.ndarray:
    """Embed ``message`` in an RGB image with DWT-DCT; return the watermarked copy.

    Raises:
        WatermarkCapacityError: the message has more bits than the image has blocks.
        UsageError: the image is not RGB uint8 or smaller than 256x256.

    Example:
        >>> marked = embed_watermark(rgb, b"dlsec")                 # doctest: +SKIP
        >>> detect_watermark(marked, 40) == message_bits(b"dlsec")  # doctest: +SKIP
    """
    WatermarkEncoder = _imwatermark().WatermarkEncoder

    array = _check_image(image)
    if not message:
        raise UsageError("the watermark message is empty")
    bits = len(message) * 8
    capacity = watermark_capacity(array.shape)
    if bits > capacity:
        raise WatermarkCapacityError(
            f"message of {bits} bits exceeds the capacity of a {array.shape[1]}x{array.shape[0]} "
            f"image ({capacity} bits, {capacity // 8} bytes); shorten it or use a larger image"
        )
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", message)
    bgr = np.ascontiguousarray(array[..., ::-1])
    marked = encoder.encode(bgr, _METHOD)
    return np.ascontiguousarray(np.asarray(marked, dtype=np.uint8)[..., ::-1])


def detect_watermark(image: np.ndarray, n_bits: int) -> np.ndarray:
    """Read ``n_bits`` watermark bits (0/1, uint8) from an RGB image."""
    _imwatermark()
    from imwatermark.maxDct import EmbedMaxDct

    array = _check_image(image)
    capacity = watermark_capacity(array.shape)
    if not 1 <= n_bits <= capacity:
        raise WatermarkCapacityError(
            f"cannot read {n_bits} bits from a {array.shape[1]}x{array.shape[0]} image (1 to {capacity} bits)"
        )
    # The decoder's bit reader, without its byte packing, so that partial reads can be scored.
    bits = EmbedMaxDct(watermarks=[], wmLen=n_bits).decode(np.ascontiguousarray(array[..., ::-1]))
    return np.asarray(bits, dtype=np.uint8)


def bit_accuracy(found: np.ndarray, expected: np.ndarray) -> float:
    """The fraction of bits that agree."""
    found, expected = np.asarray(found).astype(np.uint8), np.asarray(expected).astype(np.uint8)
    if found.shape != expected.shape:
        raise UsageError(f"bit strings of different lengths: {found.size} and {expected.size}")
    return float((found == expected).mean())


class WatermarkMethod(Protocol):
    """What every watermark offers: its capacity, embedding and reading bits."""

    @property
    def name(self) -> str:
        """The method's name."""
        ...

    def capacity(self, shape: tuple[int, ...]) -> int:
        """The most bits an image of ``shape`` (H, W, 3) carries."""
        ...

    def embed(self, image: np.ndarray, message: bytes) -> np.ndarray:
        """The watermarked copy of an RGB uint8 image."""
        ...

    def detect(self, image: np.ndarray, n_bits: int) -> np.ndarray:
        """The first ``n_bits`` bits (0/1, uint8) read from an RGB uint8 image."""
        ...


class DwtDctWatermark:
    """The DWT-DCT baseline (invisible-watermark) as a :class:`WatermarkMethod`."""

    @property
    def name(self) -> str:
        return "dwtdct"

    def capacity(self, shape: tuple[int, ...]) -> int:
        return watermark_capacity(shape)

    def embed(self, image: np.ndarray, message: bytes) -> np.ndarray:
        return embed_watermark(image, message)

    def detect(self, image: np.ndarray, n_bits: int) -> np.ndarray:
        return detect_watermark(image, n_bits)


def _learned(home: str | Path | None) -> WatermarkMethod:
    from dlsec.generative._learned import load_learned_watermark

    return load_learned_watermark(home=home)


WATERMARK_METHODS: dict[str, Callable[[str | Path | None], WatermarkMethod]] = {
    "dwtdct": lambda home: DwtDctWatermark(),
    "learned": _learned,
}


def get_watermark(method: str, *, home: str | Path | None = None) -> WatermarkMethod:
    """The watermark ``method`` (``"learned"``, trained on first use, or ``"dwtdct"``).

    Example:
        >>> wm = get_watermark("learned")                # doctest: +SKIP
        >>> wm.detect(wm.embed(rgb, b"dlsc"), 32)        # doctest: +SKIP
    """
    if method not in WATERMARK_METHODS:
        known = ", ".join(WATERMARK_METHODS)
        raise UsageError(f"unknown watermark method {method!r}; choose one of: {known}")
    return WATERMARK_METHODS[method](home)
