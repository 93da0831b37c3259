"""Erasure on ``builtin:digits``: SISA against full retraining, NegGrad+, and LiRA after each.

One MLP (hidden 128-64, AdamW lr 0.01, batch 64, 40 epochs, seed 0) trained two ways on the
train split (1347 rows): plainly (``dlsec train``) and with SISA (5 shards, 5 slices, the same
40 passes per shard). Then 1% of the training rows (14, a seeded sample) are erased:

* **full retraining**: ``dlsec erase --method exact`` on the plain model (retrain from scratch);
* **NegGrad+** (``--method approximate``) on the plain model;
* **SISA** on the SISA model, once as one request for all 14 rows, and once as 14 requests of one
  row each, one after the other (the usual shape of "forget me": one person, one request),
  against 14 full retrainings, one per request.

Times are the unlearning itself (``ErasureResult.seconds``: what retrains), and the whole
``erase()`` call without verification (loading, hashing, writing) beside it, on one thread.
After each erasure, LiRA (online, 16 reference models trained like the target, 200 fresh test
rows) scores the erased rows: AUC, its Hanley-McNeil interval, and the AUC on the old model.
A second SISA erasure of 10% of the rows gives the AUC with more power.

Last, a power check, since the test is only worth what it can detect: an MLP trained 200 epochs
on 300 digits rows of which half carry a wrong label (memorised, as canaries are; the test rows
are mislabelled at the same rate, so erased and fresh rows come from one population), from which
60 rows are "erased" with no unlearning at all (NegGrad+ with 0 epochs: the model unchanged) must
fail verification, and exact retraining of the same rows must pass.

    python benchmarks/comply_erasure.py            # about 10 minutes on 2 shared CPU cores
    python benchmarks/comply_erasure.py --quick    # 20 epochs, 8 references
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dlsec.assess.privacy import split_indices  # noqa: E402
from dlsec.comply._unlearn import NegGradPlus  # noqa: E402
from dlsec.comply.erasure import (  # noqa: E402
    ErasureResult,
    ErasureVerificationError,
    Verification,
    erase,
    train_sisa_and_save,
    verify_erasure,
)
from dlsec.core import load_dataset  # noqa: E402
from dlsec.train import train_and_save, train_options  # noqa: E402

console = Console(width=200)
DATA = "builtin:digits"
ARCH = {"hidden": [128, 64]}


def _options(recipe: str, epochs: int) -> Any:
    params = {"shards": 5, "slices": 5} if recipe == "sisa" else None
    return train_options(
        recipe=recipe,
        data=DATA,
        arch="mlp",
        arch_kwargs=ARCH,
        robust_n=0,
        recipe_params=params,
        train_config={"epochs": epochs, "lr": 0.01, "batch_size": 64, "seed": 0},
    )


def _timed_erase(model: Path, out: Path, ids: list[int], method: str) -> tuple[ErasureResult, float]:
    started = time.perf_counter()
    result = erase(model, ids=ids, out=out, method=method, verify=False, device="cpu", force=True)
    return result, time.perf_counter() - started


def _auc(v: Verification) -> str:
    return f"{v.auc:.3f} ({v.auc_ci[0]:.3f}-{v.auc_ci[1]:.3f})"


def power_check(work: Path, refs: int) -> list[tuple[str, str]]:
    """Overfit a small MLP; "erase" 60 rows without unlearning (must fail) and exactly (must pass)."""
    from dlsec.core.data import Dataset

    small = load_dataset(DATA).subset(np.arange(400))
    rng = np.random.default_rng(0)
    flip = rng.random(len(small)) < 0.5
    y = np.where(flip, (small.y + rng.integers(1, 10, len(small))) % 10, small.y).astype(np.int64)
    small = Dataset(small.x, y, small.spec, "digits400-half-mislabelled")
    path = work / "digits400.npz"
    small.save_npz(path)
    options = train_options(
        data=str(path), arch="mlp", arch_kwargs={"hidden": [256, 128]}, robust_n=0, test_size=0.25,
        train_config={"epochs": 200, "lr": 0.01, "batch_size": 32, "seed": 0},
    )  # fmt: skip
    train_and_save(options, work / "overfit", device="cpu")
    index = split_indices(small.y, small.spec.num_classes, test_size=0.25, seed=0)
    ids = [int(i) for i in np.random.default_rng(1).permutation(index)[:60]]
    out: list[tuple[str, str]] = []
    for label, method, unlearner in (
        ("no unlearning (NegGrad+, 0 epochs)", "approximate", NegGradPlus(epochs=0)),
        ("exact retraining", "exact", None),
    ):
        try:
            result = erase(
                work / "overfit", ids=ids, out=work / f"overfit-{method}", method=method, references=refs,
                fresh=100, approximate=unlearner, device="cpu", force=True,
            )  # fmt: skip
            v = result.verification
            assert v is not None
            out.append((label, f"verified: AUC {_auc(v)}, before {v.auc_before:.3f}"))
        except ErasureVerificationError as exc:
            out.append((label, f"FAILED CLOSED: {exc}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 epochs, 8 reference models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    epochs, refs = (20, 8) if args.quick else (40, 16)
    work = Path(tempfile.mkdtemp(prefix="dlsec-erasure-bench-"))
    data = load_dataset(DATA)
    train_index = split_indices(data.y, data.spec.num_classes, test_size=0.25, seed=0)
    rng = np.random.default_rng(0)
    n1 = int(np.ceil(0.01 * len(train_index)))
    picked = rng.permutation(train_index)
    one_pct = sorted(int(i) for i in picked[:n1])
    ten_pct = sorted(int(i) for i in picked[: int(0.1 * len(train_index))])
    rows: list[dict[str, Any]] = []
    verify_jobs: list[tuple[str, Path, Path, list[int]]] = []

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("training plain and SISA models", total=2)
        started = time.perf_counter()
        plain, _, _ = train_and_save(_options("standard", epochs), work / "plain", device="cpu")
        plain_s = time.perf_counter() - started
        progress.advance(task)
        started = time.perf_counter()
        sisa, _, _ = train_sisa_and_save(_options("sisa", epochs), work / "sisa", device="cpu")
        sisa_s = time.perf_counter() - started
        progress.advance(task)
        acc_plain, acc_sisa = plain.metrics["clean_accuracy"], sisa.metrics["clean_accuracy"]

        task = progress.add_task(f"erasing 1% ({n1} rows) in one request", total=3)
        full, full_wall = _timed_erase(work / "plain", work / "full", one_pct, "exact")
        progress.advance(task)
        approx, approx_wall = _timed_erase(work / "plain", work / "approx", one_pct, "approximate")
        progress.advance(task)
        batch, batch_wall = _timed_erase(work / "sisa", work / "sisa-batch", one_pct, "sisa")
        progress.advance(task)
        verify_jobs += [
            ("full retraining", work / "plain", work / "full", one_pct),
            ("NegGrad+", work / "plain", work / "approx", one_pct),
            ("SISA, one request", work / "sisa", work / "sisa-batch", one_pct),
        ]

        task = progress.add_task(f"erasing 1% as {n1} one-row requests", total=2 * n1)
        sisa_single: list[float] = []
        sisa_single_wall: list[float] = []
        full_single: list[float] = []
        full_single_wall: list[float] = []
        current, plain_current = work / "sisa", work / "plain"
        for k, row in enumerate(one_pct):
            nxt = work / f"sisa-single-{k}"
            result, wall = _timed_erase(current, nxt, [row], "sisa")
            sisa_single.append(result.seconds)
            sisa_single_wall.append(wall)
            current = nxt
            progress.advance(task)
            nxt_plain = work / f"full-single-{k}"
            result, wall = _timed_erase(plain_current, nxt_plain, [row], "exact")
            full_single.append(result.seconds)
            full_single_wall.append(wall)
            plain_current = nxt_plain
            progress.advance(task)
        verify_jobs.append((f"SISA, {n1} one-row requests", work / "sisa", current, one_pct))

        task = progress.add_task("erasing 10% with SISA", total=1)
        big, big_wall = _timed_erase(work / "sisa", work / "sisa-10", ten_pct, "sisa")
        progress.advance(task)
        verify_jobs.append(("SISA, 10% in one request", work / "sisa", work / "sisa-10", ten_pct))

        task = progress.add_task("verifying with LiRA (reference models)", total=len(verify_jobs))
        verified: dict[str, Verification] = {}
        for label, old, new, ids in verify_jobs:
            verified[label] = verify_erasure(old, new, ids=ids, references=refs, device="cpu")
            progress.advance(task)

        task = progress.add_task("power check on an overfit model", total=1)
        power = power_check(work, refs)
        progress.advance(task)

    import dlsec.core.evaluation as ev
    from dlsec.core.loading import load_model

    _, test = data.split(test_size=0.25, seed=0)

    def acc(folder: Path) -> float:
        return ev.evaluate(load_model(str(folder / "model.safetensors")), test).accuracy

    t_full = full.seconds
    rows = [
        {"label": "full retraining", "model": "plain", "erased": n1, "requests": 1, "s": t_full,
         "wall": full_wall, "speedup": 1.0, "acc": full.metrics["clean_accuracy"]},
        {"label": "NegGrad+", "model": "plain", "erased": n1, "requests": 1, "s": approx.seconds,
         "wall": approx_wall, "speedup": t_full / approx.seconds, "acc": approx.metrics["clean_accuracy"]},
        {"label": "SISA, one request", "model": "SISA", "erased": n1, "requests": 1, "s": batch.seconds,
         "wall": batch_wall, "speedup": t_full / batch.seconds, "acc": batch.metrics["clean_accuracy"],
         "shards": len(batch.shards_retrained)},
        {"label": f"full retraining, {n1} one-row requests", "model": "plain", "erased": n1, "requests": n1,
         "s": sum(full_single), "wall": sum(full_single_wall), "speedup": 1.0, "acc": acc(plain_current)},
        {"label": f"SISA, {n1} one-row requests", "model": "SISA", "erased": n1, "requests": n1,
         "s": sum(sisa_single), "wall": sum(sisa_single_wall), "speedup": sum(full_single) / sum(sisa_single),
         "acc": acc(current), "shards": 1},
        {"label": "SISA, 10% in one request", "model": "SISA", "erased": len(ten_pct), "requests": 1,
         "s": big.seconds, "wall": big_wall, "speedup": t_full / big.seconds,
         "acc": big.metrics["clean_accuracy"], "shards": len(big.shards_retrained)},
    ]  # fmt: skip

    gap = 100 * (acc_plain - acc_sisa)
    console.print(
        f"\ntrained on {len(train_index)} rows, {epochs} epochs: plain MLP test accuracy {acc_plain:.4f} "
        f"({plain_s:.1f} s), SISA 5x5 {acc_sisa:.4f} ({sisa_s:.1f} s): gap {gap:.2f} points (target <= 2)"
    )
    table = Table(title=f"Erasing 1% of the training rows ({n1} of {len(train_index)}), one thread")
    for col in ("method", "erased", "requests", "shards", "unlearning s", "erase() s", "speedup", "test acc",
                "LiRA AUC (95% CI)", "AUC before", "verified"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        label = r["label"]
        v = verified.get(label)
        table.add_row(
            label,
            str(r["erased"]),
            str(r["requests"]),
            str(r.get("shards", "-")),
            f"{r['s']:.2f}",
            f"{r['wall']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['acc']:.4f}",
            _auc(v) if v else "-",
            f"{v.auc_before:.3f}" if v else "-",
            ("yes" if v.verified else "NO") if v else "-",
        )
    console.print(table)
    console.print(
        "speedup: against full retraining of the plain model for the same requests (unlearning seconds); "
        f"LiRA: {refs} online references trained like the target, 200 fresh test rows; the interval is "
        "Hanley-McNeil floored at chance's spread. Targets: speedup >= 3x, accuracy within 2 points, "
        "|AUC - 0.5| <= 0.05."
    )
    for label, v in verified.items():
        for note in v.notes:
            console.print(f"[dim]{label}: {note}[/]")
    check = Table(
        title="Power check: 60 of 300 rows (half mislabelled) of an MLP trained 200 epochs, 100 fresh rows"
    )
    check.add_column("erasure")
    check.add_column("LiRA verification")
    for label, text in power:
        check.add_row(label, text)
    console.print(check)
    console.print(f"[dim]models in {work}[/]")


if __name__ == "__main__":
    main()
