"""Shilling-profile detection for recommender ratings.

A push attack gives one item an abnormal number of top ratings from profiles that otherwise
rate like no genuine user: random fillers deviate from the items' means, average fillers sit
on them too exactly. The detector names the suspected target item (the item with the most
top ratings from atypical profiles beyond what its count of top ratings explains), then scores the
profiles that gave it a top rating by how atypical they are (see :func:`_atypicality`).
Scores are higher for more suspicious profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlsec.attacks.poisoning.recommender import check_ratings
from dlsec.defend._signals import robust_z
from dlsec.errors import UsageError

__all__ = ["ShillingDetector", "ShillingReport"]


def _atypicality(r: np.ndarray, observed: np.ndarray, item_mean: np.ndarray) -> np.ndarray:
    """Per profile, the largest two-sided robust z-score of three generic shilling features.

    RDMA-style mean absolute deviation from the item means (random fillers deviate a lot), the
    correlation of the profile's ratings with the item means (average fillers follow them too
    closely, random ones not at all) and the profile's length (LengthVar: fake profiles rate a
    fixed, unusual number of items); genuine profiles sit in between on all three.
    """
    n_rated = np.maximum(observed.sum(axis=1), 1)
    deviation = (np.abs(r - item_mean[None, :]) * observed).sum(axis=1) / n_rated
    corr = np.zeros(r.shape[0])
    for u in range(r.shape[0]):
        cols = observed[u]
        if cols.sum() >= 3:
            a, b = r[u, cols], item_mean[cols]
            if a.std() > 0 and b.std() > 0:
                corr[u] = float(np.corrcoef(a, b)[0, 1])
    length = np.abs(robust_z(observed.sum(axis=1).astype(np.float64)))
    out: np.ndarray = np.maximum.reduce([np.abs(robust_z(deviation)), np.abs(robust_z(corr)), length])
    return out


@dataclass(frozen=True)
class ShillingReport:
    """Per-profile scores, flagged profiles and the suspected target item."""

    scores: np.ndarray
    flagged: np.ndarray
    target_item: int | None
    item_anomaly: float


class ShillingDetector:
    """Detect fake profiles pushing one item.

    Args:
        item_threshold: robust z-score of an item's excess top ratings above which it is a
            suspected push target.
        profile_threshold: score above which a profile that top-rated the target is flagged.

    Example:
        >>> report = ShillingDetector().detect(ratings)      # doctest: +SKIP
        >>> report.target_item, report.flagged[:5]           # doctest: +SKIP
    """

    def __init__(self, *, item_threshold: float = 5.0, profile_threshold: float = 2.0) -> None:
        self.item_threshold = item_threshold
        self.profile_threshold = profile_threshold

    def detect(self, ratings: np.ndarray) -> ShillingReport:
        if not self.item_threshold > 0 or not self.profile_threshold >= 0:
            raise UsageError("item_threshold must be positive and profile_threshold non-negative")
        r = check_ratings(ratings)
        observed = r != 0
        top = r == 5
        counts = observed.sum(axis=0)
        item_mean = np.where(counts > 0, r.sum(axis=0) / np.maximum(counts, 1), 0.0)
        atypical = _atypicality(r, observed, item_mean)
        # Per item: how many of its top ratings come from atypical profiles, against how many
        # its count of top ratings would bring if profiles were atypical at the overall rate.
        odd = atypical > self.profile_threshold
        rate = float(odd.mean())
        observed_odd = (top & odd[:, None]).sum(axis=0)
        expected = top.sum(axis=0) * rate
        z_items = (observed_odd - expected) / np.sqrt(expected + 1.0)
        target = int(np.argmax(z_items))
        anomaly = float(z_items[target])
        if anomaly <= self.item_threshold:
            return ShillingReport(np.zeros(len(r)), np.zeros(0, dtype=np.int64), None, anomaly)
        scores = np.where(top[:, target], atypical, 0.0)
        flagged = np.flatnonzero(scores > self.profile_threshold)
        return ShillingReport(scores, flagged, target, anomaly)
