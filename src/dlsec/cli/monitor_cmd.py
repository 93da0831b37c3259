"""``dlsec monitor``: offline drift and attack checks between two datasets, and shifted demo data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, out_console
from dlsec.cli.commands import (
    ArchArgOpt,
    ArchOpt,
    LabelColOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
    _pick_split,
)
from dlsec.core import Dataset, Model, load_dataset
from dlsec.core.data import with_spec
from dlsec.errors import EXIT_FINDING, UsageError
from dlsec.fsutil import atomic_write_text
from dlsec.monitor import (
    SHIFTS,
    check,
    default_monitor_config,
    load_monitor_config,
    make_window,
    shift_dataset,
)

group = typer.Typer(
    help="Watch a model's traffic: drift, prediction shifts, adversarial inputs, accuracy.",
    no_args_is_help=True,
)
app.add_typer(group, name="monitor")

SplitHelp = "auto (test split of built-ins, all rows of files), test, train or all."


def _load(ref: str, label_column: str | None, split: str, test_size: float, split_seed: int) -> Dataset:
    data = load_dataset(ref, label_column=label_column)
    return _pick_split(data, split, test_size, split_seed)[0]


@group.command(name="check")
def check_cmd(
    ctx: typer.Context,
    reference: Annotated[str, typer.Option("--reference", "-r", help="Reference data (what is normal).")],
    current: Annotated[str, typer.Option("--current", "-c", help="Current data (production traffic).")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model for prediction, embedding and adversarial detectors."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="monitor.yaml with the alert rules (default: built in).")
    ] = None,
    reference_split: Annotated[str, typer.Option("--reference-split", help=SplitHelp)] = "auto",
    current_split: Annotated[str, typer.Option("--current-split", help=SplitHelp)] = "auto",
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    json_out: JsonOpt = False,
    sarif: Annotated[
        Path | None,
        typer.Option(
            "--sarif", help="Also write a SARIF 2.1.0 log (fired rules, detectors that did not run)."
        ),
    ] = None,
) -> None:
    """Run the detectors on reference and current data; exit 1 when a rule fires.

    Built-in datasets default to their test split, which the zoo models never trained on, so
    model-based detectors compare like with like.

    Example:

    \b
        dlsec monitor shift --data builtin:digits --kind noise --out noisy.npz
        dlsec monitor check --reference builtin:digits --current noisy.npz --model zoo:digits-cnn
    """
    cfg = load_monitor_config(config) if config is not None else None
    loaded: Model | None = None
    if model is not None:
        loaded, ref_all = _model_and_data(ctx, model, reference, arch, arch_arg, label_column)
    elif arch is not None or arch_arg:
        raise UsageError("--arch needs --model")
    else:
        ref_all = load_dataset(reference, label_column=label_column)
    ref = _pick_split(ref_all, reference_split, test_size, split_seed)[0]
    cur = _load(current, label_column, current_split, test_size, split_seed)
    if ref.spec.shape != cur.spec.shape:
        raise UsageError(
            f"reference examples have shape {ref.spec.shape}, current ones {cur.spec.shape}; "
            "compare data of the same kind"
        )
    if loaded is not None:
        cur = with_spec(cur, loaded.spec)
    cfg = cfg or default_monitor_config(loaded)
    report = check(
        cfg,
        make_window(ref.x, model=loaded, y=ref.y),
        make_window(cur.x, model=loaded, y=cur.y),
        model=loaded,
    )
    payload: dict[str, Any] = {
        "reference": {"ref": reference, "rows": len(ref)},
        "current": {"ref": current, "rows": len(cur)},
        "model": model,
        "config": str(config) if config is not None else None,
        **report.to_dict(),
    }
    for row in payload["detectors"]:
        row["details"] = {k: v for k, v in row["details"].items() if k not in ("p_values", "statistics")}
    if sarif is not None:
        atomic_write_text(sarif, json.dumps(report.sarif(current), indent=2) + "\n")
    if json_out:
        emit_json(payload)
    else:
        _print(payload)
    if report.fired:
        raise typer.Exit(EXIT_FINDING)


def _print(payload: dict[str, Any]) -> None:
    console = out_console()
    console.print(
        f"reference {escape(payload['reference']['ref'])} ({payload['reference']['rows']} rows) against "
        f"current {escape(payload['current']['ref'])} ({payload['current']['rows']} rows)"
    )
    holm = payload.get("correction") == "holm"
    columns = ["rule", "detector", "statistic", "p-value", "Holm p" if holm else "threshold", "fires"]
    if payload.get("not_run"):
        skipped = Table("rule", "detector", "not run because", title="not run")
        for item in payload["not_run"]:
            skipped.add_row(escape(item["rule"]), escape(item["check"]), escape(item["reason"]))
        console.print(skipped)
    table = Table(*columns)
    for row in payload["detectors"]:
        p = row["p_value"]
        adjusted = row.get("p_adjusted")
        last = ("-" if adjusted is None else f"{adjusted:.4g}") if holm else f"{row['threshold']:.4g}"
        table.add_row(
            escape(row["rule"]),
            escape(row["name"]),
            f"{row['statistic']:.4g}",
            "-" if p is None else f"{p:.4g}",
            last,
            "[red]yes[/]" if row["drift"] else "no",
        )
    console.print(table)
    if holm:
        note = (
            f"the check as a whole fires at most {payload['alpha']:g} of the time on unchanged data "
            "(Holm across its detectors)"
        )
        if payload.get("uncalibrated"):
            note += f"; {', '.join(payload['uncalibrated'])} decide by their own threshold (no p-value)"
        console.print(escape(note))
    rules = Table("rule", "severity", "fired")
    for rule in payload["rules"]:
        rules.add_row(escape(rule["name"]), rule["severity"], "[red]FIRED[/]" if rule["fired"] else "ok")
    console.print(rules)
    fired = [r for r in payload["rules"] if r["fired"]]
    if fired:
        console.print(f"[bold red]{len(fired)} rule(s) fired[/]")
    elif payload.get("not_run"):
        console.print(
            f"[bold yellow]partial: no drift or attack detected by the detectors that ran; "
            f"{len(payload['not_run'])} did not run[/]"
        )
    else:
        console.print("[bold green]no drift or attack detected[/]")


@group.command(name="shift")
def shift_cmd(
    data: Annotated[
        str, typer.Option("--data", "-d", help="builtin:NAME, a .npz, a .csv or an image folder.")
    ],
    kind: Annotated[str, typer.Option("--kind", help=f"One of: {', '.join(SHIFTS)}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the shifted data (.npz).")],
    severity: Annotated[int, typer.Option("--severity", help="1 (mild) to 5 (strong).")] = 3,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of rows shifted.")] = 1.0,
    split: Annotated[str, typer.Option("--split", help=SplitHelp)] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shift's random draws.")] = 0,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a shifted copy of a dataset (for demos of `dlsec monitor check`).

    Example:

    \b
        dlsec monitor shift --data builtin:digits --kind noise --severity 3 --out noisy.npz
    """
    if out.suffix != ".npz":
        raise UsageError(f"--out must name a .npz file, got {out}")
    base = _load(data, label_column, split, test_size, split_seed)
    shifted = shift_dataset(base, kind, severity=severity, fraction=fraction, seed=seed)
    path = shifted.save_npz(out)
    summary = {"out": str(path), "kind": kind, "severity": severity, "rows": len(shifted), "source": data}
    if json_out:
        emit_json(summary)
    else:
        out_console().print(
            f"wrote {escape(str(path))}: {len(shifted)} rows, {kind} shift at severity {severity}"
        )
