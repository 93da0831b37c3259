"""Splitting a dataset among federated clients: IID and Dirichlet(alpha) non-IID, seeded."""

from __future__ import annotations

import numpy as np

from dlsec.core.data import Dataset
from dlsec.errors import UsageError

__all__ = ["partition", "iid_partition", "dirichlet_partition"]


def iid_partition(labels: np.ndarray, num_clients: int, *, seed: int = 0) -> list[np.ndarray]:
    """Shuffle the rows and deal them out in ``num_clients`` near-equal shards.

    Example:
        >>> parts = iid_partition(np.arange(10) % 2, 3, seed=0)
        >>> sorted(len(p) for p in parts)
        [3, 3, 4]
    """
    _check(len(labels), num_clients)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, *, alpha: float, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Label-skewed shards: for each class, its rows go to clients in Dirichlet(alpha) proportions.

    This is the protocol of Hsu et al. (2019) as used by the attack papers: a small ``alpha``
    (0.1) gives each client a few classes, a large one (100) approaches IID. Draws repeat
    (with the same generator, so the result stays a function of ``seed``) until every client
    holds at least ``min_size`` rows.

    Raises:
        UsageError: ``alpha`` is not positive, or there are fewer rows than clients x min_size.
    """
    _check(len(labels), num_clients, min_size)
    if not alpha > 0:
        raise UsageError(f"the Dirichlet alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            rows = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(rows)).astype(int)
            for client, part in enumerate(np.split(rows, cuts)):
                shards[client].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    raise UsageError(
        f"Dirichlet(alpha={alpha}) left a client with fewer than {min_size} rows in 1000 draws; "
        "raise alpha or use fewer clients"
    )


def partition(
    data: Dataset, num_clients: int, *, scheme: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[Dataset]:
    """Split ``data`` among ``num_clients`` clients, ``scheme`` ``iid`` or ``dirichlet``.

    Example:
        >>> from dlsec.core import load_dataset
        >>> parts = partition(load_dataset("builtin:digits"), 10, scheme="dirichlet", alpha=0.5)
        >>> sum(len(p) for p in parts)
        1797
    """
    if scheme == "iid":
        index = iid_partition(data.y, num_clients, seed=seed)
    elif scheme == "dirichlet":
        index = dirichlet_partition(data.y, num_clients, alpha=alpha, seed=seed)
    else:
        raise UsageError(f"unknown partition scheme {scheme!r}; use iid or dirichlet")
    return [data.subset(idx, name=f"{data.name}[client {i}]") for i, idx in enumerate(index)]


def _check(rows: int, num_clients: int, min_size: int = 1) -> None:
    if num_clients < 1:
        raise UsageError(f"the number of clients must be at least 1, got {num_clients}")
    if rows < num_clients * min_size:
        raise UsageError(
            f"{rows} rows cannot give {num_clients} clients {min_size} row(s) each; use fewer clients"
        )
