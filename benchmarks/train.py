"""Hardened training on ``builtin:digits``: adversarial training and DP-SGD, in one run.

Prints Markdown tables:

1. ``standard`` against ``pgd-at`` at L-inf 0.1 and 0.2 (and ``trades``, ``fast-at`` at 0.1):
   clean accuracy on the test split and AutoAttack (standard version) robust accuracy on it,
   at the budget each model trained for and at both budgets, never the training attack.
2. ``dp-sgd`` at epsilon 1 and 8 (delta 1e-5): test accuracy (seed 0, and the mean and minimum
   over five seeds), the epsilon spent by the PRV accountant (RDP beside it), and the time per
   epoch against the non-private recipe on the same model, batch size and schedule.
3. Opacus' grad-sample modes: time per epoch of each on dlsec's linear model and default CNN.

    python benchmarks/train.py            # everything (about 15 minutes on 2 shared CPU cores)
    python benchmarks/train.py --quick    # fewer epochs, 200 AutoAttack rows, one DP seed
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from dlsec.core import load_dataset
from dlsec.train import PGDAT, TRADES, FastAT, Standard, TrainConfig, TrainedModel, robust_accuracy, train
from dlsec.train._dp import DPSGD

DELTA = 1e-5
# DP hyperparameters chosen on seeds 0-4 (see the README): a linear model, plain SGD with a
# cosine schedule, clipping norm 1. Small epsilon wants fewer, smaller steps; large epsilon
# affords more epochs over bigger batches.
DP_SETTINGS: dict[float, dict[str, Any]] = {
    1.0: {"batch_size": 256, "epochs": 20, "lr": 2.0},
    8.0: {"batch_size": 512, "epochs": 100, "lr": 4.0},
}


def _median_epoch(model: TrainedModel) -> float:
    return statistics.median(h["seconds"] for h in model.history)


def adversarial(quick: bool) -> list[dict[str, Any]]:
    data = load_dataset("builtin:digits")
    _, test = data.split(test_size=0.25, seed=0)
    n = 200 if quick else len(test)
    epochs = 10 if quick else 30
    config = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=0)
    runs: list[tuple[str, Any]] = [
        ("standard", Standard()),
        ("pgd-at eps 0.1", PGDAT(eps=0.1, steps=10)),
        ("pgd-at eps 0.2", PGDAT(eps=0.2, steps=10)),
        ("trades eps 0.1 (beta 6)", TRADES(eps=0.1, steps=10, beta=6.0)),
        ("fast-at eps 0.1", FastAT(eps=0.1)),
    ]
    rows = []
    for label, recipe in runs:
        started = time.perf_counter()
        trained = train(data, recipe=recipe, config=config, device="cpu", robust_n=0)
        train_s = time.perf_counter() - started
        row: dict[str, Any] = {
            "model": label,
            "clean": trained.metrics["clean_accuracy"],
            "train_s": train_s,
            "stopped": trained.training.get("stopped"),
        }
        started = time.perf_counter()
        for eps in (0.1, 0.2):
            result = robust_accuracy(trained.model, test, eps=eps, norm="linf", n=n, seed=0)
            row[f"aa {eps}"] = result["robust_accuracy"]
        row["aa_s"] = time.perf_counter() - started
        row["n"] = n
        rows.append(row)
        print(
            f"  {label}: clean {row['clean']:.4f}, AutoAttack {row['aa 0.1']:.4f} / {row['aa 0.2']:.4f} "
            f"(train {train_s:.0f} s, AutoAttack {row['aa_s']:.0f} s)",
            file=sys.stderr,
        )
    return rows


def private(quick: bool) -> list[dict[str, Any]]:
    data = load_dataset("builtin:digits")
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    rows = []
    for epsilon, settings in DP_SETTINGS.items():
        config = TrainConfig(optimizer="sgd", lr_schedule="cosine", seed=0, **settings)
        recipe = DPSGD(epsilon=epsilon, delta=DELTA, max_grad_norm=1.0)
        accuracies, runs = [], []
        for seed in seeds:
            run = train(data, recipe=recipe, config=replace(config, seed=seed), device="cpu")
            accuracies.append(run.metrics["clean_accuracy"])
            runs.append(run)
        first = runs[0]
        # The same model (the DP recipe's default: linear), optimiser, batch size and schedule.
        plain = train(
            data,
            recipe=Standard(),
            arch=first.arch,
            arch_kwargs=first.arch_kwargs,
            config=config,
            device="cpu",
        )
        privacy = first.privacy or {}
        rows.append(
            {
                "epsilon": epsilon,
                "accuracy": accuracies[0],
                "mean": statistics.mean(accuracies),
                "min": min(accuracies),
                "seeds": len(seeds),
                "spent": privacy["epsilon_spent"],
                "rdp": privacy["epsilon_rdp"],
                "sigma": privacy["noise_multiplier"],
                "steps": privacy["steps"],
                "mode": privacy["grad_sample_mode"],
                "plain_accuracy": plain.metrics["clean_accuracy"],
                "dp_epoch_ms": 1000 * statistics.median(_median_epoch(r) for r in runs),
                "plain_epoch_ms": 1000 * _median_epoch(plain),
                **settings,
            }
        )
        print(f"  dp-sgd eps {epsilon:g}: accuracy {accuracies}", file=sys.stderr)
    return rows


def modes(quick: bool) -> list[dict[str, Any]]:
    data = load_dataset("builtin:digits")
    models = {
        "linear (dp-sgd default)": ("mlp", {"hidden": []}),
        "cnn (dlsec default, 0.15M params)": ("cnn", {"in_channels": 1, "num_classes": 10, "image_size": 8}),
    }
    epochs = 3 if quick else 5
    rows = []
    for label, (arch, kwargs) in models.items():
        config = TrainConfig(optimizer="sgd", lr=0.5, batch_size=256, epochs=epochs, seed=0)
        plain = train(data, recipe=Standard(), arch=arch, arch_kwargs=kwargs, config=config, device="cpu")
        row: dict[str, Any] = {"model": label, "plain": 1000 * _median_epoch(plain)}
        for mode in ("hooks", "ew", "functorch", "ghost"):
            recipe = DPSGD(epsilon=8.0, grad_sample_mode=mode)
            run = train(data, recipe=recipe, arch=arch, arch_kwargs=kwargs, config=config, device="cpu")
            row[mode] = 1000 * _median_epoch(run)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and rows, one DP seed")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the DP recipe's note on its RNG, once per run
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)

    adv = adversarial(args.quick)
    epochs = 10 if args.quick else 30
    print(
        f"\n### Adversarial training (builtin:digits, default CNN, {epochs} epochs, AdamW 1e-3, batch 64)\n"
    )
    n = adv[0]["n"]
    print("| model | clean acc. | AutoAttack L-inf 0.1 | AutoAttack L-inf 0.2 |")
    print("|---|---:|---:|---:|")
    for r in adv:
        note = " (guard stopped it)" if r["stopped"] else ""
        print(f"| {r['model']}{note} | {r['clean']:.4f} | {r['aa 0.1']:.4f} | {r['aa 0.2']:.4f} |")
    print(f"\nClean accuracy on the 450-row test split; AutoAttack (standard version) on its first {n} rows.")

    # DP timings single-threaded: on a shared 2-core machine they are steadier that way.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dp = private(args.quick)
    print(f"\n### DP-SGD (builtin:digits, delta {DELTA:g}, linear model, SGD + cosine schedule, clip 1)\n")
    print("Epoch times are medians over epochs and seeds, single-threaded, training steps only.\n")
    print(
        "| epsilon | batch | epochs | lr | noise mult. | steps | test acc. (seed 0) | "
        "mean / min over seeds | epsilon spent (PRV) | RDP would say | non-private acc. | "
        "epoch ms DP / plain | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in dp:
        print(
            f"| {r['epsilon']:g} | {r['batch_size']} | {r['epochs']} | {r['lr']:g} | {r['sigma']:.3f} | "
            f"{r['steps']} | {r['accuracy']:.4f} | {r['mean']:.4f} / {r['min']:.4f} ({r['seeds']}) | "
            f"{r['spent']:.3f} | {r['rdp']:.3f} | {r['plain_accuracy']:.4f} | "
            f"{r['dp_epoch_ms']:.1f} / {r['plain_epoch_ms']:.1f} | "
            f"{r['dp_epoch_ms'] / r['plain_epoch_ms']:.2f} |"
        )

    table = modes(args.quick)
    torch.set_num_threads(threads)
    print("\n### Opacus grad-sample modes (ms per epoch, builtin:digits, batch 256, 1 thread)\n")
    print("| model | non-private | hooks | ew | functorch | ghost |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table:
        cells = " | ".join(
            f"{r[m]:.1f} ({r[m] / r['plain']:.2f}x)" for m in ("hooks", "ew", "functorch", "ghost")
        )
        print(f"| {r['model']} | {r['plain']:.1f} | {cells} |")
    print(f"\nTotal {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
