"""``dlsec model``: scans of a trained model (backdoors)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar
from dlsec.cli.commands import ArchArgOpt, ArchOpt, DataOpt, LabelColOpt, ModelOpt, SeedOpt, _model_and_data
from dlsec.core import WhiteBoxModel
from dlsec.errors import EXIT_FINDING, UsageError

group = typer.Typer(help="Scan a trained model (backdoors).")
app.add_typer(group, name="model")


@group.command("scan-backdoor")
def scan_backdoor(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps per class.")] = 300,
    examples: Annotated[
        int, typer.Option("--examples", help="Clean examples the triggers are fitted on.")
    ] = 128,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Anomaly index that means a backdoor.")
    ] = 2.0,
    seed: SeedOpt = 0,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Neural Cleanse backdoor scan with clean examples (exit 1 when a backdoor is found).

    Example:

    \b
        dlsec model scan-backdoor --model zoo:digits-cnn --data builtin:digits
    """
    from dlsec.defend import NeuralCleanse

    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    if not isinstance(loaded, WhiteBoxModel):
        raise UsageError("the backdoor scan needs a white-box model (zoo:NAME or .safetensors)")
    scanner = NeuralCleanse(steps=steps, max_examples=examples, threshold=threshold, seed=seed)
    with progress_bar("scanning", enabled=not json_out):
        report = scanner.scan(loaded, dataset)
    payload = {"model": model, "data": data, **report.to_dict()}
    region = None
    if report.backdoor:
        from dlsec.defend.localise import localise_scan

        with progress_bar("locating the trigger (occlusion)", enabled=not json_out):
            region = localise_scan(loaded, dataset.x[: min(len(dataset), 64)], report)
        if region is not None:
            payload["localisation"] = region.to_dict()
    if json_out:
        emit_json(payload)
    else:
        table = Table(
            "class", "mask L1", "anomaly index", "trigger success", title=f"backdoor scan of {escape(model)}"
        )
        for c in range(len(report.mask_l1)):
            table.add_row(
                str(c),
                f"{report.mask_l1[c]:.2f}",
                f"{report.anomaly_index[c]:.2f}",
                f"{report.success[c]:.2f}",
            )
        console = out_console()
        console.print(table)
        verdict = f"BACKDOOR: target class {report.target}" if report.backdoor else "no backdoor found"
        console.print(f"[bold]{verdict}[/] (threshold {report.threshold:g})")
        if region is not None and region.bbox is not None:
            r0, r1, c0, c1 = region.bbox
            console.print(
                f"the decision comes from rows {r0}-{r1}, columns {c0}-{c1} (occlusion, {region.k} pixels); "
                f"IoU with the Neural Cleanse mask {region.reference_iou:.2f}"
            )
    if report.backdoor:
        raise typer.Exit(EXIT_FINDING)
