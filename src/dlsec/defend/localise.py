"""Trigger localisation: which input region carries a backdoored decision.

:func:`localise_trigger` attributes triggered inputs to the backdoor's target class with
occlusion (Zeiler and Fergus 2014, Captum's, through :func:`dlsec.explain.explain`): the units
whose occlusion lowers the target's logit the most are where the trigger sits. Occlusion, not a
gradient method, because a trigger works as a whole: on the built-in BadNets poisoning of the
digits CNN, a 2x2 occlusion window finds the 3x3 patch with IoU 1.0 per input, where Integrated
Gradients from a black baseline reaches 0.39 and saliency 0.47 (benchmarks/explain.py).

The region is the top-``k`` units of the mean attribution over the inputs (and, per input, of
its own map); ``k`` defaults to the size of a reference mask when one is given (the Neural
Cleanse mask, the true trigger), else to 10% of the units. :func:`localise_scan` runs it on
clean inputs stamped with the trigger Neural Cleanse reconstructed, and compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlsec.core.model import Model
from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.defend.scan import ScanReport

__all__ = ["TriggerRegion", "iou", "localise_scan", "localise_trigger"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise UsageError(f"IoU of masks of different shapes {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    flat = scores.ravel()
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(scores.shape)


def _bbox(mask: np.ndarray) -> list[int] | None:
    if mask.ndim != 2 or not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    return [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]


@dataclass(frozen=True)
class TriggerRegion:
    """Where the decision for ``target`` comes from on the triggered inputs.

    Attributes:
        mask: the region (top-``k`` units of the mean map): ``(H, W)`` for images, ``(F,)`` for tables.
        scores: the mean attribution per unit (drop of the target's logit when occluded).
        per_example: ``(N, *mask.shape)`` each input's own top-``k`` region.
        target: the class explained; k: units in a region; method, window: how it was attributed.
        reference_iou: IoU of ``mask`` with the reference mask, when one was given.
    """

    mask: np.ndarray
    scores: np.ndarray
    per_example: np.ndarray
    target: int
    k: int
    method: str
    window: int | None
    reference_iou: float | None = None

    @property
    def bbox(self) -> list[int] | None:
        """``[row_min, row_max, col_min, col_max]`` of the region (images), else None."""
        return _bbox(self.mask)

    def boxes(self) -> list[list[int] | None]:
        """Each input's own region as ``[row_min, row_max, col_min, col_max]`` (images), else None."""
        return [_bbox(m) for m in self.per_example]

    def per_example_iou(self, truth: np.ndarray) -> np.ndarray:
        return np.array([iou(m, truth) for m in self.per_example])

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "window": self.window,
            "k": self.k,
            "n": len(self.per_example),
            "region": self.mask.astype(int).tolist(),
            "bbox": self.bbox,
            "reference_iou": self.reference_iou,
        }


def localise_trigger(
    model: Model,
    x: np.ndarray | torch.Tensor,
    target: int,
    *,
    k: int | None = None,
    reference: np.ndarray | None = None,
    method: str = "occlusion",
    window: int = 2,
    seed: int = 0,
) -> TriggerRegion:
    """Locate the region that sends the triggered inputs ``x`` to ``target``.

    Args:
        model: a white-box or score-based model (occlusion needs only scores).
        x: triggered inputs (predicted as ``target``, or meant to be).
        target: the backdoor's target class.
        k: units in the region (default: the reference mask's size, else 10% of the units).
        reference: a boolean or soft mask to compare with (``(H, W)`` or ``(F,)``); a soft mask
            counts the units above 0.5.
        method: the attribution method (``occlusion`` by default; any of :func:`dlsec.explain.explain`).
        window: the occlusion window's side (images) or length (tables).

    Raises:
        UsageError: no inputs, a target out of range, or a reference of the wrong shape.
    """
    from dlsec.explain import explain

    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if len(xt) == 0:
        raise UsageError("trigger localisation needs at least one triggered input")
    if not 0 <= target < model.spec.num_classes:
        raise UsageError(f"target {target} is not a class of the model (0-{model.spec.num_classes - 1})")
    image = model.spec.kind == "image" and len(model.spec.shape) == 3
    params: dict[str, Any] = {"window": window, "stride": 1} if method == "occlusion" else {}
    e = explain(model, xt, target=target, method=method, seed=seed, **params)
    a = e.attributions.double().numpy()
    maps = a.sum(1) if image else a.reshape(len(a), -1)
    ref = None
    if reference is not None:
        ref = np.asarray(reference)
        ref = ref > 0.5 if ref.dtype != bool else ref
        if ref.shape != maps.shape[1:]:
            raise UsageError(f"reference mask of shape {ref.shape}; the model's units are {maps.shape[1:]}")
    units = int(np.prod(maps.shape[1:]))
    if k is None:
        k = int(ref.sum()) if ref is not None and ref.any() else max(1, units // 10)
    k = max(1, min(int(k), units))
    mean = maps.mean(0)
    mask = _top(mean, k)
    per_example = np.stack([_top(m, k) for m in maps])
    return TriggerRegion(
        mask=mask,
        scores=mean,
        per_example=per_example,
        target=int(target),
        k=k,
        method=method,
        window=window if method == "occlusion" else None,
        reference_iou=iou(mask, ref) if ref is not None else None,
    )


def localise_scan(
    model: Model, x_clean: np.ndarray, report: ScanReport, **kwargs: Any
) -> TriggerRegion | None:
    """Localise the trigger Neural Cleanse reconstructed, on clean inputs stamped with it.

    Returns None when the scan found no backdoor. The region is compared with the scan's mask
    (``reference_iou``): two independent methods agreeing on where the trigger sits.
    """
    if not report.backdoor or report.target is None:
        return None
    target = report.target
    mask = report.masks[target]
    pattern = report.patterns[target]
    x = np.asarray(x_clean, dtype=np.float32)
    stamped = (1 - mask) * x + mask * pattern
    return localise_trigger(model, stamped.astype(np.float32), target, reference=mask, **kwargs)
