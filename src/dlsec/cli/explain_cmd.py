"""``dlsec explain``: attributions for the first examples of a split, checked, written as files."""

from __future__ import annotations

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
    DataOpt,
    LabelColOpt,
    ModelOpt,
    SeedOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
    _pick_split,
)
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.model import restrict_access
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError


@app.command(name="explain")
def explain_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for heat maps or rankings, index.html and explain.json."),
    ],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="saliency, ig, smoothgrad, deeplift, gradient-shap, gradcam, occlusion or kernel-shap "
            "(repeatable: several are compared). Default: ig, or occlusion for a score-only model.",
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Explain the first N examples of the split.")] = 16,
    target: Annotated[
        int | None,
        typer.Option("--target", help="Class to explain (default: each example's predicted class)."),
    ] = None,
    layer: Annotated[
        str | None, typer.Option("--layer", help="gradcam: the layer to explain (default: the last Conv2d).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method parameter key=value (repeatable), e.g. n_steps=100."),
    ] = None,
    baseline: Annotated[
        str, typer.Option("--baseline", help="Reference input: lower (the data's lower bound) or zeros.")
    ] = "lower",
    checks: Annotated[
        bool,
        typer.Option(
            "--checks/--no-checks",
            help="Run the quality checks (infidelity, sensitivity, deletion/insertion, randomisation).",
        ),
    ] = True,
    access: Annotated[
        str | None,
        typer.Option("--access", help="Explain the model as white-box or score (default: as offered)."),
    ] = None,
    seed: SeedOpt = 0,
    split: Annotated[str, typer.Option("--split", help="auto, test, train or all.")] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain predictions (Captum attributions), check the explanations, write heat maps or rankings.

    Example:

    \b
        dlsec explain --model zoo:digits-cnn --data builtin:digits --method ig --method gradcam -o explained
    """
    from dlsec.explain import CHECKS, explain_batch

    positive_int("--n", n)
    params: dict[str, Any] = parse_arch_kwargs(param or [], what="method")
    if layer is not None:
        params["layer"] = layer
    if baseline not in ("lower", "zeros"):
        raise UsageError(f"--baseline must be lower or zeros, got {baseline!r}")
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    explained = restrict_access(loaded, access)
    subset, split_desc = _pick_split(dataset, split, test_size, split_seed)
    subset = subset.subset(np.arange(min(n, len(subset))))
    with progress_bar("explaining", enabled=not json_out) as progress:
        run = explain_batch(
            explained,
            subset.x,
            methods=method or None,
            labels=subset.y,
            target=target,
            params=params,
            baseline=baseline,
            checks=CHECKS if checks else (),
            seed=seed,
            progress=progress,
        )
    meta = {"model": model, "access": explained.access.label, "data": data, "split": split_desc}
    payload = run.write(out, meta=meta)
    if json_out:
        emit_json({**payload, "out": str(out)})
        return
    _print(payload, out)


def _print(payload: dict[str, Any], out: Path) -> None:
    console = out_console()
    table = Table(
        "method",
        "infidelity",
        "sensitivity",
        "deletion AUC",
        "insertion AUC",
        "random. rho",
        title=f"{escape(payload['model'])} on {escape(payload['data'])}: {payload['n']} examples explained",
    )
    for name, entry in payload["methods"].items():
        q = entry.get("quality") or {}
        rnd = q.get("randomisation")
        table.add_row(
            escape(name),
            _num(q.get("infidelity")),
            _num(q.get("sensitivity")),
            _pair(q.get("deletion"), q.get("deletion_random")),
            _pair(q.get("insertion"), q.get("insertion_random")),
            "-" if rnd is None else f"{rnd['final_correlation']:.2f}" + (" FLAG" if rnd["flagged"] else ""),
        )
    console.print(table)
    if any(entry.get("quality") for entry in payload["methods"].values()):
        console.print(
            "lower is better for infidelity, sensitivity and deletion AUC, higher for insertion AUC "
            "(a random order's in brackets); random. rho: rank correlation with the explanation of the "
            "model with randomised weights (high: the explanation ignores what the model learned)",
            soft_wrap=True,
        )
    if payload["agreement"]:
        agree = Table("methods", "rank correlation", "top-k intersection", "k", title="agreement")
        for a in payload["agreement"]:
            agree.add_row(
                escape(" / ".join(a["methods"])),
                f"{a['rank_correlation']:.3f}",
                f"{a['top_k_intersection']:.3f}",
                str(a["k"]),
            )
        console.print(agree)
    for name, entry in payload["methods"].items():
        if "ranking" in entry:
            top = ", ".join(escape(r["name"]) for r in entry["ranking"][:5])
            console.print(f"{escape(name)}: top features {top}", soft_wrap=True)
        for check, reason in ((entry.get("quality") or {}).get("skipped") or {}).items():
            console.print(f"{escape(name)}: {check} skipped ({escape(reason)})", soft_wrap=True)
    for warning in payload["warnings"]:
        console.print(f"[bold red]warning:[/] {escape(warning)}", soft_wrap=True)
    console.print(f"wrote {escape(str(out / 'index.html'))} and explain.json", soft_wrap=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _pair(curve: dict[str, Any] | None, random: dict[str, Any] | None) -> str:
    if curve is None:
        return "-"
    return f"{curve['auc']:.2f}" + ("" if random is None else f" ({random['auc']:.2f})")
