"""``dlsec extract``: clone a model through its predictions within a query budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.attacks.extraction import (
    EXTRACTION_ATTACKS,
    QUERY_SOURCES,
    attacker_pool,
    get_extraction_attack,
)
from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar
from dlsec.cli.commands import (
    ArchArgOpt,
    ArchOpt,
    DataOpt,
    LabelColOpt,
    ModelOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
)
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.io import save_safetensors_model
from dlsec.core.model import restrict_access
from dlsec.errors import UsageError


@app.command()
def extract(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    method: Annotated[
        str, typer.Option("--method", help="Extraction method: knockoff, jbda or copycat.")
    ] = "knockoff",
    budget: Annotated[int, typer.Option("--budget", "-b", help="Most queries the attack may send.")] = 1000,
    access: Annotated[
        str | None,
        typer.Option("--access", help="Query the target at score or decision access (default: score)."),
    ] = None,
    queries: Annotated[
        str | None,
        typer.Option(
            "--queries",
            help="Attacker's data: pd (train split, unlabelled), ood (natural photos and noise) or mixed; "
            "default per method (knockoff mixed, copycat ood, jbda pd).",
        ),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Knockoff sampling strategy: random or adaptive.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method hyperparameter key=value (repeatable), e.g. seeds=20."),
    ] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option("--checkpoints", help="Query counts for the agreement curve, comma-separated."),
    ] = None,
    clone_arch: Annotated[
        str | None, typer.Option("--clone-arch", help="Clone architecture: cnn, mlp or module:factory.")
    ] = None,
    clone_arch_arg: Annotated[
        list[str] | None, typer.Option("--clone-arch-arg", help="Clone architecture argument key=value.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Save the clone to this .safetensors file.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attack's random choices.")] = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Extract a clone of a model by querying it; report its agreement with the target and its accuracy.

    The data's train split (labels dropped) is the attacker's problem-domain data; its test
    split scores the clone. Exits 0 when the attack ran (whatever the agreement).

    Example:

    \b
        dlsec extract --model zoo:digits-cnn --data builtin:digits --budget 1000 --out clone.safetensors
    """
    name = method.lower()
    if name not in EXTRACTION_ATTACKS:
        raise UsageError(f"--method must be one of {', '.join(sorted(EXTRACTION_ATTACKS))}, got {method!r}")
    if budget < 1:
        raise UsageError(f"--budget must be a positive number of queries, got {budget}")
    if access is not None and access not in ("score", "decision"):
        raise UsageError(f"--access must be score or decision, got {access!r}")
    if out is not None:
        if out.suffix != ".safetensors":
            raise UsageError(f"--out must name a .safetensors file, got {out}")
        if out.exists() and not force:
            raise UsageError(f"{out} exists; pass --force to overwrite it")
    if queries is not None and queries not in QUERY_SOURCES:
        raise UsageError(f"--queries must be one of {', '.join(QUERY_SOURCES)}, got {queries!r}")
    params: dict[str, Any] = parse_arch_kwargs(param or [], what="method")
    if strategy is not None:
        if name != "knockoff":
            raise UsageError("--strategy applies to --method knockoff only")
        params["strategy"] = strategy
    points = _checkpoints(checkpoints)
    params.update(
        budget=budget,
        seed=seed,
        checkpoints=points,
        clone_arch=clone_arch,
        clone_arch_kwargs=parse_arch_kwargs(clone_arch_arg) if clone_arch_arg else None,
    )
    try:
        attack = get_extraction_attack(name, **params)
    except TypeError as exc:
        raise UsageError(f"--param: {exc}") from None
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    target = restrict_access(loaded, access or ("score" if loaded.access.label != "decision" else "decision"))
    train, test = dataset.split(test_size=test_size, seed=split_seed)
    pool = attacker_pool(name, train.x, loaded.spec, budget=budget, source=queries, seed=seed)
    with progress_bar(f"extracting ({name})", enabled=not json_out) as callback:
        result = attack(target, pool, test=test, progress=callback)
    summary: dict[str, Any] = {
        "model": model,
        "data": data,
        "method": name,
        "queries_from": pool.source,
        "pool_size": len(pool),
        "test_rows": len(test),
        **result.summary(),
    }
    if out is not None:
        saved = save_safetensors_model(
            result.clone.module, loaded.spec, out, arch=result.arch, arch_kwargs=result.arch_kwargs
        )
        summary["out"] = str(saved)
    if json_out:
        emit_json(summary)
        return
    _print(summary)


def _checkpoints(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--checkpoints must be comma-separated query counts, got {text!r}") from None


def _print(s: dict[str, Any]) -> None:
    console = out_console()
    table = Table(title=f"{s['method']} on {escape(s['model'])} ({s['access']}), {escape(s['data'])}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("queries (budget)", f"{s['queries']} ({s['budget']})"),
        ("query data", f"{s['queries_from']} (pool of {s['pool_size']})"),
        ("agreement with the target", f"{s['agreement']:.4f}"),
        ("clone accuracy", f"{s['clone_accuracy']:.4f}"),
        ("target accuracy", f"{s['target_accuracy']:.4f}"),
        ("clone architecture", s["clone_arch"]),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if s["curve"]:
        curve = Table("queries", "agreement", "clone accuracy", title="agreement against queries")
        for point in s["curve"]:
            curve.add_row(str(point["queries"]), f"{point['agreement']:.4f}", f"{point['accuracy']:.4f}")
        console.print(curve)
    if "out" in s:
        console.print(f"wrote {escape(s['out'])}")
