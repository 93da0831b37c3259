"""How well a watermark survives the edits people make, and the removal attacks, on a set of images.

Each edit is registered by name (``jpeg-50``, ``crop-10``, ``pgd-4``, ...). An image is scored by the
bit accuracy of what the watermark's detector reads against the message it carries; detection
at 1% false positives takes its threshold from the same edit applied to the *unwatermarked*
images (each read against the message its twin carries), so the false-positive rate is
empirical, and with few images the threshold is the null's maximum (strict). An edit that
changes the size is followed by a resize back, so that every method reads the size it embedded
at.

Two edits are removal attacks rather than everyday edits: ``pgd-4`` (L-inf PGD within 4/255 that
pushes a differentiable decoder away from the true bits, over every frame it reads: white box,
the strongest case; a method without gradients cannot be attacked this way and is reported as
not run) and ``regenerate-vae`` (the image's luminance encoded and decoded by a VAE generator).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlsec.errors import UsageError

__all__ = ["WATERMARK_EDITS", "WatermarkEdit", "psnr", "register_watermark_edit", "watermark_robustness"]

EditFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class WatermarkEdit:
    """A named edit of an RGB uint8 image: what it is and whether it is a removal attack."""

    name: str
    label: str
    removal: bool = False  # an attack on the watermark: the unwatermarked null is left unedited


WATERMARK_EDITS: dict[str, WatermarkEdit] = {}
_FUNCTIONS: dict[str, Callable[[dict[str, Any]], EditFn]] = {}


def register_watermark_edit(edit: WatermarkEdit, make: Callable[[dict[str, Any]], EditFn]) -> WatermarkEdit:
    """Register ``edit``; ``make(context)`` builds its function. A duplicate name is refused."""
    if edit.name in WATERMARK_EDITS:
        raise UsageError(f"an edit named {edit.name!r} is already registered")
    WATERMARK_EDITS[edit.name] = edit
    _FUNCTIONS[edit.name] = make
    return edit


def _pil(a: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(a))


def _back(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    if a.shape[:2] == shape[:2]:
        return a
    return np.asarray(_pil(a).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _jpeg(quality: int) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            from PIL import Image

            buf = io.BytesIO()
            _pil(a).save(buf, "JPEG", quality=quality)
            return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

        return edit

    return make


def _resize(factor: float) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            from PIL import Image

            h, w = a.shape[:2]
            small = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
            return _back(np.asarray(_pil(a).resize(small, Image.Resampling.BILINEAR)), a.shape)

        return edit

    return make


def _crop(fraction: float) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            h, w = a.shape[:2]
            sh, sw = int(round(h * (1 - fraction))), int(round(w * (1 - fraction)))
            top, left = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
            return _back(np.ascontiguousarray(a[top : top + sh, left : left + sw]), a.shape)

        return edit

    return make


def _noise(sigma: float) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return np.clip(np.round(a + rng.normal(0, sigma, a.shape)), 0, 255).astype(np.uint8)

        return edit

    return make


def _blur(radius: float) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            from PIL import ImageFilter

            return np.asarray(_pil(a).filter(ImageFilter.GaussianBlur(radius)))

        return edit

    return make


def _pgd(eps: float, steps: int = 20, step: float = 1 / 255) -> Callable[[dict[str, Any]], EditFn]:
    def make(ctx: dict[str, Any]) -> EditFn:
        import torch
        from torch.nn import functional as F

        logits_of = getattr(ctx["method"], "logits", None)
        if logits_of is None:
            raise _NoGradient(f"{ctx['method'].name} has no gradient (its decoder is not differentiable)")

        def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            x = torch.from_numpy(a.astype(np.float32) / 255)
            target = torch.from_numpy(np.asarray(ctx["target"], dtype=np.float32))
            delta = torch.zeros_like(x, requires_grad=True)
            for _ in range(steps):
                logits = logits_of((x + delta).clamp(0, 1))[:, : len(target)]
                loss = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta += step * grad.sign()
                    delta.clamp_(-eps, eps)
            out = (x + delta.detach()).clamp(0, 1)
            return np.round(out.numpy() * 255).astype(np.uint8)

        return edit

    return make


def _regenerate(ctx: dict[str, Any]) -> EditFn:
    import torch
    from torch.nn import functional as F

    from dlsec.generative._gan import load_generator
    from dlsec.generative._sample import to_rgb

    vae = load_generator(ctx["regenerator"], home=ctx["home"])

    def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        luma = torch.from_numpy(a.astype(np.float32) / 255) @ torch.tensor([0.299, 0.587, 0.114])
        small = F.adaptive_avg_pool2d(luma[None, None], 8)[0].numpy()
        return to_rgb(vae.reconstruct(small)[0], a.shape[0])

    return edit


class _NoGradient(UsageError):
    """The removal attack needs a gradient the method does not have."""


for _edit, _make in (
    (WatermarkEdit("jpeg-90", "JPEG 90"), _jpeg(90)),
    (WatermarkEdit("jpeg-70", "JPEG 70"), _jpeg(70)),
    (WatermarkEdit("jpeg-50", "JPEG 50"), _jpeg(50)),
    (WatermarkEdit("resize-0.5", "resize 0.5x"), _resize(0.5)),
    (WatermarkEdit("crop-10", "crop 10%"), _crop(0.1)),
    (WatermarkEdit("noise-10", "noise 10/255"), _noise(10.0)),
    (WatermarkEdit("blur-2", "blur r=2"), _blur(2.0)),
    (WatermarkEdit("pgd-4", "PGD 4/255 on the decoder", removal=True), _pgd(4 / 255)),
    (WatermarkEdit("regenerate-vae", "VAE regeneration", removal=True), _regenerate),
):
    register_watermark_edit(_edit, _make)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (``inf`` when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def watermark_robustness(
    method: Any,
    images: list[np.ndarray],
    messages: list[bytes],
    edits: list[str],
    *,
    seed: int = 0,
    regenerator: str = "zoo-vae",
    home: str | Path | None = None,
    progress: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Embed ``messages`` in ``images`` with ``method`` (a :class:`WatermarkMethod`) and score
    detection under each edit.

    Returns the results and the watermarked images. The results hold PSNR (mean and minimum),
    the bit accuracy with no edit, and per edit the mean bit accuracy, the TPR at 1% FPR and the
    null threshold; an edit the method cannot undergo (a gradient attack on a method with no
    gradient) is under ``"not_run"`` with the reason instead.

    Example:
        >>> wm = get_watermark("learned")                                    # doctest: +SKIP
        >>> watermark_robustness(wm, images, messages, ["jpeg-50"])["edits"]  # doctest: +SKIP
    """
    from dlsec.generative._watermark import message_bits

    unknown = [e for e in edits if e not in WATERMARK_EDITS]
    if unknown:
        raise UsageError(f"unknown edit {unknown[0]!r}; choose from {', '.join(WATERMARK_EDITS)}")
    if not images or len(images) != len(messages):
        raise UsageError("give one message per image (and at least one image)")
    marked = [method.embed(image, message) for image, message in zip(images, messages, strict=True)]
    expected = [message_bits(m) for m in messages]
    quality = [psnr(m, i) for m, i in zip(marked, images, strict=True)]
    # The PGD edit reads the true bits of the image it attacks from ``ctx["target"]``.
    ctx: dict[str, Any] = {"method": method, "target": None, "regenerator": regenerator, "home": home}
    rows: dict[str, dict[str, Any]] = {}
    not_run: dict[str, str] = {}
    for name in edits:
        try:
            edit = _FUNCTIONS[name](ctx)
        except _NoGradient as exc:
            not_run[name] = str(exc)
            continue
        rng = np.random.default_rng(seed)
        scores, nulls = [], []
        for image, mark, bits in zip(images, marked, expected, strict=True):
            ctx["target"] = bits
            found = method.detect(edit(mark, rng), len(bits))
            scores.append(float((found == bits).mean()))
            null = method.detect(image if WATERMARK_EDITS[name].removal else edit(image, rng), len(bits))
            nulls.append(float((null == bits).mean()))
            if progress is not None:
                progress()
        threshold = float(np.quantile(nulls, 0.99, method="higher"))
        rows[name] = {
            "label": WATERMARK_EDITS[name].label,
            "removal": WATERMARK_EDITS[name].removal,
            "bit_accuracy": float(np.mean(scores)),
            "tpr_at_1pct_fpr": float(np.mean(np.asarray(scores) > threshold)),
            "null_threshold": threshold,
        }
    finite = [q for q in quality if np.isfinite(q)]
    clean = [float((method.detect(m, len(b)) == b).mean()) for m, b in zip(marked, expected, strict=True)]
    result = {
        "method": method.name,
        "images": len(images),
        "bits": int(len(expected[0])),
        "psnr_db": float(np.mean(finite)) if finite else None,
        "psnr_min_db": float(np.min(finite)) if finite else None,
        "edits": rows,
        "not_run": not_run,
        "clean_bit_accuracy": float(np.mean(clean)),
    }
    return result, marked
