"""Federated learning: the attack-by-defence matrix, and each aggregator's cost against FedAvg.

    python benchmarks/federated.py --quick        # 20 clients, 6 rounds: the matrix in minutes
    python benchmarks/federated.py                # the issue's setting: 100 clients, 30 rounds
    python benchmarks/federated.py --cost-only    # only the aggregation cost (100 x 1M parameters)
    python benchmarks/federated.py --dp-only      # DP-FedAvg: accuracy and epsilon, inversion under DP

The matrix runs on builtin:digits (20% malicious, Dirichlet 0.5) with the in-process engine,
which calls the same client and aggregation code as the Flower simulation (the tests check that
both give the same numbers); a matrix of Ray start-ups does not fit a small machine. Each cell
is the final global accuracy and backdoor success rate. The cost section times each rule on 100
random updates of 1M parameters, median of repeats, as a ratio to FedAvg's weighted mean.
Prints Markdown tables; ``--out FILE`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dlsec.federated import AGGREGATORS, ATTACKS, FLConfig, build_aggregator, simulate
from dlsec.fsutil import atomic_write_text

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def matrix(base: FLConfig, attacks: list[str], defences: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    cells: dict[str, dict[str, dict[str, float]]] = {a: {} for a in attacks}
    with _progress() as bar:
        task = bar.add_task("attack x defence", total=len(attacks) * len(defences))
        for attack in attacks:
            for defence in defences:
                bar.update(task, description=f"{attack} vs {defence}")
                config = dataclasses.replace(base, attack=attack, defense=defence)
                start = time.perf_counter()
                result = simulate(config)
                cells[attack][defence] = {
                    "accuracy": result.final_accuracy,
                    "backdoor": result.final_backdoor_success,
                    "seconds": time.perf_counter() - start,
                }
                bar.console.print(
                    f"{attack} vs {defence}: accuracy {result.final_accuracy:.3f}, "
                    f"backdoor {result.final_backdoor_success:.3f}"
                )
                bar.advance(task)
    return cells


def cost(n: int = 100, d: int = 1_000_000, repeats: int = 2, f: float = 0.2) -> dict[str, dict[str, float]]:
    g = torch.Generator().manual_seed(0)
    updates = torch.randn(n, d, generator=g) * 0.01
    reference = updates.mean(0)
    weights = torch.ones(n)
    out: dict[str, dict[str, float]] = {}
    with _progress() as bar:
        task = bar.add_task("aggregation cost", total=len(AGGREGATORS))
        for name in AGGREGATORS:
            bar.update(task, description=f"cost: {name}")
            times = []
            for _ in range(repeats):
                rule = build_aggregator(name, num_clients=n, malicious_fraction=f)
                start = time.perf_counter()
                rule(updates, weights=weights, reference=reference)
                times.append(time.perf_counter() - start)
            out[name] = {"seconds": statistics.median(times)}
            bar.console.print(f"cost {name}: {out[name]['seconds']:.3f} s")
            bar.advance(task)
    base = out["fedavg"]["seconds"]
    for row in out.values():
        row["ratio"] = row["seconds"] / base
    return out


def markdown_matrix(cells: dict[str, dict[str, dict[str, float]]], key: str) -> str:
    defences = list(next(iter(cells.values())))
    lines = ["| attack | " + " | ".join(defences) + " |", "|---|" + "---|" * len(defences)]
    for attack, row in cells.items():
        lines.append(f"| {attack} | " + " | ".join(f"{row[d][key]:.2f}" for d in defences) + " |")
    return "\n".join(lines)


def markdown_cost(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| aggregator | seconds | x FedAvg |", "|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['ratio']:.1f} |")
    return "\n".join(lines)


def dp_section(clients: int, per_round: int, rounds: int, epsilon: float) -> dict[str, Any]:
    """DP-FedAvg on digits at a target epsilon (fixed and adaptive clipping) beside plain FedAvg,
    and the gradient inversion of single-example updates with and without the mechanism's noise."""
    from dlsec.federated import study_inversion

    base = FLConfig(num_clients=clients, clients_per_round=per_round, rounds=rounds, engine="local")
    out: dict[str, Any] = {"config": dataclasses.asdict(base), "target_epsilon": epsilon, "runs": {}}
    for mode in ("none", "fixed", "adaptive"):
        config = dataclasses.replace(base, dp=mode, target_epsilon=None if mode == "none" else epsilon)
        result = simulate(config)
        out["runs"][mode] = {"accuracy": result.final_accuracy, "privacy": result.privacy}
    clear = study_inversion(examples=10, steps=300)
    noisy = study_inversion(examples=10, steps=300, dp_epsilon=epsilon)
    out["inversion"] = {"clear": clear.summary(), "dp": {**noisy.summary(), **(noisy.privacy or {})}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 clients, 6 rounds")
    parser.add_argument("--cost-only", action="store_true", help="only the aggregation cost")
    parser.add_argument("--matrix-only", action="store_true", help="only the attack-by-defence matrix")
    parser.add_argument("--attacks", nargs="*", default=None, help="a subset of the attacks")
    parser.add_argument("--defenses", nargs="*", default=None, help="a subset of the defences")
    parser.add_argument("--clients", type=int, default=None, help="override the number of clients")
    parser.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    parser.add_argument("--dp-only", action="store_true", help="only DP-FedAvg and inversion under DP")
    parser.add_argument("--epsilon", type=float, default=8.0, help="the DP section's target epsilon")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    if args.dp_only:
        torch.set_num_threads(1)
        clients, per_round, rounds = (20, 10, 6) if args.quick else (100, 20, 30)
        clients, rounds = args.clients or clients, args.rounds or rounds
        result = dp_section(clients, per_round, rounds, args.epsilon)
        print(
            f"\n### DP-FedAvg on builtin:digits ({clients} clients, {per_round} a round, {rounds} rounds)\n"
        )
        print("| clipping | final accuracy | noise multiplier | epsilon (delta) |\n|---|---|---|---|")
        for mode, run in result["runs"].items():
            p = run["privacy"]
            eps = f"{p['epsilon']:.2f} ({p['delta']:.2g})" if p else "-"
            z = f"{p['noise_multiplier']:.3f}" if p else "-"
            print(f"| {mode} | {run['accuracy']:.3f} | {z} | {eps} |")
        inv = result["inversion"]
        clear, noisy = inv["clear"]["recognition_rate"], inv["dp"]["recognition_rate"]
        print(
            f"\nInversion (geiping, 10 single-example updates): recognised {clear:.0%} in the clear, "
            f"{noisy:.0%} under DP-FedAvg noise at epsilon {args.epsilon:g} "
            f"(z={inv['dp']['noise_multiplier']:.3f}, one client, one round)\n"
        )
        if args.out is not None:
            atomic_write_text(args.out, json.dumps({"dp": result}, indent=2) + "\n")
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrix: tiny models, one thread each (as the Flower actors)
    report: dict[str, Any] = {}
    if not args.cost_only:
        clients, rounds = (20, 6) if args.quick else (100, 30)
        clients, rounds = args.clients or clients, args.rounds or rounds
        base = FLConfig(
            num_clients=clients,
            malicious_fraction=0.2,
            rounds=rounds,
            partition="dirichlet",
            alpha=0.5,
            lr=0.5,
            engine="local",
        )
        attacks = args.attacks or list(ATTACKS)
        defences = args.defenses or list(AGGREGATORS)
        start = time.perf_counter()
        cells = matrix(base, attacks, defences)
        report["matrix"] = {"config": dataclasses.asdict(base), "cells": cells}
        print(
            f"\n### Attack x defence on builtin:digits ({clients} clients, 20% malicious, Dirichlet 0.5, "
            f"{rounds} rounds; {time.perf_counter() - start:.0f} s)\n"
        )
        print("Final global accuracy:\n\n" + markdown_matrix(cells, "accuracy") + "\n")
        print("Backdoor success rate (triggered non-target test inputs classified as the target):\n")
        print(markdown_matrix(cells, "backdoor") + "\n")
    if not args.matrix_only:
        torch.set_num_threads(threads)
        rows = cost()
        report["cost"] = rows
        print(f"\n### Aggregation cost: 100 clients x 1M parameters, {torch.get_num_threads()} thread(s)\n")
        print(markdown_cost(rows) + "\n")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
