"""Model extraction against zoo:digits-cnn: queries to 90% agreement, detection, and ART side by side.

For each dlsec attack: the agreement curve against queries (clones trained on the data
gathered after each checkpoint), the queries needed to reach 90% agreement with the target on
the held-out test split (or the best reached within the budget), and the query at which the
gateway's extraction detector (:class:`dlsec.monitor.extraction.ExtractionDetector`, default
configuration, fitted on the training split as a gateway would be on natural data) first
flags the attack's stream; the target is to flag before 20% of the queries needed for 90%
agreement. Clients sending the real test set and the training split must never be flagged.
Then ART's KnockoffNets (random and adaptive) and CopycatCNN run on the same target, pool,
budget and clone architecture, timed against dlsec's attacks (without the curve).

    python benchmarks/extraction.py            # budget 2000
    python benchmarks/extraction.py --quick    # budget 600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dlsec.attacks.extraction import (
    Copycat,
    ExtractionAttack,
    JacobianAugmentation,
    KnockoffNets,
    QueryPool,
    mixed_pool,
    out_of_domain_pool,
)
from dlsec.core import Dataset, WhiteBoxModel, load_dataset
from dlsec.core.arch import SmallCNN
from dlsec.monitor.extraction import ExtractionDetector
from dlsec.zoo import load_zoo_model

LEVEL = 0.9
CHECKPOINTS = [25, 50, 75, 100, 150, 200, 300, 400, 500, 600, 750, 1000, 1250, 1500, 2000, 3000]


def attacks(budget: int, train: Dataset, ood: QueryPool) -> list[dict[str, Any]]:
    """The dlsec attacks benchmarked: each paper's setting, plus copycat on problem-domain data."""
    points = [c for c in CHECKPOINTS if c <= budget]
    mixed = mixed_pool(train.x, ood)
    rows: list[tuple[str, str, Callable[..., ExtractionAttack], QueryPool | np.ndarray]] = [
        ("knockoff random", "out-of-domain", lambda **k: KnockoffNets(budget=budget, **k), ood),
        (
            "knockoff adaptive",
            "mixed",
            lambda **k: KnockoffNets(budget=budget, strategy="adaptive", **k),
            mixed,
        ),
        ("copycat", "out-of-domain", lambda **k: Copycat(budget=budget, **k), ood),
        (
            "jbda (20 seeds)",
            "20 problem-domain seeds",
            lambda **k: JacobianAugmentation(budget=budget, seeds=20, **k),
            train.x,
        ),
        ("copycat", "problem-domain", lambda **k: Copycat(budget=budget, **k), train.x),
    ]
    return [{"attack": a, "data": d, "make": m, "pool": p, "checkpoints": points} for a, d, m, p in rows]


def stream_first_alerts(
    detector: ExtractionDetector, client: str
) -> tuple[dict[str, int], Callable[..., None]]:
    first: dict[str, int] = {}

    def on_query(x: np.ndarray, answer: np.ndarray) -> None:
        for alert in detector.observe(client, x, answer):
            first.setdefault(alert.signal, alert.query_index)

    return first, on_query


def bench_dlsec(target: WhiteBoxModel, train: Dataset, test: Dataset, spec: dict[str, Any]) -> dict[str, Any]:
    # The detection and curve run: every query goes through the detector as the gateway would see it.
    detector = ExtractionDetector().fit(train.x)
    first, on_query = stream_first_alerts(detector, "attacker")
    curved = spec["make"](seed=0, checkpoints=spec["checkpoints"])(
        target, spec["pool"], test=test, on_query=on_query
    )
    # The timed run: the attack alone (no curve, no detector), comparable with ART.
    started = time.perf_counter()
    plain = spec["make"](seed=0)(target, spec["pool"], test=test)
    seconds = time.perf_counter() - started
    q90 = curved.queries_to(LEVEL)
    best = max(curved.curve, key=lambda p: p["agreement"]) if curved.curve else None
    flagged = min(first.values(), default=None)
    needed = q90 if q90 is not None else (int(best["queries"]) if best else None)
    return {
        "attack": spec["attack"],
        "data": spec["data"],
        "agreement": plain.agreement,
        "accuracy": plain.accuracy,
        "queries": plain.queries,
        "seconds": seconds,
        "q90": q90,
        "best": best,
        "first_flag": flagged,
        "first_signal": min(first, key=lambda s: first[s]) if first else None,
        "prada": first.get("prada"),
        "flag_ratio": (flagged / needed) if flagged is not None and needed else None,
        "curve": curved.curve,
    }


def benign(
    target: WhiteBoxModel, train: Dataset, clients: dict[str, np.ndarray], batch: int
) -> dict[str, Any]:
    out = {}
    for name, x in clients.items():
        detector = ExtractionDetector().fit(train.x)
        first, on_query = stream_first_alerts(detector, name)
        for start in range(0, len(x), batch):
            xb = x[start : start + batch]
            on_query(xb, target.probs(torch.from_numpy(xb)).cpu().numpy())
        out[name] = {"queries": len(x), "flagged": first, "prada_w": detector.stats(name)["prada_w"]}
    return out


def bench_art(
    target: WhiteBoxModel, test: Dataset, ood: QueryPool, train: Dataset, budget: int
) -> list[dict[str, Any]]:
    try:
        from art.attacks.extraction import CopycatCNN
        from art.attacks.extraction import KnockoffNets as ArtKnockoff
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return [{"tool": "ART", "missing": True}]
    spec = target.spec
    test_target = target.predict(torch.from_numpy(test.x)).numpy()
    victim = PyTorchClassifier(
        model=target,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=spec.shape,
        nb_classes=spec.num_classes,
        clip_values=(0.0, 1.0),
    )

    def thief() -> PyTorchClassifier:
        torch.manual_seed(0)
        module = SmallCNN(in_channels=1, num_classes=10, image_size=8)
        return PyTorchClassifier(
            model=module,
            loss=torch.nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(module.parameters(), lr=1e-3),
            input_shape=spec.shape,
            nb_classes=spec.num_classes,
            clip_values=(0.0, 1.0),
        )

    mixed = mixed_pool(train.x, ood)
    runs: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "knockoff random",
            "out-of-domain",
            lambda: ArtKnockoff(
                victim,
                batch_size_fit=64,
                batch_size_query=100,
                nb_epochs=30,
                nb_stolen=budget,
                sampling_strategy="random",
                verbose=False,
            ).extract(ood.x, thieved_classifier=thief()),
        ),
        (
            "knockoff adaptive",
            "mixed",
            lambda: ArtKnockoff(
                victim,
                batch_size_fit=64,
                batch_size_query=1,
                nb_epochs=30,
                nb_stolen=budget,
                sampling_strategy="adaptive",
                reward="all",
                verbose=False,
            ).extract(mixed.x, mixed.groups, thieved_classifier=thief()),
        ),
        (
            "copycat",
            "out-of-domain",
            lambda: CopycatCNN(
                victim, batch_size_fit=64, batch_size_query=100, nb_epochs=30, nb_stolen=budget
            ).extract(ood.x, thieved_classifier=thief()),
        ),
        (
            "copycat",
            "problem-domain",
            lambda: CopycatCNN(
                victim, batch_size_fit=64, batch_size_query=100, nb_epochs=30, nb_stolen=budget
            ).extract(train.x, thieved_classifier=thief()),
        ),
    ]
    rows = []
    for attack, data, run in runs:
        np.random.seed(0)
        torch.manual_seed(0)
        started = time.perf_counter()
        stolen = run()
        seconds = time.perf_counter() - started
        pred = stolen.predict(test.x).argmax(1)
        rows.append(
            {
                "attack": attack,
                "data": data,
                "tool": "ART",
                "seconds": seconds,
                "agreement": float((pred == test_target).mean()),
                "accuracy": float((pred == test.y).mean()),
            }
        )
    return rows


def tables(
    ours: list[dict[str, Any]], art: list[dict[str, Any]], clients: dict[str, Any], budget: int
) -> str:
    lines = [
        f"Budget {budget} queries; agreement and accuracy on the 450-row test split; default detector.",
        "",
        "| attack | query data | agreement | clone acc. | queries to 90% agreement "
        "| first flagged at (signal) | PRADA alone flags at | flagged / queries to 90% |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ours:
        if r["q90"] is not None:
            reach = str(r["q90"])
        elif r["best"]:
            reach = f"not reached (best {r['best']['agreement']:.3f} at {r['best']['queries']})"
        else:
            reach = "-"
        flag = f"{r['first_flag']} ({r['first_signal']})" if r["first_flag"] is not None else "never"
        ratio = f"{r['flag_ratio']:.2f}" if r["flag_ratio"] is not None else "-"
        lines.append(
            f"| {r['attack']} | {r['data']} | {r['agreement']:.4f} | {r['accuracy']:.4f} | {reach} | {flag} "
            f"| {r['prada'] if r['prada'] is not None else 'never'} | {ratio} |"
        )
    for name, c in clients.items():
        flag = ", ".join(f"{s} at {q}" for s, q in c["flagged"].items()) or "never"
        lines.append(f"| benign: {name} | natural | | | | {flag} | | |")
    lines += [
        "",
        "| attack | query data | tool | agreement | clone acc. | time (s) | time / dlsec |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    mine = {(r["attack"], r["data"]): r for r in ours}
    for r in ours:
        peers = [a for a in art if a.get("attack") == r["attack"] and a.get("data") == r["data"]]
        lines.append(
            f"| {r['attack']} | {r['data']} | dlsec | {r['agreement']:.4f} | {r['accuracy']:.4f} "
            f"| {r['seconds']:.2f} | 1.00 |"
        )
        for a in peers:
            base = mine[(a["attack"], a["data"])]["seconds"]
            lines.append(
                f"| {a['attack']} | {a['data']} | ART | {a['agreement']:.4f} | {a['accuracy']:.4f} "
                f"| {a['seconds']:.2f} | {a['seconds'] / base:.2f} |"
            )
    if any(a.get("missing") for a in art):
        lines.append("| | | ART | not installed (make bench-setup) | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="budget 600 instead of 2000")
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--skip-art", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1 is fastest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = args.budget or (600 if args.quick else 2000)
    target = load_zoo_model("digits-cnn")
    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    ood = out_of_domain_pool(target.spec, max(2 * budget, 2000), seed=1)
    ours = []
    for spec in attacks(budget, train, ood):
        ours.append(bench_dlsec(target, train, test, spec))
        print(f"{spec['attack']} ({spec['data']}): done", file=sys.stderr, flush=True)
    rng = np.random.default_rng(0)
    clients = benign(
        target,
        train,
        {
            "test set, in order": test.x,
            "test set, shuffled": test.x[rng.permutation(len(test))],
            "training split": train.x,
        },
        batch=10,
    )
    art = [] if args.skip_art else bench_art(target, test, ood, train, budget)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(tables(ours, art, clients, budget))
    if args.json:
        json.dump({"dlsec": ours, "art": art, "benign": clients}, sys.stdout, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
