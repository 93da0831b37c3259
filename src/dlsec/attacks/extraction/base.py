"""The extraction-attack contract.

An extraction attack is configured by keyword-only hyperparameters (the threat model: the
query ``budget``, the clone's architecture, training settings, a ``seed``) and called as
``attack(target, pool)``. :meth:`ExtractionAttack.__call__` is the one verb: it wraps the target
in a :class:`~dlsec.attacks.extraction.QueryOracle` that refuses any query past the budget,
validates the pool and the optional labelled test set, hands a run context to the subclass's
:meth:`ExtractionAttack.run` (the algorithm), then scores the clone (accuracy, agreement with
the target, the agreement curve against queries) and returns an :class:`ExtractionResult`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from dlsec.attacks.extraction._clone import CloneTrainer, agreement, build_clone
from dlsec.attacks.extraction._oracle import Answer, OnQuery, QueryFn, QueryOracle
from dlsec.attacks.extraction._pools import QueryPool
from dlsec.core.data import Dataset
from dlsec.core.model import Access, Model, WhiteBoxModel
from dlsec.core.registration import register_in
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = [
    "EXTRACTION_ATTACKS",
    "ExtractionAttack",
    "ExtractionResult",
    "RunContext",
    "get_extraction_attack",
    "register_extraction_attack",
]

Progress = Callable[[int, int, dict[str, float]], None]
EXTRACTION_ATTACKS: dict[str, type[ExtractionAttack]] = {}


def register_extraction_attack(name: str) -> Callable[[type[ExtractionAttack]], type[ExtractionAttack]]:
    """Class decorator: register an extraction attack under ``name``; duplicates raise ``UsageError``."""

    return register_in(EXTRACTION_ATTACKS, name, "extraction attack")


def get_extraction_attack(name: str, **params: Any) -> ExtractionAttack:
    """Build the registered extraction attack ``name`` with ``params``."""
    key = name.lower()
    if key not in EXTRACTION_ATTACKS:
        raise UsageError(
            f"unknown extraction method {name!r}; choose one of: {', '.join(sorted(EXTRACTION_ATTACKS))}"
        )
    return EXTRACTION_ATTACKS[key](**params)


@dataclass(frozen=True)
class ExtractionResult:
    """What an extraction attack returns.

    Attributes:
        clone: the trained clone, a white-box model with the target's input spec.
        attack: the method's registered name.
        access: the access the target was queried at (``score`` or ``decision``).
        budget: the query budget; ``queries``: the queries spent (never more than the budget).
        agreement: fraction of the test inputs where the clone's top-1 equals the target's.
        accuracy: the clone's accuracy on the test labels; ``target_accuracy``: the target's.
        curve: ``{queries, agreement, accuracy}`` per checkpoint, from clones trained on the
            data available after that many queries (empty without checkpoints or test set).
        arch, arch_kwargs: the clone's architecture; ``seed``: the seed; ``extras``: per method.
    """

    clone: WhiteBoxModel
    attack: str
    access: str
    budget: int
    queries: int
    agreement: float | None
    accuracy: float | None
    target_accuracy: float | None
    curve: list[dict[str, float]]
    arch: str
    arch_kwargs: dict[str, Any]
    seed: int
    extras: dict[str, Any] = field(default_factory=dict)

    def queries_to(self, level: float) -> int | None:
        """The first checkpoint (queries) whose clone agrees with the target on ``level`` of the test set."""
        for point in self.curve:
            if point["agreement"] >= level:
                return int(point["queries"])
        return None

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the clone itself excluded)."""
        return {
            "attack": self.attack,
            "access": self.access,
            "budget": self.budget,
            "queries": self.queries,
            "agreement": self.agreement,
            "clone_accuracy": self.accuracy,
            "target_accuracy": self.target_accuracy,
            "curve": self.curve,
            "clone_arch": self.arch,
            "clone_arch_kwargs": self.arch_kwargs,
            "seed": self.seed,
            **self.extras,
        }


class RunContext:
    """What :meth:`ExtractionAttack.run` works with: the budgeted oracle, the pool, a seeded RNG,
    clone building and training, and progress reporting."""

    def __init__(
        self,
        attack: ExtractionAttack,
        oracle: QueryOracle,
        pool: QueryPool,
        progress: Progress | None,
    ) -> None:
        self.attack = attack
        self.oracle = oracle
        self.spec: InputSpec = oracle.spec
        self.pool = pool
        self.rng = np.random.default_rng(attack.seed)
        self.trainer = CloneTrainer(
            epochs=attack.epochs,
            batch_size=attack.train_batch_size,
            lr=attack.lr,
            min_steps=attack.min_steps,
            seed=attack.seed,
        )
        self._progress = progress
        self.extras: dict[str, Any] = {}

    @property
    def remaining(self) -> int:
        return self.oracle.remaining

    @property
    def soft(self) -> bool:
        """Whether the target answers with probabilities."""
        return self.oracle.access >= Access.SCORE

    def query(self, x: np.ndarray, *, stats: dict[str, float] | None = None) -> Answer:
        """Query ``x`` in batches of ``query_batch`` (charged to the budget), reporting progress."""
        labels, probs = [], []
        step = self.attack.query_batch
        for start in range(0, len(x), step):
            ans = self.oracle.query(x[start : start + step])
            labels.append(ans.labels)
            if ans.probs is not None:
                probs.append(ans.probs)
            if self._progress is not None:
                self._progress(self.oracle.queries, self.oracle.budget, dict(stats or {}))
        if not labels:
            return Answer(np.empty(0, dtype=np.int64), None)
        return Answer(np.concatenate(labels), np.concatenate(probs) if probs else None)

    def new_clone(self) -> WhiteBoxModel:
        """A freshly initialised clone (the same initial weights on every call)."""
        a = self.attack
        clone, _, _ = build_clone(self.spec, a.clone_arch, a.clone_arch_kwargs, seed=a.seed, device=a.device)
        return clone

    def fit(
        self, clone: WhiteBoxModel, x: np.ndarray, targets: np.ndarray, *, epochs: int | None = None
    ) -> float:
        """Train ``clone`` on ``(x, targets)`` (soft targets: probabilities or one-hot rows)."""
        return self.trainer.fit(clone, x, targets, epochs=epochs)


class ExtractionAttack(ABC):
    """Base class of extraction attacks. Subclasses implement :meth:`run` only.

    Args:
        budget: the most queries the attack may send (each example is one query).
        clone_arch: a built-in architecture name (``cnn``, ``mlp``) or ``module:factory``;
            default: the usual one for the data (a small CNN for images, an MLP for tables).
        clone_arch_kwargs: keyword arguments of the clone's architecture.
        epochs: training passes over the queried data (at least ``min_steps`` steps).
        train_batch_size, lr, min_steps: clone training settings (Adam).
        query_batch: examples per request to the target.
        checkpoints: query counts at which a clone trained on the data gathered so far is
            scored (the agreement curve); needs a test set.
        seed: seed of every random choice (pool order, clone initialisation, shuffles).
        device: where the clone trains (default: CUDA when present).
    """

    name: ClassVar[str] = "extraction"

    def __init__(
        self,
        *,
        budget: int,
        clone_arch: str | None = None,
        clone_arch_kwargs: dict[str, Any] | None = None,
        epochs: int = 30,
        train_batch_size: int = 64,
        lr: float = 1e-3,
        min_steps: int = 300,
        query_batch: int = 100,
        checkpoints: Sequence[int] | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        for pname, value in (
            ("budget", budget),
            ("epochs", epochs),
            ("train_batch_size", train_batch_size),
            ("min_steps", min_steps),
            ("query_batch", query_batch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{pname} must be a positive integer, got {value!r}")
        if not isinstance(lr, int | float) or not lr > 0:
            raise UsageError(f"lr must be positive, got {lr!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"seed must be an integer, got {seed!r}")
        points = sorted({int(c) for c in checkpoints or ()})
        if points and (points[0] < 1 or points[-1] > budget):
            raise UsageError(f"checkpoints must lie in 1..budget ({budget}), got {points}")
        self.budget = budget
        self.clone_arch = clone_arch
        self.clone_arch_kwargs = clone_arch_kwargs
        self.epochs = epochs
        self.train_batch_size = train_batch_size
        self.lr = float(lr)
        self.min_steps = min_steps
        self.query_batch = query_batch
        self.checkpoints = points
        self.seed = seed
        self.device = device

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments this attack was built with."""
        names = []
        for cls in type(self).__mro__:
            init = cls.__dict__.get("__init__")
            if init is None or cls is object:
                continue
            params = inspect.signature(init).parameters.values()
            names += [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        return {n: getattr(self, n) for n in dict.fromkeys(names) if hasattr(self, n)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __call__(
        self,
        target: Model | QueryFn,
        pool: QueryPool | np.ndarray,
        *,
        spec: InputSpec | None = None,
        access: str | Access | None = None,
        test: Dataset | None = None,
        on_query: OnQuery | None = None,
        progress: Progress | None = None,
    ) -> ExtractionResult:
        """Extract a clone of ``target`` with at most ``budget`` queries drawn from ``pool``.

        Args:
            target: a dlsec model or a callable ``fn(x) -> probabilities or labels``.
            pool: the attacker's unlabelled data (a :class:`QueryPool` or an array of inputs).
            spec: the input spec (required when ``target`` is a callable).
            access: ``score`` or ``decision`` (default: what the target offers).
            test: labelled data to score the clone on (accuracy, agreement, curve). The
                target's answers on it are evaluation, not attack queries: they are not
                charged to the budget and not passed to ``on_query``.
            on_query: called with each batch sent and the target's answer.
            progress: called as ``progress(queries, budget, stats)``.

        Raises:
            UsageError: bad pool, spec, test set or access; ``BudgetExceededError`` never
                escapes a correct attack (each one truncates its last request to the budget).

        Example:
            >>> from dlsec.attacks.extraction import Copycat, out_of_domain_pool
            >>> pool = out_of_domain_pool(model.spec, 4000, seed=0)         # doctest: +SKIP
            >>> result = Copycat(budget=2000)(model, pool, test=test_set)   # doctest: +SKIP
            >>> result.agreement, result.queries                            # doctest: +SKIP
        """
        oracle = QueryOracle(target, budget=self.budget, spec=spec, access=access, on_query=on_query)
        qpool = self._pool(pool, oracle.spec)
        test_labels = None
        if test is not None:
            if test.spec.shape != oracle.spec.shape:
                raise UsageError(
                    f"test data have shape {test.spec.shape}, the target expects {oracle.spec.shape}"
                )
            if int(test.y.max()) >= oracle.spec.num_classes:
                raise UsageError("test labels go beyond the target's classes")
            test_labels = oracle.labels_unbudgeted(test.x)
        ctx = RunContext(self, oracle, qpool, progress)
        clone = self.run(ctx)
        if oracle.queries > oracle.budget:  # pragma: no cover - the oracle refuses first
            raise RuntimeError("query budget exceeded")
        curve: list[dict[str, float]] = []
        agree = acc = target_acc = None
        if test is not None and test_labels is not None:
            curve = self._curve(ctx, test, test_labels)
            agree = agreement(clone, test.x, test_labels)
            acc = agreement(clone, test.x, test.y)
            target_acc = float((test_labels == test.y).mean())
        _, arch, arch_kwargs = build_clone(
            oracle.spec, self.clone_arch, self.clone_arch_kwargs, seed=self.seed, device="cpu"
        )
        return ExtractionResult(
            clone=clone,
            attack=self.name,
            access=oracle.access.label,
            budget=self.budget,
            queries=oracle.queries,
            agreement=agree,
            accuracy=acc,
            target_accuracy=target_acc,
            curve=curve,
            arch=arch,
            arch_kwargs=arch_kwargs,
            seed=self.seed,
            extras=ctx.extras,
        )

    @staticmethod
    def _pool(pool: QueryPool | np.ndarray, spec: InputSpec) -> QueryPool:
        if not isinstance(pool, QueryPool):
            arr = np.asarray(pool, dtype=np.float32)
            pool = QueryPool(arr, np.zeros(len(arr), dtype=np.int64), ("pool",))
        if len(pool) == 0:
            raise UsageError("the query pool is empty")
        if pool.groups.shape != (len(pool),):
            raise UsageError("the query pool needs one group id per row")
        spec.check_batch(pool.x, what="query pool")
        return pool

    def _curve(self, ctx: RunContext, test: Dataset, test_labels: np.ndarray) -> list[dict[str, float]]:
        """Clones trained on the first ``q`` answered queries, for each checkpoint ``q``."""
        x_all, t_all = ctx.extras.pop("_history", (None, None))
        if x_all is None or not self.checkpoints:
            return []
        curve = []
        for q in self.checkpoints:
            if q > len(x_all):
                break
            clone = ctx.new_clone()
            ctx.fit(clone, x_all[:q], t_all[:q])
            curve.append(
                {
                    "queries": q,
                    "agreement": agreement(clone, test.x, test_labels),
                    "accuracy": agreement(clone, test.x, test.y),
                }
            )
        return curve

    @abstractmethod
    def run(self, ctx: RunContext) -> WhiteBoxModel:
        """Spend at most ``ctx.remaining`` queries and return the trained clone.

        Store the queried inputs and their training targets, in query order, as
        ``ctx.extras["_history"] = (x, targets)`` so the base can draw the agreement curve.
        """
