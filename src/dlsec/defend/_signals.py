"""Per-row suspicion signals over a labelled training set; each is usable alone.

Every function returns one float per row, higher meaning more suspicious, and works class by
class where the signal is about the rows a class should not contain.
"""

from __future__ import annotations

import numpy as np

from dlsec.errors import UsageError

__all__ = [
    "activation_clustering_scores",
    "confident_learning",
    "early_learning_scores",
    "outlier_scores",
    "robust_z",
    "spectral_signature_scores",
]


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 * MAD)``; a zero MAD falls back to the standard deviation."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    if not mad > 1e-12:
        mad = float(v.std()) or 1.0
    return (v - med) / mad


def _classes(labels: np.ndarray, min_rows: int) -> list[np.ndarray]:
    return [np.flatnonzero(labels == c) for c in np.unique(labels) if (labels == c).sum() >= min_rows]


def spectral_signature_scores(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Spectral signatures (Tran et al. 2018): squared projection on the top singular vector.

    Per class, the centred representations are projected on their top right singular vector;
    the score is the squared projection divided by the class's median, so classes compare.
    """
    scores = np.zeros(len(labels))
    for idx in _classes(labels, 3):
        centred = features[idx] - features[idx].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = (centred @ vt[0]) ** 2
        scores[idx] = proj / (np.median(proj) + 1e-12)
    return scores


def activation_clustering_scores(
    features: np.ndarray, labels: np.ndarray, *, components: int = 10, seed: int = 0
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Activation clustering (Chen et al. 2018), per class: PCA, then 2-means.

    A row's score is the class's silhouette when the row sits in the smaller cluster (a
    poisoned class splits into two well-separated groups, the poison the smaller one), else 0.

    Returns:
        The scores and, per class, ``{"silhouette", "minority_fraction"}``.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    scores = np.zeros(len(labels))
    stats: dict[int, dict[str, float]] = {}
    for idx in _classes(labels, 8):
        k = min(components, len(idx) - 1, features.shape[1])
        reduced = PCA(n_components=k, random_state=seed).fit_transform(features[idx])
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(reduced)
        sizes = np.bincount(km.labels_, minlength=2)
        if sizes.min() < 2:
            continue
        sil = float(silhouette_score(reduced, km.labels_))
        minority = int(np.argmin(sizes))
        scores[idx[km.labels_ == minority]] = max(sil, 0.0)
        stats[int(labels[idx[0]])] = {"silhouette": sil, "minority_fraction": float(sizes.min() / len(idx))}
    return scores, stats


def outlier_scores(features: np.ndarray, labels: np.ndarray, *, k: int = 10) -> np.ndarray:
    """Per-class k-nearest-neighbour distance in the representation, as a robust z-score."""
    from sklearn.neighbors import NearestNeighbors

    scores = np.zeros(len(labels))
    for idx in _classes(labels, 3):
        kk = min(k, len(idx) - 1)
        dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(features[idx]).kneighbors(features[idx])
        scores[idx] = robust_z(dist[:, -1])
    return scores


def early_learning_scores(losses: np.ndarray, labels: np.ndarray, *, early_epochs: int = 3) -> np.ndarray:
    """Training dynamics: each row's mean loss over the first epochs, z-scored within its class.

    ``losses`` is ``(epochs, N)``: the per-row loss after each epoch. Poisoned rows are learned
    at another time than the clean rows of their label (backdoor rows later: their content
    says another class until the trigger is learned; flipped labels later still).
    """
    if losses.ndim != 2 or losses.shape[1] != len(labels):
        raise UsageError("losses must be (epochs, rows)")
    early = np.log(losses[: max(1, early_epochs)].mean(axis=0) + 1e-8)
    scores = np.zeros(len(labels))
    for idx in _classes(labels, 1):
        scores[idx] = robust_z(early[idx]) if len(idx) > 2 else 0.0
    return scores


def confident_learning(pred_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning (Northcutt et al. 2021) on out-of-sample probabilities.

    Per-class thresholds are the mean self-confidence of each class; the confident joint
    counts rows confidently belonging to another class than their label, calibrated to the
    class counts; then ``prune_by_noise_rate``: for each off-diagonal cell (label i, class j),
    the rows labelled i with the largest margin ``p_j - p_i`` are flagged, as many as the cell
    holds.

    Returns:
        A boolean mask of label issues and each row's score ``1 - p(label)``.
    """
    n, k = pred_probs.shape
    if len(labels) != n:
        raise UsageError("pred_probs and labels differ in length")
    counts = np.bincount(labels, minlength=k).astype(float)
    thresholds = np.array([pred_probs[labels == j, j].mean() if counts[j] else 1.0 for j in range(k)])
    above = pred_probs >= thresholds[None, :] - 1e-6
    masked = np.where(above, pred_probs, -1.0)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[has], confident[has]), 1.0)
    row_sums = joint.sum(axis=1, keepdims=True)
    joint = np.where(row_sums > 0, joint / np.maximum(row_sums, 1e-12) * counts[:, None], 0.0)
    issues = np.zeros(n, dtype=bool)
    self_conf = pred_probs[np.arange(n), labels]
    for i in range(k):
        rows_i = np.flatnonzero(labels == i)
        for j in range(k):
            if i == j:
                continue
            m = int(round(joint[i, j]))
            if m < 1:
                continue
            margin = pred_probs[rows_i, j] - self_conf[rows_i]
            order = rows_i[np.argsort(-margin)][:m]
            issues[order[margin[np.argsort(-margin)][:m] > 0]] = True
    return issues, 1.0 - self_conf
