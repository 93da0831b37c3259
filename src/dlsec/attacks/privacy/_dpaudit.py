"""Auditing differentially private training: canaries in, train, attack, epsilon lower bounds.

``m`` canaries are made (random inputs with random labels, or held-out rows given a wrong
label), each included in the training set independently with probability 1/2. The model is
trained with the ``dp-sgd`` recipe of :mod:`dlsec.train`; the attack scores each canary by the
trained model's logit-scaled confidence in the canary's label. Two lower bounds on epsilon
follow (see :mod:`dlsec.attacks.privacy._epsilon`): the Clopper-Pearson hypothesis-test bound
(threshold chosen on one half of the canaries, counted on the other, so the choice does not
inflate it) and the one-run bound of Steinke et al. 2023. A bound above the epsilon the
training claims means the implementation or its accounting is broken.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.attacks.privacy._epsilon import EpsilonBound, epsilon_lower_bound, one_run_epsilon
from dlsec.attacks.privacy._membership import log_probs, logit_confidence
from dlsec.core.arch import build_architecture
from dlsec.core.data import Dataset
from dlsec.core.evaluation import evaluate
from dlsec.core.loop import resolve_architecture, run_training
from dlsec.core.model import WhiteBoxModel, default_device
from dlsec.core.recipe import Recipe
from dlsec.core.trainconfig import TrainConfig
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["CANARY_KINDS", "DPAuditResult", "dp_audit", "make_canaries"]

log = logging.getLogger(__name__)

CANARY_KINDS = ("noise", "mislabeled")
Progress = Callable[[int, int, dict[str, float]], None]


def make_canaries(
    data: Dataset, m: int, *, kind: str = "noise", pool: Dataset | None = None, seed: int = 0
) -> Dataset:
    """``m`` canaries for ``data``'s spec.

    ``noise``: inputs uniform within the bounds, labels uniform over the classes.
    ``mislabeled``: rows of ``pool`` (held out from training) with a random wrong label.
    """
    positive_int("canaries", m)
    rng = np.random.default_rng(seed)
    spec = data.spec
    k = spec.num_classes
    if kind == "noise":
        lo = np.broadcast_to(np.asarray(spec.lower, dtype=np.float32), (spec.num_features,))
        hi = np.broadcast_to(np.asarray(spec.upper, dtype=np.float32), (spec.num_features,))
        x = (lo + rng.random((m, spec.num_features), dtype=np.float32) * (hi - lo)).reshape((m, *spec.shape))
        y = rng.integers(0, k, m)
    elif kind == "mislabeled":
        if pool is None or len(pool) < m:
            have = 0 if pool is None else len(pool)
            raise UsageError(f"mislabeled canaries need {m} held-out rows, got {have}; use fewer canaries")
        pick = rng.permutation(len(pool))[:m]
        x = pool.x[pick]
        y = (pool.y[pick] + rng.integers(1, k, m)) % k
    else:
        raise UsageError(f"canary kind must be one of {', '.join(CANARY_KINDS)}, got {kind!r}")
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), spec, f"canaries({kind})")


@dataclass
class DPAuditResult:
    """An audit's outcome: the claim, both lower bounds and whether the claim is broken."""

    epsilon_claimed: float
    delta: float
    hypothesis_test: EpsilonBound
    one_run: dict[str, Any]
    canaries: int
    included: int
    test_accuracy: float
    privacy: dict[str, Any]
    scores: np.ndarray
    inclusion: np.ndarray
    settings: dict[str, Any]

    @property
    def epsilon_lower(self) -> float:
        """The larger of the two lower bounds."""
        return max(self.hypothesis_test.epsilon_lower, float(self.one_run["epsilon_lower"]))

    @property
    def exceeds_claim(self) -> bool:
        return self.epsilon_lower > self.epsilon_claimed

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon_claimed": self.epsilon_claimed,
            "delta": self.delta,
            "epsilon_lower": self.epsilon_lower,
            "exceeds_claim": self.exceeds_claim,
            "hypothesis_test": self.hypothesis_test.to_dict(),
            "one_run": self.one_run,
            "canaries": self.canaries,
            "canaries_included": self.included,
            "test_accuracy": self.test_accuracy,
            "privacy": self.privacy,
            "settings": self.settings,
        }


def _split_threshold_bound(
    scores: np.ndarray, inclusion: np.ndarray, delta: float, confidence: float, seed: int
) -> EpsilonBound:
    """Choose the threshold on one half of the canaries, count TP/FP on the other half."""
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(scores))
    half = len(order) // 2
    a, b = order[:half], order[half:]
    if inclusion[a].all() or not inclusion[a].any() or inclusion[b].all() or not inclusion[b].any():
        raise UsageError("too few canaries: each half needs included and excluded ones; use more canaries")
    best_t, best_eps = math.inf, -1.0
    for t in np.unique(scores[a]):
        said = scores[a] >= t
        tp, fp = int((said & inclusion[a]).sum()), int((said & ~inclusion[a]).sum())
        fn, tn = int(inclusion[a].sum()) - tp, int((~inclusion[a]).sum()) - fp
        eps = epsilon_lower_bound(tp, fn, fp, tn, delta=delta, confidence=confidence).epsilon_lower
        if eps > best_eps:
            best_t, best_eps = float(t), eps
    said = scores[b] >= best_t
    tp, fp = int((said & inclusion[b]).sum()), int((said & ~inclusion[b]).sum())
    fn, tn = int(inclusion[b].sum()) - tp, int((~inclusion[b]).sum()) - fp
    return epsilon_lower_bound(tp, fn, fp, tn, delta=delta, confidence=confidence)


def one_run_audit(
    scores: np.ndarray, inclusion: np.ndarray, *, guesses: int, delta: float, confidence: float
) -> dict[str, Any]:
    """Steinke et al. 2023: guess "in" for the ``guesses`` highest scores and "out" for the
    ``guesses`` lowest; the bound from the number right."""
    m = len(scores)
    k = min(guesses, m // 2)
    if k < 1:
        raise UsageError("the one-run audit needs at least two canaries")
    order = np.argsort(scores, kind="stable")
    low, high = order[:k], order[m - k :]
    correct = int(inclusion[high].sum() + (~inclusion[low]).sum())
    return {
        "method": "one-run (Steinke, Nasr & Jagielski 2023)",
        "canaries": m,
        "guesses": 2 * k,
        "correct": correct,
        "epsilon_lower": one_run_epsilon(m, 2 * k, correct, delta=delta, confidence=confidence),
        "delta": delta,
        "confidence": confidence,
    }


def dp_audit(
    data: Dataset,
    *,
    recipe: Recipe,
    config: TrainConfig | None = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    canaries: int = 500,
    canary_kind: str = "noise",
    guess_fraction: float = 0.1,
    confidence: float = 0.95,
    test_size: float = 0.25,
    split_seed: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> DPAuditResult:
    """Insert canaries, train with ``recipe`` (DP-SGD), attack, and bound epsilon from below.

    Args:
        data: the dataset; its train split (``test_size``, ``split_seed``) plus the included
            canaries is what the model trains on; the test split scores accuracy (and supplies
            ``mislabeled`` canaries).
        recipe: the DP-SGD recipe under audit (its epsilon and delta are the claim).
        config: training hyperparameters (default: the recipe's).
        arch, arch_kwargs: the architecture (default: the recipe's, a linear model).
        canaries: how many canaries (each included with probability 1/2).
        canary_kind: ``noise`` or ``mislabeled``.
        guess_fraction: the one-run auditor guesses on this fraction of canaries at each end.
        confidence: confidence of both bounds.
        seed: seeds the canaries, their inclusion and the threshold split.

    Example:
        >>> result = dp_audit(load_dataset("builtin:digits"), recipe=DPSGD(epsilon=1.0))  # doctest: +SKIP
        >>> result.epsilon_lower <= result.epsilon_claimed                              # doctest: +SKIP
        True
    """
    params = recipe.get_params()
    if recipe.name != "dp-sgd" or "epsilon" not in params or "delta" not in params:
        raise UsageError("a DP audit needs the dp-sgd recipe (dlsec.train.DPSGD)")
    claimed_epsilon, delta = float(params["epsilon"]), float(params["delta"])
    if not 0 < guess_fraction <= 0.5:
        raise UsageError(f"guess_fraction must be in (0, 0.5], got {guess_fraction}")
    config = config or recipe.default_config()
    train_set, test_set = data.split(test_size=test_size, seed=split_seed)
    canary_set = make_canaries(data, canaries, kind=canary_kind, pool=test_set, seed=seed)
    rng = np.random.default_rng(seed + 7)
    inclusion = rng.random(canaries) < 0.5
    index = np.nonzero(inclusion)[0]
    fit_x = np.concatenate([train_set.x, canary_set.x[index]])
    fit_y = np.concatenate([train_set.y, canary_set.y[index]])
    fit_set = Dataset(fit_x, fit_y, data.spec, f"{data.name}[train+canaries]")
    arch_name, kwargs = resolve_architecture(recipe, data.spec, arch, arch_kwargs, config)
    spec = recipe.input_spec(fit_set)
    target = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = build_architecture(arch_name, kwargs).to(target)
    model = WhiteBoxModel(module, spec, device=target)
    outcome = run_training(model, fit_set, config, recipe, progress=progress)
    privacy = dict(outcome.summary.get("privacy") or {})
    claimed = float(privacy.get("epsilon_spent", claimed_epsilon))
    scores = logit_confidence(log_probs(model, canary_set.x), canary_set.y)
    bound = _split_threshold_bound(scores, inclusion, delta, confidence, seed)
    one_run = one_run_audit(
        scores,
        inclusion,
        guesses=max(1, int(guess_fraction * canaries)),
        delta=delta,
        confidence=confidence,
    )
    return DPAuditResult(
        epsilon_claimed=claimed,
        delta=delta,
        hypothesis_test=bound,
        one_run=one_run,
        canaries=canaries,
        included=int(inclusion.sum()),
        test_accuracy=evaluate(model, test_set).accuracy,
        privacy=privacy,
        scores=scores,
        inclusion=inclusion,
        settings={
            "canary_kind": canary_kind,
            "arch": arch_name,
            "arch_kwargs": kwargs,
            "recipe": recipe.get_params(),
            "recipe_class": type(recipe).__name__,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "seed": seed,
            "guess_fraction": guess_fraction,
            "threshold": "chosen on half of the canaries, counted on the other half",
        },
    )
