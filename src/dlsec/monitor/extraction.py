"""Extraction detection on each client's query stream: PRADA, volume, coverage and distribution.

:class:`ExtractionDetector` watches every client (API key) separately. For each query it
updates four signals and returns an :class:`ExtractionAlert` when one trips (once per trip,
not on every query while it stays tripped):

* ``prada`` (Juuti et al. 2019, Algorithm 1): per predicted class ``c`` a growing set ``G_c``
  of the client's earlier queries. A new query ``x`` predicted ``c`` contributes its minimum
  L2 distance ``d_min`` to ``G_c`` to the set ``D``; ``x`` joins ``G_c`` when ``d_min`` exceeds
  ``T_c = mean - std`` of the distances that admitted ``G_c``'s members. Once ``D`` holds
  ``min_distances`` values, the Shapiro-Wilk statistic ``W`` of ``D`` (outliers beyond three
  standard deviations removed) is computed (``scipy.stats.shapiro``); ``W < delta`` trips the
  signal. Natural queries give roughly normal distances; synthetic ones (JBDA's small steps
  from earlier queries) and many crafted streams do not. One departure from the paper: an
  exact repeat of a growing-set member (distance 0, e.g. a client retrying a request) adds
  nothing to ``D``, since it gives an attacker nothing new.
* ``volume``: more than ``max_queries`` queries within ``window_seconds``.
* ``coverage``: the normalised entropy of the classes predicted for the client's last
  ``window`` queries falls below ``min_entropy`` (a stream the model mostly sends to a few
  classes: noise and off-task data).
* ``distribution`` (after :meth:`ExtractionDetector.fit` on natural reference inputs): more
  than ``max_rate`` of the client's last ``window`` queries are atypical. A query is atypical
  when it lies farther from the reference than natural points lie from each other (above the
  ``quantile_high`` quantile of the reference's nearest-neighbour distances: off-task data,
  noise) or when it lies closer to one of the client's own ``history`` earlier queries than
  natural points lie to each other (below the ``quantile_low`` quantile, exact repeats
  excepted: small synthetic steps away from earlier queries, as in JBDA). A natural stream is
  atypical about ``1 - quantile_high + quantile_low`` of the time.

Each signal carries an action (``alert``, ``throttle`` or ``block``) on its alerts; the
gateway enforces it. ``block`` is sticky (fail closed): :meth:`ExtractionDetector.action`
keeps answering ``block`` for the client until :meth:`ExtractionDetector.reset`.

Memory is bounded per client (see :class:`DetectorConfig`): inputs with more than
``project_dim`` values are mapped to ``project_dim`` dimensions by a fixed, seeded Gaussian
random projection (distances are preserved up to a small factor, Johnson-Lindenstrauss), each
class keeps at most ``max_growing_per_class`` vectors, ``D`` at most ``max_distances`` values
(the most recent), the volume window at most ``max_queries + 1`` timestamps, the distribution
signal the last ``history`` queries; at most ``max_clients`` clients are tracked (the least
recently seen is forgotten first). So a
client costs at most about ``4 * min(features, project_dim) * (num_classes *
max_growing_per_class + history) + 8 * (max_distances + max_queries) + 9 * window`` bytes:
1.0 MB for 8x8 digits with the defaults.

Example:
    >>> detector = ExtractionDetector(DetectorConfig())
    >>> detector.fit(train_x)                                       # doctest: +SKIP
    >>> alerts = detector.observe("key-1", x_batch, probabilities)  # doctest: +SKIP
    >>> detector.action("key-1")                                    # doctest: +SKIP
    'allow'
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dlsec.errors import UsageError

__all__ = [
    "Action",
    "CoverageConfig",
    "DetectorConfig",
    "DistributionConfig",
    "ExtractionAlert",
    "ExtractionDetector",
    "PradaConfig",
    "VolumeConfig",
    "shapiro_w",
]

Action = Literal["alert", "throttle", "block"]
Signal = Literal["prada", "volume", "coverage", "distribution"]
_SEVERITY = {"allow": 0, "alert": 1, "throttle": 2, "block": 3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PradaConfig(_Strict):
    """PRADA: Shapiro-Wilk normality of the minimum distances to each class's growing set."""

    enabled: bool = True
    delta: float = Field(0.93, gt=0, lt=1, description="alert when W drops below this")
    min_distances: int = Field(100, ge=20, description="distances needed before testing")
    max_growing_per_class: int = Field(256, ge=1)
    max_distances: int = Field(5000, ge=20)
    check_every: int = Field(
        10, ge=1, description="test W after this many new distances (the test costs more than the rest)"
    )
    action: Action = "block"


class VolumeConfig(_Strict):
    """Queries per sliding time window."""

    enabled: bool = True
    window_seconds: float = Field(3600.0, gt=0)
    max_queries: int = Field(10_000, ge=1)
    action: Action = "throttle"


class CoverageConfig(_Strict):
    """Normalised entropy of the predicted classes over the last ``window`` queries."""

    enabled: bool = True
    window: int = Field(200, ge=10)
    min_queries: int = Field(50, ge=10)
    min_entropy: float = Field(0.5, ge=0, le=1)
    action: Action = "alert"


class DistributionConfig(_Strict):
    """Share of atypical recent queries (off the natural data, or tiny steps from earlier ones).

    Active after :meth:`ExtractionDetector.fit`.
    """

    enabled: bool = True
    quantile_high: float = Field(0.99, gt=0.5, lt=1)
    quantile_low: float = Field(0.01, ge=0, lt=0.5)
    history: int = Field(1000, ge=1)
    window: int = Field(50, ge=10)
    min_queries: int = Field(20, ge=5)
    max_rate: float = Field(0.3, gt=0, lt=1)
    max_reference: int = Field(2000, ge=10)
    action: Action = "block"


class DetectorConfig(_Strict):
    """Thresholds and actions of every signal, and the memory bounds.

    Example:
        >>> DetectorConfig.model_validate({"prada": {"delta": 0.92}, "volume": {"max_queries": 500}})
        ... # doctest: +ELLIPSIS
        DetectorConfig(...)
    """

    prada: PradaConfig = Field(default_factory=PradaConfig)
    volume: VolumeConfig = Field(default_factory=VolumeConfig)
    coverage: CoverageConfig = Field(default_factory=CoverageConfig)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)
    num_classes: int | None = Field(
        None, ge=2, description="classes of the model (default: from the probabilities, else labels seen)"
    )
    project_dim: int = Field(256, ge=8, description="inputs with more values are randomly projected")
    max_clients: int = Field(10_000, ge=1)
    seed: int = 0


@dataclass(frozen=True)
class ExtractionAlert:
    """One signal tripping for one client.

    Attributes:
        client_id: the client (API key id) whose stream tripped.
        signal: ``prada``, ``volume``, ``coverage`` or ``distribution``.
        action: what the gateway should do (``alert``, ``throttle``, ``block``).
        query_index: how many queries the client had sent, this one included.
        value, threshold: the measurement and the threshold it crossed.
        message: one line for operators.
        time: seconds since the epoch (the detector's clock).
    """

    client_id: str
    signal: str
    action: str
    query_index: int
    value: float
    threshold: float
    message: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shapiro_w(values: np.ndarray) -> float:
    """PRADA's test statistic: Shapiro-Wilk ``W`` of ``values`` after dropping those beyond 3 std.

    Returns 1.0 (nothing to reject) for fewer than three values or zero spread.
    """
    from scipy.stats import shapiro

    d = np.asarray(values, dtype=np.float64)
    if d.size >= 3:
        mean, std = d.mean(), d.std()
        d = d[np.abs(d - mean) <= 3 * std] if std > 0 else d
    if d.size < 3 or np.ptp(d) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N > 5000: the W statistic is fine, only its p-value is not
        return float(shapiro(d).statistic)


@dataclass
class _Client:
    """The bounded state of one client."""

    growing: dict[int, np.ndarray] = field(default_factory=dict)
    growing_sq: dict[int, np.ndarray] = field(default_factory=dict)  # squared norms of growing rows
    growing_n: dict[int, int] = field(default_factory=dict)
    admit: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # n, sum, sum of squares
    distances: deque[float] = field(default_factory=deque)
    times: deque[float] = field(default_factory=deque)
    classes: deque[int] = field(default_factory=deque)
    far: deque[bool] = field(default_factory=deque)
    history: np.ndarray | None = None
    history_sq: np.ndarray | None = None
    history_n: int = 0
    queries: int = 0
    tripped: set[str] = field(default_factory=set)
    blocked: bool = False
    last_w: float | None = None
    since_w: int = 0  # distances added since W was last computed
    lock: threading.Lock = field(default_factory=threading.Lock)


class ExtractionDetector:
    """Stateful, thread-safe extraction detector over per-client query streams.

    Args:
        config: thresholds, actions and memory bounds (:class:`DetectorConfig`).
        clock: returns the current time in seconds (default ``time.time``; tests pass their own).
    """

    def __init__(
        self, config: DetectorConfig | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config if config is not None else DetectorConfig()
        self.clock = clock if clock is not None else time.time
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()
        self._projection: np.ndarray | None = None
        self._features: int | None = None
        self._num_classes: int = self.config.num_classes or 2
        self.reference_: np.ndarray | None = None
        self.reference_thresholds_: tuple[float, float] | None = None
        self._ref_cache: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ reference data
    def fit(self, x_reference: np.ndarray) -> ExtractionDetector:
        """Learn the natural data's nearest-neighbour distances (enables ``distribution``).

        ``x_reference`` holds natural, problem-domain inputs (e.g. the training set); at most
        ``max_reference`` rows are kept (a seeded subsample).
        """
        cfg = self.config.distribution
        x = self._vectors(np.asarray(x_reference))
        if len(x) < 10:
            raise UsageError("the detector's reference needs at least 10 inputs")
        rng = np.random.default_rng(self.config.seed)
        if len(x) > cfg.max_reference:
            x = x[rng.choice(len(x), cfg.max_reference, replace=False)]
        nn = _nearest(x, x, exclude_self=True)
        self._ref_cache = (x.astype(np.float64), (x.astype(np.float64) ** 2).sum(1))
        self.reference_ = x
        low, high = np.quantile(nn, [cfg.quantile_low, cfg.quantile_high])
        self.reference_thresholds_ = (float(low), float(high))
        return self

    @property
    def fitted(self) -> bool:
        return self.reference_ is not None

    # ------------------------------------------------------------------ the stream
    def observe(self, client_id: str, x: np.ndarray, predictions: np.ndarray) -> list[ExtractionAlert]:
        """Add a batch of ``client_id``'s queries and the model's answers; return new alerts.

        Args:
            client_id: the client (e.g. an API key id).
            x: the queries, shape ``(N, ...)``, in the order they were answered.
            predictions: labels ``(N,)`` or probabilities ``(N, K)``.

        Raises:
            UsageError: mismatched lengths, non-finite inputs, or inputs of another size than
                earlier ones.
        """
        vectors = self._vectors(np.asarray(x))
        pred = np.asarray(predictions)
        labels = _labels(pred, len(vectors))
        with self._lock:
            if self.config.num_classes is None:
                seen = pred.shape[1] if pred.ndim == 2 else int(labels.max(initial=0)) + 1
                self._num_classes = max(self._num_classes, seen)
        far = None
        if self.reference_ is not None and self.config.distribution.enabled and len(vectors):
            assert self.reference_thresholds_ is not None
            far = (
                _nearest(vectors, self.reference_, ref_cache=self._ref_cache) > self.reference_thresholds_[1]
            )
        client = self._client(str(client_id))
        alerts: list[ExtractionAlert] = []
        with client.lock:
            for i in range(len(vectors)):
                now = self.clock()
                client.queries += 1
                values = self._update(
                    client, vectors[i], int(labels[i]), None if far is None else bool(far[i]), now
                )
                alerts += self._check(str(client_id), client, values, now)
        return alerts

    def action(self, client_id: str) -> str:
        """The strongest action in force: ``allow``, ``alert``, ``throttle`` or ``block``."""
        with self._lock:
            client = self._clients.get(str(client_id))
        if client is None:
            return "allow"
        with client.lock:
            if client.blocked:
                return "block"
            actions = [self._signal_action(s) for s in client.tripped]
        return max(actions, key=lambda a: _SEVERITY[a], default="allow")

    def reset(self, client_id: str) -> None:
        """Forget everything about ``client_id`` (an operator clearing a block)."""
        with self._lock:
            self._clients.pop(str(client_id), None)

    def stats(self, client_id: str) -> dict[str, Any]:
        """What the detector currently measures for ``client_id`` (for operators and tests)."""
        with self._lock:
            client = self._clients.get(str(client_id))
        if client is None:
            return {"queries": 0, "tripped": [], "blocked": False}
        with client.lock:
            return {
                "queries": client.queries,
                "tripped": sorted(client.tripped),
                "blocked": client.blocked,
                "prada_w": client.last_w,
                "distances": len(client.distances),
                "growing_set": sum(client.growing_n.values()),
                "coverage_entropy": _entropy(client.classes, self._num_classes),
                "distribution_rate": (sum(client.far) / len(client.far)) if client.far else None,
            }

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    # ------------------------------------------------------------------ internals
    def _signal_action(self, signal: str) -> str:
        cfg: Any = getattr(self.config, signal)
        return str(cfg.action)

    def _client(self, client_id: str) -> _Client:
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                client = _Client()
                self._clients[client_id] = client
                while len(self._clients) > self.config.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client_id)
            return client

    def _vectors(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1:
            raise UsageError("queries must be a batch (N, ...)")
        flat = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
        if flat.size and not np.all(np.isfinite(flat)):
            raise UsageError("queries contain NaN or infinite values")
        d = flat.shape[1]
        with self._lock:
            if self._features is None:
                self._features = d
                if d > self.config.project_dim:
                    rng = np.random.default_rng(self.config.seed)
                    k = self.config.project_dim
                    self._projection = (rng.standard_normal((d, k)) / math.sqrt(k)).astype(np.float32)
            elif d != self._features:
                raise UsageError(
                    f"queries have {d} values each; this detector watches inputs of {self._features}"
                )
            projection = self._projection
        return flat @ projection if projection is not None else flat

    def _update(
        self, c: _Client, v: np.ndarray, label: int, far: bool | None, now: float
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        cfg = self.config
        vsq = float(v @ v)  # the query's squared norm, shared by both nearest-distance searches
        if cfg.prada.enabled:
            w = self._prada(c, v, vsq, label)
            if w is not None:
                out["prada"] = w
        if cfg.volume.enabled:
            c.times.append(now)
            while c.times and c.times[0] <= now - cfg.volume.window_seconds:
                c.times.popleft()
            while len(c.times) > cfg.volume.max_queries + 1:
                c.times.popleft()
            out["volume"] = float(len(c.times))
        if cfg.coverage.enabled:
            c.classes.append(label)
            while len(c.classes) > cfg.coverage.window:
                c.classes.popleft()
            if len(c.classes) >= cfg.coverage.min_queries:
                out["coverage"] = _entropy(c.classes, self._num_classes) or 0.0
        if far is not None:
            near = self._near_previous(c, v, vsq)  # always called: it records v in the history
            far = far or near
            c.far.append(far)
            while len(c.far) > cfg.distribution.window:
                c.far.popleft()
            if len(c.far) >= cfg.distribution.min_queries:
                out["distribution"] = sum(c.far) / len(c.far)
        return out

    def _near_previous(self, c: _Client, v: np.ndarray, vsq: float) -> bool:
        """Whether ``v`` is a small step (not a repeat) from one of the client's recent queries."""
        assert self.reference_thresholds_ is not None
        size = self.config.distribution.history
        if c.history is None or c.history_sq is None:
            c.history = np.empty((size, v.shape[0]), dtype=np.float32)
            c.history_sq = np.empty(size, dtype=np.float32)
        n = min(c.history_n, size)
        near = False
        if n:
            low = float(self.reference_thresholds_[0])
            d = _exact_distances(c.history[:n], c.history_sq[:n], v, vsq, low * low)
            moved = d[d > 0]
            near = bool(moved.size) and float(moved.min()) < low
        c.history[c.history_n % size] = v
        c.history_sq[c.history_n % size] = vsq
        c.history_n += 1
        return near

    def _prada(self, c: _Client, v: np.ndarray, vsq: float, label: int) -> float | None:
        cfg = self.config.prada
        members = c.growing.get(label)
        n = c.growing_n.get(label, 0)
        if members is None or n == 0:
            members = np.empty((cfg.max_growing_per_class, v.shape[0]), dtype=np.float32)
            members[0] = v
            c.growing[label] = members
            c.growing_sq[label] = np.empty(cfg.max_growing_per_class, dtype=np.float32)
            c.growing_sq[label][0] = vsq
            c.growing_n[label] = 1
            c.admit[label] = (0, 0.0, 0.0)
            return None
        d_min = float(_exact_distances(members[:n], c.growing_sq[label][:n], v, vsq, None).min())
        if d_min == 0.0:
            return c.last_w  # an exact repeat tells an attacker nothing new: not a sample of D
        c.distances.append(d_min)
        while len(c.distances) > cfg.max_distances:
            c.distances.popleft()
        k, s, ss = c.admit[label]
        mean = s / k if k else 0.0
        std = math.sqrt(max(ss / k - mean * mean, 0.0)) if k else 0.0
        if d_min > mean - std and n < cfg.max_growing_per_class:
            members[n] = v
            c.growing_sq[label][n] = vsq
            c.growing_n[label] = n + 1
            c.admit[label] = (k + 1, s + d_min, ss + d_min * d_min)
        if len(c.distances) < cfg.min_distances:
            return None
        c.since_w += 1
        if c.last_w is None or c.since_w >= cfg.check_every:
            c.last_w = shapiro_w(np.fromiter(c.distances, dtype=np.float64))
            c.since_w = 0
        return c.last_w

    def _check(
        self, client_id: str, c: _Client, values: dict[str, float], now: float
    ) -> list[ExtractionAlert]:
        cfg = self.config
        limits: dict[str, tuple[float, bool, str]] = {}
        if "prada" in values:
            w = values["prada"]
            limits["prada"] = (
                cfg.prada.delta,
                w < cfg.prada.delta,
                f"PRADA: Shapiro-Wilk W={w:.4f} < {cfg.prada.delta}",
            )
        if "volume" in values:
            vol = values["volume"]
            limits["volume"] = (
                float(cfg.volume.max_queries),
                vol > cfg.volume.max_queries,
                f"volume: more than {cfg.volume.max_queries} queries in {cfg.volume.window_seconds:g} s",
            )
        if "coverage" in values:
            h = values["coverage"]
            limits["coverage"] = (
                cfg.coverage.min_entropy,
                h < cfg.coverage.min_entropy,
                f"coverage: predicted-class entropy {h:.3f} < {cfg.coverage.min_entropy} over the last "
                f"{len(c.classes)} queries",
            )
        if "distribution" in values:
            rate = values["distribution"]
            limits["distribution"] = (
                cfg.distribution.max_rate,
                rate > cfg.distribution.max_rate,
                f"distribution: {rate:.0%} of the last {len(c.far)} queries are atypical of natural data",
            )
        alerts = []
        for signal, (threshold, tripped, message) in limits.items():
            if tripped and signal not in c.tripped:
                c.tripped.add(signal)
                action = self._signal_action(signal)
                if action == "block":
                    c.blocked = True
                alerts.append(
                    ExtractionAlert(
                        client_id, signal, action, c.queries, values[signal], threshold, message, now
                    )
                )
            elif not tripped:
                c.tripped.discard(signal)
        return alerts


def _labels(pred: np.ndarray, n: int) -> np.ndarray:
    if pred.ndim == 2:
        if pred.shape[0] != n:
            raise UsageError(f"{pred.shape[0]} predictions for {n} queries")
        return pred.argmax(axis=1)
    flat = pred.reshape(-1)
    if flat.shape[0] != n:
        raise UsageError(f"{flat.shape[0]} predictions for {n} queries")
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise UsageError("predictions must be integer labels or a (N, K) array of probabilities")
    if flat.size and flat.min() < 0:
        raise UsageError("predicted labels must be non-negative")
    return flat.astype(np.int64)


def _exact_distances(
    rows: np.ndarray, sq: np.ndarray, v: np.ndarray, vsq: float, bound2: float | None
) -> np.ndarray:
    """Exact L2 distances from ``v`` to the rows that may lie within ``sqrt(bound2)`` of it.

    With ``bound2`` None: to the rows that may be the nearest. Candidates come from one
    matrix-vector product over cached squared norms (``|r|^2 + |v|^2 - 2 r.v``), with a
    tolerance far above float32 rounding; the distances themselves are computed directly on the
    few candidates, so exact repeats (distance 0) and the values fed to the tests are exactly
    what a direct computation over every row gives.
    """
    approx = sq + vsq - 2.0 * (rows @ v)
    tol = 1e-4 * (sq + vsq) + 1e-6
    limit = (float(approx.min()) if bound2 is None else bound2) + tol
    cand = rows[approx <= limit]
    return np.sqrt(((cand - v) ** 2).sum(axis=1))


def _entropy(classes: deque[int], num_classes: int) -> float | None:
    """Entropy of the class histogram over ``log(num_classes)``: 1 when uniform, 0 for one class."""
    if not classes:
        return None
    counts = np.bincount(np.fromiter(classes, dtype=np.int64))
    p = counts[counts > 0] / len(classes)
    k = max(num_classes, len(counts), 2)
    return float(-(p * np.log(p)).sum() / math.log(k))


def _nearest(
    x: np.ndarray,
    ref: np.ndarray,
    *,
    exclude_self: bool = False,
    ref_cache: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Each row's L2 distance to its nearest row of ``ref`` (in chunks).

    ``ref_cache`` is ``ref`` in float64 with its squared row norms, computed once at ``fit``.
    """
    out = np.empty(len(x), dtype=np.float64)
    if ref_cache is not None:
        ref64, ref_sq = ref_cache
    else:
        ref64 = ref.astype(np.float64)
        ref_sq = (ref64**2).sum(1)
    for start in range(0, len(x), 1024):
        xb = x[start : start + 1024].astype(np.float64)
        d2 = (xb**2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * xb @ ref64.T
        if exclude_self:
            idx = np.arange(start, start + len(xb))
            d2[np.arange(len(xb)), idx] = np.inf
        out[start : start + len(xb)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out
