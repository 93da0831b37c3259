"""Input drift: per-feature Kolmogorov-Smirnov, MMD with a permutation test, a classifier test.

Each works on raw inputs (flattened) or on features given by ``feature_fn`` (for example a
model's penultimate layer, :func:`dlsec.monitor.embedding_fn`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from dlsec.errors import UsageError
from dlsec.monitor._base import Detector, DetectorResult, Window, register_detector
from dlsec.monitor._features import FeatureFn, apply_features

__all__ = [
    "ClassifierDrift",
    "KSDrift",
    "MMDDrift",
    "combine_pvalues",
    "median_heuristic_gamma",
    "mmd2_permutation_test",
    "mmd2_unbiased",
]

Correction = Literal["bonferroni", "fdr"]


def combine_pvalues(p_values: np.ndarray, correction: Correction) -> float:
    """One p-value for "no feature changed" from per-feature p-values.

    ``bonferroni``: ``min(1, d * min p)``. ``fdr``: the Benjamini-Hochberg (Simes) combination
    ``min_i d * p_(i) / i``, which is below ``alpha`` exactly when BH at level ``alpha`` rejects
    at least one feature.
    """
    p = np.sort(np.asarray(p_values, dtype=np.float64).reshape(-1))
    d = len(p)
    if d == 0:
        raise UsageError("no p-values to combine")
    if correction == "bonferroni":
        return float(min(1.0, d * p[0]))
    if correction == "fdr":
        return float(min(1.0, np.min(d * p / np.arange(1, d + 1))))
    raise UsageError(f"correction must be bonferroni or fdr, got {correction!r}")


@register_detector("ks")
class KSDrift(Detector):
    """Per-feature two-sample Kolmogorov-Smirnov tests with a multiple-testing correction.

    Args:
        alpha: significance level of the whole test (all features together).
        correction: ``"bonferroni"`` (family-wise error) or ``"fdr"`` (Benjamini-Hochberg).
        method: SciPy's ``ks_2samp`` method: ``"auto"``, ``"exact"`` or ``"asymp"``.
        feature_fn: optional map from an input batch to features (e.g. embeddings).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> det = KSDrift(alpha=0.05).fit(rng.normal(size=(300, 3)))
        >>> det.score(rng.normal(2.0, 1.0, size=(100, 3))).drift
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        correction: Correction = "bonferroni",
        method: Literal["auto", "exact", "asymp"] = "auto",
        feature_fn: FeatureFn | None = None,
    ) -> None:
        self.alpha = alpha
        self.correction = correction
        self.method = method
        self.feature_fn = feature_fn

    def _fit(self, window: Window) -> None:
        if self.correction not in ("bonferroni", "fdr"):
            raise UsageError(f"ks: correction must be bonferroni or fdr, got {self.correction!r}")
        ref = apply_features(self.feature_fn, window.part("x", who=self.name))
        self.reference_ = ref
        self.sorted_reference_ = np.sort(ref, axis=0)

    def _features(self, window: Window) -> np.ndarray:
        cur = apply_features(self.feature_fn, window.part("x", who=self.name))
        if cur.shape[1] != self.reference_.shape[1]:
            raise UsageError(
                f"ks: the window has {cur.shape[1]} features, the reference {self.reference_.shape[1]}"
            )
        return cur

    def _score(self, window: Window) -> DetectorResult:
        cur = self._features(window)
        res = stats.ks_2samp(self.reference_, cur, axis=0, method=self.method)
        p = np.atleast_1d(np.asarray(res.pvalue, dtype=np.float64))
        d = np.atleast_1d(np.asarray(res.statistic, dtype=np.float64))
        p = np.where(np.isnan(p), 1.0, p)  # constant features on both sides
        combined = combine_pvalues(p, self.correction)
        return DetectorResult(
            self.name,
            float(np.nan_to_num(d).max()),
            combined,
            self.alpha,
            combined < self.alpha,
            {
                "correction": self.correction,
                "features": int(len(p)),
                "features_below_alpha": int(
                    (p < self.alpha / (len(p) if self.correction == "bonferroni" else 1)).sum()
                ),
                "p_values": p.tolist(),
                "statistics": d.tolist(),
            },
        )

    def statistic(self, window: Window | np.ndarray | torch.Tensor) -> float:
        """The largest per-feature KS distance (no p-values; used for online calibration)."""
        cur = np.sort(self._features(self._checked(window)), axis=0)
        ref = self.sorted_reference_
        n, m = len(ref), len(cur)
        best = 0.0
        for f in range(ref.shape[1]):
            values = np.concatenate([ref[:, f], cur[:, f]])
            cdf_ref = np.searchsorted(ref[:, f], values, side="right") / n
            cdf_cur = np.searchsorted(cur[:, f], values, side="right") / m
            best = max(best, float(np.abs(cdf_ref - cdf_cur).max()))
        return best


def median_heuristic_gamma(x: torch.Tensor, *, max_rows: int = 1000, seed: int = 0) -> float:
    """``1 / median`` of the pairwise squared distances of ``x`` (off the diagonal).

    The Gaussian kernel ``exp(-gamma * |a - b|^2)`` with this ``gamma`` is the median
    heuristic (bandwidth ``sigma`` with ``2 sigma^2`` = the median squared distance).
    """
    if len(x) > max_rows:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_rows]
        x = x[idx.to(x.device)]
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    med = float(off.double().quantile(0.5)) if off.numel() else 0.0
    return 1.0 / med if med > 0 else 1.0


def _kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.exp(-gamma * torch.cdist(a, b).pow(2).clamp_min(0.0))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, gamma: float) -> float:
    """The unbiased estimate of squared MMD between samples ``x`` and ``y`` (Gaussian kernel)."""
    n, m = len(x), len(y)
    kxx, kyy, kxy = _kernel(x, x, gamma), _kernel(y, y, gamma), _kernel(x, y, gamma)
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


def mmd2_permutation_test(
    x: torch.Tensor, y: torch.Tensor, gamma: float, *, n_permutations: int = 100, seed: int = 0
) -> tuple[float, float, torch.Tensor]:
    """Unbiased MMD^2 and its permutation p-value, all permutations in one matrix product.

    The pooled kernel matrix ``K`` is computed once. A split of the pool into a first sample
    of size ``n`` is an indicator vector ``a``; every term of the estimator is a quadratic or
    linear form in ``a`` (``a'Ka``, ``a'K1``, ``a'diag K``), so all permutations are scored by
    one ``(P, N) x (N, N)`` product instead of a Python loop over re-indexed matrices.

    Returns:
        ``(mmd2, p_value, permuted_mmd2)``; the p-value is ``(1 + #{perm >= observed}) / (1 + P)``.
    """
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise UsageError("MMD needs at least 2 rows on each side")
    z = torch.cat([x, y])
    big_n = n + m
    k = _kernel(z, z, gamma)
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n_permutations, big_n, generator=gen).argsort(dim=1).to(z.device)
    perm = torch.zeros(n_permutations, big_n, dtype=z.dtype, device=z.device)
    perm.scatter_(1, ranks[:, :n], 1.0)
    observed = torch.zeros(1, big_n, dtype=z.dtype, device=z.device)
    observed[0, :n] = 1.0
    a = torch.cat([observed, perm])
    row_sums = k.sum(1)
    diag = k.diagonal()
    total = row_sums.sum()
    ka = a @ k
    a_k_a = (ka * a).sum(1)
    a_k_1 = a @ row_sums
    a_diag = a @ diag
    b_k_b = total - 2.0 * a_k_1 + a_k_a
    b_diag = diag.sum() - a_diag
    a_k_b = a_k_1 - a_k_a
    mmd2 = (a_k_a - a_diag) / (n * (n - 1)) + (b_k_b - b_diag) / (m * (m - 1)) - 2.0 * a_k_b / (n * m)
    obs, perms = float(mmd2[0]), mmd2[1:]
    p_value = float((1 + (perms >= mmd2[0] - 1e-12).sum().item()) / (1 + n_permutations))
    return obs, p_value, perms.detach().cpu()


@register_detector("mmd")
class MMDDrift(Detector):
    """Maximum mean discrepancy with a Gaussian kernel and a permutation test.

    The kernel bandwidth is set once on the reference by the median heuristic (unless
    ``gamma`` is given). Work runs on ``device`` (default: CUDA when present).

    Args:
        alpha: significance level.
        n_permutations: permutations of the pooled sample for the p-value.
        gamma: kernel parameter ``exp(-gamma |a-b|^2)``; ``None`` for the median heuristic.
        max_reference: keep at most this many reference rows (seeded subsample).
        feature_fn: optional map from an input batch to features (e.g. embeddings).
        seed: seed of the permutations and subsampling.
        device: ``"cpu"``, ``"cuda"`` or ``None``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> det = MMDDrift(n_permutations=200).fit(rng.normal(size=(200, 5)))
        >>> det.score(rng.normal(1.0, 1.0, size=(50, 5))).drift
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        n_permutations: int = 100,
        gamma: float | None = None,
        max_reference: int | None = 1000,
        feature_fn: FeatureFn | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.gamma = gamma
        self.max_reference = max_reference
        self.feature_fn = feature_fn
        self.seed = seed
        self.device = device

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _fit(self, window: Window) -> None:
        if self.n_permutations < 1:
            raise UsageError(f"mmd: n_permutations must be positive, got {self.n_permutations}")
        ref = apply_features(self.feature_fn, window.part("x", who=self.name))
        if self.max_reference is not None and len(ref) > self.max_reference:
            idx = np.random.default_rng(self.seed).choice(len(ref), self.max_reference, replace=False)
            ref = ref[np.sort(idx)]
        self.reference_ = torch.as_tensor(ref, dtype=torch.float32, device=self._device())
        self.gamma_ = float(self.gamma) if self.gamma is not None else median_heuristic_gamma(self.reference_)
        k = _kernel(self.reference_, self.reference_, self.gamma_)
        n = len(ref)
        self._kxx_term = float((k.sum() - k.diagonal().sum()) / (n * (n - 1)))
        self._calls = 0

    def _current(self, window: Window) -> torch.Tensor:
        cur = apply_features(self.feature_fn, window.part("x", who=self.name))
        if cur.shape[1] != self.reference_.shape[1]:
            raise UsageError(
                f"mmd: the window has {cur.shape[1]} features, the reference {self.reference_.shape[1]}"
            )
        if len(cur) < 2:
            raise UsageError("mmd: a window needs at least 2 rows")
        return torch.as_tensor(cur, dtype=torch.float32, device=self.reference_.device)

    def _score(self, window: Window) -> DetectorResult:
        cur = self._current(window)
        self._calls += 1
        mmd2, p, _ = mmd2_permutation_test(
            self.reference_,
            cur,
            self.gamma_,
            n_permutations=self.n_permutations,
            seed=self.seed + self._calls,
        )
        return DetectorResult(
            self.name,
            mmd2,
            p,
            self.alpha,
            p < self.alpha,
            {"gamma": self.gamma_, "n_reference": len(self.reference_), "n_window": len(cur)},
        )

    def statistic(self, window: Window | np.ndarray | torch.Tensor) -> float:
        """Unbiased MMD^2 alone (reuses the reference's kernel sum; no permutations)."""
        cur = self._current(self._checked(window))
        m = len(cur)
        kyy = _kernel(cur, cur, self.gamma_)
        kxy = _kernel(self.reference_, cur, self.gamma_)
        return float(self._kxx_term + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2.0 * kxy.mean())


@register_detector("classifier")
class ClassifierDrift(Detector):
    """Classifier two-sample test: can a classifier tell the window from the reference?

    A logistic regression learns to separate a seeded sample of the reference, as large as the
    window, from the window, on all but one of ``n_folds`` stratified folds; its accuracy on
    the held-out fold is the statistic (Lopez-Paz & Oquab 2017). Under "no change" the
    predictions on the held-out fold do not depend on its labels, so the number correct is
    Binomial(n, 1/2) (or less spread), which gives a one-sided p-value. Pooling the
    out-of-fold predictions of every fold would not: they come from classifiers trained on
    overlapping data, and the binomial p-value then fired on 12% of same-distribution digits
    splits at 0.05 (benchmarks/monitor.py).

    Args:
        alpha: significance level.
        n_folds: the held-out fold is ``1 / n_folds`` of the rows.
        feature_fn: optional map from an input batch to features.
        seed: seed of the reference sample and the folds.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        n_folds: int = 2,
        feature_fn: FeatureFn | None = None,
        seed: int = 0,
    ) -> None:
        self.alpha = alpha
        self.n_folds = n_folds
        self.feature_fn = feature_fn
        self.seed = seed

    def _fit(self, window: Window) -> None:
        if self.n_folds < 2:
            raise UsageError(f"classifier: n_folds must be at least 2, got {self.n_folds}")
        self.reference_ = apply_features(self.feature_fn, window.part("x", who=self.name))
        self._calls = 0

    def _accuracy(self, window: Window) -> tuple[int, int]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cur = apply_features(self.feature_fn, window.part("x", who=self.name))
        self._calls += 1
        rng = np.random.default_rng(self.seed + self._calls)
        k = min(len(cur), len(self.reference_))
        if k < self.n_folds:
            raise UsageError(f"classifier: a window needs at least {self.n_folds} rows (one per fold)")
        ref = self.reference_[rng.choice(len(self.reference_), k, replace=False)]
        cur = cur[rng.choice(len(cur), k, replace=False)]
        xs = np.concatenate([ref, cur])
        labels = np.r_[np.zeros(k, dtype=int), np.ones(k, dtype=int)]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        folds = StratifiedKFold(self.n_folds, shuffle=True, random_state=int(rng.integers(2**31)))
        train, test = next(folds.split(xs, labels))
        pred = clf.fit(xs[train], labels[train]).predict(xs[test])
        return int((pred == labels[test]).sum()), len(test)

    def _score(self, window: Window) -> DetectorResult:
        correct, total = self._accuracy(window)
        p = float(stats.binomtest(correct, total, 0.5, alternative="greater").pvalue)
        details: dict[str, Any] = {"correct": correct, "n": total}
        return DetectorResult(self.name, correct / total, p, self.alpha, p < self.alpha, details)
