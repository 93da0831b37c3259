"""STRIP (Gao et al. 2019): runtime detection of triggered inputs by superimposition.

An input carrying a backdoor trigger keeps its (target) prediction when blended with random
clean images: the trigger dominates. A clean input's prediction varies. STRIP superimposes
each input with ``n_overlays`` held-out clean images and measures the mean entropy of the
predictions; low entropy is suspicious. :meth:`STRIP.score` returns the negated entropy, so
higher means more suspicious, and :meth:`STRIP.fit` sets the threshold at the requested false
positive rate on clean inputs. Monitoring reuses it through ``fit`` / ``score`` /
``threshold_`` / ``predict``.
"""

from __future__ import annotations

import numpy as np
import torch

from dlsec.core.model import WhiteBoxModel
from dlsec.errors import NotFittedError, UsageError

__all__ = ["STRIP"]


class STRIP:
    """STRIP triggered-input detector.

    Args:
        model: the white-box (or any model with ``probs``) classifier under watch.
        n_overlays: clean images superimposed on each input.
        alpha: weight of the overlay added to the input (``clip(x + alpha * overlay)``, the
            paper's superimposition keeps the input, and so its trigger, at full strength).
        fpr: false positive rate on clean inputs the threshold is set at.
        seed: seeds the choice of overlays.

    Example:
        >>> detector = STRIP(model=model, fpr=0.05).fit(clean_x)    # doctest: +SKIP
        >>> suspicious = detector.predict(incoming_x)               # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        model: WhiteBoxModel,
        n_overlays: int = 16,
        alpha: float = 1.0,
        fpr: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.n_overlays = n_overlays
        self.alpha = alpha
        self.fpr = fpr
        self.seed = seed

    def fit(self, clean_x: np.ndarray) -> STRIP:
        """Keep overlays from ``clean_x`` and set ``threshold_`` at ``fpr`` on the rest."""
        if isinstance(self.n_overlays, bool) or not isinstance(self.n_overlays, int) or self.n_overlays < 1:
            raise UsageError(f"n_overlays must be a positive integer, got {self.n_overlays!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise UsageError(f"alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 < self.fpr < 1.0:
            raise UsageError(f"fpr must be strictly between 0 and 1, got {self.fpr}")
        x = np.asarray(clean_x, dtype=np.float32)
        if len(x) < self.n_overlays + 2:
            raise UsageError(
                f"fit needs more than n_overlays + 1 = {self.n_overlays + 1} clean inputs, got {len(x)}"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(x))
        pool = max(self.n_overlays, len(x) // 2)
        self.overlays_ = x[order[:pool]]
        held = x[order[pool:]]
        clean_scores = self._scores(held)
        self.threshold_ = float(np.quantile(clean_scores, 1.0 - self.fpr, method="higher"))
        self.clean_scores_ = clean_scores
        return self

    @property
    def threshold(self) -> float:
        """The score above which an input is flagged (``fpr`` of clean inputs score above it)."""
        if not hasattr(self, "threshold_"):
            raise NotFittedError("STRIP is not fitted: call fit(clean_x) first")
        return float(self.threshold_)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Suspicion per input (negated mean prediction entropy under superimposition)."""
        if not hasattr(self, "overlays_"):
            raise NotFittedError("STRIP is not fitted: call fit(clean_x) first")
        return self._scores(np.asarray(x, dtype=np.float32))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``True`` for inputs scored above the threshold (likely triggered)."""
        return self.score(x) > self.threshold

    def _scores(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        rng = np.random.default_rng(self.seed + 1)
        picks = rng.integers(0, len(self.overlays_), size=(len(x), self.n_overlays))
        lo = self.model.spec.lower_tensor().numpy()
        hi = self.model.spec.upper_tensor().numpy()
        blended = np.clip(x[:, None] + self.alpha * self.overlays_[picks], lo, hi)
        flat = blended.reshape(len(x) * self.n_overlays, *x.shape[1:])
        probs = self.model.probs(torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32)))
        p = probs.detach().cpu().double().numpy().reshape(len(x), self.n_overlays, -1)
        entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=2).mean(axis=1)
        return -entropy
