"""The learned watermark against DWT-DCT, and the synthetic-image detector on a seen and an unseen generator.

**Watermarks.** Images: samples of ``zoo-gan`` (seed 7), the 8x8 digits upscaled to 256x256 RGB
(what ``dlsec gen sample`` writes). Each image gets a random 32-bit message (the learned
watermark's capacity; DWT-DCT carries the same 32 bits). For each edit, bit accuracy is the mean
over the watermarked images; detection scores an image by the bit accuracy of what it reads
against the expected message, the threshold is the 99th percentile of the same score on the
unwatermarked images under the same edit (each against the message its twin carries), and the
TPR is the fraction of watermarked images above it (so 1% FPR is empirical: with few images in
--quick mode, the threshold is the null's maximum). An edit that changes the size is followed by
a resize back to 256x256 before detection (DWT-DCT needs 256x256; the learned decoder reads any
size). The edits: JPEG at quality 50, 70 and 90 (Pillow), a resize to 128x128 (bilinear), a
random crop keeping 90% of each side, Gaussian noise (sigma 10/255), a Gaussian blur (radius 2),
and two removal attacks:

- **PGD** within an L-inf budget of 4/255 on the 256x256 image: 20 steps of 1/255 that maximise
  the learned decoder's cross-entropy with the true bits over every frame its crop search reads
  (white box, the strongest case).
  DWT-DCT has no gradient; it gets uniform random +-4/255 noise of the same budget, a weaker
  attack, so its column there is an upper bound of its robustness.
- **Regeneration** through ``zoo-vae``: the luminance area-averaged to 8x8, encoded and decoded
  by the VAE (posterior mean), upscaled back to 256x256.

PSNR is measured on the 256x256 uint8 RGB images; throughput is embedding only, one image at a
time, on this machine's CPU (one torch thread).

**Detector.** ``spectrum-gan`` (trained on zoo-gan against the real digits' training split) and
``spectrum-vae`` (the reverse), each tested on the real digits' held-out 25% against 450 fresh
samples of both generators (seed 2000; the detectors trained on seed 1000): AUROC, and the TPR
at 1% FPR with the threshold taken on these real test digits, plus the TPR and FPR at the
threshold the detector ships with (calibrated on its own held-out real digits).

    python benchmarks/generative.py            # 200 images per edit
    python benchmarks/generative.py --quick    # 48 images per edit
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dlsec.generative import (
    LearnedWatermark,
    WatermarkMethod,
    get_watermark,
    load_generator,
    load_synthetic_detector,
    message_bits,
    real_digits,
    to_rgb,
)

SIZE = 256
BITS = 32
EPS = 4 / 255
PGD_STEPS = 20
PGD_STEP = 1 / 255

Edit = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _jpeg(quality: int) -> Edit:
    def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    return edit


def _back(a: np.ndarray) -> np.ndarray:
    """Resize back to SIZE x SIZE when an edit changed the size."""
    if a.shape[:2] == (SIZE, SIZE):
        return a
    return np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def _resize(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _back(np.asarray(Image.fromarray(a).resize((SIZE // 2, SIZE // 2), Image.Resampling.BILINEAR)))


def _crop(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = int(round(SIZE * 0.9))
    top, left = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
    return _back(np.ascontiguousarray(a[top : top + side, left : left + side]))


def _noise(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.round(a + rng.normal(0, 10, a.shape)), 0, 255).astype(np.uint8)


def _blur(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(2)))


def _regenerate(vae: Any) -> Edit:
    def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        luma = torch.from_numpy(a.astype(np.float32) / 255) @ torch.tensor([0.299, 0.587, 0.114])
        small = torch.nn.functional.adaptive_avg_pool2d(luma[None, None], 8)[0].numpy()
        return to_rgb(vae.reconstruct(small)[0], SIZE)

    return edit


def _uniform(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    delta = rng.choice([-EPS, EPS], size=a.shape) * 255
    return np.clip(np.round(a + delta), 0, 255).astype(np.uint8)


def _pgd(wm: LearnedWatermark, bits: np.ndarray) -> Edit:
    """L-inf PGD that pushes the learned decoder away from the true bits (white box)."""

    def edit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = torch.from_numpy(a.astype(np.float32) / 255)
        target = torch.zeros(wm.capacity_bits)
        target[: len(bits)] = torch.from_numpy(bits.astype(np.float32))
        delta = torch.zeros_like(x, requires_grad=True)
        for _ in range(PGD_STEPS):
            logits = wm.logits((x + delta).clamp(0, 1))[:, : len(bits)]  # every frame detection tries
            wanted = target[: len(bits)].expand_as(logits)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, wanted)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += PGD_STEP * grad.sign()
                delta.clamp_(-EPS, EPS)
        out = (x + delta.detach()).clamp(0, 1)
        return np.round(out.numpy() * 255).astype(np.uint8)

    return edit


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def watermarks(n: int, home: Path | None, progress: Progress) -> dict[str, Any]:
    gen = load_generator("zoo-gan", home=home)
    vae = load_generator("zoo-vae", home=home)
    images = [to_rgb(im, SIZE) for im in gen.sample(n, seed=7)]
    rng = np.random.default_rng(0)
    messages = [rng.integers(0, 256, BITS // 8, dtype=np.uint8).tobytes() for _ in range(n)]
    expected = [message_bits(m) for m in messages]
    methods: dict[str, WatermarkMethod] = {
        "learned": get_watermark("learned", home=home),
        "dwtdct": get_watermark("dwtdct"),
    }
    learned = methods["learned"]
    assert isinstance(learned, LearnedWatermark)
    edits: dict[str, Edit] = {
        "none": lambda a, r: a,
        "JPEG 90": _jpeg(90),
        "JPEG 70": _jpeg(70),
        "JPEG 50": _jpeg(50),
        "resize 0.5x": _resize,
        "crop 10%": _crop,
        "noise 10/255": _noise,
        "blur r=2": _blur,
        "PGD 4/255": _uniform,  # replaced per image for the learned watermark (white box)
        "VAE regeneration": _regenerate(vae),
    }
    out: dict[str, Any] = {"n": n, "methods": {}}
    for name, method in methods.items():
        marked: list[np.ndarray] = []
        task = progress.add_task(f"embed {name}", total=n)
        started = time.perf_counter()
        for image, message in zip(images, messages, strict=True):
            marked.append(method.embed(image, message))
            progress.advance(task)
        elapsed = time.perf_counter() - started
        psnr = [_psnr(m, i) for m, i in zip(marked, images, strict=True)]
        rows: dict[str, dict[str, float]] = {}
        task = progress.add_task(f"edits {name}", total=len(edits) * n)
        for edit_name, edit in edits.items():
            edit_rng = np.random.default_rng(1)
            scores, nulls = [], []
            for image, mark, bits in zip(images, marked, expected, strict=True):
                act = edit
                if edit_name.startswith("PGD") and name == "learned":
                    act = _pgd(learned, bits)
                found = method.detect(act(mark, edit_rng), len(bits))
                scores.append(float((found == bits).mean()))
                null = method.detect(edit(image, edit_rng), len(bits))
                nulls.append(float((null == bits).mean()))
                progress.advance(task)
            threshold = float(np.quantile(nulls, 0.99, method="higher"))
            rows[edit_name] = {
                "bit_accuracy": float(np.mean(scores)),
                "tpr_at_1pct_fpr": float(np.mean(np.asarray(scores) > threshold)),
                "null_threshold": threshold,
            }
        out["methods"][name] = {
            "psnr_db": float(np.mean(psnr)),
            "psnr_min_db": float(np.min(psnr)),
            "embed_per_s": n / elapsed,
            "edits": rows,
        }
    return out


def detectors(n: int, home: Path | None, progress: Progress) -> list[dict[str, Any]]:
    from sklearn.metrics import roc_auc_score

    real = real_digits("test")
    fakes = {g: load_generator(g, home=home).sample(n, seed=2000) for g in ("zoo-gan", "zoo-vae")}
    rows = []
    task = progress.add_task("detectors", total=2)
    for name, trained_on in (("spectrum-gan", "zoo-gan"), ("spectrum-vae", "zoo-vae")):
        det = load_synthetic_detector(name, home=home)
        real_scores = det.score(list(real))
        threshold = float(np.quantile(real_scores, 0.99, method="higher"))
        for gen_name, fake in fakes.items():
            fake_scores = det.score(list(fake))
            y = np.r_[np.zeros(len(real_scores)), np.ones(len(fake_scores))]
            rows.append(
                {
                    "detector": name,
                    "tested_on": gen_name,
                    "seen": gen_name == trained_on,
                    "auroc": float(roc_auc_score(y, np.r_[real_scores, fake_scores])),
                    "tpr_at_1pct_fpr": float(np.mean(fake_scores > threshold)),
                    "tpr_shipped": float(np.mean(fake_scores > det.threshold_)),
                    "fpr_shipped": float(np.mean(real_scores > det.threshold_)),
                }
            )
        progress.advance(task)
    return rows


def markdown(wm: dict[str, Any], det: list[dict[str, Any]]) -> str:
    learned, dwt = wm["methods"]["learned"], wm["methods"]["dwtdct"]
    lines = [
        f"Watermarks: {wm['n']} zoo-gan samples at 256x256, 32-bit messages.",
        "",
        "| edit | learned bit acc | DWT-DCT bit acc | learned TPR@1%FPR | DWT-DCT TPR@1%FPR |",
        "|---|---|---|---|---|",
    ]
    for edit, row in learned["edits"].items():
        other = dwt["edits"][edit]
        lines.append(
            f"| {edit} | {row['bit_accuracy']:.3f} | {other['bit_accuracy']:.3f} | "
            f"{row['tpr_at_1pct_fpr']:.2f} | {other['tpr_at_1pct_fpr']:.2f} |"
        )
    lines += [
        "",
        "| | learned | DWT-DCT |",
        "|---|---|---|",
        f"| PSNR (mean / min), dB | {learned['psnr_db']:.1f} / {learned['psnr_min_db']:.1f} | "
        f"{dwt['psnr_db']:.1f} / {dwt['psnr_min_db']:.1f} |",
        f"| embedding, images/s (256x256, CPU) | {learned['embed_per_s']:.0f} | {dwt['embed_per_s']:.0f} |",
        "",
        "| detector | tested on | | AUROC | TPR@1%FPR | TPR / FPR at shipped threshold |",
        "|---|---|---|---|---|---|",
    ]
    for row in det:
        lines.append(
            f"| {row['detector']} | {row['tested_on']} | {'seen' if row['seen'] else 'unseen'} | "
            f"{row['auroc']:.3f} | {row['tpr_at_1pct_fpr']:.2f} | "
            f"{row['tpr_shipped']:.2f} / {row['fpr_shipped']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="48 images per edit instead of 200")
    parser.add_argument("--home", type=Path, default=None, help="dlsec home (cached networks)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = 48 if args.quick else 200
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        wm = watermarks(n, args.home, progress)
        det = detectors(450, args.home, progress)
    print(markdown(wm, det))
    return 0


if __name__ == "__main__":
    sys.exit(main())
