"""Attribute inference on tabular data: recover a sensitive feature from a model's outputs.

The attacker knows a row's other features and its label, and queries the model. The
sensitive feature is quantised into ``bins`` (quantiles of the attacker's auxiliary rows,
each represented by its median). Attacks compared on the same rows:

* ``prior``: the most frequent bin in the auxiliary rows (no model, no features).
* ``baseline``: a classifier trained on the auxiliary rows from the other features and the
  label (no model access): what the data alone reveals.
* ``model`` (Fredrikson et al. 2014): for each candidate bin, set the feature to the bin's
  value, query the model, and pick the bin maximising ``log p(y | x) + log prior``.
* ``model+baseline``: the baseline's features plus the model's per-candidate confidences,
  learned on the auxiliary rows.

The leak is the best model-access accuracy minus the baseline's, on the target's members; the
same gap on non-members separates memorisation from what the model knows about the
population in general.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.attacks.privacy._membership import log_probs
from dlsec.core.data import Dataset
from dlsec.core.model import Model
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["AttributeInference", "AttributeResult"]


@dataclass
class AttributeResult:
    """Accuracy of each attack at recovering the sensitive bin, on members and non-members."""

    feature: str
    bins: int
    members: dict[str, float]
    non_members: dict[str, float]

    @property
    def advantage(self) -> float:
        """Best model-access accuracy minus the no-model baseline's, on members."""
        best = max(self.members["model"], self.members["model+baseline"])
        return best - max(self.members["baseline"], self.members["prior"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "bins": self.bins,
            "members": self.members,
            "non_members": self.non_members,
            "advantage": self.advantage,
        }


class AttributeInference:
    """Recover feature ``feature`` (a name or an index) of tabular rows.

    Args:
        feature: the sensitive feature, by name (``spec.feature_names``) or index.
        bins: number of quantile bins the feature is recovered into.
        seed: seeds the baseline classifiers.

    Example:
        >>> attack = AttributeInference(feature="mean radius")                    # doctest: +SKIP
        >>> attack(model, members=train, non_members=test, auxiliary=aux).advantage  # doctest: +SKIP
    """

    def __init__(self, *, feature: str | int, bins: int = 2, seed: int = 0) -> None:
        if positive_int("bins", bins) < 2:
            raise UsageError("attribute inference needs at least 2 bins")
        self.feature = feature
        self.bins = bins
        self.seed = seed

    def _index(self, data: Dataset) -> int:
        spec = data.spec
        if spec.kind != "tabular" or len(spec.shape) != 1:
            raise UsageError("attribute inference works on tabular data (one row of features)")
        if isinstance(self.feature, int):
            if not 0 <= self.feature < spec.shape[0]:
                raise UsageError(f"feature index {self.feature} outside 0..{spec.shape[0] - 1}")
            return self.feature
        names = list(spec.feature_names or [])
        if self.feature not in names:
            raise UsageError(f"no feature named {self.feature!r}; the data has: {', '.join(names[:6])}...")
        return names.index(self.feature)

    def __call__(
        self, model: Model, *, members: Dataset, non_members: Dataset, auxiliary: Dataset
    ) -> AttributeResult:
        """Attack members and non-members of ``model`` with knowledge from ``auxiliary`` rows."""
        from sklearn.linear_model import LogisticRegression

        j = self._index(members)
        aux_v = auxiliary.x[:, j].astype(np.float64)
        edges = np.quantile(aux_v, np.linspace(0, 1, self.bins + 1)[1:-1])
        if np.unique(edges).size < edges.size:
            raise UsageError(f"feature {self.feature!r} has too few distinct values for {self.bins} bins")
        reps = np.array(
            [np.median(aux_v[np.digitize(aux_v, edges) == b]) for b in range(self.bins)], dtype=np.float32
        )
        aux_bin = np.digitize(aux_v, edges)
        prior = np.bincount(aux_bin, minlength=self.bins) / len(aux_bin)

        def side(rows: Dataset) -> np.ndarray:
            others = np.delete(rows.x, j, axis=1)
            onehot = np.eye(rows.spec.num_classes)[rows.y]
            return np.concatenate([others, onehot], axis=1)

        def candidates(rows: Dataset) -> np.ndarray:
            out = np.empty((len(rows), self.bins))
            for b, v in enumerate(reps):
                x = rows.x.copy()
                x[:, j] = v
                lp = log_probs(model, x)
                out[:, b] = lp[np.arange(len(rows)), rows.y]
            return out

        baseline = LogisticRegression(max_iter=2000, C=1.0).fit(side(auxiliary), aux_bin)
        aux_c = candidates(auxiliary)
        combined = LogisticRegression(max_iter=2000, C=1.0).fit(
            np.concatenate([side(auxiliary), np.clip(aux_c, -50, 0)], axis=1), aux_bin
        )

        def accuracies(rows: Dataset) -> dict[str, float]:
            truth = np.digitize(rows.x[:, j].astype(np.float64), edges)
            cand = candidates(rows)
            fred = (cand + np.log(np.maximum(prior, 1e-12))).argmax(1)
            both = combined.predict(np.concatenate([side(rows), np.clip(cand, -50, 0)], axis=1))
            return {
                "prior": float((truth == prior.argmax()).mean()),
                "baseline": float((baseline.predict(side(rows)) == truth).mean()),
                "model": float((fred == truth).mean()),
                "model+baseline": float((both == truth).mean()),
            }

        name = members.spec.feature_names[j] if members.spec.feature_names else str(j)
        with torch.no_grad():
            return AttributeResult(
                feature=name,
                bins=self.bins,
                members=accuracies(members),
                non_members=accuracies(non_members),
            )
