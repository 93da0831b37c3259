"""``dlsec fairness``: Fairlearn's group metrics beside per-group robustness, with gates and mitigation.

Exit codes: 0 every gate holds; 1 a gate fails (by default the demographic parity difference
above 0.1; ``--max-eo-diff`` and ``--max-robust-gap`` add gates, ``--max-dp-diff 1`` turns the
default one off); 2 bad input (no such protected column, a model that does not fit the data).
Gates judge the model as given: a mitigation is reported before and after, not gated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar
from dlsec.cli.commands import (
    ArchArgOpt,
    ArchOpt,
    LabelColOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
    _pick_split,
)
from dlsec.core.data import Dataset
from dlsec.core.model import Model
from dlsec.core.spec import InputSpec
from dlsec.errors import EXIT_FINDING, UsageError
from dlsec.fsutil import atomic_write_text

_CONSTRAINTS = {"demographic-parity": "demographic_parity", "equalized-odds": "equalized_odds"}


@app.command()
def fairness(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="zoo:NAME, a .safetensors file (with --arch) or an .onnx file."),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="A tabular dataset with the protected column (builtin:credit-bias, a .csv, a .npz), "
            "or any dataset with --groups.",
        ),
    ],
    protected: Annotated[
        str | None,
        typer.Option(
            "--protected", "-p", help="The protected attribute: a column name (or index) of --data."
        ),
    ] = None,
    groups_file: Annotated[
        Path | None,
        typer.Option(
            "--groups",
            help="Instead of --protected: each row's group, one per row of --data (.npy or text), "
            "for an attribute that is not a model input.",
        ),
    ] = None,
    positive: Annotated[
        str, typer.Option("--positive", help="The class counted as the positive decision (name or index).")
    ] = "1",
    attack_name: Annotated[
        str | None,
        typer.Option(
            "--attack", "-a", help="Also measure robust accuracy per group under this attack (e.g. pgd)."
        ),
    ] = None,
    eps: Annotated[float | None, typer.Option("--eps", help="The attack's budget.")] = None,
    norm: Annotated[str, typer.Option("--norm", help="The attack's threat model: linf, l2 or l1.")] = "linf",
    mitigate_method: Annotated[
        str | None,
        typer.Option(
            "--mitigate",
            help="threshold (Fairlearn's ThresholdOptimizer on the model's scores) or reduction "
            "(ExponentiatedGradient retraining the network); fit on the train split, scored on the "
            "test split.",
        ),
    ] = None,
    constraint: Annotated[
        str,
        typer.Option("--constraint", help="What mitigation equalises: demographic-parity or equalized-odds."),
    ] = "demographic-parity",
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Reduction: ExponentiatedGradient's iterations.")
    ] = 30,
    save_model: Annotated[
        Path | None,
        typer.Option(
            "--save-model",
            help="Reduction: save the mitigated model (the weighted mixture, one safetensors file and "
            "its card) to this folder, loadable like any dlsec model.",
        ),
    ] = None,
    max_dp_diff: Annotated[
        float,
        typer.Option("--max-dp-diff", help="Gate: exit 1 when the demographic parity difference exceeds it."),
    ] = 0.1,
    max_eo_diff: Annotated[
        float | None,
        typer.Option("--max-eo-diff", help="Gate: exit 1 when the equalised-odds difference exceeds it."),
    ] = None,
    max_robust_gap: Annotated[
        float | None,
        typer.Option(
            "--max-robust-gap",
            help="Gate (needs --attack): exit 1 when groups' robust accuracy differs more.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the attack and of randomised mitigations.")
    ] = 0,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Rows measured: auto (test split of built-ins, all rows of files), test, train, all.",
        ),
    ] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write fairness.json into this folder.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Fairness beside robustness: Fairlearn's group metrics, per-group robust accuracy.

    Selection rate, accuracy, true and false positive rates per group of the protected column;
    demographic parity difference and ratio and equalised-odds difference (Fairlearn). With
    --attack, robust accuracy and attack success per group (the protected column stays fixed).
    Exits 1 when a gate fails (by default a demographic parity difference above 0.1). A model
    for the built-in biased credit table: dlsec train --data builtin:credit-bias --out runs/credit.

    Example:

    \b
        dlsec fairness -m runs/credit -d builtin:credit-bias -p group -a pgd --eps 0.05 --mitigate threshold
    """
    from dlsec.attacks import get_attack
    from dlsec.comply.fairness import fairness_report, load_groups, mitigate, protected_column

    if save_model is not None and mitigate_method != "reduction":
        raise UsageError("--save-model saves a reduction's mixture: add --mitigate reduction")
    if save_model is not None and save_model.exists() and any(save_model.iterdir()):
        raise UsageError(f"--save-model {save_model}: exists and is not empty")
    if save_model is not None and not Path(model).exists():
        raise UsageError(f"--save-model needs --model to be a model file or folder, got {model!r}")

    if (protected is None) == (groups_file is None):
        raise UsageError(
            "name the protected attribute: --protected COLUMN or --groups FILE (one label per row)"
        )
    if mitigate_method is not None and mitigate_method not in ("threshold", "reduction"):
        raise UsageError(f"--mitigate must be threshold or reduction, got {mitigate_method!r}")
    if constraint not in _CONSTRAINTS:
        raise UsageError(f"--constraint must be demographic-parity or equalized-odds, got {constraint!r}")
    if max_iter < 1:
        raise UsageError(f"--max-iter must be positive, got {max_iter}")
    if attack_name is None and eps is not None:
        raise UsageError("--eps needs --attack (e.g. --attack pgd)")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out must name a folder, and {out} is a file")
    atk = get_attack(attack_name, norm=norm, eps=eps, seed=seed) if attack_name is not None else None
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    labels = load_groups(groups_file) if groups_file is not None else None
    if labels is not None and len(labels) != len(dataset):
        raise UsageError(f"--groups {groups_file}: {len(labels)} labels for {len(dataset)} rows of {data}")
    if protected is not None:
        protected_column(dataset, protected)
    pos = _positive(loaded, positive)
    subset, split_desc = _pick_split(dataset, split, test_size, split_seed)
    attribute: Any = protected
    if labels is not None:  # the same rows of the labels as of the data
        attribute = labels[_rows(_pick_split(_row_ids(dataset), split, test_size, split_seed)[0])]
    with progress_bar(f"{attack_name} attack", enabled=not json_out and atk is not None) as callback:
        report = fairness_report(
            loaded, subset, protected=attribute, positive=pos, attack=atk, progress=callback
        )
    payload: dict[str, Any] = {**report.to_dict(), "model": model, "data": data, "split": split_desc}
    if mitigate_method is not None:
        fit_rows, eval_rows = dataset.split(test_size=test_size, seed=split_seed)
        if labels is not None:
            fit_ids, eval_ids = _row_ids(dataset).split(test_size=test_size, seed=split_seed)
            attribute = (labels[_rows(fit_ids)], labels[_rows(eval_ids)])
        with progress_bar(
            "mitigation fits", enabled=not json_out and mitigate_method == "reduction"
        ) as callback:
            result = mitigate(
                loaded,
                fit_rows,
                eval_rows,
                protected=attribute,
                method=mitigate_method,  # type: ignore[arg-type]  # checked above
                constraint=_CONSTRAINTS[constraint],  # type: ignore[arg-type]  # a key of the table
                positive=pos,
                seed=seed,
                max_iter=max_iter,
                progress=callback,
            )
        payload["mitigation"] = {
            **result.to_dict(),
            "split": f"fit on train, scored on test (test_size={test_size}, seed={split_seed})",
        }
        if save_model is not None:
            from dlsec.comply.fairness import save_mitigated_model

            payload["mitigation"]["saved"] = str(save_mitigated_model(result, Path(model), save_model))
    failed = report.check(max_dp_diff=max_dp_diff, max_eo_diff=max_eo_diff, max_robust_gap=max_robust_gap)
    payload["gates"] = {
        "max_dp_diff": max_dp_diff,
        "max_eo_diff": max_eo_diff,
        "max_robust_gap": max_robust_gap,
        "failed": failed,
        "passed": not failed,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "fairness.json", json.dumps(payload, indent=2) + "\n")
    if json_out:
        emit_json(payload)
    else:
        _print(payload, out)
    if failed:
        raise typer.Exit(EXIT_FINDING)


def _row_ids(data: Dataset) -> Dataset:
    """The row numbers of ``data`` as a dataset with its labels and name: split and picked the
    same way, it says which rows a split of ``data`` holds (for labels kept beside the data)."""
    n = len(data)
    spec = InputSpec(
        shape=(1,), num_classes=data.spec.num_classes, lower=0.0, upper=float(max(n, 1)), kind="tabular"
    )
    return Dataset(np.arange(n, dtype=np.float32)[:, None], data.y, spec, data.name)


def _rows(ids: Dataset) -> np.ndarray:
    return ids.x[:, 0].astype(np.int64)


def _positive(model: Model, text: str) -> int:
    names = list(model.spec.class_names or [])
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < model.spec.num_classes:
        return int(text)
    shown = ", ".join(names) if names else f"0..{model.spec.num_classes - 1}"
    raise UsageError(f"--positive {text!r} is not a class of the model ({shown})")


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print(payload: dict[str, Any], out: Path | None) -> None:
    console = out_console()
    console.print(
        f"{escape(payload['model'])} on {escape(payload['data'])} \\[{escape(payload['split'])}]: "
        f"{payload['n']} rows, protected column [bold]{escape(payload['protected'])}[/], "
        f"positive decision {escape(payload['positive'])}"
    )
    robust = payload["attack"] is not None
    table = Table("group", "rows", "accuracy", "selection rate", "TPR", "FPR", title="per group (Fairlearn)")
    if robust:
        table.add_column("robust accuracy")
        table.add_column("attack success")
    for g, m in payload["groups"].items():
        cells = [
            _fmt(m[k]) for k in ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
        ]
        if robust:
            cells += [_fmt(m["robust_accuracy"]), _fmt(m["attack_success"])]
        table.add_row(escape(g), str(m["count"]), *cells)
    console.print(table)
    console.print(
        f"demographic parity difference {_fmt(payload['demographic_parity_difference'])}, "
        f"ratio {_fmt(payload['demographic_parity_ratio'])}; equalised-odds difference "
        f"{_fmt(payload['equalized_odds_difference'])}; accuracy gap {_fmt(payload['accuracy_gap'])} "
        f"(worst group {escape(payload['accuracy_worst_group'])})"
    )
    if robust:
        a = payload["attack"]
        console.print(
            f"{escape(a['attack'])} ({a['norm']}, eps {a['eps']}): robust accuracy "
            f"{_fmt(payload['robust_accuracy'])} overall, gap between groups {_fmt(payload['robust_gap'])}, "
            f"worst group [bold]{escape(str(payload['robust_worst_group']))}[/]"
        )
    mit = payload.get("mitigation")
    if mit:
        t = Table(
            "",
            "accuracy",
            "selection rate",
            "DP difference",
            "DP ratio",
            "EO difference",
            title=f"mitigation: {mit['method']} ({mit['constraint']}), {mit['split']}",
        )
        for when in ("before", "after"):
            m = mit[when]
            t.add_row(
                when,
                *[
                    _fmt(m[k])
                    for k in (
                        "accuracy",
                        "selection_rate",
                        "demographic_parity_difference",
                        "demographic_parity_ratio",
                        "equalized_odds_difference",
                    )
                ],
            )
        console.print(t)
    for note in payload["notes"]:
        console.print(f"[dim]{escape(note)}[/]")
    gates = payload["gates"]
    for line in gates["failed"]:
        console.print(f"[bold red]gate failed:[/] {escape(line)}")
    if gates["passed"]:
        console.print("[green]fairness gates passed[/]")
    if out is not None:
        console.print(f"wrote {escape(str(out / 'fairness.json'))}")
