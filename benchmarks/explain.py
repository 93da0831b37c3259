"""dlsec's ``explain`` against calling Captum directly, on the same model, batch and targets.

For Integrated Gradients, saliency and Grad-CAM on ``zoo:digits-cnn`` (trained on first use),
each repeat times Captum's own call and dlsec's ``explain`` back to back, alternating which
goes first, and reports the medians and their ratio (target: at most 1.1x). Both get the same
targets (the predicted classes, computed once beforehand), so the ratio is dlsec's own work:
checking the inputs, targets and baseline, seeding, and building the ``Explanation``. The
attributions of the two are checked to be equal before timing.

Then the attribution-based adversarial-input detector (``dlsec.monitor.AttributionDetector``)
beside feature squeezing and Mahalanobis: fitted on 600 clean training rows, AUROC and the
detection rate at the calibrated threshold on PGD (L-inf 0.1, the rows it fooled) against 200
clean test rows; and the explanation attack's top-k intersection against random noise of the
same size. Last, trigger localisation (``dlsec.defend.localise``): on digits CNNs trained on the
built-in BadNets and blend poisonings, the IoU between the region each method finds on triggered
test inputs and the true trigger (BadNets: the 3x3 patch; blend: the blend covers every pixel,
so its "trigger" is the 10% of pixels it moves most on average).

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


def detection() -> list[dict[str, Any]]:
    """AUROC of the per-example detectors on PGD inputs against clean ones (digits CNN)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from dlsec.attacks import get_attack
    from dlsec.monitor import AttributionDetector, FeatureSqueezing, Mahalanobis

    model = load_zoo_model("digits-cnn", device="cpu")
    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    x, y = torch.from_numpy(test.x[:200]), torch.from_numpy(test.y[:200])
    print("  PGD L-inf 0.1 on 200 test rows", flush=True)
    adv = get_attack("pgd", eps=0.1, norm="linf", seed=0)(model, x, y)
    fooled = (adv.success & adv.clean_correct).numpy()
    x_adv, clean = adv.x_adv.numpy()[fooled], test.x[200:400]
    rows = []
    detectors = {
        "attribution (saliency)": AttributionDetector(model=model),
        "attribution (ig)": AttributionDetector(model=model, method="ig"),
        "feature squeezing": FeatureSqueezing(model=model),
        "mahalanobis": Mahalanobis(model=model),
    }
    for name, det in detectors.items():
        print(f"  fitting and scoring {name}", flush=True)
        start = time.perf_counter()
        det.fit(train.x[:600])
        s_clean, s_adv = det.score_samples(clean), det.score_samples(x_adv)
        seconds = time.perf_counter() - start
        labels = np.r_[np.zeros(len(s_clean)), np.ones(len(s_adv))]
        rows.append(
            {
                "detector": name,
                "auroc": float(roc_auc_score(labels, np.r_[s_clean, s_adv])),
                "tpr": float((s_adv > det.threshold_).mean()),
                "fpr": float((s_clean > det.threshold_).mean()),
                "adversarial": int(len(s_adv)),
                "seconds": seconds,
            }
        )
    return rows


def fragility() -> list[dict[str, Any]]:
    """The explanation attack's top-k intersection against random sign noise of the same size."""
    from dlsec.explain import attack_explanation

    model = load_zoo_model("digits-cnn", device="cpu")
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    x = torch.from_numpy(test.x[:32])
    rows = []
    for eps in (0.05, 0.1, 0.2):
        print(f"  explanation attack at L-inf {eps}", flush=True)
        result = attack_explanation(model, x, eps=eps, steps=30)
        noise = eps * torch.sign(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5)
        noisy = (x + noise).clamp(0, 1)
        rows.append(
            {
                "eps": eps,
                "attack": float(result.topk_intersection.mean()),
                "noise": float(result.intersection_under(model, noisy).mean()),
                "kept": float(result.prediction_kept.float().mean()),
                "k": result.k,
            }
        )
    return rows


def localisation() -> list[dict[str, Any]]:
    """IoU of the located region with the true trigger, per method, on BadNets and blend victims."""
    import numpy as np

    from dlsec.attacks.backdoor import BadNets, Blended
    from dlsec.attacks.poisoning import train_victim
    from dlsec.defend.localise import localise_trigger

    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    methods: dict[str, dict[str, Any]] = {
        "occlusion 2x2": {"method": "occlusion", "window": 2},
        "occlusion 3x3": {"method": "occlusion", "window": 3},
        "integrated gradients": {"method": "ig"},
        "saliency": {"method": "saliency"},
        "gradient shap": {"method": "gradient-shap"},
    }
    rows = []
    for name, attack in (
        ("badnets", BadNets(rate=0.1, target=0, seed=0)),
        ("blend", Blended(rate=0.1, target=0, seed=0)),
    ):
        print(f"  training a digits CNN on the {name} poisoning", flush=True)
        poisoned = attack.poison(train)
        model = train_victim(poisoned.data, epochs=30, seed=0, device="cpu")
        trigger = attack.trigger(test)
        clean = test.x[test.y != 0][:64]
        x = trigger.apply(clean)
        x = x[model.predict(torch.from_numpy(x)).numpy() == 0]
        if name == "badnets":
            mask, _ = trigger.mask_and_pattern()
            truth = np.asarray(mask).max(0) > 0
        else:
            moved = np.abs(trigger.apply(clean) - clean).sum(1).mean(0)
            truth = np.zeros(moved.size, dtype=bool)
            truth[np.argsort(-moved.ravel())[: moved.size // 10]] = True
            truth = truth.reshape(moved.shape)
        for label, params in methods.items():
            region = localise_trigger(model, x, 0, reference=truth, **params)
            rows.append(
                {
                    "poisoning": name,
                    "method": label,
                    "iou": float(region.reference_iou or 0.0),
                    "per_input": float(region.per_example_iou(truth).mean()),
                    "n": len(x),
                }
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
    print("\nadversarial-input detectors (digits CNN, PGD L-inf 0.1)", flush=True)
    det_rows = detection()
    print()
    print("| detector | AUROC | detected at the threshold | clean flagged (target 5%) | seconds |")
    print("|---|---:|---:|---:|---:|")
    for row in det_rows:
        print(
            f"| {row['detector']} | {row['auroc']:.3f} | {row['tpr']:.1%} of {row['adversarial']} "
            f"| {row['fpr']:.1%} | {row['seconds']:.1f} |"
        )
    print("\nexplanation attack (saliency, 32 rows, 30 steps)", flush=True)
    frag = fragility()
    print()
    print("| L-inf eps | top-k kept under the attack | under random noise | predictions kept |")
    print("|---:|---:|---:|---:|")
    for row in frag:
        print(f"| {row['eps']} | {row['attack']:.2f} | {row['noise']:.2f} | {row['kept']:.0%} |")
    print("\ntrigger localisation (digits CNN victims)", flush=True)
    loc = localisation()
    print()
    print("| poisoning | method | IoU of the mean region | mean IoU per input | triggered inputs |")
    print("|---|---|---:|---:|---:|")
    for row in loc:
        print(
            f"| {row['poisoning']} | {row['method']} | {row['iou']:.2f} "
            f"| {row['per_input']:.2f} | {row['n']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
