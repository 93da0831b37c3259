"""Query pools an extraction attacker draws from, generated offline.

* problem-domain data: unlabelled rows of the task's own distribution (e.g. the training split
  of ``builtin:digits`` without its labels); pass them as they are.
* :func:`out_of_domain_pool`: natural images that are not of the task (random crops of the
  photographs bundled with scikit-learn, resized and converted to the spec's channels) and
  noise (uniform, and smooth low-frequency noise), all within the spec's bounds. Tabular specs
  get uniform and Gaussian rows within the bounds.

Each row carries a group id (its source), which Knockoff Nets' adaptive strategy uses as the
bandit's actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = [
    "DEFAULT_QUERIES",
    "MIN_POOL",
    "QUERY_SOURCES",
    "QueryPool",
    "attacker_pool",
    "mixed_pool",
    "out_of_domain_pool",
    "query_pool",
]

# Where each method draws its queries by default: Knockoff Nets from a transfer set mixing
# problem-domain and other natural data, Copycat from non-problem-domain natural data (the
# paper's setting), JBDA from a problem-domain seed set.
DEFAULT_QUERIES = {"knockoff": "mixed", "copycat": "ood", "jbda": "pd"}
QUERY_SOURCES = ("pd", "ood", "mixed")
# The fewest out-of-domain rows an attacker's pool holds (it holds twice the budget above that).
MIN_POOL = 2000


@dataclass(frozen=True)
class QueryPool:
    """Unlabelled candidate queries ``x`` with a source group per row and the groups' names.

    ``source`` is the kind of data: ``pd`` (problem domain), ``ood`` or ``mixed``.
    """

    x: np.ndarray
    groups: np.ndarray
    names: tuple[str, ...]
    source: str = "pd"

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _to_bounds(unit: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Map values in [0, 1] (shape ``(N, *spec.shape)``) onto the spec's bounds."""
    lo = np.broadcast_to(np.asarray(spec.lower, dtype=np.float64).reshape(-1), (spec.num_features,))
    hi = np.broadcast_to(np.asarray(spec.upper, dtype=np.float64).reshape(-1), (spec.num_features,))
    flat = unit.reshape(unit.shape[0], -1)
    return (lo + np.clip(flat, 0.0, 1.0) * (hi - lo)).reshape(unit.shape).astype(np.float32)


def _photo_crops(spec: InputSpec, n: int, rng: np.random.Generator, *, large: bool) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    channels, height, width = spec.shape
    photos = load_sample_images().images  # two RGB photographs shipped with scikit-learn
    out = np.empty((n, channels, height, width), dtype=np.float32)
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        ph, pw = photo.shape[:2]
        lo, hi = (min(ph, pw) // 4, min(ph, pw)) if large else (max(height, 8), max(height, 8) * 6)
        size = int(rng.integers(lo, hi + 1))
        top, left = int(rng.integers(0, ph - size + 1)), int(rng.integers(0, pw - size + 1))
        img = Image.fromarray(photo[top : top + size, left : left + size])
        img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        rgb = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
        arr = arr[None] if channels == 1 else np.resize(rgb, (channels, height, width))
        if rng.random() < 0.5:  # dark-on-light and light-on-dark both occur
            arr = 1.0 - arr
        out[i] = arr
    return out


def _smooth_noise(spec: InputSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    import torch

    channels, height, width = spec.shape
    coarse = rng.random((n, channels, max(2, height // 4), max(2, width // 4))).astype(np.float32)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(height, width), mode="bilinear", align_corners=False
    )
    return up.numpy()


def out_of_domain_pool(
    spec: InputSpec,
    n: int,
    *,
    seed: int = 0,
    sources: tuple[str, ...] = ("photo-small", "photo-large", "noise", "smooth-noise"),
) -> QueryPool:
    """``n`` out-of-domain queries for inputs of ``spec``, split evenly over ``sources``.

    Image sources: ``photo-small`` and ``photo-large`` (crops of the two photographs bundled
    with scikit-learn, small or large regions, resized), ``noise`` (uniform) and
    ``smooth-noise`` (low-frequency). Tabular specs accept ``noise`` (uniform within the bounds)
    and ``gaussian`` (around the middle of the bounds); image sources fall back to those.

    Example:
        >>> spec = InputSpec(shape=(1, 8, 8), num_classes=10)
        >>> pool = out_of_domain_pool(spec, 100, seed=0)
        >>> pool.x.shape, pool.names
        ((100, 1, 8, 8), ('photo-small', 'photo-large', 'noise', 'smooth-noise'))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"pool size must be a positive integer, got {n!r}")
    if not sources:
        raise UsageError("give at least one source for the out-of-domain pool")
    image = spec.kind == "image" and len(spec.shape) == 3
    known = ("photo-small", "photo-large", "noise", "smooth-noise") if image else ("noise", "gaussian")
    if not image:
        sources = tuple(
            dict.fromkeys("gaussian" if s.startswith(("photo", "smooth")) else s for s in sources)
        )
    unknown = [s for s in sources if s not in known]
    if unknown:
        raise UsageError(f"unknown pool source(s) {unknown}; choose from {', '.join(known)}")
    rng = np.random.default_rng(seed)
    counts = [n // len(sources) + (1 if i < n % len(sources) else 0) for i in range(len(sources))]
    parts, groups = [], []
    for g, (source, count) in enumerate(zip(sources, counts, strict=True)):
        if count == 0:
            continue
        shape = (count, *spec.shape)
        if source in ("photo-small", "photo-large"):
            unit = _photo_crops(spec, count, rng, large=source == "photo-large")
        elif source == "smooth-noise":
            unit = _smooth_noise(spec, count, rng)
        elif source == "gaussian":
            unit = rng.normal(0.5, 0.2, size=shape)
        else:
            unit = rng.random(shape)
        parts.append(_to_bounds(np.asarray(unit), spec))
        groups.append(np.full(count, g, dtype=np.int64))
    x = np.concatenate(parts)
    grp = np.concatenate(groups)
    order = rng.permutation(len(x))
    return QueryPool(x[order], grp[order], tuple(sources), "ood")


def mixed_pool(problem_domain: np.ndarray, ood: QueryPool, *, name: str = "problem-domain") -> QueryPool:
    """Problem-domain rows (one more group, listed first) together with an out-of-domain pool."""
    x = np.concatenate([np.asarray(problem_domain, dtype=np.float32), ood.x])
    groups = np.concatenate([np.zeros(len(problem_domain), dtype=np.int64), ood.groups + 1])
    return QueryPool(x, groups, (name, *ood.names), "mixed")


def query_pool(
    source: str, problem_domain: np.ndarray, spec: InputSpec, size: int, *, seed: int = 0
) -> QueryPool:
    """An attacker's pool: ``pd`` (problem-domain rows, unlabelled), ``ood`` (``size`` made) or ``mixed``."""
    if source not in QUERY_SOURCES:
        raise UsageError(f"query data must be one of {', '.join(QUERY_SOURCES)}, got {source!r}")
    if source == "pd":
        pd = np.asarray(problem_domain, dtype=np.float32)
        return QueryPool(pd, np.zeros(len(pd), dtype=np.int64), ("problem-domain",), "pd")
    ood = out_of_domain_pool(spec, size, seed=seed)
    return ood if source == "ood" else mixed_pool(problem_domain, ood)


def attacker_pool(
    method: str,
    problem_domain: np.ndarray,
    spec: InputSpec,
    *,
    budget: int,
    source: str | None = None,
    seed: int = 0,
) -> QueryPool:
    """The pool ``method`` draws at most ``budget`` queries from: ``dlsec extract``, the
    assessment's extraction section and the demo's attacker all build it here.

    ``source`` defaults to the method's (:data:`DEFAULT_QUERIES`); an out-of-domain part holds
    ``max(2 * budget, MIN_POOL)`` rows, so every method has at least twice its budget to choose
    from. The pool's ``source`` records which data it is.

    Example:
        >>> pool = attacker_pool("knockoff", train.x, model.spec, budget=500)   # doctest: +SKIP
        >>> pool.source, len(pool) - len(train.x)                              # doctest: +SKIP
        ('mixed', 2000)
    """
    if method not in DEFAULT_QUERIES:
        raise UsageError(f"unknown extraction method {method!r}; choose one of {', '.join(DEFAULT_QUERIES)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"budget must be a positive number of queries, got {budget!r}")
    chosen = source or DEFAULT_QUERIES[method]
    return query_pool(chosen, problem_domain, spec, max(2 * budget, MIN_POOL), seed=seed)
