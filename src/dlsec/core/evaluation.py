"""Clean accuracy and the confusion matrix of a model on a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.core.data import Dataset
from dlsec.core.model import Model
from dlsec.errors import DataError

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    """Clean performance of a model on labelled data.

    Attributes:
        accuracy: fraction of rows predicted correctly.
        confusion: ``confusion[i, j]`` counts rows of true class ``i`` predicted as ``j``.
        per_class_accuracy: recall of each class (NaN for a class with no rows).
        n: number of rows.
        predictions: the predicted label of each row.
    """

    accuracy: float
    confusion: np.ndarray
    per_class_accuracy: np.ndarray
    n: int
    predictions: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "confusion_matrix": self.confusion.tolist(),
            "per_class_accuracy": [None if np.isnan(v) else float(v) for v in self.per_class_accuracy],
        }


def evaluate(model: Model, data: Dataset) -> EvalResult:
    """Predict every row of ``data`` with ``model`` and score it.

    Works at every access level (it only needs predicted labels).

    Example:
        >>> result = evaluate(model, test_set)           # doctest: +SKIP
        >>> round(result.accuracy, 3)                    # doctest: +SKIP
        0.978
    """
    if data.spec.shape != model.spec.shape:
        raise DataError(
            f"{data.name}: examples have shape {data.spec.shape}, the model expects {model.spec.shape}"
        )
    k = model.spec.num_classes
    if int(data.y.max()) >= k:
        raise DataError(f"{data.name}: labels go up to {int(data.y.max())} but the model has {k} classes")
    pred = model.predict(torch.from_numpy(data.x)).numpy().astype(np.int64)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (data.y, pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return EvalResult(float((pred == data.y).mean()), confusion, per_class, len(data), pred)
