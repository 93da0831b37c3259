"""``dlsec erase``: erase rows from a trained model, verify it with LiRA, sign, register, record.

The rows are named by ``--rows FILE`` (a ``.npz``/``.csv`` of the rows themselves) or ``--ids``
(row indices into the training dataset the model's card names). Rows that are not in the
model's training set are refused (exit 2) before anything is written. A verification failure
is an erasure failure (exit 1): nothing is written, and the failed attempt is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import (
    JsonOpt,
    PassFileOpt,
    _passphrase,
    app,
    emit_json,
    err_console,
    out_console,
    settings,
)
from dlsec.cli.keys_cmd import RegistryUrlOpt
from dlsec.errors import UsageError


@contextmanager
def _stages(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A Rich progress bar per stage (retraining, reference models) on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    labels = {"retrain": "unlearning (retraining)", "references": "verifying: LiRA reference models"}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def callback(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(labels.get(stage, stage), total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield callback


def _parse_ids(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out: list[int] = []
    for value in values:
        for token in value.replace(",", " ").split():
            try:
                out.append(int(token))
            except ValueError:
                raise UsageError(
                    f"--ids: {token!r} is not a row index (give integers, e.g. --ids 3,17)"
                ) from None
    return out


@app.command()
def erase(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="The model folder `dlsec train` wrote (or registry:NAME@VERSION)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new model (must not exist).")],
    rows: Annotated[
        Path | None, typer.Option("--rows", help="The rows to erase: a .npz (x, y) or .csv of the rows.")
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--ids", help="Row indices into the training dataset (comma-separated or repeated)."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="sisa (retrain the affected shards; default for SISA models), exact (retrain from "
            "scratch; default otherwise) or approximate (NegGrad+ fine-tuning).",
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The training dataset (default: the card's).")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Verify with LiRA on the erased rows (--no-verify records it unverified).",
        ),
    ] = True,
    references: Annotated[
        int, typer.Option("--references", min=4, help="Reference models LiRA trains.")
    ] = 16,
    fresh: Annotated[
        int, typer.Option("--fresh", min=10, help="Fresh non-member rows (from the test split) LiRA scores.")
    ] = 200,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", help="Registry model name (default: the registry ref's, or the folder's)."
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option("--register/--no-register", help="Register the new version and record the erasure."),
    ] = True,
    sign: Annotated[
        bool, typer.Option("--sign/--no-sign", help="Sign the new model with HOME/keys (or --key).")
    ] = True,
    key: Annotated[
        Path | None, typer.Option("--key", help="Signing key directory (default: HOME/keys).")
    ] = None,
    passphrase_file: PassFileOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the verification and NegGrad+.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Erase rows from a model (SISA, exact or approximate), verify with LiRA, sign, register, record.

    Exit 1 when LiRA still tells the erased rows from fresh rows (nothing written); exit 2 when
    a row is not in the model's training set.

    Example:

    \b
        dlsec train --recipe sisa --data builtin:digits --arch mlp --out runs/sisa
        dlsec erase --model runs/sisa --ids 3,17 --out runs/sisa-erased --name digits
    """
    from dlsec.comply.erasure import METHODS, erasure_targets
    from dlsec.comply.erasure import erase as run_erase
    from dlsec.core.home import default_key_dir

    home = settings(ctx).home
    if method is not None and method not in METHODS:
        raise UsageError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the new model")
    row_ids = _parse_ids(ids)
    if (rows is None) == (row_ids is None):
        raise UsageError("name the rows to erase: --rows FILE or --ids N,N,... (one of them)")
    if rows is not None and not rows.is_file():
        raise UsageError(f"--rows {rows}: no such file")
    registry_name = name
    folder: str | Path = model
    if model.startswith("registry:"):
        from dlsec.store import Registry

        reg = Registry.open(registry_url, home=home)
        try:
            record = reg.get(model.removeprefix("registry:"))
        finally:
            reg.close()
        folder, registry_name = record.path, name or record.model
    elif not Path(model).exists():
        raise UsageError(f"--model {model}: no such folder; give the folder `dlsec train --out` wrote")
    # Validate the rows before anything is opened or written.
    erasure_targets(folder, rows=rows, ids=row_ids, data=data)
    keys = None
    if sign:
        directory = key if key is not None else default_key_dir(home)
        if not directory.is_dir():
            raise UsageError(f"no signing keys in {directory}: run `dlsec keys generate`, or pass --no-sign")
        from dlsec.release import load_signing_keys

        secret = _passphrase(passphrase_file, confirm=False, prompt=f"passphrase for {directory}")
        keys = load_signing_keys(directory, passphrase=secret)
    if not verify and not json_out:
        err_console().print(
            "warning: --no-verify: the erasure will be recorded as NOT verified", markup=False
        )
    registry = None
    if register:
        from dlsec.store import Registry

        registry = Registry.open(registry_url, home=home)
        registry_name = registry_name or Path(folder).resolve().name
    try:
        with _stages(not json_out) as progress:
            result = run_erase(
                folder,
                out=out,
                rows=rows,
                ids=row_ids,
                method=method,
                data=data,
                verify=verify,
                references=references,
                fresh=fresh,
                seed=seed,
                registry=registry,
                name=registry_name,
                signing_keys=keys,
                force=force,
                device=settings(ctx).device,
                progress=progress,
            )
    finally:
        if registry is not None:
            registry.close()
    if json_out:
        emit_json({**result.to_dict(), "record": result.record})
        return
    console = out_console()
    console.print(
        f"erased [bold]{result.erased}[/] row(s) with {result.method} in {result.seconds:.2f}s: "
        f"clean accuracy [bold]{result.metrics['clean_accuracy']:.4f}[/] on the test split"
    )
    if result.shards_retrained:
        shards = ", ".join(f"{k} (from slice {j})" for k, j in sorted(result.shards_retrained.items()))
        console.print(f"retrained shard(s) {shards}")
    v = result.verification
    if v is not None:
        console.print(
            f"verified: LiRA AUC [bold]{v.auc:.3f}[/] (95% CI {v.auc_ci[0]:.3f}-{v.auc_ci[1]:.3f}) on "
            f"{v.n_erased} erased vs {v.n_fresh} fresh rows, {v.n_references} references; "
            f"before erasure {v.auc_before:.3f} (CI {v.auc_ci_before[0]:.3f}-{v.auc_ci_before[1]:.3f})"
        )
        for note in v.notes:
            console.print(f"note: {escape(note)}")
    else:
        console.print("[bold red]NOT verified[/] (--no-verify)")
    console.print(
        f"wrote {escape(str(result.out))} (root {result.new_digest[:16]}..., signed: {result.signed})"
    )
    if result.version is not None:
        console.print(
            f"registered {escape(result.version)} (parent {escape(str(result.parent))}); "
            f"erasure record: audit entry #{result.record_index}"
        )
