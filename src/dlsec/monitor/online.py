"""Online monitoring: a detector over a sliding window of a stream, with a stated false-alarm rate."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import torch

from dlsec.errors import UsageError
from dlsec.monitor._base import Detector, Window, as_window

__all__ = ["Alert", "OnlineMonitor", "Severity"]

Severity = Literal["low", "medium", "high", "critical"]


@dataclass(frozen=True)
class Alert:
    """An alert raised by a monitor or an alert rule."""

    rule: str
    severity: Severity
    detectors: list[str]
    statistic: float | None
    threshold: float | None
    n_seen: int
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "detectors": self.detectors,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "n_seen": self.n_seen,
            "time": self.time,
            "details": self.details,
        }


class OnlineMonitor:
    """Run a detector over a sliding window of a stream, at a stated expected run length.

    The window holds the last ``window`` examples; every ``stride`` new examples (once the
    window is full) the detector's statistic on the window is compared with a threshold.

    **How the threshold is set.** ``ert`` is the expected number of examples between false
    alarms on traffic from the reference distribution. A check happens every ``stride``
    examples, so the per-check false-alarm probability is set to ``alpha_w = stride / ert``:
    by linearity of expectation the expected number of false alarms in any span of ``ert``
    examples is then ``(ert / stride) * alpha_w = 1``, whatever the correlation between
    overlapping windows (the same argument as a Bonferroni correction over the checks; the
    correlation only makes alarms cluster). After an alarm the window is cleared and refilled,
    which skips checks and can only lengthen the run. The threshold is the ``1 - alpha_w``
    quantile of the statistic on ``n_simulations`` windows drawn (without replacement within
    a window) from a held-out part of the reference: the detector is fitted on the first
    ``1 - calibration_fraction`` of a seeded shuffle of the reference and the windows come
    from the rest, so the simulated windows are as independent of the fitted state as live
    traffic is. No p-value per window is used: the statistic's own null distribution, at this
    window size, is what is calibrated.

    ``update`` is thread-safe (one lock), so a background worker can feed it.

    Args:
        detector: an unfitted detector (window or per-example).
        window: examples per window.
        stride: new examples between checks (default: ``window // 4``, at least 1).
        ert: expected run length between false alarms, in examples.
        n_simulations: simulated reference windows (default: ``max(500, ceil(20 / alpha_w))``).
        calibration_fraction: share of the reference kept for simulation.
        seed: seed of the split and the simulations.
        name: name of the alerts (default: the detector's name).
        severity: severity of the alerts.

    Example:
        >>> from dlsec.monitor import KSDrift
        >>> rng = np.random.default_rng(0)
        >>> mon = OnlineMonitor(KSDrift(), window=50, stride=50, ert=1000).fit(rng.normal(size=(1000, 2)))
        >>> alerts = mon.update(rng.normal(3.0, 1.0, size=(50, 2)))
        >>> [a.rule for a in alerts]
        ['ks']
    """

    def __init__(
        self,
        detector: Detector,
        *,
        window: int = 200,
        stride: int | None = None,
        ert: float = 10_000,
        n_simulations: int | None = None,
        calibration_fraction: float = 0.5,
        seed: int = 0,
        name: str | None = None,
        severity: Severity = "medium",
    ) -> None:
        self.detector = detector
        self.window = window
        self.stride = stride
        self.ert = ert
        self.n_simulations = n_simulations
        self.calibration_fraction = calibration_fraction
        self.seed = seed
        self.name = name
        self.severity = severity

    @property
    def stride_(self) -> int:
        return self.stride if self.stride is not None else max(1, self.window // 4)

    def fit(self, reference: Window | np.ndarray | torch.Tensor) -> OnlineMonitor:
        """Fit the detector on part of the reference and calibrate the threshold on the rest."""
        if self.window < 2:
            raise UsageError(f"window must be at least 2 examples, got {self.window}")
        stride = self.stride_
        if stride < 1 or stride > self.ert:
            raise UsageError(f"stride must be between 1 and ert ({self.ert}), got {stride}")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise UsageError(f"calibration_fraction must be between 0 and 1, got {self.calibration_fraction}")
        ref = as_window(reference, self.detector.requires)
        n = len(ref)
        n_cal = int(round(n * self.calibration_fraction))
        if n_cal < self.window or n - n_cal < 2:
            raise UsageError(
                f"the reference has {n} rows; calibrating windows of {self.window} needs at least "
                f"{math.ceil(self.window / self.calibration_fraction)} (or a smaller window)"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        fit_part, cal_part = ref.take(order[: n - n_cal]), ref.take(order[n - n_cal :])
        self.detector.fit(fit_part)
        alpha_w = stride / float(self.ert)
        sims = self.n_simulations or max(500, math.ceil(20.0 / alpha_w))
        if sims * alpha_w < 5:
            raise UsageError(
                f"{sims} simulations cannot place a threshold at a per-check false-alarm rate of "
                f"{alpha_w:.2g}: give n_simulations >= {math.ceil(5 / alpha_w)}"
            )
        values = np.array(
            [
                self.detector.statistic(cal_part.take(rng.choice(n_cal, self.window, replace=False)))
                for _ in range(sims)
            ]
        )
        self.alpha_window_ = alpha_w
        self.threshold_ = float(np.quantile(values, 1.0 - alpha_w, method="higher"))
        self.null_statistics_ = values
        self._lock = threading.Lock()
        self._buffer: deque[Window] = deque()
        self._buffered = 0
        self._since_check = 0
        self.n_seen_ = 0
        self.n_checks_ = 0
        self.n_alarms_ = 0
        return self

    def update(
        self,
        x_batch: np.ndarray | torch.Tensor | None,
        preds: np.ndarray | torch.Tensor | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
    ) -> list[Alert]:
        """Add a batch of traffic (inputs, optionally the model's probabilities and labels).

        Returns the alerts raised by the checks this batch triggered (usually none).
        """
        if not hasattr(self, "threshold_"):
            from dlsec.errors import NotFittedError

            raise NotFittedError("OnlineMonitor is not fitted yet; call fit(reference) first")
        batch = Window(x=_np(x_batch), probs=_np(preds), y=_np(labels))
        alerts: list[Alert] = []
        with self._lock:
            for start in range(0, len(batch), self.stride_):
                chunk = batch.take(np.arange(start, min(start + self.stride_, len(batch))))
                alerts.extend(self._add(chunk))
        return alerts

    def _add(self, chunk: Window) -> list[Alert]:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self._since_check += len(chunk)
        self.n_seen_ += len(chunk)
        while self._buffered - len(self._buffer[0]) >= self.window:
            self._buffered -= len(self._buffer.popleft())
        if self._buffered < self.window or self._since_check < self.stride_:
            return []
        self._since_check = 0
        current = _concat(list(self._buffer)).take(np.arange(self._buffered - self.window, self._buffered))
        value = self.detector.statistic(current)
        self.n_checks_ += 1
        if value <= self.threshold_:
            return []
        self.n_alarms_ += 1
        self._buffer.clear()
        self._buffered = 0
        return [
            Alert(
                rule=self.name or self.detector.name,
                severity=self.severity,
                detectors=[self.detector.name],
                statistic=float(value),
                threshold=self.threshold_,
                n_seen=self.n_seen_,
                details={"window": self.window, "ert": self.ert, "alpha_window": self.alpha_window_},
            )
        ]

    def check_now(self) -> float | None:
        """The statistic on the current window (``None`` until it is full); no alert."""
        with self._lock:
            if self._buffered < self.window:
                return None
            current = _concat(list(self._buffer)).take(
                np.arange(self._buffered - self.window, self._buffered)
            )
            return float(self.detector.statistic(current))


def _np(value: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _concat(parts: list[Window]) -> Window:
    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if any(a is None for a in arrays):
            return None
        return np.concatenate(arrays)

    return Window(x=cat("x"), probs=cat("probs"), y=cat("y"))
