"""The assessment's explain section: why the model decides, and what the successful attacks moved.

For the gallery's examples (the first rows of the assessed set) it attributes the clean input
and its adversarial counterpart (the gallery's attack: the first norm's middle budget) to their
predicted classes with :func:`dlsec.explain.explain` (Integrated Gradients on white-box models,
occlusion on score-only ones), and reports:

* per example, the top-k overlap between the clean and the adversarial attribution (1: the
  explanation kept its most important units; 0: it moved them all);
* which input regions (images: a grid of blocks) or features (tables) the successful attacks
  changed most: the share of the perturbation, and the share of the attribution shift, per
  region or feature, over the examples the attack fooled.

On by default, bounded in cost (``examples`` rows, two explanations each). A decision-only model
has neither gradients nor scores to attribute: the section does not run and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dlsec.core.model import Access, Model

if TYPE_CHECKING:
    from dlsec.explain import Explanation

__all__ = ["AdversarialGallery", "ExplainSection", "heat_map", "run_explain"]

Step = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


class ExplainSection(BaseModel):
    """Campaign settings of the explain section (on by default).

    ``method`` is the attribution method (default: ``ig`` for white-box models, ``occlusion``
    for score-based ones), ``examples`` the gallery rows explained, ``top_k`` the units compared
    between clean and adversarial attributions and the regions or features listed, ``regions``
    the blocks per side of the grid images are summarised on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    method: str | None = None
    examples: int = Field(8, ge=1, le=64)
    top_k: int = Field(5, ge=1)
    regions: int = Field(4, ge=1, le=16)
    fragility: bool = True
    fragility_steps: int = Field(20, ge=1)


@dataclass(frozen=True)
class AdversarialGallery:
    """The adversarial counterparts of the first rows: which attack made them, and its predictions."""

    attack: str
    norm: str
    eps: float
    x_adv: np.ndarray
    adv_pred: np.ndarray


def default_method(model: Model) -> str | None:
    """The section's method for ``model``'s access level; None when nothing can be attributed."""
    if model.access == Access.WHITE_BOX:
        return "ig"
    if model.access == Access.SCORE:
        return "occlusion"
    return None


def _units(e: Explanation) -> np.ndarray:
    """``(N, U)`` absolute attribution per unit (pixels over channels, or features), each row summing to 1."""
    u = e.unit_scores(absolute=True).double().numpy()
    total = u.sum(1, keepdims=True)
    return np.divide(u, total, out=np.zeros_like(u), where=total > 0)


def _blocks(shape: tuple[int, int], per_side: int) -> list[tuple[str, np.ndarray]]:
    """The grid's blocks as (name, flat pixel indices), row-major."""
    h, w = shape
    rows = np.array_split(np.arange(h), min(per_side, h))
    cols = np.array_split(np.arange(w), min(per_side, w))
    out = []
    for r in rows:
        for c in cols:
            idx = (r[:, None] * w + c[None, :]).ravel()
            out.append((f"rows {r[0]}-{r[-1]}, cols {c[0]}-{c[-1]}", idx))
    return out


def _changed_most(
    clean_units: np.ndarray,
    adv_units: np.ndarray,
    perturbation: np.ndarray,
    groups: Sequence[tuple[str, np.ndarray]],
    top_k: int,
) -> list[dict[str, Any]]:
    shift = np.abs(adv_units - clean_units).sum(0)
    moved = perturbation.sum(0)
    shift_total, moved_total = float(shift.sum()) or 1.0, float(moved.sum()) or 1.0
    scored = [
        (float(shift[idx].sum() / shift_total), float(moved[idx].sum() / moved_total), name)
        for name, idx in groups
    ]
    scored.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return [
        {"name": name, "perturbation_share": moved_share, "attribution_shift_share": shift_share}
        for shift_share, moved_share, name in scored[:top_k]
    ]


def run_explain(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    gallery: AdversarialGallery | None,
    config: ExplainSection,
    *,
    step: Step,
    seed: int,
    feature_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the section on the first ``config.examples`` rows; returns its ``report.json`` part."""
    method = config.method or default_method(model)
    if method is None:
        return {"skipped": "needs gradients or scores; a decision-only model has neither"}
    m = min(config.examples, len(x), len(gallery.x_adv) if gallery is not None else len(x))
    kind = model.spec.kind

    def compute() -> dict[str, Any]:
        from dlsec.explain import explain

        xc = torch.from_numpy(x[:m])
        clean = explain(model, xc, method=method, seed=seed)
        clean_units = _units(clean)
        out: dict[str, Any] = {
            "method": method,
            "output": clean.output,
            "examples": m,
            "maps": {"clean": clean_units.tolist()},
        }
        if gallery is None:
            out["skipped_adversarial"] = "no adversarial examples were kept (no attack ran)"
            return out
        xa = torch.from_numpy(gallery.x_adv[:m])
        adv = explain(model, xa, method=method, seed=seed)
        adv_units = _units(adv)
        from dlsec.explain import topk_intersection

        overlap = topk_intersection(
            torch.from_numpy(clean_units), torch.from_numpy(adv_units), config.top_k
        ).numpy()
        fooled = (clean_pred[:m] == y[:m]) & (gallery.adv_pred[:m] != y[:m])
        per_example = [
            {
                "index": i,
                "label": int(y[i]),
                "clean_prediction": int(clean_pred[i]),
                "adversarial_prediction": int(gallery.adv_pred[i]),
                "fooled": bool(fooled[i]),
                "topk_overlap": float(overlap[i]),
            }
            for i in range(m)
        ]
        pert = np.abs(gallery.x_adv[:m] - x[:m]).astype(np.float64)
        if kind == "image" and pert.ndim == 4:
            pert = pert.sum(1)
        pert = pert.reshape(m, -1)
        if kind == "image" and len(model.spec.shape) == 3:
            groups = _blocks(tuple(model.spec.shape[1:]), config.regions)  # type: ignore[arg-type]
            unit = "region"
        else:
            names = list(feature_names) if feature_names else [f"feature_{i}" for i in range(pert.shape[1])]
            groups = [(names[i], np.array([i])) for i in range(pert.shape[1])]
            unit = "feature"
        out.update(
            attack={"attack": gallery.attack, "norm": gallery.norm, "eps": gallery.eps},
            per_example=per_example,
            fooled=int(fooled.sum()),
            topk_overlap_mean=float(overlap[fooled].mean()) if fooled.any() else None,
            unit=unit,
            changed_most=(
                _changed_most(clean_units[fooled], adv_units[fooled], pert[fooled], groups, config.top_k)
                if fooled.any()
                else []
            ),
        )
        out["maps"]["adversarial"] = adv_units.tolist()
        if config.fragility:
            out["fragility"] = _fragility(model, xc, gallery, config, seed)
        return out

    return step("explain", compute)


def _fragility(
    model: Model, x: torch.Tensor, gallery: AdversarialGallery, config: ExplainSection, seed: int
) -> dict[str, Any]:
    """The explanation attack at the gallery's L-inf budget, beside random sign noise of that size."""
    from dlsec.core.model import WhiteBoxModel
    from dlsec.explain import attack_explanation

    if not isinstance(model, WhiteBoxModel):
        return {"skipped": "the explanation attack needs a white-box model"}
    if gallery.norm != "linf":
        return {"skipped": f"the explanation attack is L-inf; the gallery's attack is {gallery.norm}"}
    result = attack_explanation(model, x, eps=gallery.eps, steps=config.fragility_steps, k=None, seed=seed)
    g = torch.Generator().manual_seed(seed)
    noise = gallery.eps * torch.sign(torch.rand(x.shape, generator=g) - 0.5)
    lower = model.spec.lower_tensor()
    upper = model.spec.upper_tensor()
    noisy = torch.max(torch.min(x + noise, upper), lower)
    random = result.intersection_under(model, noisy)
    return {
        **result.summary(),
        "norm": "linf",
        "random_noise_topk_intersection_mean": float(random.mean()),
        "reference": "Ghorbani et al. 2019 top-k attack, softplus smoothing of Dombrowski et al. 2019",
    }


def heat_map(units: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """A white-to-red ``(3, H, W)`` image in [0, 1] of one example's attribution per pixel."""
    v = np.asarray(units, dtype=np.float64).reshape(shape)
    peak = v.max()
    v = v / peak if peak > 0 else v
    return np.stack([np.ones_like(v), 1 - v, 1 - v]).astype(np.float32)
