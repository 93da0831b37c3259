"""``dlsec data``: audit a training set for poisoning; produce poisoned sets for demos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar, settings
from dlsec.cli._options import ArchArgOpt, ArchOpt, DataOpt, LabelColOpt, SeedOpt
from dlsec.errors import EXIT_FINDING, DataError, UsageError
from dlsec.fsutil import atomic_write_with

if TYPE_CHECKING:
    from dlsec.core import Dataset, WhiteBoxModel

# PyTorch and dlsec.core load inside the commands that need them: `dlsec data pii` (pii_cmd,
# in this group) starts without them.

group = typer.Typer(help="Training-set audits (poisoning, backdoors, label noise) and poisoned demo sets.")
app.add_typer(group, name="data")


def _ratings(ref: str) -> np.ndarray | None:
    """The ratings matrix of a recommender ``.npz`` (array ``ratings``), else ``None``."""
    if not ref.endswith(".npz") or not Path(ref).is_file():
        return None
    try:
        with np.load(ref, allow_pickle=False) as npz:
            return np.asarray(npz["ratings"]) if "ratings" in npz.files else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{ref}: not a readable .npz file ({exc})") from None


@group.command("audit")
def audit(
    ctx: typer.Context,
    data: DataOpt,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A model trained on the data (its representation is used)."),
    ] = None,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    write_clean: Annotated[
        Path | None, typer.Option("--write-clean", help="Write the rows not flagged to this .npz.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of each model the audit trains.")] = 30,
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds of confident learning.")] = 4,
    seed: SeedOpt = 0,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score every row, flag poisoned or mislabelled ones (exit 1 when any is flagged).

    Example:

    \b
        dlsec data poison --data builtin:digits --attack badnets -p target=3 --out poisoned.npz
        dlsec data audit --data poisoned.npz --write-clean clean.npz
    """
    from dlsec.cli.commands import _load_data
    from dlsec.core import WhiteBoxModel, load_model
    from dlsec.core.arch import parse_arch_kwargs
    from dlsec.defend import DataAuditor, ShillingDetector

    if write_clean is not None and write_clean.suffix != ".npz":
        raise UsageError(f"--write-clean must name a .npz file, got {write_clean}")
    ratings = _ratings(data)
    if ratings is not None:
        report = ShillingDetector().detect(ratings)
        payload: dict[str, Any] = {
            "data": data,
            "kind": "ratings",
            "rows": int(ratings.shape[0]),
            "flagged": report.flagged.tolist(),
            "scores": [round(float(s), 6) for s in report.scores],
            "suspected_target_item": report.target_item,
            "item_anomaly": report.item_anomaly,
        }
        if write_clean is not None:
            keep = np.setdiff1d(np.arange(ratings.shape[0]), report.flagged)
            payload["clean"] = str(_write_npz(write_clean, ratings=ratings[keep]))
        _finish(payload, json_out)
        return
    dataset = _load_data(data, label_column)
    given: WhiteBoxModel | None = None
    if model is not None:
        opts = settings(ctx)
        loaded = load_model(
            model,
            arch=arch,
            arch_kwargs=parse_arch_kwargs(arch_arg) if arch_arg else None,
            spec_hint=dataset.spec,
            home=opts.home,
            device=opts.device,
        )
        if not isinstance(loaded, WhiteBoxModel):
            raise UsageError("--model must be a white-box model (zoo:NAME or .safetensors) for the audit")
        given = loaded
    auditor = DataAuditor(model=given, epochs=epochs, folds=folds, seed=seed, device=settings(ctx).device)
    with progress_bar("auditing", enabled=not json_out) as cb:
        result = auditor.audit(dataset, progress=cb)
    payload = {"data": data, "kind": dataset.spec.kind, **result.to_dict()}
    if write_clean is not None:
        clean = result.clean(dataset)
        payload["clean"] = str(clean.save_npz(write_clean))
    _finish(payload, json_out)


def _finish(payload: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(payload)
    else:
        console = out_console()
        n = len(payload["flagged"])
        console.print(f"{escape(payload['data'])}: {payload['rows']} rows, [bold]{n}[/] flagged")
        target = payload.get("suspected_target", payload.get("suspected_target_item"))
        if target is not None:
            what = "item" if payload["kind"] == "ratings" else "class"
            console.print(f"suspected target {what}: [bold]{target}[/]")
        if n:
            shown = ", ".join(str(i) for i in payload["flagged"][:20])
            console.print(f"flagged rows: {shown}{' ...' if n > 20 else ''}")
        if "clean" in payload:
            console.print(f"wrote {escape(payload['clean'])}")
    if payload["flagged"]:
        raise typer.Exit(EXIT_FINDING)


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # NumPy's stub wants str keys typed as a file name

    return atomic_write_with(path, write)


@group.command("poison")
def poison(
    data: DataOpt,
    attack: Annotated[
        str,
        typer.Option("--attack", "-a", help="badnets, blended, label-flip, clean-label or shilling-KIND."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write x, y and poison_index to this .npz.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Attack hyperparameter key=value (repeatable).")
    ] = None,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a poisoned copy of a dataset (with the poisoned row indices) for demos and tests.

    Example:

    \b
        dlsec data poison --data builtin:digits --attack badnets -p target=3 --out poisoned.npz
    """
    from dlsec.attacks.poisoning import ShillingAttack, get_poisoning, synthetic_ratings
    from dlsec.cli.commands import _load_data
    from dlsec.core.arch import parse_arch_kwargs

    if out.suffix != ".npz":
        raise UsageError(f"--out must name a .npz file, got {out}")
    params: dict[str, Any] = parse_arch_kwargs(param or [], what="attack")
    if attack.startswith("shilling-"):
        ratings = _ratings(data)
        if ratings is None:
            if data != "builtin:ratings":
                raise UsageError("shilling attacks need a ratings .npz (array 'ratings') or builtin:ratings")
            ratings = synthetic_ratings(seed=0)
        result = ShillingAttack(kind=attack.removeprefix("shilling-"), **params).inject(ratings)
        path = _write_npz(out, ratings=result.ratings, poison_index=result.fake_index)
        payload: dict[str, Any] = {
            "attack": attack,
            "out": str(path),
            "rows": int(result.ratings.shape[0]),
            "poison_index": result.fake_index.tolist(),
            "target_item": result.target_item,
        }
    else:
        if attack == "feature-collision":
            raise UsageError(
                "feature-collision needs a feature extractor and target inputs: use the Python API"
            )
        dataset: Dataset = _load_data(data, label_column)
        result_p = get_poisoning(attack, **params).poison(dataset)
        path = _write_npz(out, x=result_p.data.x, y=result_p.data.y, poison_index=result_p.poison_index)
        payload = {
            "attack": attack,
            "params": result_p.params,
            "out": str(path),
            "rows": len(result_p.data),
            "poison_index": result_p.poison_index.tolist(),
            "target": result_p.target,
        }
    if json_out:
        emit_json(payload)
        return
    out_console().print(
        f"{attack}: poisoned {len(payload['poison_index'])} of {payload['rows']} rows; "
        f"wrote {escape(payload['out'])}"
    )
