"""The estimators Fairlearn's mitigations drive: a dlsec model's scores, and a weighted fine-tune.

Fairlearn's :class:`~fairlearn.postprocessing.ThresholdOptimizer` (``prefit=True``) reads a
fitted scikit-learn estimator's ``predict_proba``; :class:`ScoreEstimator` offers a dlsec
model's probability of the positive class that way, without training anything. Fairlearn's
:class:`~fairlearn.reductions.ExponentiatedGradient` refits a scikit-learn estimator under
sample weights many times; :class:`WeightedFineTune` is that estimator for a white-box dlsec
model: each fit starts from a copy of the model's weights and minimises the weighted
cross-entropy (full batch, Adam: nothing random), so the mitigated predictor is the same
network retrained under the constraint, not a stand-in model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import NotFittedError

__all__ = ["ScoreEstimator", "WeightedFineTune"]


def positive_scores(model: Model, x: np.ndarray, positive: int) -> np.ndarray:
    """The model's probability of class ``positive`` for each row of ``x`` (float64)."""
    probs = getattr(model, "probs", None)
    if probs is None:
        return (model.predict(x).numpy() == positive).astype(np.float64)
    return np.asarray(
        probs(torch.as_tensor(x, dtype=torch.float32)).detach().cpu().numpy()[:, positive], np.float64
    )


class ScoreEstimator(BaseEstimator, ClassifierMixin):  # type: ignore[misc]  # scikit-learn is untyped
    """A fitted dlsec model seen as a scikit-learn binary classifier (positive class vs the rest).

    Args:
        model: the model (score-based access or more; a decision-only model gives 0/1 scores).
        positive: the class index that counts as the positive decision.
    """

    def __init__(self, *, model: Model, positive: int = 1) -> None:
        self.model = model
        self.positive = positive
        self.classes_ = np.array([0, 1])

    def fit(self, x: Any, y: Any = None, **_: Any) -> ScoreEstimator:
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        p = positive_scores(self.model, np.asarray(x, dtype=np.float32), self.positive)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: Any) -> np.ndarray:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(np.int64)


class WeightedFineTune(BaseEstimator, ClassifierMixin):  # type: ignore[misc]  # scikit-learn is untyped
    """Fine-tune a copy of a white-box model on binary labels under per-row weights.

    Args:
        model: the white-box model whose weights every fit starts from (never changed).
        positive: the class index of the positive decision; labels given to :meth:`fit` are
            0/1 (1 meaning ``positive``).
        steps: full-batch Adam steps per fit.
        lr: Adam's learning rate.
        progress: called with no arguments after each fit (ExponentiatedGradient fits many).
    """

    def __init__(
        self,
        *,
        model: WhiteBoxModel,
        positive: int = 1,
        steps: int = 60,
        lr: float = 0.05,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.positive = positive
        self.steps = steps
        self.lr = lr
        self.progress = progress

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> WeightedFineTune:
        tuned = copy.deepcopy(self.model)
        device = tuned.device
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
        yt = torch.as_tensor(np.array(y, dtype=np.int64), device=device)
        w = (
            torch.ones(len(yt), device=device)
            if sample_weight is None
            else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32), device=device)
        )
        w = w / w.sum().clamp_min(1e-12)
        params = [p for p in tuned.module.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            optimiser.zero_grad()
            logits = tuned(xt)
            # binary decision: log-odds of the positive class against the rest
            pos = logits[:, self.positive]
            rest = torch.cat([logits[:, : self.positive], logits[:, self.positive + 1 :]], dim=1)
            margin = pos - torch.logsumexp(rest, dim=1)
            loss = (
                w * torch.nn.functional.binary_cross_entropy_with_logits(margin, yt.float(), reduction="none")
            ).sum()
            loss.backward()
            optimiser.step()
        self.model_ = tuned
        self.classes_ = np.array([0, 1])
        if self.progress is not None:
            self.progress()
        return self

    def predict(self, x: Any) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise NotFittedError("WeightedFineTune is not fitted: call fit() first")
        pred = self.model_.predict(np.asarray(x, dtype=np.float32)).numpy()
        return (pred == self.positive).astype(np.int64)
