"""Federated learning: the attack-by-defence matrix, and each aggregator's cost against FedAvg.

    python benchmarks/federated.py --quick        # 20 clients, 6 rounds: the matrix in minutes
    python benchmarks/federated.py                # the issue's setting: 100 clients, 30 rounds
    python benchmarks/federated.py --cost-only    # only the aggregation cost (100 x 1M parameters)
    python benchmarks/federated.py --dp-only      # DP-FedAvg: accuracy and epsilon, inversion under DP
    python benchmarks/federated.py --throughput-only  # dlsec's Flower simulation vs a bare one

The matrix runs on builtin:digits (20% malicious, Dirichlet 0.5) with the in-process engine,
which calls the same client and aggregation code as the Flower simulation (the tests check that
both give the same numbers); a matrix of Ray start-ups does not fit a small machine. Each client
runs 5 local epochs of SGD at batch 4 and learning rate 0.3 (``--local-epochs``,
``--batch-size``, ``--lr``): with these FedAvg without attack reaches 0.95 at the full setting,
where 2 epochs at batch 16 and 0.5 (about 12 examples a client: one step an epoch) stopped at
0.86. Each cell is the final global accuracy and backdoor success rate, with the accuracy drop
from the same defence without attack and the malicious share of the updates the rule kept. The
cost section times each rule on 100 random updates of 1M parameters, median of repeats, as a
ratio to FedAvg's weighted mean. The throughput section runs the same model, data, local SGD and
central evaluation twice through ``flwr.simulation.run_simulation`` on the same Ray backend:
once as dlsec's apps (honest clients, RobustFedAvg with the FedAvg rule, the per-round
measurements) and once as a bare Flower ClientApp/ServerApp with Flower's own FedAvg, and
reports client updates per second for each, with and without the start-up (Ray, actors, data)
before round 1 and over rounds 2..R alone; each run is a fresh process, the order alternating.
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


def matrix(base: FLConfig, attacks: list[str], defences: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    cells: dict[str, dict[str, dict[str, Any]]] = {a: {} for a in attacks}
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
                    "malicious_kept": malicious_kept(result),
                    "curve": [r.accuracy for r in result.rounds],
                    "seconds": time.perf_counter() - start,
                }
                bar.console.print(
                    f"{attack} vs {defence}: accuracy {result.final_accuracy:.3f}, "
                    f"backdoor {result.final_backdoor_success:.3f}, "
                    f"malicious share of the kept updates {cells[attack][defence]['malicious_kept']:.2f}"
                )
                bar.advance(task)
    return cells


def malicious_kept(result: Any) -> float:
    """The malicious share of the updates the rule kept (not excluded), averaged over the rounds
    (0.2 when a rule keeps everyone at 20% malicious; Krum picking a malicious update scores 1)."""
    shares = []
    for record in result.rounds[1:]:
        kept = set(record.distances) - set(record.excluded)
        if kept:
            shares.append(len(kept & set(record.malicious)) / len(kept))
    return statistics.fmean(shares) if shares else 0.0


def markdown_drop(cells: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Each cell's accuracy drop in points from the same defence without attack, and whether it
    meets the issue's direction (a drop of at least 10 points or backdoor success of at least 50%)."""
    defences = list(next(iter(cells.values())))
    lines = ["| attack | " + " | ".join(defences) + " |", "|---|" + "---|" * len(defences)]
    for attack, row in cells.items():
        if attack == "none":
            continue
        marks = []
        for d in defences:
            drop = 100 * (cells["none"][d]["accuracy"] - row[d]["accuracy"])
            hit = drop >= 10 or row[d]["backdoor"] >= 0.5
            marks.append(f"{drop:+.1f}{' **yes**' if hit else ''}")
        lines.append(f"| {attack} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


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


def markdown_matrix(cells: dict[str, dict[str, dict[str, Any]]], key: str) -> str:
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


def _bare_flower(config: FLConfig) -> dict[str, float]:
    """A bare Flower simulation of ``config``'s model and data: a plain PyTorch ClientApp and
    Flower's FedAvg with a central evaluation (what a Flower user would write), timed."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    from torch import nn

    from dlsec.core import load_dataset
    from dlsec.core.arch import MLP
    from dlsec.federated import partition
    from dlsec.federated._simulate import _backend_config

    start = time.perf_counter()  # from the data on, as dlsec's simulate() is timed
    data = load_dataset(config.dataset)
    train, test = data.split(test_size=0.25, seed=config.seed)
    order = np.random.default_rng(config.seed).permutation(len(train))
    pool = train.subset(np.sort(order[config.root_size :]))
    parts = [
        (p.x, p.y) for p in partition(pool, config.num_clients, scheme=config.partition, seed=config.seed)
    ]
    in_features, classes = int(np.prod(data.spec.shape)), data.spec.num_classes

    def model() -> nn.Module:
        torch.manual_seed(config.seed)
        return MLP(in_features=in_features, num_classes=classes, hidden=config.hidden)

    client = ClientApp()

    @client.train()
    def train_fn(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        x, y = parts[int(context.node_config["partition-id"])]
        net = model()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())  # type: ignore[union-attr]
        opt = torch.optim.SGD(net.parameters(), lr=config.lr)
        xt, yt = torch.tensor(x), torch.tensor(y)
        for _ in range(config.local_epochs):
            for idx in torch.randperm(len(yt)).split(config.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
        reply = {"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})}
        return Message(content=RecordDict(reply), reply_to=msg)

    stamps: list[float] = []
    app = ServerApp()

    @app.main()
    def main_fn(grid: Grid, context: Context) -> None:
        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            net = model()
            net.load_state_dict(arrays.to_torch_state_dict())
            with torch.no_grad():
                acc = float((net(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean())
            stamps.append(time.perf_counter())
            return MetricRecord({"accuracy": acc})

        strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=config.num_clients)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model().state_dict()),
            num_rounds=config.rounds,
            evaluate_fn=evaluate,
        )

    run_simulation(
        server_app=app,
        client_app=client,
        num_supernodes=config.num_clients,
        backend_config=_backend_config(None),
    )
    return {
        "wall": time.perf_counter() - start,
        "rounds_seconds": stamps[-1] - stamps[0],
        "steady_seconds": stamps[-1] - stamps[1],
    }


def _throughput_run(config: FLConfig, which: str) -> dict[str, float]:
    """One timed run, ``dlsec`` or ``bare`` (Flower's), in this process."""
    if which == "bare":
        return _bare_flower(config)
    stamps: list[float] = []
    start = time.perf_counter()
    simulate(config, progress=lambda record: stamps.append(time.perf_counter()))
    return {
        "wall": time.perf_counter() - start,
        "rounds_seconds": stamps[-1] - stamps[0],
        "steady_seconds": stamps[-1] - stamps[1],
    }


def _throughput_subprocess(which: str, args: list[str], out: Console) -> dict[str, float]:
    """:func:`_throughput_run` in a fresh process; once more if it fails (Ray's start-up can
    time out on a loaded machine), then the child's last lines of output and an exit."""
    import subprocess
    import sys
    import tempfile

    for attempt in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.json"
            done = subprocess.run(
                [sys.executable, __file__, "--throughput-run", which, *args, "--out", str(path)],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                run: dict[str, float] = json.loads(path.read_text())
                return run
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        out.print(f"{which} run failed (attempt {attempt} of 2):\n{tail}")
    raise SystemExit(f"the {which} throughput run failed twice")


def throughput(config: FLConfig, repeats: int = 2) -> dict[str, Any]:
    """Client updates per second: dlsec's Flower simulation against a bare one.

    Each run is a fresh Python process (so neither inherits the other's imports, Ray start-up
    or warm caches), and the order alternates (dlsec first, then bare first, ...): run in one
    process, whichever ran second was 20-30% faster from that alone. Three spans per run: the
    wall time from the data on, the rounds (from the round-0 evaluation: Ray's actors start and
    import the ClientApp inside round 1), and the steady rounds 2..R.
    """
    order = [("dlsec", "bare") if i % 2 == 0 else ("bare", "dlsec") for i in range(repeats)]
    runs: dict[str, list[dict[str, float]]] = {"dlsec": [], "bare Flower": []}
    args = ["--clients", str(config.num_clients), "--rounds", str(config.rounds)]
    with _progress() as bar:
        task = bar.add_task("throughput", total=2 * repeats)
        for pair in order:
            for which in pair:
                bar.update(task, description=f"{which} on Flower")
                run = _throughput_subprocess(which, args, bar.console)
                runs["bare Flower" if which == "bare" else "dlsec"].append(run)
                bar.console.print(f"{which}: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.items()))
                bar.advance(task)
    rounds = config.rounds
    updates = config.num_clients * rounds
    rows = {}
    for name, done in runs.items():
        med = {k: statistics.median(r[k] for r in done) for k in done[0]}
        rows[name] = {
            **med,
            "runs": done,
            "updates_per_s": updates / med["wall"],
            "updates_per_s_rounds": updates / med["rounds_seconds"],
            "updates_per_s_steady": config.num_clients * (rounds - 1) / med["steady_seconds"],
        }
    ours, bare = rows["dlsec"], rows["bare Flower"]
    return {
        "config": dataclasses.asdict(config),
        "order": order,
        "runs": rows,
        "ratio": ours["updates_per_s"] / bare["updates_per_s"],
        "ratio_rounds": ours["updates_per_s_rounds"] / bare["updates_per_s_rounds"],
        "ratio_steady": ours["updates_per_s_steady"] / bare["updates_per_s_steady"],
    }


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
    parser.add_argument("--throughput-only", action="store_true", help="dlsec's simulation vs a bare one")
    parser.add_argument("--repeats", type=int, default=2, help="throughput: runs of each (fresh processes)")
    parser.add_argument("--throughput-run", choices=["dlsec", "bare"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=0.3, help="the clients' local SGD learning rate")
    parser.add_argument("--local-epochs", type=int, default=5, help="the clients' local epochs")
    parser.add_argument("--batch-size", type=int, default=4, help="the clients' local batch size")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    if args.throughput_only or args.throughput_run:
        clients, rounds = (10, 5) if args.quick else (20, 10)
        config = FLConfig(
            num_clients=args.clients or clients,
            rounds=args.rounds or rounds,
            partition="dirichlet",
            alpha=0.5,
            engine="flower",
        )
        if args.throughput_run:  # one run, in a process of its own (see throughput())
            if args.out is None:
                parser.error("--throughput-run needs --out")
            atomic_write_text(args.out, json.dumps(_throughput_run(config, args.throughput_run)))
            return
        if config.rounds < 2 or args.repeats < 1:
            parser.error("the throughput comparison needs at least 2 rounds and 1 repeat")
        result = throughput(config, repeats=args.repeats)
        print(
            f"\n### Simulation throughput: {config.num_clients} clients x {config.rounds} rounds, "
            "builtin:digits MLP, Flower's simulation on a local Ray (2 CPUs, 1 per client)\n"
        )
        print(f"Median of {args.repeats} fresh-process runs each, the order alternating.\n")
        print(
            "| run | wall s | updates/s | rounds: s | updates/s | rounds 2..R: s | updates/s |\n"
            "|---|---|---|---|---|---|---|"
        )
        for name, run in result["runs"].items():
            print(
                f"| {name} | {run['wall']:.1f} | {run['updates_per_s']:.2f} | "
                f"{run['rounds_seconds']:.1f} | {run['updates_per_s_rounds']:.2f} | "
                f"{run['steady_seconds']:.2f} | {run['updates_per_s_steady']:.2f} |"
            )
        print(
            f"\ndlsec / bare: {result['ratio']:.2f}x with start-up, "
            f"{result['ratio_rounds']:.2f}x over the rounds, {result['ratio_steady']:.2f}x over rounds 2..R\n"
        )
        if args.out is not None:
            atomic_write_text(args.out, json.dumps({"throughput": result}, indent=2) + "\n")
        return
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
            lr=args.lr,
            local_epochs=args.local_epochs,
            batch_size=args.batch_size,
            engine="local",
        )
        attacks = args.attacks or list(ATTACKS)
        defences = args.defenses or list(AGGREGATORS)
        start = time.perf_counter()
        cells = matrix(base, attacks, defences)
        report["matrix"] = {"config": dataclasses.asdict(base), "cells": cells}
        print(
            f"\n### Attack x defence on builtin:digits ({clients} clients, 20% malicious, Dirichlet 0.5, "
            f"{rounds} rounds; local SGD: {base.local_epochs} epochs, batch {base.batch_size}, "
            f"lr {base.lr:g}; {time.perf_counter() - start:.0f} s)\n"
        )
        print("Final global accuracy:\n\n" + markdown_matrix(cells, "accuracy") + "\n")
        print("Backdoor success rate (triggered non-target test inputs classified as the target):\n")
        print(markdown_matrix(cells, "backdoor") + "\n")
        if "none" in cells and len(cells) > 1:
            print(
                "Accuracy drop in points from the same defence without attack "
                "(**yes**: a drop of at least 10 points or backdoor success of at least 50%):\n"
            )
            print(markdown_drop(cells) + "\n")
        print("Malicious share of the updates each rule kept, mean over rounds (0.20 = kept them all):\n")
        print(markdown_matrix(cells, "malicious_kept") + "\n")
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
