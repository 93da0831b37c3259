"""``dlsec train``: train a classifier with a recipe, save safetensors plus a training card.

Options come from three places, the later winning: the recipe's defaults, a YAML file
(``--config``) and the command line. An interrupted run resumes from its checkpoint when the
same command is run again with the same ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar, settings
from dlsec.cli.commands import ArchArgOpt, ArchOpt, LabelColOpt
from dlsec.comply import erasure  # registers the sisa recipe (an ensemble, trained shard by shard)
from dlsec.core.arch import parse_arch_kwargs
from dlsec.train import RECIPES, TrainedModel, train_and_save, train_options

# Command-line flags of the options whose names differ in messages (the parameter is the key).
_FLAGS = {
    "data": "--data",
    "eps": "--eps",
    "norm": "--norm",
    "steps": "--attack-steps",
    "step_size": "--step-size",
    "beta": "--beta",
    "alpha": "--alpha",
    "epsilon": "--epsilon",
    "delta": "--delta",
    "max_grad_norm": "--max-grad-norm",
    "augmult": "--augmult",
    "grad_sample_mode": "--grad-sample-mode",
    "shards": "--shards",
    "slices": "--slices",
}


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for model.safetensors, its card model.json and checkpoints."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="builtin:digits, builtin:breast-cancer, a .npz, a .csv or an image folder."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option("--recipe", help=f"Training recipe: {', '.join(RECIPES)} (default standard)."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file of options (names as below with _); the command line wins."),
    ] = None,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the training split.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Batch size (expected size under DP's Poisson sampling)."),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="adamw or sgd.")] = None,
    momentum: Annotated[float | None, typer.Option("--momentum", help="SGD momentum.")] = None,
    lr_schedule: Annotated[
        str | None, typer.Option("--lr-schedule", help="constant or cosine (per epoch).")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay")] = None,
    label_smoothing: Annotated[float | None, typer.Option("--label-smoothing")] = None,
    dropout: Annotated[
        float | None, typer.Option("--dropout", help="Dropout rate of the architecture.")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Shifts and noise (images), feature noise (tabular)."),
    ] = None,
    augment_shift: Annotated[
        int | None, typer.Option("--augment-shift", help="Largest image shift (px).")
    ] = None,
    augment_noise: Annotated[
        float | None, typer.Option("--augment-noise", help="Noise std as a fraction of the value range.")
    ] = None,
    early_stopping: Annotated[
        int | None,
        typer.Option("--early-stopping", help="Patience in epochs on a validation split (0: off)."),
    ] = None,
    val_size: Annotated[
        float | None, typer.Option("--val-size", help="Validation fraction of the training split.")
    ] = None,
    eps: Annotated[
        float | None, typer.Option("--eps", help="Adversarial recipes: perturbation budget in input space.")
    ] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="Adversarial recipes: linf or l2.")] = None,
    attack_steps: Annotated[
        int | None, typer.Option("--attack-steps", help="pgd-at/trades: attack iterations per batch.")
    ] = None,
    step_size: Annotated[
        float | None, typer.Option("--step-size", help="pgd-at/trades: attack step.")
    ] = None,
    beta: Annotated[
        float | None, typer.Option("--beta", help="trades: weight of the robustness term.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="fast-at: FGSM step (default 1.25 eps).")
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="dp-sgd: privacy budget epsilon.")
    ] = None,
    delta: Annotated[
        float | None, typer.Option("--delta", help="dp-sgd: privacy budget delta (< 1/n).")
    ] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option("--max-grad-norm", help="dp-sgd: per-example clipping norm.")
    ] = None,
    augmult: Annotated[
        int | None, typer.Option("--augmult", help="dp-sgd: augmented views averaged per example.")
    ] = None,
    grad_sample_mode: Annotated[
        str | None, typer.Option("--grad-sample-mode", help="dp-sgd: auto, hooks, ew, functorch or ghost.")
    ] = None,
    shards: Annotated[
        int | None, typer.Option("--shards", help="sisa: disjoint shards, one model each (default 5).")
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option("--slices", help="sisa: slices per shard, a checkpoint after each (default 5)."),
    ] = None,
    robust_n: Annotated[
        int | None, typer.Option("--robust-n", help="Test rows for AutoAttack robust accuracy (0: skip).")
    ] = None,
    robust_eps: Annotated[
        float | None, typer.Option("--robust-eps", help="Budget of the robust measurement (default: --eps).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for every random choice; recorded in the card.")
    ] = None,
    test_size: Annotated[
        float | None, typer.Option("--test-size", help="Fraction of rows held out as the test split.")
    ] = None,
    split_seed: Annotated[
        int | None, typer.Option("--split-seed", help="Seed of the deterministic train/test split.")
    ] = None,
    label_column: LabelColOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model already in --out and discard its checkpoint.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a classifier with a recipe; save safetensors and a training card; resume if interrupted.

    Recipes: standard (regularisation options), pgd-at, trades, fast-at (need --eps), dp-sgd
    (needs --epsilon) and sisa (--shards, --slices: erasable with `dlsec erase`). Adversarial
    recipes report AutoAttack robust accuracy on test rows.

    Example:

    \b
        dlsec train --data builtin:breast-cancer --epochs 30 --out runs/bc
    """
    options = train_options(
        config_file,
        recipe=recipe,
        data=data,
        arch=arch,
        arch_kwargs=parse_arch_kwargs(arch_arg) if arch_arg else None,
        test_size=test_size,
        split_seed=split_seed,
        label_column=label_column,
        robust_n=robust_n,
        robust_eps=robust_eps,
        recipe_params={
            "eps": eps,
            "norm": norm,
            "steps": attack_steps,
            "step_size": step_size,
            "beta": beta,
            "alpha": alpha,
            "epsilon": epsilon,
            "delta": delta,
            "max_grad_norm": max_grad_norm,
            "augmult": augmult,
            "grad_sample_mode": grad_sample_mode,
            "shards": shards,
            "slices": slices,
        },
        train_config={
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "momentum": momentum,
            "lr_schedule": lr_schedule,
            "weight_decay": weight_decay,
            "label_smoothing": label_smoothing,
            "dropout": dropout,
            "augment": augment,
            "augment_shift": augment_shift,
            "augment_noise": augment_noise,
            "early_stopping": early_stopping,
            "val_size": val_size,
            "seed": seed,
        },
        names=_FLAGS,
    )
    save = erasure.train_sisa_and_save if isinstance(options.recipe, erasure.SISA) else train_and_save
    with progress_bar(f"training ({options.recipe.name})", enabled=not json_out) as callback:
        trained, weights, card_path = save(
            options, out, force=force, device=settings(ctx).device, progress=callback
        )
    _report(trained, trained.dataset["name"], weights, card_path, json_out)


def _report(trained: TrainedModel, data_name: str, weights: Path, card_path: Path, json_out: bool) -> None:
    result: dict[str, Any] = {
        "model": str(weights),
        "card": str(card_path),
        "recipe": trained.recipe,
        "recipe_params": trained.recipe_params,
        "architecture": trained.arch,
        "arch_kwargs": trained.arch_kwargs,
        "seed": trained.config.seed,
        **trained.metrics,
        "robustness": trained.robustness,
        "privacy": trained.privacy,
        "training": trained.training,
    }
    if json_out:
        emit_json(result)
        return
    console = out_console()
    m = trained.metrics
    console.print(
        f"trained [bold]{escape(trained.arch)}[/] with {escape(trained.recipe)} on {escape(data_name)}: "
        f"clean accuracy [bold]{m['clean_accuracy']:.4f}[/] on the test split "
        f"(train {m['train_accuracy']:.4f})"
    )
    if trained.robustness is not None:
        r = trained.robustness
        console.print(
            f"AutoAttack ({r['norm']}, eps {r['eps']:g}, {r['n']} test rows): robust accuracy "
            f"[bold]{r['robust_accuracy']:.4f}[/]"
        )
    if trained.privacy is not None:
        p = trained.privacy
        console.print(
            f"privacy: epsilon spent [bold]{p['epsilon_spent']:.3f}[/] (target {p['epsilon_target']:g}, "
            f"delta {p['delta']:g}, PRV accountant; RDP would say {p['epsilon_rdp']:.3f}), "
            f"noise multiplier {p['noise_multiplier']:.3f}, {p['steps']} steps"
        )
    info = trained.training
    if info.get("resumed_from_epoch"):
        console.print(f"resumed from the checkpoint at epoch {info['resumed_from_epoch']}")
    if info.get("stopped"):
        console.print(f"stopped: {escape(str(info['stopped']))}")
    console.print(f"wrote {escape(str(weights))} and {escape(str(card_path))}")
