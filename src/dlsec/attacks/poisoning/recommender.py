"""A matrix-factorisation recommender and fake-profile (shilling) attacks against it.

Ratings are a ``(users, items)`` array with 0 for "not rated" and 1..5 otherwise.
:class:`MatrixFactorization` is a biased matrix factorisation fitted by alternating least
squares. The shilling attacks (Lam and Riedl 2004; Mobasher et al. 2007) push a target item by
injecting fake profiles that rate it 5 and fill ``filler`` of the other items: ``random``
(filler ratings drawn around the global mean), ``average`` (around each item's mean) and
``bandwagon`` (the most popular items rated 5, the rest random). :func:`item_rank` measures
the target item's rank among genuine users' unrated items, before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlsec.errors import DataError, NotFittedError, UsageError

__all__ = [
    "SHILLING_KINDS",
    "MatrixFactorization",
    "ShillingAttack",
    "ShillingResult",
    "check_ratings",
    "item_rank",
    "synthetic_ratings",
]

SHILLING_KINDS = ("random", "average", "bandwagon")


def check_ratings(ratings: np.ndarray, *, source: str = "ratings") -> np.ndarray:
    """Validate a ratings matrix (2-D, finite, 0 or 1..5) and return it as float64."""
    r = np.asarray(ratings)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise DataError(f"{source}: ratings must be a (users, items) matrix with at least 2 of each")
    if r.dtype.kind not in "fiu" or not np.all(np.isfinite(r)):
        raise DataError(f"{source}: ratings must be finite numbers")
    rated = r[r != 0]
    if rated.size == 0 or rated.min() < 1 or rated.max() > 5:
        raise DataError(f"{source}: ratings must be 0 (not rated) or between 1 and 5")
    return r.astype(np.float64)


def synthetic_ratings(
    *, users: int = 400, items: int = 150, factors: int = 4, density: float = 0.12, seed: int = 0
) -> np.ndarray:
    """A generated low-rank ratings matrix (nothing downloads), popular items rated more often."""
    if users < 2 or items < 2 or not 0 < density <= 1:
        raise UsageError("synthetic ratings need users >= 2, items >= 2 and density in (0, 1]")
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(users, factors))
    v = rng.normal(size=(items, factors))
    item_bias = rng.normal(0, 0.6, size=items)
    raw = 3.2 + item_bias[None, :] + (u @ v.T) / np.sqrt(factors) * 0.9 + rng.normal(0, 0.4, (users, items))
    popularity = rng.pareto(1.5, size=items) + 0.2
    p = np.clip(density * popularity / popularity.mean(), 0.002, 0.95)
    observed = rng.random((users, items)) < p[None, :]
    return np.where(observed, np.clip(np.rint(raw), 1, 5), 0.0)


class MatrixFactorization:
    """Biased matrix factorisation ``r_ui ~ mu + b_u + b_i + p_u . q_i`` by alternating least squares.

    Args:
        factors: latent dimensions.
        reg: L2 regularisation of factors and biases.
        iterations: ALS sweeps.
        seed: seeds the initial factors.

    Example:
        >>> ratings = synthetic_ratings(seed=0)
        >>> mf = MatrixFactorization(factors=8).fit(ratings)
        >>> mf.predict().shape == ratings.shape
        True
    """

    def __init__(self, *, factors: int = 8, reg: float = 0.5, iterations: int = 10, seed: int = 0) -> None:
        self.factors = factors
        self.reg = reg
        self.iterations = iterations
        self.seed = seed

    def fit(self, ratings: np.ndarray) -> MatrixFactorization:
        r = check_ratings(ratings)
        if isinstance(self.factors, bool) or not isinstance(self.factors, int) or self.factors < 1:
            raise UsageError(f"factors must be a positive integer, got {self.factors!r}")
        if not self.reg > 0:
            raise UsageError(f"reg must be positive, got {self.reg}")
        n_users, n_items = r.shape
        observed = r != 0
        mu = float(r[observed].mean())
        rng = np.random.default_rng(self.seed)
        f = self.factors
        p = rng.normal(0, 0.1, (n_users, f))
        q = rng.normal(0, 0.1, (n_items, f))
        bu = np.zeros(n_users)
        bi = np.zeros(n_items)
        eye = self.reg * np.eye(f + 1)
        for _ in range(self.iterations):
            # Users: solve for [p_u, b_u] against features [q_i, 1], target r - mu - b_i.
            feats = np.hstack([q, np.ones((n_items, 1))])
            for u in range(n_users):
                cols = observed[u]
                if cols.any():
                    a = feats[cols]
                    sol = np.linalg.solve(a.T @ a + eye, a.T @ (r[u, cols] - mu - bi[cols]))
                    p[u], bu[u] = sol[:f], sol[f]
            # Items: solve for [q_i, b_i] against features [p_u, 1], target r - mu - b_u.
            feats = np.hstack([p, np.ones((n_users, 1))])
            for i in range(n_items):
                rows = observed[:, i]
                if rows.any():
                    a = feats[rows]
                    sol = np.linalg.solve(a.T @ a + eye, a.T @ (r[rows, i] - mu - bu[rows]))
                    q[i], bi[i] = sol[:f], sol[f]
        self.mu_ = mu
        self.user_ = p
        self.item_ = q
        self.user_bias_ = bu
        self.item_bias_ = bi
        return self

    def predict(self) -> np.ndarray:
        """Predicted ratings for every (user, item)."""
        if not hasattr(self, "mu_"):
            raise NotFittedError("MatrixFactorization is not fitted: call fit(ratings) first")
        scores: np.ndarray = (
            self.mu_ + self.user_bias_[:, None] + self.item_bias_[None, :] + self.user_ @ self.item_.T
        )
        return scores


def item_rank(
    model: MatrixFactorization,
    ratings: np.ndarray,
    item: int,
    *,
    users: np.ndarray | None = None,
    top: int = 10,
) -> dict[str, float]:
    """Where ``item`` ranks among each genuine user's unrated items (1 = recommended first).

    Returns the mean rank and the hit ratio (fraction of users with ``item`` in their top
    ``top``) over ``users`` (default: all) who have not rated it.
    """
    r = np.asarray(ratings)
    scores = model.predict()
    rows = np.arange(r.shape[0]) if users is None else np.asarray(users)
    rows = rows[r[rows, item] == 0]
    if len(rows) == 0:
        raise UsageError(f"every user has rated item {item}; nothing to rank")
    masked = np.where(r[rows] == 0, scores[rows], -np.inf)
    rank = 1 + (masked > masked[:, [item]]).sum(axis=1)
    return {"mean_rank": float(rank.mean()), "hit_ratio": float((rank <= top).mean()), "users": len(rows)}


@dataclass(frozen=True)
class ShillingResult:
    """Ratings with injected fake profiles (appended after the genuine users)."""

    ratings: np.ndarray
    fake_index: np.ndarray
    target_item: int
    kind: str
    params: dict[str, Any]

    def rank_shift(
        self, clean: np.ndarray, *, factors: int = 8, seed: int = 0, top: int = 10
    ) -> dict[str, float]:
        """The target item's rank for genuine users before and after the attack (lower is better for it)."""
        genuine = np.arange(clean.shape[0])
        before = item_rank(
            MatrixFactorization(factors=factors, seed=seed).fit(clean),
            clean,
            self.target_item,
            users=genuine,
            top=top,
        )
        after = item_rank(
            MatrixFactorization(factors=factors, seed=seed).fit(self.ratings),
            self.ratings,
            self.target_item,
            users=genuine,
            top=top,
        )
        return {
            "rank_before": before["mean_rank"],
            "rank_after": after["mean_rank"],
            "rank_shift": before["mean_rank"] - after["mean_rank"],
            "hit_ratio_before": before["hit_ratio"],
            "hit_ratio_after": after["hit_ratio"],
            "attack_success_rate": after["hit_ratio"],
        }


class ShillingAttack:
    """Push ``target_item`` with ``profiles`` fake users (a push attack).

    Args:
        kind: ``random``, ``average`` or ``bandwagon``.
        profiles: fake profiles injected, as a fraction of the genuine users when below 1,
            else a count.
        filler: fraction of the other items each fake profile rates.
        target_item: the item pushed (rated 5 by every fake profile).
        popular: bandwagon only: how many of the most-rated items get a 5.
        seed: seeds the filler items and ratings.

    Example:
        >>> ratings = synthetic_ratings(seed=0)
        >>> result = ShillingAttack(kind="average", profiles=0.05, target_item=3).inject(ratings)
        >>> result.ratings.shape[0] - ratings.shape[0]
        20
    """

    def __init__(
        self,
        *,
        kind: str = "average",
        profiles: float = 0.05,
        filler: float = 0.05,
        target_item: int = 0,
        popular: int = 5,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.profiles = profiles
        self.filler = filler
        self.target_item = target_item
        self.popular = popular
        self.seed = seed

    def inject(self, ratings: np.ndarray) -> ShillingResult:
        r = check_ratings(ratings)
        if self.kind not in SHILLING_KINDS:
            raise UsageError(f"shilling kind must be one of {', '.join(SHILLING_KINDS)}, got {self.kind!r}")
        n_users, n_items = r.shape
        if not 0 <= self.target_item < n_items:
            raise UsageError(f"target item {self.target_item} is not an item (0..{n_items - 1})")
        count = int(round(self.profiles * n_users)) if self.profiles < 1 else int(self.profiles)
        if count < 1:
            raise UsageError(f"profiles={self.profiles} injects no profile; raise it")
        if not 0 < self.filler < 1:
            raise UsageError(f"filler must be a fraction strictly between 0 and 1, got {self.filler}")
        rng = np.random.default_rng(self.seed)
        observed = r != 0
        mu, sigma = float(r[observed].mean()), float(r[observed].std())
        counts = observed.sum(axis=0)
        item_mean = np.where(counts > 0, r.sum(axis=0) / np.maximum(counts, 1), mu)
        item_std = np.array([r[observed[:, i], i].std() if counts[i] > 1 else sigma for i in range(n_items)])
        others = np.setdiff1d(np.arange(n_items), [self.target_item])
        popular = np.array([i for i in np.argsort(-counts) if i != self.target_item][: self.popular])
        n_fill = max(1, int(round(self.filler * len(others))))
        fake = np.zeros((count, n_items))
        for row in fake:
            pool = np.setdiff1d(others, popular) if self.kind == "bandwagon" else others
            chosen = rng.choice(pool, size=min(n_fill, len(pool)), replace=False)
            if self.kind == "average":
                values = rng.normal(item_mean[chosen], np.maximum(item_std[chosen], 0.1))
            else:
                values = rng.normal(mu, sigma, size=len(chosen))
            row[chosen] = np.clip(np.rint(values), 1, 5)
            if self.kind == "bandwagon":
                row[popular] = 5.0
            row[self.target_item] = 5.0
        return ShillingResult(
            ratings=np.vstack([r, fake]),
            fake_index=np.arange(n_users, n_users + count),
            target_item=int(self.target_item),
            kind=self.kind,
            params={
                "kind": self.kind,
                "profiles": self.profiles,
                "filler": self.filler,
                "target_item": self.target_item,
                "popular": self.popular,
                "seed": self.seed,
            },
        )
