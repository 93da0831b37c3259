"""Evasion attacks, side by side with the peers: time ratios and robust accuracies.

Runs dlsec, torchattacks and ART in one process on the same model, inputs and budget, and
prints a Markdown table. Peers come from the ``bench`` extra (``make bench-setup``); a missing
peer is reported as such, never silently skipped.

    python benchmarks/attacks.py            # all settings
    python benchmarks/attacks.py --quick    # fewer repeats, smaller batches
    python benchmarks/attacks.py --randomised [--quick]   # only AutoAttack rand vs the reference

The randomised section compares AutoAttack's rand version with the reference implementation's
(fra31/auto-attack, ``version='rand'``; ``make bench-setup`` installs it) on a PGD-trained digits
CNN that adds Gaussian noise to its input at every forward pass. Both adversarial batches are
scored the same way: by the expectation over 100 fresh noisy passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.attacks import PGD, get_attack
from dlsec.core import InputSpec, WhiteBoxModel, load_dataset, load_model


def cifar_cnn() -> nn.Module:
    """A CIFAR-sized CNN (about 0.8M parameters), Kaiming-initialised, fixed by the seed.

    Random weights give CIFAR-sized compute; the budget (1/255) is chosen so that the attacks
    have work to do (the labels are the model's own clean predictions).
    """
    torch.manual_seed(0)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]

    net = nn.Sequential(
        *block(3, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        *block(64, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        *block(128, 128),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 16, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net.eval()


def settings(quick: bool) -> list[dict[str, Any]]:
    out = []
    digits = load_model("zoo:digits-cnn", device="cpu")
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    n = 200 if quick else 450
    out.append(
        {
            "name": "zoo:digits-cnn",
            "model": digits,
            "x": torch.from_numpy(test.x[:n]),
            "y": torch.from_numpy(test.y[:n]),
            "eps": 0.1,
        }
    )
    spec = InputSpec(shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    big = WhiteBoxModel(cifar_cnn(), spec, device="cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64 if quick else 128, 3, 32, 32, generator=g)
    out.append({"name": "cnn 3x32x32 (random)", "model": big, "x": x, "y": big.predict(x), "eps": 1 / 255})
    return out


def adversarially_trained(quick: bool) -> dict[str, Any]:
    """``digits-cnn``'s architecture trained with dlsec's PGD-AT at L-inf 0.1 (the AutoAttack target)."""
    from dlsec.train import PGDAT, TrainConfig, train

    data = load_dataset("builtin:digits")
    trained = train(
        data,
        arch="cnn",
        arch_kwargs={"width": 16, "hidden": 64},
        recipe=PGDAT(eps=0.1),
        config=TrainConfig(epochs=10 if quick else 30, seed=0),
        device="cpu",
        robust_n=0,
    )
    _, test = data.split(test_size=0.25, seed=0)
    n = 200 if quick else 450
    return {
        "name": "digits-cnn PGD-AT 0.1",
        "model": trained.model,
        "x": torch.from_numpy(test.x[:n]),
        "y": torch.from_numpy(test.y[:n]),
        "eps": 0.1,
    }


class GaussianInput(nn.Module):
    """A model that adds Gaussian noise (``sigma`` in input units) to its input at every pass."""

    def __init__(self, model: WhiteBoxModel, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))


def _step(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def randomised(quick: bool, *, sigma: float = 0.1, eps: float = 0.2) -> dict[str, Any]:
    """``digits-cnn``'s architecture, PGD-AT at L-inf ``eps``, behind Gaussian input noise ``sigma``."""
    from dlsec.train import PGDAT, TrainConfig, train

    epochs = 10 if quick else 30
    _step(f"training the digits CNN with PGD-AT at L-inf {eps} ({epochs} epochs)")
    start = time.perf_counter()
    data = load_dataset("builtin:digits")
    trained = train(
        data,
        arch="cnn",
        arch_kwargs={"width": 16, "hidden": 64},
        recipe=PGDAT(eps=eps),
        config=TrainConfig(epochs=epochs, seed=0),
        device="cpu",
        robust_n=0,
    )
    clean = trained.metrics["clean_accuracy"]
    _step(f"trained in {time.perf_counter() - start:.0f} s, clean accuracy {clean:.4f}")
    spec = dataclasses.replace(trained.model.spec, mean=None, std=None)  # the inner model normalises
    noisy = WhiteBoxModel(GaussianInput(trained.model, sigma), spec, device="cpu")
    _, test = data.split(test_size=0.25, seed=0)
    n = 64 if quick else 200
    return {
        "name": f"digits-cnn PGD-AT {eps:g} + N(0, {sigma:g}) input noise",
        "model": noisy,
        "x": torch.from_numpy(test.x[:n]),
        "y": torch.from_numpy(test.y[:n]),
        "eps": eps,
    }


def expected_accuracy(model: WhiteBoxModel, x_adv: torch.Tensor, y: torch.Tensor, passes: int = 100) -> float:
    """Mean over examples of the fraction of ``passes`` noisy passes that classify them correctly."""
    correct = torch.zeros(len(y), dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(12345)
        with torch.no_grad():
            for _ in range(passes):
                correct += (model(x_adv).argmax(1) == y).double()
    return float((correct / passes).mean())


def bench_autoattack_rand(
    setting: dict[str, Any], *, repeats: int, with_standard: bool
) -> list[dict[str, Any]]:
    """AutoAttack on a randomised model: dlsec (``auto`` picks rand) beside the reference's rand.

    The two run ``repeats`` times, interleaved (the median time is kept; both are seeded, so
    every repeat gives the same points).
    """
    model, x, y, eps = setting["model"], setting["x"], setting["y"], setting["eps"]
    base = {"setting": setting["name"], "attack": f"AutoAttack rand linf {eps:g}", "n": len(y)}
    ours = get_attack("autoattack", eps=eps, norm="linf", seed=0)
    results: dict[str, Any] = {}
    fns: dict[str, Callable[[], Any]] = {"dlsec": lambda: ours(model, x, y)}
    missing = None
    try:
        from autoattack import AutoAttack as ReferenceAutoAttack
    except ImportError as exc:
        missing = f"{exc}; make bench-setup"
    else:
        reference = ReferenceAutoAttack(
            model, norm="Linf", eps=eps, version="rand", seed=0, device="cpu", verbose=False
        )
        fns["reference"] = lambda: reference.run_standard_evaluation(x, y, bs=len(y))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            version = "auto" if name == "dlsec" else "rand"
            _step(f"round {i + 1}/{repeats}: {name} AutoAttack (version {version}) on {len(y)} points")
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            _step(f"{name}: {times[name][-1]:.1f} s")
    ours_result = results["dlsec"]
    rows = [
        {
            **base,
            "tool": f"dlsec (auto: {ours_result.extras['version']})",
            "seconds": statistics.median(times["dlsec"]),
            "robust_accuracy": expected_accuracy(model, ours_result.x_adv, y),
            "reported": ours_result.robust_accuracy,
            "reported_as": ours_result.summary().get("scoring", "one pass"),
        }
    ]
    if missing is not None:
        rows.append({**base, "tool": "reference rand (fra31/auto-attack)", "missing": missing})
    else:
        adv = results["reference"]
        rows.append(
            {
                **base,
                "tool": "reference rand (fra31/auto-attack)",
                "seconds": statistics.median(times["reference"]),
                "robust_accuracy": expected_accuracy(model, adv, y),
                "reported": robust_acc(model, adv, y),
                "reported_as": "one pass",
            }
        )
    if with_standard:
        _step(f"dlsec AutoAttack forced to the standard version on {len(y)} points (for contrast)")
        standard = get_attack("autoattack", eps=eps, norm="linf", seed=0, version="standard")
        start = time.perf_counter()
        result = standard(model, x, y)
        seconds = time.perf_counter() - start
        rows.append(
            {
                **base,
                "tool": "dlsec forced to standard",
                "seconds": seconds,
                "robust_accuracy": expected_accuracy(model, result.x_adv, y),
                "reported": result.robust_accuracy,
                "reported_as": "one pass",
            }
        )
        _step(f"dlsec standard: {seconds:.1f} s")
    return rows


def table_rand(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | n | tool | time (s) | time / reference | robust acc. (100 noisy passes) | "
        "robust acc. as reported |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    ref = next((r["seconds"] for r in rows if r["tool"].startswith("reference") and "seconds" in r), None)
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['setting']} | {r['n']} | {r['tool']} | not run: {r['missing'][:60]} | | | |")
            continue
        ratio = f"{r['seconds'] / ref:.2f}" if ref else "n/a"
        lines.append(
            f"| {r['setting']} | {r['n']} | {r['tool']} | {r['seconds']:.1f} | {ratio} | "
            f"{r['robust_accuracy']:.4f} | {r['reported']:.4f} ({r['reported_as']}) |"
        )
    return "\n".join(lines)


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def robust_acc(model: WhiteBoxModel, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x_adv) == y).float().mean())


def _seeded(fn: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a peer from torch's global seed 0: the same random start dlsec draws with seed=0."""
    torch.manual_seed(0)
    return fn(x, y)


def peers_pgd(model: WhiteBoxModel, eps: float, steps: int, alpha: float) -> dict[str, Callable[..., Any]]:
    peers: dict[str, Callable[..., Any]] = {}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        peers["torchattacks"] = lambda x, y: ta(x, y)
    except ImportError as exc:
        peers["torchattacks"] = exc  # type: ignore[assignment]
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
            eps=eps,
            eps_step=alpha,
            max_iter=steps,
            num_random_init=1,
            batch_size=512,
            verbose=False,
        )
        peers["ART"] = lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    except ImportError as exc:
        peers["ART"] = exc  # type: ignore[assignment]
    return peers


def fwd_bwd(model: WhiteBoxModel, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """The floor for PGD: ``steps`` forward-and-backward passes to the input, nothing else."""
    xx = x.clone()
    for _ in range(steps):
        xx.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xx), y)
        (grad,) = torch.autograd.grad(loss, xx)
        xx = xx.detach()
    return xx


def interleaved(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> dict[str, tuple[float, torch.Tensor]]:
    """Time each function ``repeats`` times, round-robin, so background load hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(v), results[k]) for k, v in times.items()}


def bench_pgd(setting: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    model, x, y, eps = setting["model"], setting["x"], setting["y"], setting["eps"]
    steps, alpha = 40, eps / 10
    ours = PGD(eps=eps, steps=steps, step_size=alpha, norm="linf", random_start=True, restarts=1, seed=0)
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "dlsec": lambda: ours(model, x, y).x_adv,
        "_fwd_bwd": lambda: fwd_bwd(model, x, y, steps),
    }
    rows = []
    for tool, fn in peers_pgd(model, eps, steps, alpha).items():
        if isinstance(fn, Exception):
            rows.append(
                {"setting": setting["name"], "attack": "PGD linf 40", "tool": tool, "missing": str(fn)}
            )
        else:
            fns[tool] = lambda fn=fn: _seeded(fn, x, y)
    measured = interleaved(fns, repeats)
    base = measured.pop("_fwd_bwd")[0]
    for tool, (seconds, adv) in measured.items():
        row = {
            "setting": setting["name"],
            "attack": "PGD linf 40",
            "tool": tool,
            "seconds": seconds,
            "robust_accuracy": robust_acc(model, adv, y),
            "overhead": seconds / base,
        }
        rows.insert(0, row) if tool == "dlsec" else rows.append(row)
    return rows


def _torchattacks_autoattack(model: WhiteBoxModel, eps: float, steps: int | None) -> Callable[..., Any]:
    """torchattacks' AutoAttack; ``steps=None`` keeps its 'standard' (APGD/FAB at 10 iterations)."""
    import torchattacks

    if steps is None:
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=model.spec.num_classes, seed=0
        )
    k = model.spec.num_classes
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, eps=eps, norm="Linf", steps=steps, n_restarts=1, loss="ce", seed=0),
            torchattacks.APGDT(model, eps=eps, norm="Linf", steps=steps, n_restarts=1, n_classes=k, seed=0),
            torchattacks.FAB(
                model,
                eps=eps,
                norm="Linf",
                steps=steps,
                n_restarts=1,
                multi_targeted=True,
                n_classes=k,
                seed=0,
            ),
            torchattacks.Square(model, eps=eps, norm="Linf", n_queries=5000, n_restarts=1, seed=0),
        ]
    )


def bench_autoattack(setting: dict[str, Any], n: int, *, with_art: bool) -> list[dict[str, Any]]:
    model, eps = setting["model"], setting["eps"]
    x, y = setting["x"][:n], setting["y"][:n]
    label = "AutoAttack std"
    base = {"setting": setting["name"], "attack": label}
    ours = get_attack("autoattack", eps=eps, norm="linf", seed=0)
    t, r = timed(lambda: ours(model, x, y).x_adv, 1)
    rows = [{**base, "tool": "dlsec", "seconds": t, "robust_accuracy": robust_acc(model, r, y)}]
    variants = {"torchattacks, as published (100 it.)": 100, "torchattacks 'standard' (10 it.)": None}
    for tool, steps in variants.items():
        try:
            attack = _torchattacks_autoattack(model, eps, steps)
        except ImportError as exc:
            rows.append({**base, "tool": tool, "missing": str(exc)})
            continue
        t, adv = timed(lambda attack=attack: attack(x, y), 1)
        rows.append({**base, "tool": tool, "seconds": t, "robust_accuracy": robust_acc(model, adv, y)})
    if not with_art:
        rows.append({**base, "tool": "ART (its own ensemble)", "missing": "too slow for this setting"})
        return rows
    try:
        from art.attacks.evasion import AutoAttack as ArtAutoAttack
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=model.spec.shape,
            nb_classes=model.spec.num_classes,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        art_aa = ArtAutoAttack(clf, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=512)
        t, adv = timed(lambda: torch.from_numpy(art_aa.generate(x.numpy(), y=y.numpy())), 1)
        rows.append(
            {
                **base,
                "tool": "ART (its own ensemble)",
                "seconds": t,
                "robust_accuracy": robust_acc(model, adv, y),
            }
        )
    except ImportError as exc:
        rows.append({**base, "tool": "ART (its own ensemble)", "missing": str(exc)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | attack | tool | time (s) | time / dlsec | robust acc. | time / (steps x fwd+bwd) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    ours = {
        (r["setting"], r["attack"]): r["seconds"] for r in rows if r["tool"] == "dlsec" and "seconds" in r
    }
    for r in rows:
        if "missing" in r:
            lines.append(
                f"| {r['setting']} | {r['attack']} | {r['tool']} | not run: {r['missing'][:40]} | | | |"
            )
            continue
        ratio = (
            r["seconds"] / ours[(r["setting"], r["attack"])]
            if (r["setting"], r["attack"]) in ours
            else float("nan")
        )
        overhead = f"{r['overhead']:.2f}" if "overhead" in r else ""

        lines.append(
            f"| {r['setting']} | {r['attack']} | {r['tool']} | {r['seconds']:.2f} | {ratio:.2f} | "
            f"{r['robust_accuracy']:.4f} | {overhead} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-autoattack", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--adv-trained", action="store_true", help="only AutoAttack on a PGD-AT model")
    parser.add_argument(
        "--randomised", action="store_true", help="only AutoAttack rand vs the reference on a noisy model"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    if args.randomised or not (args.adv_trained or args.skip_autoattack):
        rand_rows = bench_autoattack_rand(
            randomised(args.quick), repeats=1 if args.quick else 3, with_standard=not args.quick
        )
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(table_rand(rand_rows))
        if args.json:
            json.dump(rand_rows, sys.stdout, indent=2)
        if args.randomised:
            return 0
    if args.adv_trained:
        setting = adversarially_trained(args.quick)
        rows += bench_autoattack(setting, n=64 if args.quick else 128, with_art=not args.quick)
        print(table(rows))
        return 0
    for setting in settings(args.quick):
        rows += bench_pgd(setting, repeats=3 if args.quick else 5)
        if not args.skip_autoattack:
            rows += bench_autoattack(setting, n=64, with_art=setting["name"].startswith("zoo:"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(table(rows))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
