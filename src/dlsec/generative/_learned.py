"""The learned watermark: a HiDDeN-style encoder and decoder (Zhu et al., 2018) trained offline.

**Working size.** The built-in generators make 8x8 grey digits, shown upscaled (256x256 by
default). 64 pixels carry too little for a useful message, so the watermark works at a fixed
working size of 32x32 (:data:`WORKING_SIZE`): the luminance of any image of at least 32x32 is
area-averaged to 32x32, the encoder makes a residual there, the residual is upsampled
(bilinear) to the image's size and added to the three channels alike (a grey image stays grey).
The decoder reads the area-averaged 32x32 luminance, and also the frames the image would fill
if it were a crop of the marked original (keeping 90% or 95% of each side, at every offset in
steps of half a working pixel, the missing border filled by repeating the edge): 66 candidates,
and the reading the decoder is most confident about (mean absolute logit) wins. This search for
synchronisation is the classical answer to cropping. Capacity is fixed: :data:`CAPACITY_BITS`
bits; a shorter message is padded with zero bits, a longer one is a
:class:`~dlsec.generative.WatermarkCapacityError`.

**Strength.** The residual is scaled to a fixed root-mean-square of 0.01 (on [0, 1]) at the
working size, 40 dB PSNR before clipping and rounding, so image quality is set by construction
rather than traded in the loss; training then only maximises how well the bits survive.

**Noise layer.** As in HiDDeN, a differentiable noise layer sits between encoder and decoder
during training, one edit per batch drawn from: none, a JPEG approximation (8x8 block DCT,
the standard luminance table at quality 50 to 90, rounding replaced by its cubic approximation,
Shin and Song 2017), a crop keeping 80% to 100% of each side resized back, a down-and-up resize
(0.5x to 0.9x), Gaussian noise (sigma up to 0.04) and a Gaussian blur (sigma 0.5 to 1.5), then
clipping and 8-bit quantisation noise. The edits act at the working size, which is harsher than
the same edit on the full-size image that is later area-averaged. HiDDeN's adversarial image
discriminator is left out: the fixed-strength residual replaces its image-quality losses.

Training data: the 8x8 digits upscaled to 32x32, with flips, quarter turns and grey-level
inversion, so the watermark does not rely on a black background.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlsec.errors import UsageError

__all__ = [
    "CAPACITY_BITS",
    "WORKING_SIZE",
    "LearnedWatermark",
    "LearnedWatermarkEntry",
    "load_learned_watermark",
]

WORKING_SIZE = 32
CAPACITY_BITS = 32
TARGET_RMS = 0.01  # 40 dB PSNR at the working size, before clipping and rounding
_SYNC_KEEP = (0.95, 0.9)  # the crops detection also tries, as fractions of each side
_SYNC_SUBPIXEL = 2  # ... at offsets of half a working pixel


@dataclass(frozen=True)
class LearnedWatermarkEntry:
    """The recipe of the learned watermark; every field determines the trained weights."""

    name: str = "learned-watermark"
    version: str = "1"  # to be bumped whenever the noise layer or the architecture changes
    bits: int = CAPACITY_BITS
    size: int = WORKING_SIZE
    rms: float = TARGET_RMS
    width: int = 16
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    noise: bool = True  # False: only clipping and 8-bit noise (HiDDeN's identity baseline)
    sync: bool = True  # detection also searches crops (for a decoder trained on crops)
    seed: int = 0


DEFAULT_ENTRY = LearnedWatermarkEntry()


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Encoder(nn.Module):
    """(image (N, 1, S, S), bits (N, L) in {0, 1}) -> a residual of RMS ``rms`` per image.

    The message is expanded to an 8x8 map of ``width`` channels (HiDDeN replicates it
    spatially; a linear expansion is as cheap and lets each bit spread over the image), upsampled
    to the working size, and mixed with the image's features by two convolutions.
    """

    def __init__(self, bits: int, width: int, rms: float) -> None:
        super().__init__()
        self.rms = rms
        self.width = width
        self.message = nn.Linear(bits, width // 2 * 8 * 8)
        self.features = _conv(1, width // 2)
        self.mix = nn.Sequential(_conv(width + 1, width), nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, image: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        n, _, h, w = image.shape
        m = self.message(bits * 2 - 1).view(n, self.width // 2, 8, 8)
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        residual = self.mix(torch.cat([self.features(image), m, image], dim=1))
        residual = residual - residual.mean(dim=(2, 3), keepdim=True)
        rms = residual.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-12).sqrt()
        return residual / rms * self.rms


class Decoder(nn.Module):
    """(N, 1, S, S) -> one logit per bit (positive: 1)."""

    def __init__(self, bits: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(1, width, stride=2),  # 16
            _conv(width, 2 * width, stride=2),  # 8
            _conv(2 * width, 2 * width),
            nn.Flatten(),
            nn.Linear(2 * width * 64, bits),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((image - 0.5) * 4)
        return out


class _Pair(nn.Module):
    """Encoder and decoder in one state dict (one weights file, one digest)."""

    def __init__(self, entry: LearnedWatermarkEntry) -> None:
        super().__init__()
        self.encoder: Encoder = Encoder(entry.bits, entry.width, entry.rms)
        self.decoder: Decoder = Decoder(entry.bits, entry.width)


# --------------------------------------------------------------------------- the noise layer

_JPEG_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT = _dct_matrix()


def jpeg_approx(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A differentiable JPEG of grey images (N, 1, H, W) in [0, 1], H and W multiples of 8.

    8x8 block DCT, quantisation with the standard luminance table scaled to ``quality``, and
    rounding replaced by ``round(v) + (v - round(v))**3`` (Shin and Song 2017), whose gradient
    is nearly that of the identity.
    """
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = torch.clamp(torch.floor((_JPEG_LUMA * scale + 50) / 100), min=1)
    n, c, h, w = x.shape
    blocks = (x * 255 - 128).view(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = _DCT @ blocks @ _DCT.T
    v = coef / table
    rounded = torch.round(v)
    v = rounded + (v - rounded) ** 3
    back = _DCT.T @ (v * table) @ _DCT
    return (back.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w) + 128) / 255


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of (N, 1, H, W) images with reflected borders."""
    kernel = _gaussian_kernel(sigma)
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel)


def noise_layer(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """HiDDeN's combined noise, one draw per batch: none, JPEG, crop (resized back), resize,
    Gaussian noise or blur; then clipping and 8-bit quantisation noise."""
    size = x.shape[-1]

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    choice = int(torch.randint(6, (), generator=gen))
    if choice == 1:
        x = jpeg_approx(x.clamp(0, 1), int(round(u(50, 90))))
    elif choice == 2:
        keep = u(0.8, 1.0)  # up to 10% off each side, resized back
        side = max(8, int(round(size * keep)))
        top = int(torch.randint(size - side + 1, (), generator=gen))
        left = int(torch.randint(size - side + 1, (), generator=gen))
        crop = x[..., top : top + side, left : left + side]
        x = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
    elif choice == 3:
        small = max(8, int(round(size * u(0.5, 0.9))))
        x = F.interpolate(x, size=(small, small), mode="area")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    elif choice == 4:
        x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.04)
    elif choice == 5:
        x = blur(x, u(0.5, 1.5))
    return _quantise(x, gen)


def _quantise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Clipping and 8-bit quantisation, as uniform noise of one grey level."""
    x = x.clamp(0, 1)
    return x + (torch.rand(x.shape, generator=gen) - 0.5) / 255


# --------------------------------------------------------------------------- training


def _training_images(size: int) -> torch.Tensor:
    from dlsec.core.data import load_dataset

    data = load_dataset("builtin:digits")
    x = torch.from_numpy(np.asarray(data.x, dtype=np.float32))
    return F.interpolate(x, size=(size, size), mode="nearest")


def train_learned_watermark(entry: LearnedWatermarkEntry | None = None) -> _Pair:
    """Train the encoder and decoder from ``entry.seed`` (deterministic on one machine)."""
    from dlsec.generative._cache import one_thread

    entry = entry or DEFAULT_ENTRY
    images = _training_images(entry.size)
    return one_thread(lambda: _train(entry, images))


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if float(torch.rand((), generator=gen)) < 0.5:
        batch = batch.flip(-1)
    batch = torch.rot90(batch, int(torch.randint(4, (), generator=gen)), dims=(-2, -1))
    invert = (torch.rand(len(batch), 1, 1, 1, generator=gen) < 0.3).float()
    batch = invert * (1 - batch) + (1 - invert) * batch
    scale = 0.6 + 0.4 * torch.rand(len(batch), 1, 1, 1, generator=gen)
    return batch * scale + (1 - scale) * torch.rand(len(batch), 1, 1, 1, generator=gen) * 0.5


def _train(entry: LearnedWatermarkEntry, images: torch.Tensor) -> _Pair:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        pair = _Pair(entry)
        opt = torch.optim.Adam(pair.parameters(), lr=entry.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, entry.steps)
        gen = torch.Generator().manual_seed(entry.seed + 1)
        pair.train()
        for _ in range(entry.steps):
            idx = torch.randint(len(images), (entry.batch_size,), generator=gen)
            batch = _augment(images[idx], gen)
            bits = torch.randint(2, (entry.batch_size, entry.bits), generator=gen).float()
            marked = (batch + pair.encoder(batch, bits)).clamp(0, 1)
            edited = noise_layer(marked, gen) if entry.noise else _quantise(marked, gen)
            logits = pair.decoder(edited)
            loss = F.binary_cross_entropy_with_logits(logits, bits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    pair.eval()
    return pair


# --------------------------------------------------------------------------- use


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 1, H, W) luminance (ITU-R BT.601)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype)
    return (rgb @ weights)[None, None]


@dataclass(frozen=True)
class LearnedWatermark:
    """The trained learned watermark: embed and detect on RGB uint8 images of at least 32x32.

    Example:
        >>> wm = load_learned_watermark()                          # doctest: +SKIP
        >>> marked = wm.embed(rgb, b"dlsc")                        # doctest: +SKIP
        >>> wm.detect(marked, 32) == message_bits(b"dlsc")         # doctest: +SKIP
    """

    name: str
    version: str
    weights_sha256: str
    capacity_bits: int
    size: int
    encoder: nn.Module
    decoder: nn.Module
    sync: bool = True

    def capacity(self, shape: tuple[int, ...]) -> int:
        """The fixed capacity in bits (any image of at least the working size)."""
        return self.capacity_bits

    def _check(self, image: np.ndarray) -> np.ndarray:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise UsageError(
                f"a watermark needs an RGB uint8 image of shape (H, W, 3), not {array.dtype} {array.shape}"
            )
        if min(array.shape[:2]) < self.size:
            raise UsageError(
                f"image of {array.shape[1]}x{array.shape[0]} is too small for the learned watermark "
                f"(at least {self.size}x{self.size} pixels)"
            )
        return array

    def _bits(self, message: bytes) -> torch.Tensor:
        from dlsec.generative._watermark import WatermarkCapacityError, message_bits

        if not message:
            raise UsageError("the watermark message is empty")
        bits = message_bits(message)
        if len(bits) > self.capacity_bits:
            raise WatermarkCapacityError(
                f"message of {len(bits)} bits exceeds the learned watermark's capacity "
                f"({self.capacity_bits} bits, {self.capacity_bits // 8} bytes); shorten it"
            )
        padded = np.zeros(self.capacity_bits, dtype=np.float32)
        padded[: len(bits)] = bits
        return torch.from_numpy(padded)[None]

    def residual(self, image: np.ndarray, message: bytes) -> torch.Tensor:
        """The residual (H, W) in [-1, 1] units that :meth:`embed` adds to each channel."""
        array = self._check(image)
        bits = self._bits(message)
        rgb = torch.from_numpy(array.astype(np.float32) / 255)
        small = F.adaptive_avg_pool2d(_luma(rgb), self.size)
        with torch.no_grad():
            r = self.encoder(small, bits)
            r = F.interpolate(r, size=array.shape[:2], mode="bilinear", align_corners=False)
        return r[0, 0]

    def embed(self, image: np.ndarray, message: bytes) -> np.ndarray:
        """Embed ``message`` (at most :attr:`capacity_bits` bits); return the watermarked copy.

        Raises:
            WatermarkCapacityError: the message is longer than the capacity.
            UsageError: the image is not RGB uint8 or smaller than the working size.
        """
        r = self.residual(image, message).numpy()
        out = np.asarray(image, dtype=np.float32) / 255 + r[:, :, None]
        return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

    def candidates(self, rgb: torch.Tensor) -> torch.Tensor:
        """Differentiable: the working-size frames (K, 1, S, S) the decoder reads from an image.

        The image as a whole, then (with :attr:`sync`) as a crop of 95% and of 90% of each side
        of the original at every offset in half working pixels, the missing border filled by
        replicating the edge.
        """
        luma = _luma(rgb)
        frames = [F.adaptive_avg_pool2d(luma, self.size)]
        if not self.sync:
            return frames[0]
        fine = _SYNC_SUBPIXEL * self.size  # offsets in half working pixels
        for keep in _SYNC_KEEP:
            inner = int(round(fine * keep))
            small = F.adaptive_avg_pool2d(luma, inner)
            slack = fine - inner
            for top in range(slack + 1):
                for left in range(slack + 1):
                    pad = (left, slack - left, top, slack - top)
                    frames.append(F.avg_pool2d(F.pad(small, pad, mode="replicate"), _SYNC_SUBPIXEL))
        return torch.cat(frames)

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """Differentiable: bit logits (K, capacity) of each candidate frame of an (H, W, 3) image."""
        out: torch.Tensor = self.decoder(self.candidates(rgb))
        return out

    def detect(self, image: np.ndarray, n_bits: int) -> np.ndarray:
        """Read the first ``n_bits`` bits (0/1, uint8)."""
        from dlsec.generative._watermark import WatermarkCapacityError

        array = self._check(image)
        if not 1 <= n_bits <= self.capacity_bits:
            raise WatermarkCapacityError(
                f"cannot read {n_bits} bits from the learned watermark (1 to {self.capacity_bits} bits)"
            )
        with torch.no_grad():
            logits = self.logits(torch.from_numpy(array.astype(np.float32) / 255))
        best = logits.abs().mean(dim=1).argmax()  # the frame the decoder is surest of
        return (logits[best, :n_bits] > 0).numpy().astype(np.uint8)


def load_learned_watermark(
    *, home: str | Path | None = None, entry: LearnedWatermarkEntry | None = None
) -> LearnedWatermark:
    """The learned watermark, trained on first use (a few CPU minutes) and cached with its digest.

    ``entry`` defaults to :data:`DEFAULT_ENTRY`, the recipe ``dlsec gen`` uses.
    """
    from dlsec.generative._cache import Cached, cache_folder, load_or_train, recipe_hash

    entry = entry or DEFAULT_ENTRY
    spec_entry = entry
    fields: dict[str, Any] = asdict(entry)
    spec = Cached(entry.name, entry.version, recipe_hash(fields), fields)
    pair, digest, _ = load_or_train(
        spec,
        cache_folder(entry.name, home),
        train=lambda: (train_learned_watermark(spec_entry), None),
        build=lambda: _Pair(entry),
    )
    return LearnedWatermark(
        name=entry.name,
        version=entry.version,
        weights_sha256=digest,
        capacity_bits=entry.bits,
        size=entry.size,
        encoder=pair.encoder,
        decoder=pair.decoder,
        sync=entry.sync,
    )
