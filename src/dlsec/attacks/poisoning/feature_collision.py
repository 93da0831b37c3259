"""Feature-collision targeted poisoning (Shafahi et al. 2018, "Poison Frogs")."""

from __future__ import annotations

import numpy as np
import torch

from dlsec.attacks.poisoning._base import (
    PoisoningAttack,
    PoisonResult,
    check_class,
    register_poisoning,
)
from dlsec.attacks.poisoning._features import penultimate_tensor
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel, inference_mode
from dlsec.errors import UsageError

__all__ = ["FeatureCollision"]


@register_poisoning("feature-collision")
class FeatureCollision(PoisoningAttack):
    """Clean-label poisons whose features collide with a target input's.

    Each poison starts from a base row of class ``target`` (correctly labelled), blended with
    the target input at ``watermark`` opacity, and follows the paper's forward-backward
    splitting: a forward step (Adam) on ``||f(p) - f(t)||^2`` (``f``: the feature extractor's
    penultimate representation), then the proximal step towards the base,
    ``p = (p + lr * beta * b) / (1 + lr * beta)``, clipped to the input bounds. A model whose
    last layer is then trained on the poisoned set classifies the target input as ``target``.

    Args:
        feature_extractor: the white-box model whose penultimate layer is attacked.
        target_x: the test inputs the attacker wants misclassified, ``(M, *shape)``.
        target: the class they should be classified as (the poisons' label).
        n_poisons: poisons per target input.
        beta: weight of the closeness to the base (scaled by ``D^2 / d^2`` as in the paper).
        watermark: opacity of the target blended into the base before optimising.
        steps: optimisation steps; ``lr``: step size.
        seed: seeds the choice of base rows.
    """

    def __init__(
        self,
        *,
        feature_extractor: WhiteBoxModel,
        target_x: np.ndarray,
        target: int,
        n_poisons: int = 10,
        beta: float = 0.25,
        watermark: float = 0.3,
        steps: int = 300,
        lr: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.feature_extractor = feature_extractor
        self.target_x = target_x
        self.target = target
        self.n_poisons = n_poisons
        self.beta = beta
        self.watermark = watermark
        self.steps = steps
        self.lr = lr
        self.seed = seed

    def poison(self, data: Dataset) -> PoisonResult:
        check_class("target", self.target, data)
        tx = np.asarray(self.target_x, dtype=np.float32)
        if tx.ndim != len(data.spec.shape) + 1 or tuple(tx.shape[1:]) != data.spec.shape:
            raise UsageError(f"target_x must be a batch of inputs of shape {data.spec.shape}")
        if not 0.0 <= self.watermark < 1.0 or not self.beta >= 0 or not self.lr > 0:
            raise UsageError("watermark must be in [0, 1), beta >= 0 and lr > 0")
        pool = np.flatnonzero(data.y == self.target)
        need = self.n_poisons * len(tx)
        if self.n_poisons < 1 or need > len(pool):
            raise UsageError(f"{need} poisons asked for but class {self.target} has {len(pool)} base rows")
        rng = np.random.default_rng(self.seed)
        index = np.sort(rng.choice(pool, size=need, replace=False))
        model = self.feature_extractor
        dev = model.device
        lo, hi = data.spec.lower_tensor(device=dev), data.spec.upper_tensor(device=dev)
        base = torch.from_numpy(data.x[index]).to(dev)
        tgt = torch.from_numpy(np.repeat(tx, self.n_poisons, axis=0)).to(dev)
        with inference_mode(model.module), torch.no_grad():
            f_t = penultimate_tensor(model, tgt)
        d_feat, d_in = f_t.shape[1], base[0].numel()
        beta = self.beta * (d_feat / d_in) ** 2
        p = ((1 - self.watermark) * base + self.watermark * tgt).clamp(lo, hi).requires_grad_(True)
        # The forward step is taken by Adam (the features' scale varies by model, so a fixed
        # gradient step either crawls or diverges); the backward (proximal) step is the paper's.
        opt = torch.optim.Adam([p], lr=self.lr)
        with inference_mode(model.module):
            for _ in range(self.steps):
                loss = ((penultimate_tensor(model, p) - f_t) ** 2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    p.copy_(((p + self.lr * beta * base) / (1 + self.lr * beta)).clamp(lo, hi))
        p = p.detach()
        x = data.x.copy()
        x[index] = p.detach().cpu().numpy()
        return PoisonResult(
            data=Dataset(x, data.y.copy(), data.spec, f"{data.name}[{self.name}]"),
            poison_index=index,
            attack=self.name,
            params={**self.get_params(), "feature_extractor": "given", "target_x": f"array{tx.shape}"},
            target=int(self.target),
            targets=tx,
        )
