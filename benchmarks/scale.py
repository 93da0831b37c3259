"""Scale (issue 21): PGD-40 on a CIFAR ResNet-18 beside the peers, reference-model training, memory.

Three sections, each printed as a Markdown table of ratios:

* **pgd**: PGD-40 (L-inf, eps 8/255, step 2/255, one random start) on one batch of
  ``builtin:synthetic-cifar`` images and the CIFAR-style ResNet-18: dlsec vs torchattacks vs ART
  on the same model object, inputs and budget, timed round-robin so background load hits all
  alike; robust accuracies; and dlsec's overhead over 40 bare forward-and-backward passes to
  the input (the floor of any PGD). Width 64 is ``zoo:cifar-resnet18`` (trained on first use,
  several minutes on 2 CPU cores); another ``--width`` keeps the ResNet-18 topology at a
  fraction of the compute, trained here for two epochs on 512 of the zoo's training rows. The
  batch is the first rows of the zoo's test split. Times are this process's CPU seconds
  (waiting for a core on a shared machine is not counted; wall times are shown beside them).
* **lira**: training ``N`` ResNet-18 reference models for one epoch each (what LiRA needs),
  with dlsec's training loop (``dlsec.core.loop.fit``) vs a plain PyTorch loop (same
  initialisation, optimiser and batch size; each run after an untimed warm-up), interleaved;
  the ratio of examples per CPU second.
* **memory**: the peak resident memory (``ru_maxrss``, one fresh subprocess per size) of the
  attack engine running PGD over 1,000 vs 10,000 CIFAR-sized examples; the target is at most 2x.
  The inputs and the adversarial outputs are 12 KiB per example each and must exist; everything
  else streams in batches.

    python benchmarks/scale.py --quick           # ResNet-18 at width 8, small batches (minutes)
    python benchmarks/scale.py                   # the real ResNet-18, batch 64 (long on a CPU)
    python benchmarks/scale.py --only memory     # one section

Peers come from the ``bench`` extra (``make bench-setup``); a missing peer is reported as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from dlsec.attacks import PGD
from dlsec.core import WhiteBoxModel, load_dataset, load_model
from dlsec.core.arch import build_architecture
from dlsec.core.loop import fit
from dlsec.core.synthetic import synthetic_cifar
from dlsec.core.trainconfig import TrainConfig

console = Console(stderr=True)
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 40


# --------------------------------------------------------------------------- PGD


def resnet(width: int) -> WhiteBoxModel:
    """``zoo:cifar-resnet18`` at width 64; otherwise the same topology trained here for two epochs."""
    if width == 64:
        model = load_model("zoo:cifar-resnet18", device="cpu")
        assert isinstance(model, WhiteBoxModel)
        return model
    torch.manual_seed(0)
    module = build_architecture("resnet18", {"num_classes": 10, "width": width})
    train, _ = load_dataset("builtin:synthetic-cifar").split(test_size=0.25, seed=0)  # the zoo's split
    x, y = torch.from_numpy(train.x[:512]), torch.from_numpy(train.y[:512])
    for epoch in range(2):
        plain_loop(module, x, y, 64, 2e-3, epoch)
    return WhiteBoxModel(module.eval(), train.spec, device="cpu")


class Clock:
    """Wall time and this process's CPU time of a block. On a machine shared with other jobs the
    CPU time is the steadier measure (waiting for a core is not counted): ratios use it."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def fwd_bwd(model: WhiteBoxModel, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """The floor for PGD: ``steps`` forward-and-backward passes to the input, nothing else."""
    xx = x.clone()
    for _ in range(steps):
        xx.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xx), y)
        (grad,) = torch.autograd.grad(loss, xx)
        xx = xx.detach()
    return xx


SCORED = "torchattacks + its user's scoring (clean and adversarial predictions)"


def scored(model: WhiteBoxModel, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """What dlsec's attack contract also computes: the clean and the adversarial predictions."""
    model.predict(x), model.predict(adv)
    return adv


def peers(model: WhiteBoxModel, batch: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any] | str]:
    out: dict[str, Callable[[torch.Tensor, torch.Tensor], Any] | str] = {}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        out["torchattacks"] = lambda x, y: ta(x, y)
    except ImportError as exc:
        out["torchattacks"] = f"not installed ({exc})"
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=model.spec.shape,
            nb_classes=model.spec.num_classes,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        art_pgd = ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=EPS,
            eps_step=ALPHA,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=batch,
            verbose=False,
        )
        out["ART"] = lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    except ImportError as exc:
        out["ART"] = f"not installed ({exc})"
    return out


def bench_pgd(width: int, batch: int, repeats: int, progress: Progress) -> list[dict[str, Any]]:
    model = resnet(width)
    _, test = load_dataset("builtin:synthetic-cifar").split(test_size=0.25, seed=0)
    x, y = torch.from_numpy(test.x[:batch]), torch.from_numpy(test.y[:batch])
    ours = PGD(eps=EPS, steps=STEPS, step_size=ALPHA, random_start=True, seed=0, batch_size=batch)
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "dlsec": lambda: ours(model, x, y).x_adv,
        "40 x forward+backward": lambda: fwd_bwd(model, x, y, STEPS),
    }
    missing = {}
    for tool, peer in peers(model, batch).items():
        if isinstance(peer, str):
            missing[tool] = peer
        else:
            fns[tool] = lambda peer=peer: peer(x, y)  # type: ignore[misc]
    if "torchattacks" in fns:
        # The same work as dlsec's call: torchattacks returns images only, so a user who wants the
        # robust accuracy (and which examples were correct to begin with) predicts on both.
        fns[SCORED] = lambda: scored(model, x, fns["torchattacks"]())
    task = progress.add_task(f"PGD-40, ResNet-18 width {width}, batch {batch}", total=repeats * len(fns))
    fwd_bwd(model, x, y, 2)  # warm-up, untimed: the first calls of a process pay for kernel set-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    walls: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, torch.Tensor] = {}
    names = list(fns)
    for rep in range(repeats):
        # Taken in turn, each repeat starting one tool later: no tool always runs first or last.
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            call = fns[name]
            torch.manual_seed(0)
            with Clock() as clock:
                results[name] = call()
            times[name].append(clock.cpu)
            walls[name].append(clock.wall)
            progress.advance(task)
    base = statistics.median(times["dlsec"])
    floor = statistics.median(times["40 x forward+backward"])
    rows = []
    for name, ts in times.items():
        row: dict[str, Any] = {
            "tool": name,
            "seconds": statistics.median(ts),
            "wall_seconds": statistics.median(walls[name]),
            "per_dlsec": statistics.median(ts) / base,
        }
        if name != "40 x forward+backward":
            adv = results[name]
            row["robust_accuracy"] = float((model.predict(adv) == y).float().mean())
            row["max_linf"] = float((adv - x).abs().max())
        rows.append(row)
    rows.append({"tool": "dlsec overhead (dlsec / 40 x fwd+bwd)", "ratio": base / floor})
    rows += [{"tool": k, "missing": v} for k, v in missing.items()]
    clean = float((model.predict(x) == y).float().mean())
    return [{"width": width, "batch": batch, "repeats": repeats, "clean_accuracy": clean, **r} for r in rows]


# --------------------------------------------------------------------------- LiRA reference models


def plain_loop(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float, seed: int) -> None:
    """One epoch the way a PyTorch user writes it."""
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for idx in torch.randperm(len(x), generator=gen).split(batch):
        loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bench_lira(n_models: int, width: int, rows_per_model: int, progress: Progress) -> list[dict[str, Any]]:
    data = synthetic_cifar(n=rows_per_model, seed=21)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-3)
    task = progress.add_task(f"LiRA: {n_models} ResNet-18 (width {width}), 1 epoch", total=2 * n_models)
    warm = build_architecture("resnet18", {"num_classes": 10, "width": width})
    plain_loop(warm, x[:64], y[:64], config.batch_size, config.lr, 0)  # warm-up, untimed
    spent = {"dlsec": 0.0, "plain": 0.0}
    for i in range(n_models):
        for tool in ("dlsec", "plain") if i % 2 == 0 else ("plain", "dlsec"):
            torch.manual_seed(i)
            module = build_architecture("resnet18", {"num_classes": 10, "width": width})
            with Clock() as clock:
                if tool == "dlsec":
                    fit(
                        WhiteBoxModel(module, data.spec, device="cpu"),
                        data,
                        dataclasses.replace(config, seed=i),
                    )
                else:
                    plain_loop(module, x, y, config.batch_size, config.lr, i)
            spent[tool] += clock.cpu
            progress.advance(task)
    seen = n_models * rows_per_model
    return [
        {
            "models": n_models,
            "width": width,
            "rows": rows_per_model,
            "dlsec_examples_per_s": seen / spent["dlsec"],
            "plain_examples_per_s": seen / spent["plain"],
            "throughput_ratio": spent["plain"] / spent["dlsec"],
        }
    ]


# --------------------------------------------------------------------------- memory


def memory_child(n: int, arch: str, batch: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS before and after attacking ``n`` examples."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if arch == "cnn":
        module = build_architecture("cnn", {"in_channels": 3, "image_size": 32, "width": 16, "hidden": 64})
    else:
        module = build_architecture("resnet18", {"num_classes": 10})
    data = synthetic_cifar(n=n, seed=3)
    model = WhiteBoxModel(module.eval(), data.spec, device="cpu")
    model(torch.from_numpy(data.x[:2]))  # warm the allocator and kernels before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = PGD(eps=EPS, steps=2, step_size=ALPHA, seed=0, batch_size=batch)(model, data.x, data.y)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n": n,
        "arch": arch,
        "batch": batch,
        "before_mib": before,
        "peak_mib": after,
        "robust_accuracy": result.robust_accuracy,
    }


def bench_memory(sizes: list[int], arch: str, batch: int, progress: Progress) -> list[dict[str, Any]]:
    task = progress.add_task(
        f"memory: PGD over {' vs '.join(map(str, sizes))} examples ({arch})", total=len(sizes)
    )
    rows = []
    for n in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            str(n),
            "--memory-arch",
            arch,
            "--batch",
            str(batch),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
        if out.returncode != 0:
            rows.append({"n": n, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        progress.advance(task)
    return rows


# --------------------------------------------------------------------------- report


def tables(pgd: list[dict[str, Any]], lira: list[dict[str, Any]], memory: list[dict[str, Any]]) -> str:
    out = []
    if pgd:
        p = pgd[0]
        out += [
            f"PGD-40, L-inf 8/255, ResNet-18 width {p['width']}, batch {p['batch']}, "
            f"median of {p['repeats']} (clean accuracy {p['clean_accuracy']:.2f})",
            "",
            "| tool | CPU time (s) | wall (s) | CPU time / dlsec's | robust acc. | max L-inf |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in pgd:
            if "missing" in r:
                out.append(f"| {r['tool']} | {r['missing']} | | | | |")
            elif "ratio" in r:
                out.append(f"| {r['tool']} | | | {r['ratio']:.2f} | | |")
            else:
                ra = f"{r['robust_accuracy']:.3f}" if "robust_accuracy" in r else ""
                ml = f"{r['max_linf'] * 255:.2f}/255" if "max_linf" in r else ""
                times = f"{r['seconds']:.2f} | {r['wall_seconds']:.2f} | {r['per_dlsec']:.2f}"
                out.append(f"| {r['tool']} | {times} | {ra} | {ml} |")
        out.append("")
    for r in lira:
        out += [
            f"LiRA reference models: {r['models']} ResNet-18 (width {r['width']}), "
            f"1 epoch on {r['rows']} rows each",
            "",
            "| loop | examples per CPU second | dlsec / plain |",
            "|---|---:|---:|",
            f"| dlsec (core.loop.fit) | {r['dlsec_examples_per_s']:.1f} | {r['throughput_ratio']:.2f} |",
            f"| plain PyTorch | {r['plain_examples_per_s']:.1f} | 1.00 |",
            "",
        ]
    if memory:
        out += [
            "| examples | peak RSS (MiB) | before the attack (MiB) | peak / smallest |",
            "|---:|---:|---:|---:|",
        ]
        ok = [r for r in memory if "peak_mib" in r]
        first = ok[0]["peak_mib"] if ok else float("nan")
        for r in memory:
            if "error" in r:
                out.append(f"| {r['n']} | failed: {r['error'][:60]} | | |")
            else:
                out.append(
                    f"| {r['n']:,} | {r['peak_mib']:.0f} | {r['before_mib']:.0f} | "
                    f"{r['peak_mib'] / first:.2f} |"
                )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at width 8, small batches")
    parser.add_argument("--only", choices=["pgd", "lira", "memory"], action="append")
    parser.add_argument("--width", type=int, help="ResNet-18 width for pgd and lira (64 = the real one)")
    parser.add_argument("--batch", type=int, help="PGD batch size")
    parser.add_argument("--repeats", type=int, help="PGD runs per tool, taken in turn (median reported)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-arch", default="cnn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_arch, args.batch or 256)))
        return 0
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    sections = set(args.only or ["pgd", "lira", "memory"])
    width = args.width or (8 if args.quick else 64)
    batch = args.batch or (16 if args.quick else 64)
    pgd: list[dict[str, Any]] = []
    lira: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        if "pgd" in sections:
            pgd = bench_pgd(width, batch, repeats=args.repeats or (2 if args.quick else 3), progress=progress)
        if "lira" in sections:
            lira = bench_lira(4 if args.quick else 16, width, 256 if args.quick else 900, progress)
        if "memory" in sections:
            memory = bench_memory(
                [1000, 10000], "cnn" if args.quick else "resnet18", 256 if args.quick else 64, progress
            )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(tables(pgd, lira, memory))
    if args.json:
        json.dump({"pgd": pgd, "lira": lira, "memory": memory}, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
