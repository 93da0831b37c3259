"""Membership-inference attacks: each turns a model's outputs into a per-row "member" score.

* ``loss`` / ``confidence``: the thresholds of Yeom et al. 2018 (score: minus the loss, or
  the probability of the true class). Score access.
* ``shadow``: Shokri et al. 2017: an attack classifier learns "in" versus "out" from shadow
  models' outputs on rows whose membership it knows (sorted probabilities, true-class
  confidence and correctness, with the class as a feature in place of one model per class).
* ``lira-online`` / ``lira-offline``: Carlini et al. 2022: per-row Gaussians fitted to the
  logit-scaled confidence ``log p_y - log(1 - p_y)`` of reference models trained with (online)
  and without (offline) the row; the score is the likelihood ratio (online) or the one-sided
  tail of the "out" Gaussian (offline).
* ``rmia``: Zarifzadeh et al. 2024: the share of population rows ``z`` that the candidate
  dominates in ``(p(x|target) / p(x)) / (p(z|target) / p(z))``, with ``p(.)`` averaged over
  reference models (offline: out models only, with the paper's linear correction ``a``).
* ``label-only``: Choquette-Choo et al. 2021: decision access only; the score is whether the
  row and noisy (and, for images, shifted) copies of it are still labelled correctly.

Attacks register by name (:data:`MIA_ATTACKS`); :func:`get_membership_attack` builds one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from dlsec.attacks.privacy._shadow import ReferenceModels
from dlsec.core.model import Access, Model, ScoreModel, WhiteBoxModel
from dlsec.core.registration import register_in
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = [
    "MIA_ATTACKS",
    "ConfidenceThreshold",
    "LabelOnly",
    "LiRA",
    "LossThreshold",
    "MembershipAttack",
    "RMIA",
    "ShadowAttack",
    "get_membership_attack",
    "log_probs",
    "logit_confidence",
]

MIA_ATTACKS: dict[str, type[MembershipAttack]] = {}
_TINY = 1e-300


def register_membership_attack(name: str) -> Callable[[type[MembershipAttack]], type[MembershipAttack]]:
    """Class decorator: register a membership attack; a duplicate name raises ``UsageError``."""

    return register_in(MIA_ATTACKS, name, "membership attack")


def get_membership_attack(name: str, **params: Any) -> MembershipAttack:
    """Build the registered membership attack ``name`` with ``params``."""
    if name not in MIA_ATTACKS:
        raise UsageError(f"unknown membership attack {name!r}; choose from {', '.join(MIA_ATTACKS)}")
    try:
        return MIA_ATTACKS[name](**params)
    except TypeError as exc:
        raise UsageError(f"membership attack {name!r}: {exc}") from None


def log_probs(model: Model, x: np.ndarray) -> np.ndarray:
    """Float64 log-probabilities of ``model`` on ``x`` (log-softmax of the logits when white-box)."""
    if isinstance(model, WhiteBoxModel):
        logits = model.logits(torch.as_tensor(x)).double().cpu()
        return torch.log_softmax(logits, dim=1).numpy()
    if isinstance(model, ScoreModel):
        p = model.probs(torch.as_tensor(x)).double().numpy()
        return np.log(np.clip(p, _TINY, 1.0))
    raise UsageError("this attack needs probabilities: give score or white-box access")


def logit_confidence(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p_y - log(1 - p_y)`` from log-probabilities, stable when ``p_y`` is near 1.

    Works on ``(N, C)`` or stacked ``(K, N, C)`` arrays (the last axis is the class).
    """
    idx = np.broadcast_to(y.reshape((1,) * (logp.ndim - 2) + (-1, 1)), logp.shape[:-1] + (1,))
    true = np.take_along_axis(logp, idx, axis=-1)[..., 0]
    others = logp.copy()
    np.put_along_axis(others, idx, -np.inf, axis=-1)
    peak = others.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    rest = np.log(np.exp(others - peak).sum(axis=-1) + _TINY) + peak[..., 0]
    return true - rest


class MembershipAttack(ABC):
    """A membership-inference attack: rows in, one score per row out (higher: "member").

    Subclasses set :attr:`access` (the least access they need) and
    :attr:`needs_references`, and write :meth:`run`. Call the attack as
    ``attack(model, x, y, references=refs)``: the base checks access and shapes.
    """

    name: ClassVar[str] = ""
    access: ClassVar[Access] = Access.SCORE
    needs_references: ClassVar[bool] = False

    def __call__(
        self,
        model: Model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        references: ReferenceModels | None = None,
    ) -> np.ndarray:
        """Membership scores of rows ``(x, y)`` against ``model`` (float64, one per row)."""
        if model.access < self.access:
            raise UsageError(
                f"membership attack {self.name!r} needs {self.access.label} access; "
                f"the model offers {model.access.label}"
            )
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise UsageError(f"need one label per row and at least one row; got {x.shape[0]}, {y.shape[0]}")
        if self.needs_references:
            if references is None:
                raise UsageError(f"membership attack {self.name!r} needs reference models (ShadowTrainer)")
            if references.inclusion.shape[1] != x.shape[0]:
                raise UsageError(
                    f"the reference models were trained on {references.inclusion.shape[1]} candidate rows; "
                    f"score the same {references.inclusion.shape[1]} rows"
                )
        scores = np.asarray(self.run(model, x, y, references), dtype=np.float64)
        return np.nan_to_num(scores, nan=-np.inf, posinf=1e300, neginf=-1e300)

    @abstractmethod
    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        """The scores (no checks needed: :meth:`__call__` did them)."""

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@register_membership_attack("loss")
class LossThreshold(MembershipAttack):
    """Yeom et al. 2018: members have lower loss. Score: minus the cross-entropy."""

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        return np.take_along_axis(log_probs(model, x), y[:, None], axis=1)[:, 0]


@register_membership_attack("confidence")
class ConfidenceThreshold(MembershipAttack):
    """Yeom et al. 2018 (confidence form): members get a higher true-class probability."""

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        return np.exp(np.take_along_axis(log_probs(model, x), y[:, None], axis=1)[:, 0])


def _reference_log_probs(refs: ReferenceModels, x: np.ndarray) -> np.ndarray:
    return torch.log_softmax(refs.logits(x).double(), dim=-1).numpy()


@register_membership_attack("lira-online")
class LiRA(MembershipAttack):
    """The likelihood-ratio attack (Carlini et al. 2022).

    Args:
        online: fit "in" and "out" Gaussians per row (online) or only "out" (offline).
        global_variance: one variance over all rows for each Gaussian (the paper's choice
            with few reference models); per-row variances otherwise.
    """

    needs_references = True

    def __init__(self, *, online: bool = True, global_variance: bool | None = None) -> None:
        self.online = online
        self.global_variance = global_variance

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        assert refs is not None  # checked by __call__
        target = logit_confidence(log_probs(model, x), y)
        ref = logit_confidence(_reference_log_probs(refs, x), y)  # (K, N)
        inc = refs.inclusion
        fixed = self.global_variance if self.global_variance is not None else len(refs) < 64
        mu_out, sd_out = _gauss(ref, ~inc, fixed)
        if not self.online:
            from scipy.stats import norm

            # One-sided: how far above the "out" distribution the target's confidence lies.
            return np.asarray(norm.logcdf((target - mu_out) / sd_out))
        mu_in, sd_in = _gauss(ref, inc, fixed)
        return _log_normal(target, mu_in, sd_in) - _log_normal(target, mu_out, sd_out)


@register_membership_attack("lira-offline")
class LiRAOffline(LiRA):
    """LiRA with "out" reference models only: no model needs to be trained on the candidates."""

    def __init__(self, *, global_variance: bool | None = None) -> None:
        super().__init__(online=False, global_variance=global_variance)


def _gauss(values: np.ndarray, mask: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation of ``values[k, i]`` over models ``k`` where ``mask``."""
    count = mask.sum(axis=0)
    masked = np.where(mask, values, 0.0)
    mean = masked.sum(axis=0) / np.maximum(count, 1)
    global_mean = float(values[mask].mean()) if mask.any() else 0.0
    mean = np.where(count > 0, mean, global_mean)
    sq = np.where(mask, (values - mean) ** 2, 0.0)
    if fixed or (count < 2).any():
        pooled = math.sqrt(sq.sum() / max(1, int(count.sum()) - 1)) if count.sum() > 1 else 1.0
        sd = np.full(mean.shape, pooled)
        if not fixed:
            per_row = np.sqrt(sq.sum(axis=0) / np.maximum(count - 1, 1))
            sd = np.where(count >= 2, per_row, pooled)
    else:
        sd = np.sqrt(sq.sum(axis=0) / (count - 1))
    return mean, np.maximum(sd, 1e-3)


def _log_normal(v: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return np.asarray(-0.5 * ((v - mu) / sd) ** 2 - np.log(sd))


@register_membership_attack("rmia")
class RMIA(MembershipAttack):
    """The robust membership inference attack (Zarifzadeh et al. 2024).

    Args:
        online: average ``p(x)`` over all reference models (in and out); offline uses the out
            models and approximates ``p(x) = ((1 + a) p_out(x) + (1 - a)) / 2``.
        a: the offline correction (the paper tunes it per setting; 0.3 suits small models).
        gamma: the likelihood-ratio threshold on each comparison with a population row.
        population: population rows compared against, as ``(x, y)``; default: every
            candidate row (each row is compared with the others).
        n_population: at most this many population rows (a seeded sample).
        seed: seeds the sample.
    """

    needs_references = True

    def __init__(
        self,
        *,
        online: bool = False,
        a: float = 0.3,
        gamma: float = 1.0,
        population: tuple[np.ndarray, np.ndarray] | None = None,
        n_population: int = 2000,
        seed: int = 0,
    ) -> None:
        if not 0 <= a <= 1 or not gamma > 0:
            raise UsageError(f"rmia needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
        self.online = online
        self.a = a
        self.gamma = gamma
        self.population = population
        self.n_population = positive_int("n_population", n_population)
        self.seed = seed

    def _prior(self, p_ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if self.online or mask is None:
            return np.asarray(p_ref.mean(axis=0))
        count = mask.sum(axis=0)
        p_out = np.where(mask, p_ref, 0.0).sum(axis=0) / np.maximum(count, 1)
        p_out = np.where(count > 0, p_out, p_ref.mean(axis=0))
        return np.asarray(((1 + self.a) * p_out + (1 - self.a)) / 2)

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        assert refs is not None
        p_x = np.exp(np.take_along_axis(log_probs(model, x), y[:, None], axis=1)[:, 0])
        ref_x = np.exp(np.take_along_axis(_reference_log_probs(refs, x), y[None, :, None], axis=2)[..., 0])
        ratio_x = p_x / np.maximum(self._prior(ref_x, ~refs.inclusion), _TINY)
        rng = np.random.default_rng(self.seed)
        if self.population is not None:
            zx, zy = (np.asarray(self.population[0], np.float32), np.asarray(self.population[1], np.int64))
            pick = rng.permutation(len(zy))[: self.n_population]
            zx, zy = zx[pick], zy[pick]
            p_z = np.exp(np.take_along_axis(log_probs(model, zx), zy[:, None], axis=1)[:, 0])
            lp_z = _reference_log_probs(refs, zx)
            ref_z = np.exp(np.take_along_axis(lp_z, zy[None, :, None], axis=2)[..., 0])
            ratio_z = p_z / np.maximum(ref_z.mean(axis=0), _TINY)
        else:
            pick = rng.permutation(len(y))[: self.n_population]
            # Population rows are other candidates: p(z) over all reference models (a row is "in"
            # for half of them, so their average is the population's marginal).
            ratio_z = p_x[pick] / np.maximum(ref_x[:, pick].mean(axis=0), _TINY)
        ratio_z = np.sort(ratio_z)
        # Fraction of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma.
        return np.searchsorted(ratio_z, ratio_x / self.gamma, side="left") / len(ratio_z)


@register_membership_attack("shadow")
class ShadowAttack(MembershipAttack):
    """Shokri et al. 2017: learn membership from shadow models' outputs.

    The reference models are the shadow models: their outputs on the candidate rows, labelled
    with whether each model trained on each row, train a gradient-boosted attack classifier;
    the target's outputs on the rows are then classified.

    Args:
        max_train: at most this many (model, row) pairs train the attack classifier.
        seed: seeds the sample and the classifier.
    """

    needs_references = True

    def __init__(self, *, max_train: int = 40000, seed: int = 0) -> None:
        self.max_train = positive_int("max_train", max_train)
        self.seed = seed

    @staticmethod
    def features(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sorted top-3 log-probabilities, true-class logit confidence, correctness, the class."""
        top = -np.sort(-logp, axis=-1)[..., :3]
        if top.shape[-1] < 3:
            top = np.concatenate([top, np.full(top.shape[:-1] + (3 - top.shape[-1],), -50.0)], axis=-1)
        conf = logit_confidence(logp, y)[..., None]
        correct = (logp.argmax(axis=-1) == y)[..., None].astype(np.float64)
        cls = np.broadcast_to(y.astype(np.float64), logp.shape[:-1])[..., None]
        return np.concatenate([np.maximum(top, -50.0), np.clip(conf, -50, 50), correct, cls], axis=-1)

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        assert refs is not None
        from sklearn.ensemble import HistGradientBoostingClassifier

        feats = self.features(_reference_log_probs(refs, x), y)  # (K, N, F)
        flat = feats.reshape(-1, feats.shape[-1])
        labels = refs.inclusion.reshape(-1)
        rng = np.random.default_rng(self.seed)
        pick = rng.permutation(len(labels))[: self.max_train]
        if np.unique(labels[pick]).size < 2:
            raise UsageError("the shadow models saw all or none of the rows: nothing to learn from")
        clf = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, categorical_features=[flat.shape[1] - 1], random_state=self.seed
        )
        clf.fit(flat[pick], labels[pick])
        target = self.features(log_probs(model, x), y)
        proba = clf.predict_proba(target)[:, 1]
        return np.asarray(proba)


@register_membership_attack("label-only")
class LabelOnly(MembershipAttack):
    """Label-only membership inference (Choquette-Choo et al. 2021): robustness to noise.

    Members sit further from the decision boundary, so their label survives perturbation
    more often. The score counts correct labels over the row itself and ``n_noise`` noisy
    copies per noise level (Gaussian, as a fraction of each value's range; images also get
    one-pixel shifts), the row's own label weighted most.

    Args:
        sigmas: noise levels.
        n_noise: noisy copies per level.
        shifts: one-pixel shifts for images.
        seed: seeds the noise.
    """

    access = Access.DECISION

    def __init__(
        self,
        *,
        sigmas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2),
        n_noise: int = 16,
        shifts: bool = True,
        seed: int = 0,
    ) -> None:
        if not sigmas or any(not s > 0 for s in sigmas):
            raise UsageError("label-only: sigmas must be positive noise levels")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.n_noise = positive_int("n_noise", n_noise)
        self.shifts = shifts
        self.seed = seed

    def run(self, model: Model, x: np.ndarray, y: np.ndarray, refs: ReferenceModels | None) -> np.ndarray:
        spec = model.spec
        lo = spec.lower_tensor(dtype=torch.float32).numpy()
        hi = spec.upper_tensor(dtype=torch.float32).numpy()
        span = hi - lo
        rng = np.random.default_rng(self.seed)
        total = len(self.sigmas) * self.n_noise
        score = (model.predict(torch.from_numpy(x)).numpy() == y).astype(np.float64) * (total + 1)
        for sigma in self.sigmas:
            for _ in range(self.n_noise):
                noisy = np.clip(x + rng.normal(0, sigma, x.shape).astype(np.float32) * span, lo, hi)
                score += model.predict(torch.from_numpy(noisy)).numpy() == y
        if self.shifts and spec.kind == "image" and len(spec.shape) == 3:
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                moved = np.roll(x, (dy, dx), axis=(2, 3))
                score += model.predict(torch.from_numpy(moved)).numpy() == y
        return score
