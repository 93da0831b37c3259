"""Reference models for membership inference as Ray tasks: throughput against workers.

The assessment trains LiRA's and RMIA's reference models in groups (one vectorised program per
group, :class:`dlsec.attacks.privacy.ShadowTrainer`); on Ray each group is a task. This trains
the same models (``--models``, one group of ``--group`` models per task, the CNN on
``builtin:digits``) on a local Ray with 1, 2, ... workers (``--workers``), each a fresh Ray whose
start and the workers' first imports are timed apart (a warm-up task per worker), then in this
process with one thread, and checks that every run gives the same models (each is seeded by its
index). It prints the throughput in models per second, the speed-up over one worker and the
efficiency per worker (speed-up / workers): linear scaling is an efficiency of 1.

A machine has as many useful workers as free cores: on 2 cores the curve stops at 2.

    python benchmarks/scale_refs.py                     # 8 models, groups of 1, 1 and 2 workers
    python benchmarks/scale_refs.py --models 16 --group 2 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console

from dlsec.assess import RayEngine
from dlsec.attacks.privacy import ShadowTrainer, half_inclusion
from dlsec.core import load_dataset
from dlsec.core.trainconfig import TrainConfig

console = Console(stderr=True)
ARCH_KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 32, "hidden": 128}


def warm(_: int) -> int:
    """A worker's first task: it imports torch and dlsec, as the first real task would."""
    import dlsec.attacks.privacy  # noqa: F401

    time.sleep(1.0)  # held long enough that each warm-up task goes to a worker of its own
    return torch.get_num_threads()


def trainer(group: int, epochs: int, runner: Any) -> ShadowTrainer:
    config = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3)
    return ShadowTrainer(
        arch="cnn", arch_kwargs=ARCH_KWARGS, config=config, group_size=group, device="cpu", runner=runner
    )


def run(n_models: int, group: int, epochs: int, workers: int | None) -> dict[str, Any]:
    """Train the models on ``workers`` Ray workers (``None``: in this process, one thread)."""
    data = load_dataset("builtin:digits")
    inclusion = half_inclusion(n_models, len(data), seed=0)
    engine = None
    start = 0.0
    if workers is not None:
        engine = RayEngine(workers=workers)
        t0 = time.perf_counter()
        list(engine.starmap(warm, (), [(i,) for i in range(workers)]))
        start = time.perf_counter() - t0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        refs = trainer(group, epochs, engine.starmap if engine else None).train(data, inclusion)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
        if engine is not None:
            engine.shutdown()
    logits = refs.logits(data.x[:64]).numpy()
    return {"workers": workers, "seconds": seconds, "start": start, "logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--group", type=int, default=1, help="models per group (per Ray task)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    runs = []
    with console.status("") as status:
        status.update(f"{args.models} reference models in this process, one thread")
        runs.append(run(args.models, args.group, args.epochs, None))
        for k in counts:
            status.update(f"{args.models} reference models on a local Ray with {k} worker(s)")
            runs.append(run(args.models, args.group, args.epochs, k))
    local = runs[0]
    for r in runs[1:]:
        if not np.array_equal(r["logits"], local["logits"]):
            raise SystemExit(f"the models trained on {r['workers']} Ray workers differ from the local ones")
    one = next((r for r in runs[1:] if r["workers"] == 1), None)
    print(
        f"{args.models} CNNs on builtin:digits (1,797 rows, half each), {args.epochs} epochs, groups of "
        f"{args.group}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        "every run's models equal the local run's"
    )
    print()
    print(
        "| engine | workers | seconds | models / s | speed-up over 1 worker | efficiency per worker "
        "| Ray start (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        rate = args.models / r["seconds"]
        if r["workers"] is None:
            print(f"| this process, 1 thread | | {r['seconds']:.1f} | {rate:.2f} | | | |")
            continue
        speed = one["seconds"] / r["seconds"] if one else float("nan")
        print(
            f"| Ray | {r['workers']} | {r['seconds']:.1f} | {rate:.2f} | {speed:.2f}x | "
            f"{speed / r['workers']:.2f} | {r['start']:.1f} |"
        )


if __name__ == "__main__":
    main()
