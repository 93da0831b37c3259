"""Backdoor triggers: a patch stamped on the input, or a pattern blended into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["BlendTrigger", "PatchTrigger", "Trigger"]

_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left", "all")


def bounds(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """The spec's lower and upper bounds, each shaped like one input."""
    lo = np.broadcast_to(spec.lower_tensor().numpy(), spec.shape).astype(np.float32)
    hi = np.broadcast_to(spec.upper_tensor().numpy(), spec.shape).astype(np.float32)
    return lo, hi


class Trigger:
    """Stamps a trigger on a batch in input space; the result stays within the spec's bounds."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x)


@dataclass(frozen=True)
class PatchTrigger(Trigger):
    """A BadNets patch (Gu et al. 2017): a ``size`` x ``size`` checkerboard in a corner.

    ``corner="all"`` stamps it in all four corners of an image (the clean-label backdoor of
    Turner et al. 2019 does, so that random crops and flips keep some of it).

    Images get the checkerboard of the spec's lower and upper bounds in every channel;
    tabular rows get the last ``size`` features set to alternating upper and lower bounds.
    ``amplitude`` scales the patch towards the clean pixels (1: the full patch).
    """

    spec: InputSpec
    size: int = 3
    corner: str = "bottom-right"
    amplitude: float = 1.0

    def __post_init__(self) -> None:
        if self.corner not in _CORNERS:
            raise UsageError(f"trigger corner must be one of {', '.join(_CORNERS)}, got {self.corner!r}")
        limit = min(self.spec.shape[-2:]) if self.spec.kind == "image" else self.spec.shape[-1]
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= limit:
            raise UsageError(f"trigger size must be an integer from 1 to {limit}, got {self.size!r}")
        if not 0.0 < self.amplitude <= 1.0:
            raise UsageError(f"trigger amplitude must be in (0, 1], got {self.amplitude}")

    def mask_and_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """The trigger's mask (1 where it is stamped) and pattern, each shaped like one input."""
        shape = self.spec.shape
        lo, hi = bounds(self.spec)
        mask = np.zeros(shape, dtype=np.float32)
        k = self.size
        if self.spec.kind == "image" and len(shape) == 3:
            h, w = shape[1], shape[2]
            corners = [c for c in _CORNERS if c != "all"] if self.corner == "all" else [self.corner]
            for corner in corners:
                rows = slice(h - k, h) if corner.startswith("bottom") else slice(0, k)
                cols = slice(w - k, w) if corner.endswith("right") else slice(0, k)
                mask[:, rows, cols] = 1.0
            checker = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0)[None]
        else:
            flat = mask.reshape(-1)
            flat[-k:] = 1.0
            checker = (np.arange(flat.size) % 2 == 0).reshape(shape)
        pattern = np.where(checker, hi, lo).astype(np.float32)
        return mask, pattern

    def apply(self, x: np.ndarray) -> np.ndarray:
        mask, pattern = self.mask_and_pattern()
        m = mask * self.amplitude
        return (x * (1.0 - m) + pattern * m).astype(np.float32)


@dataclass(frozen=True)
class BlendTrigger(Trigger):
    """A blended trigger (Chen et al. 2017): ``(1 - alpha) * x + alpha * pattern``.

    The pattern is uniform noise within the spec's bounds drawn from ``seed`` unless given.
    """

    spec: InputSpec
    alpha: float = 0.2
    seed: int = 0
    pattern: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise UsageError(f"blend alpha must be strictly between 0 and 1, got {self.alpha}")
        if self.pattern is not None and tuple(self.pattern.shape) != self.spec.shape:
            raise UsageError(f"blend pattern has shape {self.pattern.shape}, the inputs {self.spec.shape}")

    def the_pattern(self) -> np.ndarray:
        if self.pattern is not None:
            return np.asarray(self.pattern, dtype=np.float32)
        lo, hi = bounds(self.spec)
        u = np.random.default_rng(self.seed).random(self.spec.shape, dtype=np.float32)
        return (lo + u * (hi - lo)).astype(np.float32)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((1.0 - self.alpha) * x + self.alpha * self.the_pattern()).astype(np.float32)
