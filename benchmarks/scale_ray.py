"""The assessment's units on Ray against the same assessment in one process.

Runs the default campaign's attacks (FGSM, PGD, APGD-CE, Square; masking checks, corruptions,
certification and explanations off so that the attack units are what is timed) on a zoo model,
first in this process, then as Ray tasks on a local Ray with ``--workers`` CPUs (its start-up
timed apart), with the evaluation set sharded so that every worker has units. The robust-accuracy
curves of the two runs must be equal (the benchmark stops if not); the table gives the wall
times, their ratio (target: Ray with 2 workers at most 0.6x one process on a 2-core machine) and
the efficiency per worker (speed-up / workers).

This machine has 2 cores, so the curve to more workers is **simulated** (``--curve``): every
unit is timed alone on one thread (as a Ray task runs it), and the units are then list-scheduled
in submission order (Ray's FIFO) on ``k`` workers, each unit paying the per-task overhead
measured in the Ray run; the driver's own time (everything in the one-thread run that is not a
unit) stays serial. It assumes one free core per worker and no contention, so it is an upper
bound on what a cluster gives, and says where the serial part caps the speed-up.

    python benchmarks/scale_ray.py                       # zoo:digits-cnn, 400 examples, 2 workers
    python benchmarks/scale_ray.py --quick               # 100 examples
    python benchmarks/scale_ray.py --model zoo:cifar-resnet18 --data builtin:synthetic-cifar
    python benchmarks/scale_ray.py --curve 1,2,4,8,16   # and the simulated scaling curve
"""

from __future__ import annotations

import argparse
import heapq
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlsec.assess import RayEngine, run_assessment
from dlsec.assess._engine import LocalEngine, UnitTask, _unwrap
from dlsec.assess.campaign import Campaign
from dlsec.core import load_dataset, load_model

console = Console(stderr=True)


def campaign(examples: int, shard_size: int, eps: list[float]) -> Campaign:
    return Campaign.model_validate(
        {
            "threat_model": {"access": "white-box", "norms": {"linf": eps}},
            "attacks": ["fgsm", "pgd", "apgd-ce", "square"],
            "attack_params": {"square": {"n_queries": 200}},
            "examples": examples,
            "shard_size": shard_size,
            "masking_checks": False,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            "explain": {"enabled": False},
        }
    )


class TimingEngine(LocalEngine):
    """The local engine, each unit on one thread (as a Ray task runs it) and timed."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def run(self, tasks: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for task in tasks:
                assert isinstance(task, UnitTask)
                started = time.perf_counter()
                result = task.fn(*_unwrap(task.args))
                self.durations.append(time.perf_counter() - started)
                yield task.key, result
        finally:
            torch.set_num_threads(threads)


def makespan(durations: list[float], workers: int, overhead: float) -> float:
    """Wall time of the units list-scheduled in order on ``workers`` (each next unit goes to
    the worker free first), each unit costing ``overhead`` more."""
    free = [0.0] * workers
    for d in durations:
        heapq.heapreplace(free, free[0] + d + overhead)
    return max(free)


def timed_run(model: Any, data: Any, plan: Campaign, engine: Any, label: str) -> tuple[float, dict[str, Any]]:
    out = Path(tempfile.mkdtemp(prefix="dlsec-scale-"))
    try:
        with console.status(f"{label}: assessing") as status:

            def progress(done: int, total: int, _: dict[str, float]) -> None:
                status.update(f"{label}: {done}/{total} units")

            started = time.perf_counter()
            result = run_assessment(
                model, data, plan, out, model_ref="bench", model_sha256="x", progress=progress, engine=engine
            )
            return time.perf_counter() - started, result.report
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:digits-cnn")
    parser.add_argument("--data", default="builtin:digits")
    parser.add_argument("--examples", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eps", default="0.05,0.1", help="L-inf budgets, comma-separated")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--curve", help="simulate the scaling curve to these worker counts, e.g. 1,2,4,8,16")
    args = parser.parse_args()
    examples = args.examples or (100 if args.quick else 400)
    with console.status(f"loading {args.model} (trained on first use)"):
        model = load_model(args.model, device="cpu")
        _, test = load_dataset(args.data).split(test_size=0.25, seed=0)
    plan = campaign(examples, max(1, examples // (2 * args.workers)), [float(e) for e in args.eps.split(",")])
    local_s, local = timed_run(model, test, plan, None, "one process")
    with console.status(f"starting a local Ray with {args.workers} CPUs"):
        started = time.perf_counter()
        engine = RayEngine(workers=args.workers)
        start_s = time.perf_counter() - started
    try:
        ray_s, remote = timed_run(model, test, plan, engine, f"Ray, {args.workers} workers")
    finally:
        engine.shutdown()
    if remote["robustness"]["curves"] != local["robustness"]["curves"]:
        raise SystemExit("the Ray run's robust accuracies differ from the local run's: not comparable")
    units = sum(len(c["attacks"]) * len(c["eps"]) for c in local["robustness"]["curves"].values())
    speedup = local_s / ray_s
    print(f"\n### Assessment units on Ray ({args.model}, {examples} examples, {units} attack units in "
          f"shards of {plan.shard_size})\n")  # fmt: skip
    print("| run | wall s | ratio to one process | efficiency per worker |")
    print("|---|---|---|---|")
    print(f"| one process | {local_s:.1f} | 1.00x | - |")
    label = f"Ray, {args.workers} workers (excluding {start_s:.1f} s start)"
    print(f"| {label} | {ray_s:.1f} | {ray_s / local_s:.2f}x | {speedup / args.workers:.2f} |")
    print(f"| Ray, {args.workers} workers, start included | {ray_s + start_s:.1f} | "
          f"{(ray_s + start_s) / local_s:.2f}x | - |")  # fmt: skip
    print("\nrobust accuracy curves identical: yes")
    if args.curve:
        timing = TimingEngine()
        one_s, timed = timed_run(model, test, plan, timing, "one thread, each unit timed")
        if timed["robustness"]["curves"] != local["robustness"]["curves"]:
            raise SystemExit("the timed run's robust accuracies differ from the local run's: not comparable")
        work = sum(timing.durations)
        serial = max(0.0, one_s - work)
        # What Ray added per task: the overhead that makes the model's time for the measured
        # worker count equal the measured Ray time (bisection; the makespan grows with it).
        low, high = 0.0, ray_s
        for _ in range(40):
            mid = (low + high) / 2
            short = serial + makespan(timing.durations, args.workers, mid) < ray_s
            low, high = (mid, high) if short else (low, mid)
        overhead = low
        base = serial + makespan(timing.durations, 1, overhead)
        n = len(timing.durations)
        print(f"\n### Simulated scaling curve ({n} units, {work:.1f} s of unit work on one thread, "
              f"{serial:.1f} s serial, {overhead * 1000:.0f} ms Ray overhead per unit)\n")  # fmt: skip
        print("| workers | wall s (simulated) | speed-up | efficiency per worker |")
        print("|---|---|---|---|")
        for k in (int(w) for w in args.curve.split(",")):
            wall = serial + makespan(timing.durations, k, overhead)
            print(f"| {k} | {wall:.1f} | {base / wall:.2f}x | {base / wall / k:.2f} |")


if __name__ == "__main__":
    main()
