"""The synthetic-image detector as a monitor detector (``detector: synthetic-image`` in monitor.yaml).

A built-in detector (``spectrum-gan`` or ``spectrum-vae``) flags each image of a window whose
score is above the threshold (its own, calibrated at 1% false positives on held-out real digits,
or the one the rule sets). The window's flagged count is compared with the reference's by a
one-sided two-sample test of proportions: Fisher's exact test, i.e. the hypergeometric tail of the
window's count given the pooled total. Under "no change" (reference and window exchangeable) the
p-value is exact whatever the threshold and whatever the base rate of the reference domain, so
it joins the check's Holm correction like the other detectors' p-values; the online monitor
calibrates the fraction flagged by simulation like any statistic.

The class lives here, above monitor, and reaches the registry through the
``dlsec.monitor_detectors`` entry point (``synthetic-image = "dlsec.generative:SyntheticImageDetector"``),
so ``monitor.yaml`` names it wherever it is loaded (the CLI, the gateway and its worker process)
while monitor imports nothing of this package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import stats

from dlsec.errors import UsageError
from dlsec.generative._detect import SYNTHETIC_DETECTORS, SpectrumDetector, load_synthetic_detector
from dlsec.monitor import CannotRun, Detector, DetectorResult, Window, register_detector

__all__ = ["SyntheticImageDetector", "window_images"]

_MEMO_ROWS = 50_000  # per-image scores kept (the online monitor's calibration re-draws the same rows)


def window_images(x: np.ndarray, *, who: str = "synthetic-image") -> list[np.ndarray]:
    """A window's inputs as the images a synthetic-image detector reads.

    ``(N, 1, H, W)`` and ``(N, H, W)`` are grey in [0, 1]; ``(N, 3, H, W)`` is RGB in [0, 1];
    ``(N, H, W, 3)`` uint8 is RGB as decoded from a file. Other shapes (tables, text) cannot be
    scored: :class:`~dlsec.monitor.CannotRun` (the check lists the rule as not run).

    Raises:
        CannotRun: the inputs are not images.
        UsageError: non-finite pixel values.
    """
    arr = np.asarray(x)
    if arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return list(arr)
    if arr.ndim == 4 and arr.shape[1] in (1, 3) and min(arr.shape[2:]) >= 2:
        images = arr.astype(np.float32)
    elif arr.ndim == 3 and min(arr.shape[1:]) >= 2:
        images = arr.astype(np.float32)[:, None]
    else:
        raise CannotRun(f"{who} reads images (N, C, H, W) or (N, H, W), not inputs of shape {arr.shape[1:]}")
    if not np.isfinite(images).all():
        raise UsageError(f"{who}: the window has non-finite pixel values")
    if images.shape[1] == 1:
        return list(images[:, 0])
    rgb = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return list(rgb)


@register_detector("synthetic-image")
class SyntheticImageDetector(Detector):
    """Fires when a window holds more images flagged as generated than the reference does.

    Args:
        detector: the built-in synthetic-image detector (``spectrum-gan``, ``spectrum-vae``);
            fitted on first use and cached under the home, like ``dlsec gen detect``'s.
        threshold: the score (a logit) above which an image is flagged; ``None`` takes the
            detector's own, calibrated at 1% false positives on held-out real digits.
        alpha: significance level of the one-sided Fisher test.
        home: the dlsec home holding the cached detector (default: ``DLSEC_HOME``).

    Attributes (after ``fit``):
        threshold_: the per-image threshold in force.
        reference_n_, reference_flagged_: reference images and how many were flagged.

    Example:
        >>> det = SyntheticImageDetector(detector="spectrum-gan").fit(real)   # doctest: +SKIP
        >>> det.score(generated_window).drift                                   # doctest: +SKIP
        True
    """

    requires: ClassVar[tuple[str, ...]] = ("x",)

    def __init__(
        self,
        *,
        detector: str = "spectrum-gan",
        threshold: float | None = None,
        alpha: float = 0.05,
        home: str | None = None,
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        self.alpha = alpha
        self.home = home

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        name = params.get("detector", "spectrum-gan")
        if name not in SYNTHETIC_DETECTORS:
            raise UsageError(f"unknown detector {name!r}; built-in: {', '.join(sorted(SYNTHETIC_DETECTORS))}")
        threshold = params.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
        ):
            raise UsageError(f"threshold must be a finite number (a score) or null, not {threshold!r}")
        alpha = params.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise UsageError(f"alpha must be between 0 and 1, not {alpha!r}")
        home = params.get("home")
        if home is not None and not isinstance(home, str):
            raise UsageError(f"home must be a folder path, not {home!r}")

    def _fit(self, window: Window) -> None:
        self.check_params(
            {"detector": self.detector, "threshold": self.threshold, "alpha": self.alpha, "home": self.home}
        )
        images = window_images(window.part("x", who=self.name), who=self.name)
        spectrum = load_synthetic_detector(self.detector, home=None if self.home is None else Path(self.home))
        self.detector_: SpectrumDetector = spectrum
        self.threshold_ = float(spectrum.threshold_ if self.threshold is None else self.threshold)
        self.reference_n_ = len(images)
        self.reference_flagged_ = int((spectrum.score(images) > self.threshold_).sum())
        self._memo: dict[tuple[str, tuple[int, ...], bytes], float] = {}

    def _flags(self, window: Window) -> np.ndarray:
        """Each image's score, from the memo where the same row was scored before."""
        x = np.ascontiguousarray(window.part("x", who=self.name))
        kind = (x.dtype.str, tuple(x.shape[1:]))
        keys = [(*kind, row.tobytes()) for row in x]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        if missing:
            scores = self.detector_.score(window_images(x[missing], who=self.name))
            if len(self._memo) + len(missing) > _MEMO_ROWS:
                self._memo.clear()
            self._memo.update((keys[i], float(s)) for i, s in zip(missing, scores, strict=True))
            if len(missing) == len(keys):
                return np.asarray(scores, dtype=np.float64)
        return np.array([self._memo[key] for key in keys], dtype=np.float64)

    def _score(self, window: Window) -> DetectorResult:
        scores = self._flags(window)
        n, flagged = len(scores), int((scores > self.threshold_).sum())
        n_ref, k_ref = self.reference_n_, self.reference_flagged_
        # P(K >= flagged) for K ~ Hypergeometric(population n_ref + n, successes k_ref + flagged,
        # draws n): the one-sided Fisher exact test that the window's rate exceeds the reference's.
        p = float(stats.hypergeom.sf(flagged - 1, n_ref + n, k_ref + flagged, n))
        p = min(1.0, max(0.0, p))
        return DetectorResult(
            self.name,
            flagged / n,
            p,
            self.alpha,
            p < self.alpha,
            {
                "detector": self.detector,
                "flagged": flagged,
                "n": n,
                "reference_flagged": k_ref,
                "reference_n": n_ref,
                "reference_rate": k_ref / n_ref,
                "example_threshold": self.threshold_,
                "mean_score": float(scores.mean()),
            },
        )

    def statistic(self, window: Window | np.ndarray | torch.Tensor) -> float:
        """The fraction of the window's images flagged as generated."""
        scores = self._flags(self._checked(window))
        return float((scores > self.threshold_).mean())
