"""Unlearning for models not trained with SISA: exact retraining and NegGrad+ (approximate).

* **Exact**: drop the rows and retrain from scratch exactly as the training card says (the same
  architecture, recipe, training options and seed; the input normalisation measured again on
  the retained rows). The reference every other method is measured against.
* **Approximate, NegGrad+** (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning",
  NeurIPS; gradient ascent on the forget set after Golatkar et al. 2020 and Thudi et al. 2022):
  fine-tune on the retained rows while ascending the loss of the erased rows. Plain ascent
  overshoots (the erased rows end up with a *higher* loss than rows never seen, which a
  membership attack also detects), so the ascent term is a hinge: each erased row's confidence
  is pushed down only while it is above the median confidence of held-out rows under the
  original model, what a typical non-member gets. Confidence is LiRA's logit-scaled
  ``log p_y - log(1 - p_y)``: its gradient does not vanish on rows the model fits perfectly
  (the cross-entropy's does), and it is what the verification measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dlsec.core.arch import build_architecture
from dlsec.core.card import TrainingCard
from dlsec.core.data import Dataset
from dlsec.core.loop import run_training
from dlsec.core.model import WhiteBoxModel
from dlsec.core.recipe import Recipe, get_recipe
from dlsec.core.seeding import torch_generator
from dlsec.core.trainconfig import TrainConfig

__all__ = ["NegGradPlus", "confidence", "retrain_exact", "trained_config"]


def trained_config(card: TrainingCard) -> TrainConfig:
    """The :class:`TrainConfig` the card records."""
    names = set(TrainConfig.field_names())
    return TrainConfig(**{k: v for k, v in card.train_config.items() if k in names})


def _card_recipe(card: TrainingCard) -> Recipe:
    return get_recipe(card.recipe or "standard", **card.recipe_params)


def retrain_exact(
    card: TrainingCard,
    fit_set: Dataset,
    val_set: Dataset | None,
    *,
    device: torch.device,
) -> tuple[WhiteBoxModel, list[dict[str, float]]]:
    """Train the card's model from scratch on ``fit_set`` (the retained rows), as the card says."""
    recipe = _card_recipe(card)
    config = trained_config(card)
    arch = card.architecture
    if not arch:
        from dlsec.errors import ModelLoadError

        raise ModelLoadError(f"{card.source}: the training card names no architecture")
    spec = recipe.input_spec(fit_set)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = build_architecture(arch, card.arch_kwargs, allow_import=False).to(device)
    model = WhiteBoxModel(module, spec, device=device)
    outcome = run_training(model, fit_set, config, recipe, validation=val_set)
    return model, outcome.history


@dataclass(frozen=True)
class NegGradPlus:
    """NegGrad+ with a hinge at the non-members' loss (see the module docstring).

    Args:
        epochs: passes over the retained rows.
        lr: learning rate (AdamW).
        alpha: weight of the ascent term on the erased rows.
        batch_size: retained rows per step (all erased rows take part in every step).
        seed: batch order.
    """

    epochs: int = 3
    lr: float = 1e-3
    alpha: float = 1.0
    batch_size: int = 64
    seed: int = 0

    def target_confidence(self, model: WhiteBoxModel, held_out: Dataset) -> float:
        """The median confidence of held-out rows: what a non-member's looks like."""
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(held_out.x)).cpu()
            return float(confidence(logits, torch.from_numpy(held_out.y)).median())

    def __call__(
        self, model: WhiteBoxModel, retain: Dataset, forget: Dataset, *, target: float
    ) -> list[dict[str, float]]:
        """Unlearn ``forget`` from ``model`` in place; returns one dict per epoch."""
        module, device = model.module, model.device
        norm = model.spec.normalisation(device=device)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return module((x - norm[0]) / norm[1]) if norm is not None else module(x)

        xr, yr = torch.from_numpy(retain.x).to(device), torch.from_numpy(retain.y).to(device)
        xf, yf = torch.from_numpy(forget.x).to(device), torch.from_numpy(forget.y).to(device)
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=self.lr)
        gen = torch_generator(self.seed)
        history: list[dict[str, float]] = []
        was_training = module.training
        module.train()
        try:
            for _ in range(self.epochs):
                order = torch.randperm(len(yr), generator=gen).to(device)
                total, ascent, steps = 0.0, 0.0, 0
                for start in range(0, len(yr), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    keep = F.cross_entropy(forward(xr[idx]), yr[idx])
                    hinge = torch.clamp(confidence(forward(xf), yf) - target, min=0.0).mean()
                    loss = keep + self.alpha * hinge
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(keep.detach())
                    ascent += float(hinge.detach())
                    steps += 1
                module.eval()
                with torch.no_grad():
                    forget_conf = float(confidence(forward(xf), yf).median())
                module.train()
                history.append(
                    {
                        "retain_loss": total / max(steps, 1),
                        "hinge": ascent / max(steps, 1),
                        "forget_confidence": forget_conf,
                        "target_confidence": target,
                    }
                )
        finally:
            module.train(was_training)
        return history


def confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(1 - p_y)`` per row, stable near ``p_y = 1``."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def index_of(hashes: list[str], wanted: set[str]) -> np.ndarray:
    """Positions in ``hashes`` of the rows whose hash is in ``wanted``."""
    return np.array([i for i, h in enumerate(hashes) if h in wanted], dtype=np.int64)
