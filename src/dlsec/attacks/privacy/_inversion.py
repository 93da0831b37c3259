"""Model inversion: MI-Face (Fredrikson, Jha & Ristenpart 2015), one reconstruction per class.

Gradient descent on the input, from a blank start, projected onto the input bounds, stopping
when the paper's cost ``c(x) = 1 - p_class(x)`` has not improved for ``patience`` steps or falls
below ``gamma`` (plus an optional total-variation prior for images). The step follows
``-log p_class`` by default, whose gradient does not vanish where ``p_class`` is near 0 (see
:class:`MIFace`, ``objective``). How much the
reconstructions give away is scored independently of the target: an evaluator classifier
trained separately (another architecture and seed) should recognise each reconstruction as
its class, and a reconstruction close to the class's real rows (closer than to other classes'
rows) resembles the training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.core.data import Dataset
from dlsec.core.model import Model, WhiteBoxModel
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["InversionResult", "MIFace", "score_inversion", "train_evaluator"]


class MIFace:
    """MI-Face reconstruction of a representative input per class (white-box).

    Args:
        steps: at most this many gradient steps (the paper's alpha).
        lr: step size (the paper's lambda), in input units.
        patience: stop when the cost has not improved for this many steps (beta).
        gamma: stop when the cost is below this.
        tv: weight of a total-variation prior for images (0: none, as in the paper).
        start: ``zeros`` (the paper) or ``mid`` (the middle of the bounds).
        objective: ``log`` follows the gradient of ``-log p_class`` (default), ``paper`` that of
            the published cost ``1 - p_class``. Both stop and select on ``1 - p_class``; the
            paper's gradient vanishes where ``p_class`` is near 0, as it is for most classes of
            a CNN from a blank start, which leaves those reconstructions blank (a dlsec
            deviation, for that reason).

    Example:
        >>> recon = MIFace(steps=500)(model, classes=[0, 1, 2])     # doctest: +SKIP
        >>> recon.shape                                              # doctest: +SKIP
        (3, 1, 8, 8)
    """

    def __init__(
        self,
        *,
        steps: int = 1000,
        lr: float = 0.1,
        patience: int = 100,
        gamma: float = 1e-3,
        tv: float = 0.0,
        start: str = "zeros",
        objective: str = "log",
    ) -> None:
        self.steps = positive_int("steps", steps)
        if not lr > 0 or not tv >= 0 or not 0 <= gamma < 1:
            raise UsageError(f"MI-Face needs lr > 0, tv >= 0, 0 <= gamma < 1; got {lr}, {tv}, {gamma}")
        if start not in ("zeros", "mid"):
            raise UsageError(f"start must be zeros or mid, got {start!r}")
        self.lr = lr
        self.patience = positive_int("patience", patience)
        self.gamma = gamma
        self.tv = tv
        self.start = start
        if objective not in ("log", "paper"):
            raise UsageError(f"objective must be log or paper, got {objective!r}")
        self.objective = objective

    def __call__(self, model: Model, classes: list[int] | None = None) -> np.ndarray:
        """Reconstructions ``(len(classes), *spec.shape)`` in input space (default: every class)."""
        if not isinstance(model, WhiteBoxModel):
            raise UsageError("MI-Face follows gradients: it needs white-box access")
        spec = model.spec
        classes = list(range(spec.num_classes)) if classes is None else list(classes)
        if any(not 0 <= c < spec.num_classes for c in classes):
            raise UsageError(f"classes must lie in 0..{spec.num_classes - 1}")
        lo = spec.lower_tensor(device=model.device)
        hi = spec.upper_tensor(device=model.device)
        n = len(classes)
        shape = (n, *spec.shape)
        base = torch.zeros(shape, device=model.device)
        x = torch.maximum(torch.minimum(base, hi), lo) if self.start == "zeros" else (lo + hi) / 2 + base
        target = torch.tensor(classes, device=model.device)
        best = x.clone()
        best_cost = torch.full((n,), float("inf"), device=model.device)
        since = torch.zeros(n, dtype=torch.long, device=model.device)
        active = torch.ones(n, dtype=torch.bool, device=model.device)
        for _ in range(self.steps):
            x = x.detach().requires_grad_(True)
            logp = torch.log_softmax(model(x), dim=1).gather(1, target[:, None])[:, 0]
            cost = 1 - logp.exp()
            total = -logp if self.objective == "log" else cost
            if self.tv:
                total = total + self.tv * _tv(x)
            (grad,) = torch.autograd.grad(total.sum(), x)
            with torch.no_grad():
                improved = cost < best_cost
                best = torch.where(_expand(improved & active, x), x, best)
                best_cost = torch.where(improved & active, cost, best_cost)
                since = torch.where(improved, torch.zeros_like(since), since + 1)
                active &= (since < self.patience) & (best_cost > self.gamma)
                if not active.any():
                    break
                step = torch.where(_expand(active, x), self.lr * grad, torch.zeros_like(grad))
                x = torch.maximum(torch.minimum(x - step, hi), lo)
        return best.detach().cpu().numpy().astype(np.float32)


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape((-1,) + (1,) * (like.ndim - 1))


def _tv(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        return torch.zeros(x.shape[0], device=x.device)
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def train_evaluator(data: Dataset, *, seed: int = 1, epochs: int = 30) -> WhiteBoxModel:
    """An evaluator independent of the target: an MLP (other architecture and seed) trained on
    ``data`` with the standard recipe."""
    from dlsec.core.arch import build_architecture
    from dlsec.core.loop import fit, fit_normalisation
    from dlsec.core.trainconfig import TrainConfig

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        spec = data.spec
        kwargs = {"in_features": spec.num_features, "num_classes": spec.num_classes, "hidden": [256]}
        module = build_architecture("mlp", kwargs)
    model = WhiteBoxModel(module, fit_normalisation(data), device="cpu")
    fit(model, data, TrainConfig(epochs=epochs, seed=seed, weight_decay=1e-4))
    return model


@dataclass
class InversionResult:
    """Per class: recognised by the evaluator, its confidence, and distances to real rows."""

    classes: list[int]
    recognised: np.ndarray
    evaluator_confidence: np.ndarray
    target_confidence: np.ndarray
    nearest_own: np.ndarray
    nearest_other: np.ndarray
    to_class_mean: np.ndarray
    reconstructions: np.ndarray

    @property
    def recognition_rate(self) -> float:
        return float(self.recognised.mean())

    @property
    def closer_to_own_class(self) -> float:
        """Share of reconstructions nearer to a real row of their class than to any other."""
        return float((self.nearest_own < self.nearest_other).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "recognition_rate": self.recognition_rate,
            "closer_to_own_class": self.closer_to_own_class,
            "per_class": [
                {
                    "class": c,
                    "recognised": bool(self.recognised[i]),
                    "evaluator_confidence": float(self.evaluator_confidence[i]),
                    "target_confidence": float(self.target_confidence[i]),
                    "nearest_own_l2": float(self.nearest_own[i]),
                    "nearest_other_l2": float(self.nearest_other[i]),
                    "class_mean_l2": float(self.to_class_mean[i]),
                }
                for i, c in enumerate(self.classes)
            ],
        }


def score_inversion(
    reconstructions: np.ndarray, classes: list[int], *, target: Model, evaluator: Model, data: Dataset
) -> InversionResult:
    """Score reconstructions against an independent evaluator and the real rows of ``data``."""
    rec = np.asarray(reconstructions, dtype=np.float32)
    if rec.shape[0] != len(classes):
        raise UsageError("one reconstruction per class is needed")
    cls = np.asarray(classes)
    tx = torch.from_numpy(rec)
    ev_probs = _probs(evaluator, tx)
    tg_probs = _probs(target, tx)
    flat = rec.reshape(len(rec), -1).astype(np.float64)
    real = data.x.reshape(len(data), -1).astype(np.float64)
    dist = np.sqrt(((flat[:, None, :] - real[None, :, :]) ** 2).sum(-1))
    own, other, means = (np.full(len(cls), np.inf) for _ in range(3))
    for i, c in enumerate(cls):
        mine = data.y == c
        if mine.any():
            own[i] = dist[i, mine].min()
            means[i] = np.linalg.norm(flat[i] - real[mine].mean(0))
        if (~mine).any():
            other[i] = dist[i, ~mine].min()
    return InversionResult(
        classes=[int(c) for c in cls],
        recognised=ev_probs.argmax(1) == cls,
        evaluator_confidence=ev_probs[np.arange(len(cls)), cls],
        target_confidence=tg_probs[np.arange(len(cls)), cls],
        nearest_own=own,
        nearest_other=other,
        to_class_mean=means,
        reconstructions=rec,
    )


def _probs(model: Model, x: torch.Tensor) -> np.ndarray:
    if isinstance(model, WhiteBoxModel):
        return model.probs(x).detach().cpu().numpy()
    probs = getattr(model, "probs", None)
    if probs is None:
        raise UsageError("scoring reconstructions needs a model with probabilities")
    return np.asarray(probs(x))
