"""Data augmentation in input space, suited to the kind of data, always within the bounds."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlsec.core.spec import InputSpec

__all__ = ["augment_batch"]


def augment_batch(
    x: torch.Tensor, spec: InputSpec, *, shift: int, noise: float, gen: torch.Generator
) -> torch.Tensor:
    """A randomly augmented copy of the input-space batch ``x``.

    Images (``(N, C, H, W)``) are translated by up to ``shift`` pixels in each direction (edges
    replicated, so no value leaves the data's range); every kind then gets Gaussian noise of
    standard deviation ``noise`` times each value's range. The result is clipped to the input
    bounds. Every draw comes from ``gen`` (a CPU generator), so runs are reproducible.
    """
    lower = spec.lower_tensor(device=x.device, dtype=x.dtype)
    upper = spec.upper_tensor(device=x.device, dtype=x.dtype)
    out = x
    if spec.kind == "image" and x.ndim == 4 and shift > 0 and len(x):
        out = _shift(x, shift, gen)
    if noise > 0:
        z = torch.randn(out.shape, generator=gen).to(device=x.device, dtype=x.dtype)
        out = out + z * (noise * (upper - lower))
    return torch.clamp(out, lower, upper) if out is not x else x


def _shift(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (k, k, k, k), mode="replicate")
    dy = torch.randint(0, 2 * k + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * k + 1, (n,), generator=gen).to(x.device)
    # Gather the shifted window of each example with one index per row and column.
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]
