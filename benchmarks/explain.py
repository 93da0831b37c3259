"""dlsec's ``explain`` against calling Captum directly, on the same model, batch and targets.

For Integrated Gradients, saliency and Grad-CAM on ``zoo:digits-cnn`` (trained on first use),
each repeat times Captum's own call and dlsec's ``explain`` back to back, alternating which
goes first, and reports the medians and their ratio (target: at most 1.1x). Both get the same
targets (the predicted classes, computed once beforehand), so the ratio is dlsec's own work:
checking the inputs, targets and baseline, seeding, and building the ``Explanation``. The
attributions of the two are checked to be equal before timing.

    python benchmarks/explain.py            # batch 64, 30 repeats
    python benchmarks/explain.py --quick    # batch 32, 10 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from dlsec.core import load_dataset
from dlsec.explain import explain
from dlsec.zoo import load_zoo_model


def captum_calls(model: Any, x: torch.Tensor, targets: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Captum called as a user would, with dlsec's defaults (the spec's lower bound, 0, as baseline)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    baseline = torch.zeros_like(x)
    layer = model.module.features[2]  # the last Conv2d

    def ig() -> torch.Tensor:
        return IntegratedGradients(model).attribute(x, baselines=baseline, target=targets, n_steps=50)

    def saliency() -> torch.Tensor:
        return Saliency(model).attribute(x, target=targets, abs=True)

    def gradcam() -> torch.Tensor:
        cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")

    return {"ig": ig, "saliency": saliency, "gradcam": gradcam}


def _time(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench(quick: bool) -> list[dict[str, Any]]:
    batch, repeats = (32, 10) if quick else (64, 30)
    model = load_zoo_model("digits-cnn", device="cpu")
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    x = torch.from_numpy(test.x[:batch])
    targets = model.predict(x)
    rows = []
    for method, captum in captum_calls(model, x, targets).items():

        def dlsec(method: str = method) -> torch.Tensor:
            return explain(model, x, target=targets, method=method).attributions

        torch.testing.assert_close(dlsec(), captum().expand_as(x).detach(), atol=1e-6, rtol=1e-5)
        for _ in range(2):  # warm-up
            captum()
            dlsec()
        times: dict[str, list[float]] = {"captum": [], "dlsec": []}
        for r in range(repeats):
            order = [("captum", captum), ("dlsec", dlsec)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                times[name].append(_time(fn))
            print(
                f"  {method}: repeat {r + 1}/{repeats}: Captum {times['captum'][-1] * 1e3:.1f} ms, "
                f"dlsec {times['dlsec'][-1] * 1e3:.1f} ms",
                flush=True,
            )
        c, d = statistics.median(times["captum"]), statistics.median(times["dlsec"])
        rows.append(
            {"method": method, "batch": batch, "repeats": repeats, "captum": c, "dlsec": d, "ratio": d / c}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batch 32, 10 repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine
    print(f"torch {torch.__version__}, 1 thread, CPU", flush=True)
    rows = bench(args.quick)
    print()
    print("| method | batch | Captum (median) | dlsec `explain` (median) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['method']} | {row['batch']} | {row['captum'] * 1e3:.2f} ms "
            f"| {row['dlsec'] * 1e3:.2f} ms | {row['ratio']:.3f}x |"
        )
    worst = max(row["ratio"] for row in rows)
    print(f"\nworst ratio {worst:.3f}x (target: at most 1.1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
