"""A synthetic-image detector: a small CNN on the image and its frequency spectrum (after Wang et al. 2020).

Wang et al. ("CNN-generated images are surprisingly easy to spot... for now", CVPR 2020) train a
binary classifier on real images against the outputs of one generator, with blur and JPEG
augmentation, and find it transfers to unseen generators, partly through the up-sampling
artefacts that show in the frequency spectrum. Here the images are the 8x8 grey digits, so the
detector sees two channels: the image (centred) and its log-magnitude 2-D Fourier spectrum,
through two convolutions and a linear layer. Augmentation, applied to real and generated images
alike: Gaussian noise and a light blur, each with probability one half, then 8-bit quantisation
(what a PNG stores). Images of any size are read as their luminance area-averaged to 8x8, the
scale of the built-in generators; the detector is for this domain, not for photographs.

The decision threshold is calibrated on real images held out from training, at the stated false
positive rate (1% by default): a real image is flagged with about that probability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlsec.errors import NotFittedError, UsageError

__all__ = [
    "SYNTHETIC_DETECTORS",
    "SpectrumDetector",
    "SyntheticDetectorEntry",
    "load_synthetic_detector",
    "real_digits",
    "to_detector_input",
]

SIZE = 8


def to_detector_input(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """RGB uint8 images (H, W, 3) or grey images (H, W) in [0, 1] -> (N, 8, 8) float32 in [0, 1].

    RGB images are reduced to their luminance and area-averaged to 8x8; grey (8, 8) images pass
    through (quantised to 8 bits, as a PNG would store them).
    """
    out = []
    for image in images:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
            luma = torch.from_numpy(array.astype(np.float32) / 255) @ torch.tensor([0.299, 0.587, 0.114])
            grey = F.adaptive_avg_pool2d(luma[None, None], SIZE)[0, 0].numpy()
        elif array.ndim == 2:
            grey = np.asarray(array, dtype=np.float32)
            if grey.shape != (SIZE, SIZE):
                grey = F.adaptive_avg_pool2d(torch.from_numpy(grey)[None, None], SIZE)[0, 0].numpy()
        else:
            raise UsageError(
                f"expected RGB uint8 (H, W, 3) or grey (H, W) images, not {array.dtype} {array.shape}"
            )
        out.append(np.round(np.clip(grey, 0, 1) * 255) / 255)
    if not out:
        raise UsageError("no images to score")
    return np.stack(out).astype(np.float32)


def _features(x: torch.Tensor) -> torch.Tensor:
    """(N, 8, 8) -> (N, 2, 8, 8): the centred image and its log-magnitude spectrum."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x - x.mean(dim=(1, 2), keepdim=True)), dim=(-2, -1))
    return torch.stack([x - 0.5, torch.log1p(spectrum.abs())], dim=1)


class _Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),  # 8 -> 4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(_features(x)).squeeze(1)
        return out


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = len(x)
    noisy = (torch.rand(n, 1, 1, generator=gen) < 0.5).float()
    sigma = 0.03 * torch.rand(n, 1, 1, generator=gen)
    x = x + noisy * sigma * torch.randn(x.shape, generator=gen)
    blurred = (torch.rand(n, 1, 1, generator=gen) < 0.5).float()
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    soft = F.conv2d(F.pad(x[:, None], (1, 1, 1, 1), mode="replicate"), kernel[None, None])[:, 0]
    mix = 0.5 * torch.rand(n, 1, 1, generator=gen)  # a light blur: part of the 3x3 binomial
    x = blurred * ((1 - mix) * x + mix * soft) + (1 - blurred) * x
    return torch.round(x.clamp(0, 1) * 255) / 255


class SpectrumDetector:
    """Real-versus-generated classifier on the image and its spectrum (fitted like scikit-learn).

    Args:
        width: channels of the first convolution.
        epochs: passes over the training images.
        batch_size: images per step.
        lr: Adam's step size.
        fpr: the false positive rate the threshold is calibrated to on held-out real images.
        seed: seeds the initialisation, batches, augmentation and the calibration split.

    Example:
        >>> det = SpectrumDetector().fit(real, fake)     # doctest: +SKIP
        >>> det.predict(images)                          # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        width: int = 16,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 2e-3,
        fpr: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.fpr = fpr
        self.seed = seed

    def fit(self, real: np.ndarray, fake: np.ndarray) -> SpectrumDetector:
        """Train on ``real`` and ``fake`` images ((N, 8, 8) in [0, 1] or RGB uint8), calibrate.

        A fifth of the real images (at least 20) is held out to set :attr:`threshold_`.
        """
        from dlsec.generative._cache import one_thread

        real_x, fake_x = to_detector_input(list(real)), to_detector_input(list(fake))
        if len(real_x) < 40 or len(fake_x) < 20:
            raise UsageError(
                f"too few images to fit ({len(real_x)} real, {len(fake_x)} generated; at least 40 and 20)"
            )
        if not 0 < self.fpr < 0.5:
            raise UsageError(f"fpr must be in (0, 0.5), not {self.fpr}")
        order = np.random.default_rng(self.seed).permutation(len(real_x))
        held = max(20, len(real_x) // 5)
        calib, train_real = real_x[order[:held]], real_x[order[held:]]
        self.net_ = one_thread(lambda: self._train(train_real, fake_x))
        scores = self.score(calib)
        self.threshold_ = float(np.quantile(scores, 1 - self.fpr, method="higher"))
        return self

    def _train(self, real: np.ndarray, fake: np.ndarray) -> _Net:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _Net(self.width)
            x = torch.from_numpy(np.concatenate([real, fake]))
            y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
            pos_weight = torch.tensor(len(real) / len(fake))
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            gen = torch.Generator().manual_seed(self.seed + 1)
            net.train()
            for _ in range(self.epochs):
                perm = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), self.batch_size):
                    idx = perm[start : start + self.batch_size]
                    logits = net(_augment(x[idx], gen))
                    loss = F.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        net.eval()
        return net

    def score(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """The logit that each image is generated (higher: more likely generated)."""
        net = getattr(self, "net_", None)
        if net is None:
            raise NotFittedError("the detector is not fitted; call fit() or load_synthetic_detector()")
        x = torch.from_numpy(to_detector_input(list(images)))
        with torch.no_grad():
            return np.asarray(net(x).numpy(), dtype=np.float64)

    def predict(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """True where an image is flagged as generated (score above :attr:`threshold_`)."""
        scores = self.score(images)
        return np.asarray(scores > self.threshold_)


@dataclass(frozen=True)
class SyntheticDetectorEntry:
    """A built-in detector: trained on the digits' training split against one generator's samples."""

    name: str
    version: str
    generator: str
    n_generated: int = 1400
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""


SYNTHETIC_DETECTORS: dict[str, SyntheticDetectorEntry] = {
    entry.name: entry
    for entry in (
        SyntheticDetectorEntry(
            "spectrum-gan", "1", "zoo-gan", description="trained on zoo-gan's samples; zoo-vae unseen"
        ),
        SyntheticDetectorEntry(
            "spectrum-vae", "1", "zoo-vae", description="trained on zoo-vae's samples; zoo-gan unseen"
        ),
    )
}

REAL_SPLIT_SEED = 0  # builtin:digits split 75/25 with this seed; the detectors see the 75%


def real_digits(part: str) -> np.ndarray:
    """The real digits, (N, 8, 8) in [0, 1]: ``"train"`` (what the detectors fit on) or ``"test"``."""
    from dlsec.core.data import load_dataset

    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=REAL_SPLIT_SEED)
    data = train if part == "train" else test
    return np.asarray(data.x, dtype=np.float32)[:, 0]


def fit_entry(entry: SyntheticDetectorEntry, *, home: str | Path | None = None) -> SpectrumDetector:
    """Fit ``entry``'s detector: real training digits against its generator's samples (seed 1000)."""
    from dlsec.generative._gan import load_generator

    fake = load_generator(entry.generator, home=home).sample(entry.n_generated, seed=1000)
    return SpectrumDetector(**entry.params).fit(real_digits("train"), fake)


def load_synthetic_detector(
    name: str = "spectrum-gan", *, home: str | Path | None = None
) -> SpectrumDetector:
    """A built-in detector, fitted on first use and cached with its weights' digest and threshold.

    Example:
        >>> det = load_synthetic_detector("spectrum-gan")       # doctest: +SKIP
        >>> det.predict([read_rgb("sample.png")])               # doctest: +SKIP
    """
    from dlsec.generative._cache import Cached, cache_folder, load_or_train, recipe_hash
    from dlsec.generative._gan import load_generator

    if name not in SYNTHETIC_DETECTORS:
        raise UsageError(f"unknown detector {name!r}; choose one of: " + ", ".join(SYNTHETIC_DETECTORS))
    entry = SYNTHETIC_DETECTORS[name]
    fields = asdict(entry)
    fields.pop("description")
    # The generator's weights are part of the recipe: a retrained generator retrains the detector.
    fields["generator_sha256"] = load_generator(entry.generator, home=home).weights_sha256
    spec = Cached(entry.name, entry.version, recipe_hash(fields), fields)
    detector = SpectrumDetector(**entry.params)

    def train() -> tuple[_Net, dict[str, Any]]:
        fitted = fit_entry(entry, home=home)
        return fitted.net_, {"threshold": fitted.threshold_, "fpr": fitted.fpr}

    net, _, card = load_or_train(
        spec, cache_folder(entry.name, home), train=train, build=lambda: _Net(detector.width)
    )
    detector.net_ = net
    detector.threshold_ = float(card["extra"]["threshold"])
    return detector
