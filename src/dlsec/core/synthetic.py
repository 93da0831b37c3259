"""A generated CIFAR-shaped image dataset: ``builtin:synthetic-cifar``.

Nothing downloads in dlsec, and CIFAR-10 does not ship inside any installable package, so the
zoo's models of real size (``zoo:cifar-resnet18``, ``zoo:cifar-vit-tiny``) train on images the
code generates from a fixed seed, identical on every machine. Each of the 10 classes has a
prototype: a smooth colour field (a random 4x4x3 grid, upsampled bilinearly to 32x32) plus an
oriented sinusoidal grating of its own frequency and angle. An example is its class's prototype
at a random contrast, shifted by up to 3 pixels, with a random brightness offset and Gaussian
pixel noise, clipped to [0, 1]. The classes are learnable (a ResNet-18 separates most of them
in an epoch), but accuracy is not the point of this dataset: it gives models of CIFAR's shape
and compute something to train on.

Example:
    >>> data = synthetic_cifar(n=20, seed=0)
    >>> data.x.shape, data.spec.num_classes
    ((20, 3, 32, 32), 10)
"""

from __future__ import annotations

import numpy as np

from dlsec.core.data import Dataset
from dlsec.core.spec import InputSpec
from dlsec.errors import DataError

__all__ = ["synthetic_cifar", "SYNTHETIC_CIFAR_SIZE"]

#: Examples in ``builtin:synthetic-cifar`` (a 0.25 test split leaves 900 to train on).
SYNTHETIC_CIFAR_SIZE = 1200
_CLASSES = 10
_SIDE = 32


def _upsample(grid: np.ndarray, side: int) -> np.ndarray:
    """Bilinear upsampling of ``(C, g, g)`` to ``(C, side, side)`` (align-corners)."""
    g = grid.shape[-1]
    pos = np.linspace(0.0, g - 1.0, side)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, g - 1)
    w = pos - lo
    rows = grid[:, lo, :] * (1 - w)[None, :, None] + grid[:, hi, :] * w[None, :, None]
    return rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float64) / _SIDE
    protos = []
    for c in range(_CLASSES):
        field = _upsample(rng.random((3, 4, 4)), _SIDE) - 0.5
        angle = np.pi * c / _CLASSES
        freq = 2.0 + (c % 4)
        grating = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.random() * 6.28)
        colour = rng.random(3) - 0.5
        protos.append(0.6 * field + 0.25 * grating[None] * (1.0 + colour[:, None, None]))
    return np.stack(protos)


def synthetic_cifar(*, n: int = SYNTHETIC_CIFAR_SIZE, seed: int = 0, noise: float = 0.12) -> Dataset:
    """``n`` generated 3x32x32 images in 10 classes (balanced), from ``seed``.

    The prototypes depend on ``seed`` only, so sets of any ``n`` from one seed share their
    classes. Values lie in [0, 1]; labels cycle through the classes, then are shuffled.

    Args:
        n: number of examples (at least 1).
        seed: seeds the prototypes and the draws.
        noise: standard deviation of the Gaussian pixel noise.

    Raises:
        DataError: ``n`` below 1 or ``noise`` negative.
    """
    if not isinstance(n, int) or n < 1:
        raise DataError(f"synthetic-cifar needs n >= 1 examples, got {n!r}")
    if not noise >= 0:
        raise DataError(f"synthetic-cifar noise must be >= 0, got {noise!r}")
    protos = _prototypes(np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    y = rng.permutation(np.arange(n) % _CLASSES).astype(np.int64)
    x = np.empty((n, 3, _SIDE, _SIDE), dtype=np.float32)
    for start in range(0, n, 1024):  # in chunks, so that 10,000 images never hold float64 copies
        stop = min(start + 1024, n)
        m = stop - start
        contrast = rng.uniform(0.6, 1.2, (m, 1, 1, 1))
        offset = rng.normal(0.0, 0.05, (m, 1, 1, 1))
        chunk = 0.5 + contrast * protos[y[start:stop]] + offset + rng.normal(0.0, noise, (m, 3, _SIDE, _SIDE))
        shifts = rng.integers(-3, 4, (m, 2))
        for i, (dy, dx) in enumerate(shifts):
            chunk[i] = np.roll(chunk[i], (int(dy), int(dx)), axis=(1, 2))
        x[start:stop] = np.clip(chunk, 0.0, 1.0)
    spec = InputSpec(
        shape=(3, _SIDE, _SIDE),
        num_classes=_CLASSES,
        kind="image",
        class_names=tuple(str(i) for i in range(10)),
    )
    return Dataset(
        x,
        y,
        spec,
        "builtin:synthetic-cifar"
        if (n, seed) == (SYNTHETIC_CIFAR_SIZE, 0)
        else f"synthetic-cifar(n={n}, seed={seed})",
    )
