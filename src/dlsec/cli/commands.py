"""The commands. Each parses options, calls the public library API and prints the result."""

from __future__ import annotations

import platform
from typing import Annotated

import numpy as np
import torch
import typer
from rich.markup import escape
from rich.table import Table

import dlsec
from dlsec.cli._app import JsonOpt, app, emit_json, out_console, settings
from dlsec.cli._options import ArchArgOpt as ArchArgOpt
from dlsec.cli._options import ArchOpt as ArchOpt
from dlsec.cli._options import DataOpt as DataOpt
from dlsec.cli._options import LabelColOpt as LabelColOpt
from dlsec.cli._options import ModelOpt as ModelOpt
from dlsec.cli._options import SeedOpt as SeedOpt
from dlsec.cli._options import SplitSeedOpt as SplitSeedOpt
from dlsec.cli._options import TestSizeOpt as TestSizeOpt
from dlsec.core import Dataset, EvalResult, Model, evaluate, load_dataset, load_model
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.data import with_spec
from dlsec.errors import UsageError
from dlsec.zoo import ZOO


def _load_data(ref: str, label_column: str | None) -> Dataset:
    return load_dataset(ref, label_column=label_column)


def _pick_split(data: Dataset, split: str, test_size: float, split_seed: int) -> tuple[Dataset, str]:
    if split == "auto":
        split = "test" if data.name.startswith("builtin:") else "all"
    if split == "all":
        return data, "all"
    if split not in ("train", "test"):
        raise UsageError(f"--split must be auto, test, train or all, got {split!r}")
    train_set, test_set = data.split(test_size=test_size, seed=split_seed)
    chosen = test_set if split == "test" else train_set
    return chosen, f"{split} (test_size={test_size}, seed={split_seed})"


def _model_and_data(
    ctx: typer.Context,
    model_ref: str,
    data_ref: str,
    arch: str | None,
    arch_args: list[str] | None,
    label_column: str | None,
) -> tuple[Model, Dataset]:
    opts = settings(ctx)
    data = _load_data(data_ref, label_column)
    if arch_args and arch is None and not model_ref.endswith(".safetensors"):
        raise UsageError("--arch-arg needs --arch or a .safetensors model")
    model = load_model(
        model_ref,
        arch=arch,
        arch_kwargs=parse_arch_kwargs(arch_args) if arch_args else None,
        spec_hint=data.spec,
        home=opts.home,
        device=opts.device,
    )
    return model, with_spec(data, model.spec)


def _confusion_table(result: EvalResult, names: list[str]) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)", show_lines=False)
    table.add_column("true")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("recall", justify="right")
    for i, row in enumerate(result.confusion):
        recall = result.per_class_accuracy[i]
        table.add_row(names[i], *[str(v) for v in row], "-" if np.isnan(recall) else f"{recall:.3f}")
    return table


def _class_names(model: Model) -> list[str]:
    return list(model.spec.class_names or [str(i) for i in range(model.spec.num_classes)])


@app.command()
def version(json_out: JsonOpt = False) -> None:
    """Print the versions of dlsec and of what it runs on.

    Example:

    \b
        dlsec version --json
    """

    info = {
        "dlsec": dlsec.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
    if json_out:
        emit_json(info)
    else:
        out_console().print(" ".join(f"{k} {v}" for k, v in info.items()))


@app.command(name="eval")
def eval_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    split: Annotated[
        str,
        typer.Option(
            "--split", help="auto (test split of built-ins, all rows of files), test, train or all."
        ),
    ] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Clean accuracy and confusion matrix of a model on a dataset.

    Example:

    \b
        dlsec eval --model zoo:digits-cnn --data builtin:digits
    """
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    subset, split_desc = _pick_split(dataset, split, test_size, split_seed)
    result = evaluate(loaded, subset)
    payload = {
        "model": model,
        "access": loaded.access.label,
        "data": data,
        "split": split_desc,
        "class_names": _class_names(loaded),
        **result.to_dict(),
    }
    if json_out:
        emit_json(payload)
        return
    console = out_console()
    console.print(
        f"{escape(model)} ({loaded.access.label}) on {escape(data)} \\[{escape(split_desc)}]: accuracy "
        f"[bold]{result.accuracy:.4f}[/] over {result.n} examples"
    )
    console.print(_confusion_table(result, _class_names(loaded)))


@app.command(name="zoo")
def zoo_cmd(json_out: JsonOpt = False) -> None:
    """List the built-in zoo models (trained on first use, then cached).

    Example:

    \b
        dlsec zoo
    """
    from dlsec.text import TEXT_ZOO

    rows = [
        {"name": f"zoo:{e.name}", "dataset": e.dataset, "architecture": e.arch, "description": e.description}
        for e in ZOO.values()
    ] + [
        {"name": f"zoo:{e.name}", "dataset": e.dataset, "architecture": e.arch, "description": e.description}
        for e in TEXT_ZOO.values()
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table("model", "dataset", "architecture", "description")
    for r in rows:
        table.add_row(r["name"], r["dataset"], r["architecture"], r["description"])
    out_console().print(table)
