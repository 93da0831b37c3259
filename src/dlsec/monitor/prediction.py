"""Prediction drift and performance: what the model outputs, and how right it is once labels arrive.

These detectors read the model's class probabilities (``Window.probs``; predicted labels
alone work as one-hot rows) and, for performance, the delayed labels (``Window.y``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from dlsec.errors import UsageError
from dlsec.monitor._base import Detector, DetectorResult, Window, register_detector

__all__ = [
    "ConfidenceDrift",
    "LabelDrift",
    "PSIDrift",
    "PerformanceDrift",
    "expected_calibration_error",
    "population_stability_index",
]


def _probs(window: Window, who: str) -> np.ndarray:
    p = window.part("probs", who=who)
    if p.ndim == 1:
        raise UsageError(f"{who}: give probabilities of shape (N, classes), not labels")
    return np.asarray(p, dtype=np.float64)


def _counts(probs: np.ndarray) -> np.ndarray:
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.float64)


def population_stability_index(expected: np.ndarray, actual: np.ndarray, *, eps: float = 1e-4) -> float:
    """PSI between two distributions over the same bins: ``sum (a - e) ln(a / e)``.

    Counts or proportions are both accepted (each is normalised); a bin empty on one side is
    floored at ``eps`` before renormalising, so the index stays finite.

    Example:
        >>> round(population_stability_index(np.array([0.5, 0.5]), np.array([0.6, 0.4])), 4)
        0.0405
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.sum() <= 0 or a.sum() <= 0:
        raise UsageError("PSI needs two non-empty histograms over the same bins")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 10) -> float:
    """ECE: confidence-weighted gap between accuracy and confidence over equal-width bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


@register_detector("label")
class LabelDrift(Detector):
    """Chi-squared test of the predicted-label distribution against the reference's.

    A 2 x C contingency table (reference counts, window counts) over the classes predicted on
    either side; the PSI of the two distributions is reported alongside.

    Example:
        >>> ref = np.eye(3)[np.repeat([0, 1, 2], 100)]
        >>> LabelDrift().fit(ref).score(np.eye(3)[np.repeat([0, 1, 2], [80, 10, 10])]).drift
        True
    """

    requires = ("probs",)

    def __init__(self, *, alpha: float = 0.05) -> None:
        self.alpha = alpha

    def _fit(self, window: Window) -> None:
        self.reference_counts_ = _counts(_probs(window, self.name))

    def _score(self, window: Window) -> DetectorResult:
        cur = _counts(_probs(window, self.name))
        if len(cur) != len(self.reference_counts_):
            raise UsageError(
                f"label: the window has {len(cur)} classes, the reference {len(self.reference_counts_)}"
            )
        table = np.stack([self.reference_counts_, cur])
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2:
            chi2, p = 0.0, 1.0
        else:
            res = stats.chi2_contingency(table, correction=False)
            chi2, p = float(res.statistic), float(res.pvalue)
        details = {
            "psi": population_stability_index(self.reference_counts_, cur),
            "reference_distribution": (self.reference_counts_ / self.reference_counts_.sum()).tolist(),
            "window_distribution": (cur / cur.sum()).tolist(),
        }
        return DetectorResult(self.name, chi2, p, self.alpha, p < self.alpha, details)


@register_detector("psi")
class PSIDrift(Detector):
    """Population stability index of the predicted labels, against a fixed threshold.

    The usual reading: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a major one.
    There is no p-value; online use calibrates a threshold by simulation instead.

    Args:
        threshold: PSI above which the detector fires.
        eps: floor of an empty bin's proportion.
    """

    requires = ("probs",)

    def __init__(self, *, threshold: float = 0.25, eps: float = 1e-4) -> None:
        self.threshold = threshold
        self.eps = eps

    def _fit(self, window: Window) -> None:
        self.reference_counts_ = _counts(_probs(window, self.name))

    def _score(self, window: Window) -> DetectorResult:
        cur = _counts(_probs(window, self.name))
        psi = population_stability_index(self.reference_counts_, cur, eps=self.eps)
        return DetectorResult(self.name, psi, None, self.threshold, psi > self.threshold, {})


def _entropy(p: np.ndarray) -> np.ndarray:
    return np.asarray(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1))


@register_detector("confidence")
class ConfidenceDrift(Detector):
    """Shifts of the model's confidence (top probability) and predictive entropy.

    Two two-sample KS tests against the reference, combined by Bonferroni (p = 2 x min).
    """

    requires = ("probs",)

    def __init__(self, *, alpha: float = 0.05) -> None:
        self.alpha = alpha

    def _fit(self, window: Window) -> None:
        p = _probs(window, self.name)
        self.reference_confidence_ = p.max(1)
        self.reference_entropy_ = _entropy(p)

    def _score(self, window: Window) -> DetectorResult:
        p = _probs(window, self.name)
        conf, ent = p.max(1), _entropy(p)
        r1 = stats.ks_2samp(self.reference_confidence_, conf)
        r2 = stats.ks_2samp(self.reference_entropy_, ent)
        pv = float(min(1.0, 2 * min(r1.pvalue, r2.pvalue)))
        details = {
            "reference_mean_confidence": float(self.reference_confidence_.mean()),
            "window_mean_confidence": float(conf.mean()),
            "reference_mean_entropy": float(self.reference_entropy_.mean()),
            "window_mean_entropy": float(ent.mean()),
        }
        return DetectorResult(
            self.name, float(max(r1.statistic, r2.statistic)), pv, self.alpha, pv < self.alpha, details
        )


@register_detector("performance")
class PerformanceDrift(Detector):
    """Accuracy and calibration on delayed labels, against the reference.

    Fires when accuracy is lower than the reference's (one-sided Fisher exact test at
    ``alpha``) or when the expected calibration error grew by more than ``ece_tolerance``.
    The statistic is the drop in accuracy.

    Args:
        alpha: significance level of the accuracy test.
        ece_tolerance: allowed increase of ECE over the reference's.
        n_bins: ECE bins.
    """

    requires = ("probs", "y")

    def __init__(self, *, alpha: float = 0.05, ece_tolerance: float = 0.05, n_bins: int = 10) -> None:
        self.alpha = alpha
        self.ece_tolerance = ece_tolerance
        self.n_bins = n_bins

    def _fit(self, window: Window) -> None:
        p = _probs(window, self.name)
        y = window.part("y", who=self.name)
        self.reference_correct_ = int((p.argmax(1) == y).sum())
        self.reference_n_ = len(y)
        self.reference_ece_ = expected_calibration_error(p, y, n_bins=self.n_bins)

    def _score(self, window: Window) -> DetectorResult:
        p = _probs(window, self.name)
        y = window.part("y", who=self.name)
        correct = int((p.argmax(1) == y).sum())
        n = len(y)
        table = [
            [self.reference_correct_, self.reference_n_ - self.reference_correct_],
            [correct, n - correct],
        ]
        pv = float(stats.fisher_exact(table, alternative="greater").pvalue)
        ece = expected_calibration_error(p, y, n_bins=self.n_bins)
        ref_acc = self.reference_correct_ / self.reference_n_
        ece_up = ece - self.reference_ece_ > self.ece_tolerance
        details = {
            "reference_accuracy": ref_acc,
            "accuracy": correct / n,
            "reference_ece": self.reference_ece_,
            "ece": ece,
            "ece_exceeded": bool(ece_up),
        }
        return DetectorResult(
            self.name, ref_acc - correct / n, pv, self.alpha, pv < self.alpha or ece_up, details
        )
