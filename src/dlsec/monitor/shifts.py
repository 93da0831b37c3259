"""Shifted datasets for demos, tests and benchmarks: noise, blur, class prior, an unseen pattern."""

from __future__ import annotations

from typing import Literal

import numpy as np

from dlsec.core.data import Dataset
from dlsec.errors import UsageError

__all__ = ["SHIFTS", "shift_dataset"]

ShiftKind = Literal["noise", "blur", "prior", "pattern"]
SHIFTS: tuple[str, ...] = ("noise", "blur", "prior", "pattern")


def shift_dataset(
    data: Dataset, kind: str, *, severity: int = 3, fraction: float = 1.0, seed: int = 0
) -> Dataset:
    """``data`` with a distribution shift applied (seeded; values stay within the bounds).

    Kinds:
        ``noise``: Gaussian noise (the assessment's ``gaussian_noise`` corruption at
        ``severity``; tabular data: ``feature_noise``). ``blur``: Gaussian blur at
        ``severity`` (images only). ``prior``: class-prior change: classes in the lower half
        keep all their rows, the others keep ``1 / (1 + severity)`` of theirs. ``pattern``: a
        pattern never seen in the reference (a bright diagonal stroke on images, a saturated
        block of features on tabular data) stamped on rows.
        ``fraction`` is the share of rows shifted (noise, blur, pattern).

    Example:
        >>> from dlsec.core import load_dataset
        >>> shifted = shift_dataset(load_dataset("builtin:digits"), "prior", severity=3)
        >>> len(shifted) < 1797
        True
    """
    if kind not in SHIFTS:
        raise UsageError(f"unknown shift {kind!r}; use one of {', '.join(SHIFTS)}")
    if not 1 <= severity <= 5:
        raise UsageError(f"severity must be 1 to 5, got {severity}")
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    spec = data.spec
    if kind == "prior":
        keep_share = 1.0 / (1.0 + severity)
        keep = np.zeros(len(data), dtype=bool)
        for c in range(spec.num_classes):
            in_class = np.flatnonzero(data.y == c)
            if c < spec.num_classes / 2:
                keep[in_class] = True
            elif len(in_class):
                n_keep = max(1, int(round(len(in_class) * keep_share)))
                keep[rng.choice(in_class, n_keep, replace=False)] = True
        return data.subset(np.flatnonzero(keep), name=f"{data.name}[prior-{severity}]")
    rows = rng.random(len(data)) < fraction if fraction < 1.0 else np.ones(len(data), dtype=bool)
    x = data.x.copy()
    if kind in ("noise", "blur"):
        from dlsec.core.corruptions import corrupt  # the assessment's corruptions, reused

        name = "gaussian_noise" if kind == "noise" else "blur"
        if spec.kind == "tabular":
            if kind == "blur":
                raise UsageError("blur applies to images; use noise, prior or pattern for tabular data")
            name = "feature_noise"
        x[rows] = corrupt(x[rows], spec, name, severity, seed=seed)
    else:
        lo = np.broadcast_to(spec.lower_tensor().numpy(), (1, *spec.shape))
        hi = np.broadcast_to(spec.upper_tensor().numpy(), (1, *spec.shape))
        mask = np.zeros(spec.shape, dtype=bool)
        if spec.kind == "image" and len(spec.shape) == 3:
            h, w = spec.shape[1:]
            for i in range(min(h, w)):
                mask[:, i, min(w - 1, max(0, w - 1 - i))] = True
        else:
            flat = mask.reshape(-1)
            flat[: max(1, int(round(flat.size * 0.1 * severity)))] = True
        level = 0.5 + 0.1 * severity
        stamped = lo + (hi - lo) * level
        x[rows] = np.where(mask, np.broadcast_to(stamped, x[rows].shape), x[rows]).astype(np.float32)
    return Dataset(x.astype(np.float32), data.y.copy(), spec, f"{data.name}[{kind}-{severity}]")
