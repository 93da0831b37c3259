"""``dlsec attack``: run one evasion attack and report clean and robust accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.markup import escape
from rich.table import Table

from dlsec.attacks import ATTACKS, TabularConstraints, Transfer, get_attack
from dlsec.attacks.evasion.wrappers import Targeted
from dlsec.cli._app import JsonOpt, app, emit_json, out_console, settings
from dlsec.cli.commands import (
    ArchArgOpt,
    ArchOpt,
    LabelColOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
    _pick_split,
)
from dlsec.core import InputSpec, load_model
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.model import restrict_access
from dlsec.errors import UsageError
from dlsec.fsutil import atomic_write_with


@app.command()
def attack(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="zoo:NAME, a .safetensors file (with --arch) or an .onnx file."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="builtin:NAME, a .npz, a .csv or an image folder.")
    ] = None,
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="Attack name (see --list).")] = "pgd",
    norm: Annotated[str, typer.Option("--norm", help="Threat model: linf, l2 or l1.")] = "linf",
    eps: Annotated[
        float | None, typer.Option("--eps", help="Budget (optional for minimal-norm attacks).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Attack hyperparameter key=value (repeatable), e.g. steps=100."),
    ] = None,
    targeted: Annotated[
        str | None,
        typer.Option(
            "--targeted", help="Run targeted, choosing targets by policy: random, least-likely or next."
        ),
    ] = None,
    access: Annotated[
        str | None,
        typer.Option(
            "--access", help="Attack the model as white-box, score or decision (default: as offered)."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Attack the first N examples of the split.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attack's random draws.")] = 0,
    split: Annotated[str, typer.Option("--split", help="auto, test, train or all.")] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    surrogate: Annotated[
        str | None,
        typer.Option(
            "--surrogate", help="Transfer attack: craft on this white-box model, evaluate on --model."
        ),
    ] = None,
    immutable: Annotated[
        str | None,
        typer.Option(
            "--immutable", help="Tabular: features that must not change (indices or names, comma-separated)."
        ),
    ] = None,
    integer: Annotated[
        str | None,
        typer.Option("--integer", help="Tabular: features that must stay whole numbers (indices or names)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write x (adversarial), y, adv_pred and success to this .npz."),
    ] = None,
    list_attacks: Annotated[bool, typer.Option("--list", help="List the attacks and exit.")] = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="AutoAttack: auto (rand when the model's forward pass is random, else standard), "
            "standard or rand.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run an evasion attack; print clean and robust accuracy, success rate and norms.

    Example:

    \b
        dlsec attack --model zoo:digits-cnn --data builtin:digits --attack autoattack --eps 0.1
    """
    if list_attacks:
        _list(json_out)
        return
    if model is None or data is None:
        raise UsageError("dlsec attack needs --model and --data (or --list)")
    if out is not None and out.suffix != ".npz":
        raise UsageError(f"--out must name a .npz file, got {out}")
    if n is not None and n < 1:
        raise UsageError(f"--n must be positive, got {n}")
    params: dict[str, Any] = parse_arch_kwargs(param or [], what="attack")
    params.update(norm=norm, eps=eps, seed=seed)
    if version is not None:
        if attack_name.lower() != "autoattack":
            raise UsageError(f"--version applies to --attack autoattack only, not {attack_name}")
        params["version"] = version
    atk = get_attack(attack_name, **params)
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    if surrogate is not None:
        opts = settings(ctx)
        source = load_model(surrogate, spec_hint=dataset.spec, home=opts.home, device=opts.device)
        atk = Transfer(source, atk)
    if targeted is not None:
        atk = Targeted(atk, policy=targeted)  # type: ignore[arg-type]  # Typer gives str; the choice list limits it
    constraints = None
    if immutable or integer:
        constraints = TabularConstraints(
            immutable=_features(immutable, loaded.spec), integer=_features(integer, loaded.spec)
        )
    subset, split_desc = _pick_split(dataset, split, test_size, split_seed)
    if n is not None:
        subset = subset.subset(np.arange(min(n, len(subset))))
    target_model = restrict_access(loaded, access)
    result = atk(
        target_model, torch.from_numpy(subset.x), torch.from_numpy(subset.y), constraints=constraints
    )
    summary = {
        "model": model,
        "access": target_model.access.label,
        "data": data,
        "split": split_desc,
        **result.summary(),
    }
    if out is not None:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    x=result.x_adv.numpy(),
                    y=subset.y,
                    adv_pred=result.adv_pred.numpy(),
                    success=result.success.numpy(),
                    x_clean=subset.x,
                )

        summary["out"] = str(atomic_write_with(out, write))
    if json_out:
        emit_json(summary)
        return
    _print_summary(summary)


def _features(text: str | None, spec: InputSpec) -> list[int]:
    """Feature indices from ``"0,3,age"`` (indices or the spec's feature names)."""
    if not text:
        return []
    names = list(spec.feature_names or [])
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.isdigit():
            out.append(int(item))
        elif item in names:
            out.append(names.index(item))
        else:
            raise UsageError(f"unknown feature {item!r}; give indices or one of the data's feature names")
    return out


def _print_summary(s: dict[str, Any]) -> None:
    console = out_console()
    table = Table(title=f"{s['attack']} on {escape(s['model'])} ({s['access']}), {escape(s['data'])}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    eps = "none (minimal)" if s["eps"] is None else f"{s['eps']:g}"
    rows: list[tuple[str, str]] = [
        ("threat model", f"{s['norm']}, eps {eps}{', targeted' if s['targeted'] else ''}"),
        ("examples", str(s["n"])),
        ("clean accuracy", f"{s['clean_accuracy']:.4f}"),
        ("robust accuracy", f"{s['robust_accuracy']:.4f}"),
        ("success rate (of clean-correct)", f"{s['success_rate']:.4f}"),
        ("queries per example", f"{s['queries_per_example']:.1f}"),
    ]
    if "version" in s:
        rows.insert(1, ("version", s["version"]))
    if "scoring" in s:
        rows.insert(3, ("scored by", s["scoring"]))
    norms = s["perturbation_norms"]
    if norms["median"] is not None:
        rows.append(("perturbation norm (median / max)", f"{norms['median']:.4f} / {norms['max']:.4f}"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if "out" in s:
        console.print(f"wrote {escape(s['out'])}")


def _list(json_out: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "access": cls.access.label,
            "norms": list(cls.norms),
            "minimal": cls.minimal,
            "summary": (cls.__doc__ or "").strip().splitlines()[0],
        }
        for name, cls in sorted(ATTACKS.items())
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table("attack", "access", "norms", "summary")
    for r in rows:
        table.add_row(r["name"], r["access"], ", ".join(r["norms"]), r["summary"])
    out_console().print(table)
