"""Robust aggregation rules on flattened client updates (an ``(n, d)`` tensor), vectorised.

Every rule is an :class:`Aggregator`: ``__call__`` is final (it validates the updates, drops
non-finite rows, checks the rule's client count, then calls ``aggregate``) and returns an
:class:`Aggregate` with the aggregated update and the clients the rule excluded or
down-weighted. Pairwise distances come from one Gram matrix (``squared_distances``); there is no Python loop
over pairs of clients (Bulyan's selection loops over its ``n - 2f`` picks, not over pairs).

Where Flower ships the same rule (``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ``MultiKrum``,
``Bulyan`` in ``flwr.serverapp.strategy``) the tests compare both on the same inputs. The
differences, each deliberate:

* Flower aggregates model weights, we aggregate updates ``w_i - w_global``; for median,
  trimmed mean, Krum's distances and Bulyan this is the same rule shifted by ``w_global``.
* Flower's ``MultiKrum`` averages the selected models weighted by their example counts; the
  paper (Blanchard et al. 2017) averages them unweighted, as we do (weights are the
  attacker's to claim).
* Flower's ``Bulyan`` picks its ``n - 2f`` candidates with one Multi-Krum ranking; El Mhamdi
  et al. (2018) apply Krum recursively, removing each winner and re-scoring the rest, as we
  do. The two agree when the ranking does not change as winners are removed.
* Flower's ``FedTrimmedAvg`` cuts ``int(beta * n)`` from each end, as we do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from dlsec.errors import UsageError

__all__ = [
    "AGGREGATORS",
    "Aggregate",
    "Aggregator",
    "Bulyan",
    "FLAME",
    "FLTrust",
    "FedAvg",
    "FoolsGold",
    "Krum",
    "Median",
    "MultiKrum",
    "NormClipDP",
    "TrimmedMean",
    "build_aggregator",
    "krum_scores",
    "register_aggregator",
    "squared_distances",
]


@dataclass(frozen=True)
class Aggregate:
    """What an aggregation rule returns.

    Attributes:
        update: the aggregated update, shape ``(d,)``.
        excluded: ids of the clients the rule left out or down-weighted (a subset of the ids
            it was given; what counts as down-weighted is said on each rule).
        weights: the weight each client's update got in the aggregate, shape ``(n,)`` (for
            coordinate-wise rules, the share of coordinates where the client was kept).
    """

    update: torch.Tensor
    excluded: frozenset[int]
    weights: torch.Tensor


AGGREGATORS: dict[str, type[Aggregator]] = {}
_A = TypeVar("_A", bound="type[Aggregator]")


def register_aggregator(name: str) -> Callable[[_A], _A]:
    """Register an :class:`Aggregator` class under ``name``; a name registered twice raises."""

    def decorator(cls: _A) -> _A:
        if name in AGGREGATORS:
            raise UsageError(f"aggregator {name!r} is already registered")
        cls.name = name
        AGGREGATORS[name] = cls
        return cls

    return decorator


class Aggregator:
    """Base class: validates, then calls :meth:`aggregate`. Subclasses write only ``aggregate``.

    ``honest_majority`` rules need fewer than half the clients malicious; ``needs_reference``
    rules (FLTrust) need the server's own update on its root data.
    """

    name: ClassVar[str] = "base"
    honest_majority: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    #: the rule selects whole updates and drops the rest (Krum, Multi-Krum)
    selects: ClassVar[bool] = False
    #: the rule keeps state across rounds from the clients' past updates (FoolsGold)
    keeps_history: ClassVar[bool] = False
    #: why client-level DP cannot be calibrated on this rule, where it cannot (FLAME)
    dp_refusal: ClassVar[str | None] = None

    def min_clients(self) -> int:
        """The fewest clients this rule can aggregate."""
        return 1

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        """The largest L2 norm this rule's output can have (its own data-independent noise aside)
        over ``n`` updates of L2 norm at most ``clip``; ``None`` where none is known.

        Client-level DP on a robust rule (:class:`~dlsec.federated.RobustDP`) calibrates its
        noise to twice this bound.
        """
        return None

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        raise NotImplementedError

    def __call__(
        self,
        updates: torch.Tensor,
        *,
        weights: torch.Tensor | Sequence[float] | None = None,
        client_ids: Sequence[int] | None = None,
        reference: torch.Tensor | None = None,
    ) -> Aggregate:
        """Aggregate ``updates`` (``(n, d)``), weighted by ``weights`` (example counts) where used.

        Rows that are not finite are excluded before the rule runs.

        Raises:
            UsageError: malformed input, too few clients for the rule, or a missing reference.
        """
        if updates.ndim != 2 or updates.shape[0] == 0:
            raise UsageError(
                f"{self.name}: updates must be a non-empty (clients, parameters) tensor, "
                f"got {tuple(updates.shape)}"
            )
        n = updates.shape[0]
        ids = list(range(n)) if client_ids is None else [int(i) for i in client_ids]
        if len(ids) != n or len(set(ids)) != n:
            raise UsageError(f"{self.name}: {n} updates need {n} distinct client ids, got {len(ids)}")
        w = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float64).float()
        if w.shape != (n,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise UsageError(f"{self.name}: weights must be {n} non-negative numbers with a positive sum")
        if self.needs_reference and (reference is None or reference.shape != updates.shape[1:]):
            raise UsageError(
                f"{self.name} needs the server's update on its root data "
                f"(reference of shape ({updates.shape[1]},))"
            )
        # a row sum is finite when every entry is (barring overflow, which the full check catches)
        finite = torch.isfinite(updates.sum(dim=1))
        if not bool(finite.all()):
            finite = torch.isfinite(updates).all(dim=1)
        dropped = {ids[i] for i in torch.nonzero(~finite).flatten().tolist()}
        if dropped:
            keep = torch.nonzero(finite).flatten()
            updates, w, ids = updates[keep], w[keep], [ids[i] for i in keep.tolist()]
        if updates.shape[0] < self.min_clients():
            raise UsageError(
                f"{self.name} needs at least {self.min_clients()} clients with finite updates, "
                f"got {updates.shape[0]}"
            )
        result = self.aggregate(updates.float(), w, ids, reference)
        if not dropped:
            return result
        full = torch.zeros(n)
        index = {cid: pos for pos, cid in enumerate(ids)}
        for pos, cid in enumerate(client_ids if client_ids is not None else range(n)):
            if cid in index:
                full[pos] = result.weights[index[cid]]
        return Aggregate(result.update, result.excluded | dropped, full)


def _normalised(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum()


def _excluded(ids: list[int], kept: torch.Tensor) -> frozenset[int]:
    return frozenset(ids[i] for i in torch.nonzero(~kept).flatten().tolist())


def _check_f(name: str, f: int) -> None:
    if f < 0:
        raise UsageError(f"{name}: the number of malicious clients must be at least 0, got {f}")


@register_aggregator("fedavg")
@dataclass
class FedAvg(Aggregator):
    """McMahan et al. (2017): the mean of the updates weighted by example counts. Excludes no one."""

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        w = _normalised(weights)
        return Aggregate(w @ updates, frozenset(), w)

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        return clip  # a convex combination


def _partitioned(updates: torch.Tensor, kth: tuple[int, ...]) -> torch.Tensor:
    """``(d, n)``: each coordinate's ``n`` values, partitioned so that the ``kth`` ranks hold
    their sorted values (NumPy's introselect on contiguous rows: several times faster than
    ``torch.kthvalue`` or a sort along the client axis)."""
    rows = np.ascontiguousarray(updates.detach().cpu().numpy().T)
    return torch.from_numpy(np.partition(rows, sorted(set(kth)), axis=1)).to(updates.device)


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """The coordinate-wise median, the mean of the two middle values when ``n`` is even (as NumPy)."""
    n = updates.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    part = _partitioned(updates, (lo, hi))
    return (part[:, lo] + part[:, hi]) / 2


@register_aggregator("median")
@dataclass
class Median(Aggregator):
    """Yin et al. (2018): the coordinate-wise median. Excludes no client as a whole."""

    honest_majority: ClassVar[bool] = True

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        n = updates.shape[0]
        return Aggregate(coordinate_median(updates), frozenset(), torch.full((n,), 1.0 / n))

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        # at least h = ceil(n/2) values of each coordinate are at least |median| in magnitude, so
        # h * |median|^2 <= sum_i |x_i|^2 <= n * clip^2 (tight: n=3, rows (1,1,0), (1,0,1), (0,1,1))
        return clip * math.sqrt(n / math.ceil(n / 2))


@register_aggregator("trimmed-mean")
@dataclass
class TrimmedMean(Aggregator):
    """Yin et al. (2018): per coordinate, drop the ``int(beta * n)`` largest and smallest values, average.

    A client counts as excluded when its value was cut in more than half of the coordinates.

    Args:
        beta: the fraction cut from each end, in ``[0, 0.5)``.
    """

    beta: float = 0.1
    honest_majority: ClassVar[bool] = True

    def min_clients(self) -> int:
        return 1

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        if not 0.0 <= self.beta < 0.5:
            raise UsageError(f"trimmed-mean: beta must lie in [0, 0.5), got {self.beta}")
        n, d = updates.shape
        k = int(self.beta * n)
        if k == 0:
            return Aggregate(updates.mean(dim=0), frozenset(), torch.full((n,), 1.0 / n))
        part = _partitioned(updates, (k, n - k - 1))
        mean = part[:, k : n - k].mean(dim=1)
        # a client's value is cut where it lies outside the kept band (ties at the edges count as kept)
        low, high = part[:, k].contiguous(), part[:, n - k - 1].contiguous()
        outside = (updates < low) | (updates > high)
        cut = outside.sum(dim=1)
        share = 1.0 - cut.float() / d
        return Aggregate(mean, _excluded(ids, share >= 0.5), share / share.sum())

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        # each coordinate is a mean of n - 2k values: its square is at most their mean square
        k = int(self.beta * n)
        return clip * math.sqrt(n / (n - 2 * k))


def squared_distances(updates: torch.Tensor) -> torch.Tensor:
    """All pairwise squared L2 distances from one Gram matrix (``|x|^2 + |y|^2 - 2 x.y``).

    The rows are centred first, so that the cancellation in the formula stays small for
    updates that are close to each other; in the input's dtype (float32 updates: float32).
    """
    centred = updates - updates.mean(dim=0)
    gram = centred @ centred.T
    gram = (gram + gram.T) / 2  # a float matmul is not exactly symmetric
    sq = gram.diagonal()
    return (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)


def krum_scores(updates: torch.Tensor, num_malicious: int) -> torch.Tensor:
    """Krum's score of each update: the sum of squared distances to its ``n - f - 2`` nearest others.

    One Gram matrix gives all pairwise distances; ``topk`` picks the nearest per row.
    """
    n = updates.shape[0]
    dist = squared_distances(updates)
    dist.fill_diagonal_(float("inf"))
    k = max(1, n - num_malicious - 2)
    return (
        torch.topk(dist, min(k, n - 1), dim=1, largest=False).values.sum(dim=1)
        if n > 1
        else torch.zeros(1, dtype=torch.float64)
    )


@register_aggregator("krum")
@dataclass
class Krum(Aggregator):
    """Blanchard et al. (2017): the single update with the lowest Krum score. Needs ``n > 2f + 2``.

    Args:
        num_malicious: ``f``, the number of malicious clients the rule must tolerate.
    """

    num_malicious: int = 0
    honest_majority: ClassVar[bool] = True
    selects: ClassVar[bool] = True

    def min_clients(self) -> int:
        _check_f(self.name, self.num_malicious)
        return 2 * self.num_malicious + 3

    def select(self, n: int) -> int:
        """How many of the ``n`` lowest-scoring updates are averaged (Krum: one)."""
        return 1

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        n = updates.shape[0]
        scores = krum_scores(updates, self.num_malicious)
        chosen = torch.argsort(scores, stable=True)[: self.select(n)]
        kept = torch.zeros(n, dtype=torch.bool)
        kept[chosen] = True
        w = kept.float() / kept.sum()
        return Aggregate(w @ updates, _excluded(ids, kept), w)

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        return clip  # one update, or the mean of several


@register_aggregator("multi-krum")
@dataclass
class MultiKrum(Krum):
    """Blanchard et al. (2017): the unweighted mean of the ``m`` updates with the lowest Krum scores.

    Args:
        num_malicious: ``f``.
        num_selected: ``m``; default ``n - f``.
    """

    num_selected: int | None = None

    def min_clients(self) -> int:
        return max(super().min_clients(), self.num_selected or 1)

    def select(self, n: int) -> int:
        return self.num_selected if self.num_selected is not None else n - self.num_malicious


@register_aggregator("bulyan")
@dataclass
class Bulyan(Aggregator):
    """El Mhamdi et al. (2018): recursive Krum picks ``n - 2f``; per coordinate, average the
    ``n - 4f`` values closest to their median. Needs ``n >= 4f + 3``.

    Args:
        num_malicious: ``f``.
    """

    num_malicious: int = 0
    honest_majority: ClassVar[bool] = True

    def min_clients(self) -> int:
        _check_f(self.name, self.num_malicious)
        return 4 * self.num_malicious + 3

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        n, f = updates.shape[0], self.num_malicious
        dist = squared_distances(updates)
        dist.fill_diagonal_(float("inf"))
        remaining = torch.ones(n, dtype=torch.bool)
        picked: list[int] = []
        for _ in range(n - 2 * f):  # one Krum per pick, on the distances of the clients left
            left = torch.nonzero(remaining).flatten()
            sub = dist[left][:, left]
            k = max(1, min(len(left) - f - 2, len(left) - 1))
            scores = (
                torch.topk(sub, k, dim=1, largest=False).values.sum(dim=1)
                if len(left) > 1
                else torch.zeros(1)
            )
            winner = int(left[int(torch.argmin(scores))])
            picked.append(winner)
            remaining[winner] = False
        selected = updates[picked]
        beta = len(picked) - 2 * f
        med = coordinate_median(selected)
        closest = torch.topk((selected - med).abs(), beta, dim=0, largest=False).indices
        update = torch.gather(selected, 0, closest).mean(dim=0)
        kept = torch.zeros(n, dtype=torch.bool)
        kept[picked] = True
        return Aggregate(update, _excluded(ids, kept), kept.float() / kept.sum())

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        # per coordinate a mean of n - 4f of the n - 2f picked values (as the trimmed mean)
        picked, kept = n - 2 * self.num_malicious, n - 4 * self.num_malicious
        return clip * math.sqrt(picked / kept) if kept >= 1 else None


@register_aggregator("norm-clip")
@dataclass
class NormClipDP(Aggregator):
    """Sun et al. (2019), "Can you really backdoor FL?": clip each update to L2 norm ``clip``,
    average (weighted), add Gaussian noise of standard deviation ``noise`` (weak DP).

    Clients whose update was clipped count as down-weighted.

    Args:
        clip: the norm bound M; ``None`` takes the median of the round's update norms.
        noise: the standard deviation of the added noise (0 turns weak DP off).
        seed: seeds the noise.
    """

    clip: float | None = None
    noise: float = 0.001
    seed: int = 0
    _rng: torch.Generator | None = field(default=None, init=False, repr=False)

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        norms = updates.norm(dim=1)
        bound = float(norms.median()) if self.clip is None else float(self.clip)
        if not bound > 0:
            raise UsageError(f"norm-clip: the clipping bound must be positive, got {bound}")
        scale = torch.clamp(bound / norms.clamp_min(1e-12), max=1.0)
        w = _normalised(weights)
        update = (w * scale) @ updates + _noise(self, updates.shape[1], self.noise)
        return Aggregate(update, _excluded(ids, scale >= 1.0), w * scale)

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        return clip  # weights summing to 1, each scaled by at most 1 (the noise is data-independent)


def _noise(owner: NormClipDP | FLAME, d: int, std: float) -> torch.Tensor:
    if std <= 0:
        return torch.zeros(d)
    if owner._rng is None:
        owner._rng = torch.Generator().manual_seed(owner.seed)
    return torch.randn(d, generator=owner._rng) * std


@register_aggregator("fltrust")
@dataclass
class FLTrust(Aggregator):
    """Cao et al. (NDSS 2021): trust score ``ReLU(cos(g_i, g_0))`` against the server's own update
    ``g_0`` on its small clean root set; each update rescaled to ``|g_0|``; the trust-weighted mean.

    Clients with trust score 0 are excluded.
    """

    needs_reference: ClassVar[bool] = True

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        assert reference is not None  # checked in __call__
        g0 = reference.float()
        ref_norm = g0.norm()
        norms = updates.norm(dim=1).clamp_min(1e-12)
        trust = torch.relu((updates @ g0) / (norms * ref_norm.clamp_min(1e-12)))
        kept = trust > 0
        if not bool(kept.any()):
            return Aggregate(torch.zeros_like(g0), frozenset(ids), torch.zeros(len(ids)))
        w = trust / trust.sum()
        update = (w * ref_norm / norms) @ updates
        return Aggregate(update, _excluded(ids, kept), w)

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        # a convex combination of updates rescaled to |g_0| (the server's, not a client's, data)
        return None if reference is None else float(reference.float().norm())


@register_aggregator("foolsgold")
@dataclass
class FoolsGold(Aggregator):
    """Fung et al. (2020): down-weight clients whose update histories point the same way (sybils).

    Keeps each client's summed updates across rounds (by client id), computes their pairwise
    cosine similarities, pardons honest clients (similarities scaled by ``v_i / v_j``), maps
    ``1 - max similarity`` through the paper's logit with confidence ``kappa``, and averages
    with those weights. Clients whose weight is 0 are excluded.

    Args:
        kappa: the logit's confidence parameter (paper: 1).
    """

    kappa: float = 1.0
    keeps_history: ClassVar[bool] = True
    history_: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        n = updates.shape[0]
        for i, cid in enumerate(ids):
            prev = self.history_.get(cid)
            self.history_[cid] = (
                updates[i].clone() if prev is None or prev.shape != updates[i].shape else prev + updates[i]
            )
        hist = torch.stack([self.history_[cid] for cid in ids])
        if n == 1:
            return Aggregate(updates[0].clone(), frozenset(), torch.ones(1))
        norms = hist.norm(dim=1).clamp_min(1e-12)
        cs = ((hist @ hist.T) / (norms[:, None] * norms[None, :])).double()
        cs.fill_diagonal_(-math.inf)
        v = cs.max(dim=1).values
        # pardoning: cs_ij *= v_i / v_j where v_j > v_i
        pardon = (v[None, :] > v[:, None]) & torch.isfinite(cs)
        cs = torch.where(pardon, cs * v[:, None] / v[None, :], cs)
        alpha = (1 - cs.max(dim=1).values).clamp(0, 1)
        alpha = alpha / alpha.max() if float(alpha.max()) > 0 else alpha
        alpha = torch.where(alpha == 1, torch.full_like(alpha, 0.99), alpha)
        logit = self.kappa * (torch.log(alpha / (1 - alpha)) + 0.5)
        alpha = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1).float()
        kept = alpha > 0
        if not bool(kept.any()):
            return Aggregate(torch.zeros(updates.shape[1]), frozenset(ids), alpha)
        w = alpha / alpha.sum()
        return Aggregate(w @ updates, _excluded(ids, kept), w)

    def output_bound(self, n: int, clip: float, reference: torch.Tensor | None) -> float | None:
        return clip  # a convex combination (its weights come from the clients' histories)


@register_aggregator("flame")
@dataclass
class FLAME(Aggregator):
    """Nguyen et al. (USENIX Security 2022): HDBSCAN on pairwise cosine distances admits the
    majority cluster (min cluster size ``n/2 + 1``); admitted updates are clipped to the
    median norm ``S``; the mean gets Gaussian noise of standard deviation ``lam * S``.

    The paper clusters the local models; we cluster their updates (the same models less the
    shared global model), which separates them better. Clients outside the cluster are
    excluded; when HDBSCAN finds no cluster at all, every client is admitted.

    Args:
        lam: the noise level lambda (paper: 0.001 for image classification).
        seed: seeds the noise.
    """

    lam: float = 0.001
    dp_refusal: ClassVar[str | None] = (
        "its own noise has the median update norm (client data) as its scale, so the release is not "
        "a Gaussian mechanism of fixed variance that the accountant can bound"
    )
    seed: int = 0
    honest_majority: ClassVar[bool] = True
    _rng: torch.Generator | None = field(default=None, init=False, repr=False)

    def min_clients(self) -> int:
        return 2

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        from sklearn.cluster import HDBSCAN

        n = updates.shape[0]
        norms = updates.norm(dim=1).clamp_min(1e-12)
        cosine = (1 - (updates @ updates.T) / (norms[:, None] * norms[None, :])).double().clamp_min(0)
        cosine = (cosine + cosine.T) / 2  # a float matmul is not exactly symmetric
        cosine.fill_diagonal_(0.0)
        labels = torch.as_tensor(
            HDBSCAN(
                metric="precomputed",
                min_cluster_size=n // 2 + 1,
                min_samples=1,
                allow_single_cluster=True,
                copy=True,
            ).fit_predict(cosine.numpy())
        )
        clustered = labels[labels >= 0]
        if clustered.numel() == 0:
            kept = torch.ones(n, dtype=torch.bool)
        else:
            kept = labels == torch.bincount(clustered).argmax()
        norms = updates.norm(dim=1)
        bound = float(norms.median())
        scale = torch.clamp(bound / norms.clamp_min(1e-12), max=1.0) * kept.float()
        update = (scale @ updates) / kept.sum() + _noise(self, updates.shape[1], self.lam * bound)
        return Aggregate(update, _excluded(ids, kept), kept.float() / kept.sum())


def build_aggregator(
    name: str, *, num_clients: int, malicious_fraction: float, seed: int = 0, **options: Any
) -> Aggregator:
    """Build a registered rule for ``num_clients`` clients of which ``malicious_fraction`` attack.

    ``f = round(fraction * n)`` sets Krum's, Multi-Krum's and Bulyan's tolerance, and the trimmed
    mean's ``beta`` defaults to ``max(fraction, 0.1)``.

    Raises:
        UsageError: unknown rule; a fraction outside [0, 0.5) for an honest-majority rule; more
            attackers than the rule tolerates (Krum: ``n > 2f + 2``; Bulyan: ``n >= 4f + 3``).

    Example:
        >>> build_aggregator("krum", num_clients=10, malicious_fraction=0.2).num_malicious
        2
    """
    if name not in AGGREGATORS:
        raise UsageError(f"unknown defence {name!r}; choose one of: {', '.join(AGGREGATORS)}")
    cls = AGGREGATORS[name]
    if not 0.0 <= malicious_fraction < 1.0:
        raise UsageError(f"the malicious fraction must lie in [0, 1), got {malicious_fraction}")
    if cls.honest_majority and not malicious_fraction < 0.5:
        raise UsageError(
            f"{name} needs an honest majority: the malicious fraction must lie in [0, 0.5), "
            f"got {malicious_fraction}"
        )
    f = round(malicious_fraction * num_clients)
    if cls in (Krum, MultiKrum, Bulyan):
        options.setdefault("num_malicious", f)
    if cls is TrimmedMean:
        options.setdefault("beta", max(malicious_fraction, 0.1))
    if cls in (NormClipDP, FLAME):
        options.setdefault("seed", seed)
    try:
        rule = cls(**options)
    except TypeError as exc:
        raise UsageError(f"{name} rejected its options: {exc}") from None
    need = rule.min_clients()
    if num_clients < need:
        raise UsageError(
            f"{name} tolerates f={f} malicious of {num_clients} clients only with at least {need} clients; "
            "use more clients or a smaller --malicious"
        )
    return rule
