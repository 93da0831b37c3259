"""Per-example losses that attacks ascend."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ce_loss", "dlr_loss", "targeted_dlr_loss", "margin_loss"]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example (ascending it moves away from ``y``)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest other logit minus the logit of ``y`` (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -torch.inf)
    return other.max(dim=1).values - true


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits ratio (Croce & Hein 2020), untargeted, per example.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` where ``pi`` sorts the logits in decreasing
    order; invariant to shifting and scaling the logits. Needs at least three classes.
    """
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_true = sorted_logits[:, 0] == true
    best_other = torch.where(top_is_true, sorted_logits[:, 1], sorted_logits[:, 0])
    return -(true - best_other) / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    Needs at least four classes.
    """
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    scale = sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12
    return -(true - tgt) / scale
