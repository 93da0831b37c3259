"""The target as an extraction attack sees it: answers under a strict query budget.

A target is either a :class:`~dlsec.core.Model` (any access level) or a plain callable
``fn(np.ndarray) -> np.ndarray`` returning probabilities ``(N, num_classes)`` or labels
``(N,)`` (an HTTP gateway client fits here). Every example sent counts as one query; a
request that would go past the budget is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dlsec.core.model import Access, Model, ScoreModel, WhiteBoxModel, restrict_access
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["Answer", "BudgetExceededError", "OnQuery", "QueryFn", "QueryOracle"]

QueryFn = Callable[[np.ndarray], np.ndarray]
OnQuery = Callable[[np.ndarray, np.ndarray], None]


class BudgetExceededError(UsageError):
    """An attack asked for more queries than its budget allows (nothing was sent)."""


@dataclass(frozen=True)
class Answer:
    """What the target said about a batch: labels always, probabilities at score access."""

    labels: np.ndarray
    probs: np.ndarray | None

    def targets(self, num_classes: int) -> np.ndarray:
        """Training targets for a clone: the probabilities, else one-hot labels (float32)."""
        if self.probs is not None:
            return self.probs.astype(np.float32)
        return np.eye(num_classes, dtype=np.float32)[self.labels]


def _parse_access(access: str | Access | None) -> Access | None:
    if access is None or isinstance(access, Access):
        return access
    levels = {"score": Access.SCORE, "decision": Access.DECISION, "white-box": Access.SCORE}
    if access not in levels:
        raise UsageError(f"access must be score or decision, got {access!r}")
    return levels[access]


class QueryOracle:
    """A target behind a strict query budget, counted per example.

    Args:
        target: a dlsec model, or a callable from a float32 batch ``(N, *spec.shape)`` in
            input space to probabilities ``(N, K)`` or integer labels ``(N,)``.
        budget: the most examples that may ever be sent.
        spec: the input spec (required for a callable; a model brings its own).
        access: ``score`` (probabilities) or ``decision`` (labels only); a white-box model is
            only ever queried for probabilities. Default: what the target offers.
        on_query: called with each batch sent and what came back (e.g. a gateway-side
            detector), after the answer is checked.

    Example:
        >>> oracle = QueryOracle(model, budget=1000, access="decision")   # doctest: +SKIP
        >>> oracle.query(x[:10]).labels.shape, oracle.remaining          # doctest: +SKIP
        ((10,), 990)
    """

    def __init__(
        self,
        target: Model | QueryFn,
        *,
        budget: int,
        spec: InputSpec | None = None,
        access: str | Access | None = None,
        on_query: OnQuery | None = None,
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise UsageError(f"budget must be a positive integer, got {budget!r}")
        wanted = _parse_access(access)
        self._model: Model | None = None
        self._fn: QueryFn | None = None
        if isinstance(target, Model):
            if spec is not None and spec.shape != target.spec.shape:
                raise UsageError(f"spec shape {spec.shape} differs from the model's {target.spec.shape}")
            level = Access.SCORE if target.access >= Access.SCORE else Access.DECISION
            if wanted is not None and wanted > level:
                raise UsageError(f"the model offers {level.label} access, not {wanted.label}")
            self.access = wanted or level
            self._model = restrict_access(target, self.access)
            self.spec = target.spec
        elif callable(target):
            if spec is None:
                raise UsageError("a query callable needs spec= (input shape, bounds and classes)")
            self._fn = target
            self.spec = spec
            self.access = wanted or Access.SCORE
        else:
            raise UsageError(f"target must be a dlsec Model or a callable, got {type(target).__name__}")
        self.budget = budget
        self.queries = 0
        self.on_query = on_query

    @property
    def remaining(self) -> int:
        """Queries left in the budget."""
        return self.budget - self.queries

    def query(self, x: np.ndarray) -> Answer:
        """Ask the target about ``x``; charged to the budget before anything is sent.

        Raises:
            BudgetExceededError: ``x`` has more rows than the budget has left.
            UsageError: ``x`` does not fit the spec, or the target's answer is malformed.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = int(x.shape[0])
        if n > self.remaining:
            raise BudgetExceededError(
                f"{n} queries asked with {self.remaining} of the budget of {self.budget} left"
            )
        self.spec.check_batch(x, what="queries")
        if n == 0:
            return Answer(np.empty(0, dtype=np.int64), None)
        self.queries += n
        answer = self._ask(x)
        if self.on_query is not None:
            self.on_query(x, answer.probs if answer.probs is not None else answer.labels)
        return answer

    def labels_unbudgeted(self, x: np.ndarray) -> np.ndarray:
        """The target's labels for evaluation data (scoring the clone): not charged, not observed."""
        return self._ask(np.ascontiguousarray(x, dtype=np.float32)).labels

    def _ask(self, x: np.ndarray) -> Answer:
        k = self.spec.num_classes
        if self._model is not None:
            model = self._model
            if isinstance(model, ScoreModel | WhiteBoxModel):
                p = model.probs(torch.from_numpy(x)).detach().cpu().numpy().astype(np.float64)
                return Answer(p.argmax(1).astype(np.int64), p)
            return Answer(model.predict(torch.from_numpy(x)).numpy().astype(np.int64), None)
        assert self._fn is not None
        out = np.asarray(self._fn(x))
        if out.ndim == 2 and out.shape == (x.shape[0], k) and np.issubdtype(out.dtype, np.floating):
            p = out.astype(np.float64)
            if not np.all(np.isfinite(p)) or (p < -1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
                raise UsageError("the query callable must return probabilities (finite, >= 0, rows sum to 1)")
            labels = p.argmax(1).astype(np.int64)
            return Answer(labels, p if self.access >= Access.SCORE else None)
        labels = out.reshape(-1)
        if labels.shape[0] != x.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise UsageError(
                f"the query callable returned shape {out.shape} ({out.dtype}); expected probabilities "
                f"({x.shape[0]}, {k}) or {x.shape[0]} integer labels"
            )
        if labels.min() < 0 or labels.max() >= k:
            raise UsageError(f"the query callable returned a label outside 0..{k - 1}")
        if self.access >= Access.SCORE:
            raise UsageError("the query callable returns labels only: use access='decision'")
        return Answer(labels.astype(np.int64), None)
