"""Common corruptions at five severities, for images and for tabular data.

Images (``(N, C, H, W)`` in input space): Gaussian noise, impulse (salt-and-pepper) noise,
Gaussian blur, brightness, contrast, pixelation, in the spirit of Hendrycks & Dietterich (2019)
with severities scaled to small inputs. Tabular: Gaussian feature noise (relative to each
feature's range) and missing values (replaced by the column mean, as a simple imputer would).
Every corruption is seeded and clipped to the input bounds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["CORRUPTIONS", "corrupt", "corruptions_for"]

Corruption = Callable[[np.ndarray, int, np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _gaussian_noise(
    x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    sigma = [0.04, 0.08, 0.12, 0.18, 0.26][s - 1] * (hi - lo)
    return x + rng.normal(size=x.shape) * sigma


def _impulse_noise(
    x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    amount = [0.01, 0.02, 0.05, 0.1, 0.2][s - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out = np.where(u < amount / 2, lo, out)
    return np.where(u > 1 - amount / 2, hi, out)


def _blur(x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    sigma = [0.4, 0.6, 0.8, 1.0, 1.4][s - 1]
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")


def _brightness(
    x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    return x + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1] * (hi - lo)


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    c = [0.75, 0.6, 0.45, 0.3, 0.15][s - 1]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


def _pixelate(x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    factor = [0.9, 0.75, 0.6, 0.5, 0.4][s - 1]
    t = torch.from_numpy(x)
    h, w = t.shape[-2:]
    small = F.interpolate(t, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest").numpy()


def _feature_noise(
    x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    return x + rng.normal(size=x.shape) * [0.02, 0.05, 0.1, 0.2, 0.3][s - 1] * (hi - lo)


def _missing_values(
    x: np.ndarray, s: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    fraction = [0.05, 0.1, 0.2, 0.3, 0.5][s - 1]
    mask = rng.random(x.shape) < fraction
    return np.where(mask, x.mean(axis=0, keepdims=True), x)


CORRUPTIONS: dict[str, tuple[str, Corruption]] = {
    "gaussian_noise": ("image", _gaussian_noise),
    "impulse_noise": ("image", _impulse_noise),
    "blur": ("image", _blur),
    "brightness": ("image", _brightness),
    "contrast": ("image", _contrast),
    "pixelate": ("image", _pixelate),
    "feature_noise": ("tabular", _feature_noise),
    "missing_values": ("tabular", _missing_values),
}


def corruptions_for(spec: InputSpec) -> list[str]:
    """The corruptions that apply to data of this spec."""
    kind = "image" if spec.kind == "image" and len(spec.shape) == 3 else "tabular"
    return [name for name, (k, _) in CORRUPTIONS.items() if k == kind]


def corrupt(x: np.ndarray, spec: InputSpec, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """``x`` corrupted by ``name`` at ``severity`` (1-5), clipped to the spec's bounds.

    Example:
        >>> noisy = corrupt(test.x, test.spec, "gaussian_noise", 3, seed=0)   # doctest: +SKIP
    """
    if name not in CORRUPTIONS:
        raise UsageError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if name not in corruptions_for(spec):
        raise UsageError(f"corruption {name!r} does not apply to {spec.kind} data")
    if severity not in (1, 2, 3, 4, 5):
        raise UsageError(f"severity must be 1 to 5, got {severity}")
    lo = spec.lower_tensor(dtype=torch.float64).numpy()
    hi = spec.upper_tensor(dtype=torch.float64).numpy()
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])
    out = CORRUPTIONS[name][1](x.astype(np.float64), severity, rng, lo, hi)
    return np.clip(out, lo, hi).astype(np.float32)
