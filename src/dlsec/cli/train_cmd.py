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
from dlsec.errors import UsageError
from dlsec.train import RECIPES, TrainedModel, train_and_save, train_options

_TEXT_RECIPES = ("text-augment", "text-adversarial")
_TEXT_FLAGS = {
    "attack": "--text-attack",
    "max_change": "--max-change",
    "n": "--attack-n",
    "every": "--attack-every",
    "warmup": "--warmup",
    "query_budget": "--query-budget",
}

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
        typer.Option(
            "--recipe",
            help=f"Training recipe: {', '.join(RECIPES)}; text data: standard, {', '.join(_TEXT_RECIPES)}.",
        ),
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
    text_column: Annotated[
        str | None,
        typer.Option("--text-column", help="Text data: the text column of a CSV (marks it as text)."),
    ] = None,
    text_attack: Annotated[
        str | None,
        typer.Option(
            "--text-attack", help="text recipes: pwws, deepwordbug, textfooler or hotflip (default pwws)."
        ),
    ] = None,
    max_change: Annotated[
        float | None,
        typer.Option("--max-change", help="text recipes: the attack's budget, fraction of words."),
    ] = None,
    attack_n: Annotated[
        int | None, typer.Option("--attack-n", help="text recipes: training texts attacked per round.")
    ] = None,
    attack_every: Annotated[
        int | None,
        typer.Option("--attack-every", help="text-adversarial: epochs between rounds (default 1)."),
    ] = None,
    warmup: Annotated[
        int | None, typer.Option("--warmup", help="text-adversarial: clean epochs before the first round.")
    ] = None,
    query_budget: Annotated[
        int | None, typer.Option("--query-budget", help="text-adversarial: model queries per attacked text.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model already in --out and discard its checkpoint.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a classifier with a recipe; save safetensors and a training card; resume if interrupted.

    Recipes: standard (regularisation options), pgd-at, trades, fast-at (need --eps), dp-sgd
    (needs --epsilon) and sisa (--shards, --slices: erasable with `dlsec erase`). Adversarial
    recipes report AutoAttack robust accuracy on test rows. On text data (builtin:rotten-tomatoes,
    a .jsonl, a .csv with --text-column): standard, text-augment (one round of adversarial
    texts) and text-adversarial (adversarial texts regenerated against the current model every
    --attack-every epochs); the text model folder is written as `dlsec text train` writes it.

    Example:

    \b
        dlsec train --data builtin:breast-cancer --epochs 30 --out runs/bc
    """
    text_only = {
        "--text-attack": text_attack,
        "--max-change": max_change,
        "--attack-n": attack_n,
        "--attack-every": attack_every,
        "--warmup": warmup,
        "--query-budget": query_budget,
        "--text-column": text_column,
    }
    if _is_text_data(data, text_column, recipe):
        others = {
            "--config": config_file,
            "--arch-arg": arch_arg,
            "--batch-size": batch_size,
            "--lr": lr,
            "--optimizer": optimizer,
            "--momentum": momentum,
            "--lr-schedule": lr_schedule,
            "--weight-decay": weight_decay,
            "--label-smoothing": label_smoothing,
            "--dropout": dropout,
            "--augment": augment,
            "--augment-shift": augment_shift,
            "--augment-noise": augment_noise,
            "--early-stopping": early_stopping,
            "--val-size": val_size,
            "--eps": eps,
            "--norm": norm,
            "--attack-steps": attack_steps,
            "--step-size": step_size,
            "--beta": beta,
            "--alpha": alpha,
            "--epsilon": epsilon,
            "--delta": delta,
            "--max-grad-norm": max_grad_norm,
            "--augmult": augmult,
            "--grad-sample-mode": grad_sample_mode,
            "--shards": shards,
            "--slices": slices,
            "--robust-eps": robust_eps,
            "--split-seed": split_seed,
        }
        given = [flag for flag, value in others.items() if value is not None and value is not False]
        if given:
            raise UsageError(f"{given[0]} does not apply to text data (text training splits with --seed)")
        _train_text(
            out,
            data,
            recipe or "standard",
            arch,
            epochs,
            seed,
            test_size,
            label_column,
            text_column,
            {
                "attack": text_attack,
                "max_change": max_change,
                "n": attack_n,
                "every": attack_every,
                "warmup": warmup,
                "query_budget": query_budget,
            },
            robust_n,
            force,
            json_out,
        )
        return
    given_text = [flag for flag, value in text_only.items() if value is not None]
    if given_text:
        raise UsageError(
            f"{given_text[0]} applies to text data "
            "(builtin:rotten-tomatoes, a .jsonl, a .csv with --text-column)"
        )
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


def _is_text_data(data: str | None, text_column: str | None, recipe: str | None) -> bool:
    """Text data: a built-in text corpus, a .jsonl, a .csv with --text-column, or a text recipe."""
    from dlsec.text import BUILTIN_TEXT_DATASETS

    if recipe in _TEXT_RECIPES or text_column is not None:
        return True
    if data is None:
        return False
    if data.startswith("builtin:"):
        return data.removeprefix("builtin:") in BUILTIN_TEXT_DATASETS
    return data.lower().endswith(".jsonl")


def _train_text(
    out: Path,
    data: str | None,
    recipe: str,
    arch: str | None,
    epochs: int | None,
    seed: int | None,
    test_size: float | None,
    label_column: str | None,
    text_column: str | None,
    params: dict[str, Any],
    robust_n: int | None,
    force: bool,
    json_out: bool,
) -> None:
    """``dlsec train`` on text data: dlsec.text's trainer with the standard or an adversarial recipe."""
    from dlsec.text import AdversarialTraining, load_text_dataset, train_text_model

    if recipe not in ("standard", *_TEXT_RECIPES):
        raise UsageError(
            f"recipe {recipe!r} does not apply to text data; choose standard, {', '.join(_TEXT_RECIPES)}"
        )
    if data is None:
        raise UsageError("pass --data (builtin:rotten-tomatoes, a .jsonl or a .csv with --text-column)")
    given = {k: v for k, v in params.items() if v is not None}
    allowed: set[str] | None = {"standard": set(), "text-augment": {"attack", "max_change", "n"}}.get(recipe)
    extra = sorted(set(given) - allowed) if allowed is not None else []
    if extra:
        raise UsageError(f"{_TEXT_FLAGS[extra[0]]} does not apply to recipe {recipe}")
    if (out / "model.safetensors").exists() and not force:
        raise UsageError(
            f"{out / 'model.safetensors'} exists; pass --force to replace it or pick another --out"
        )
    corpus = load_text_dataset(data, text_column=text_column, label_column=label_column)
    adversarial = None
    kwargs: dict[str, Any] = {}
    if recipe == "text-adversarial":
        adversarial = AdversarialTraining(**{"attack": "pwws", **given})
    elif recipe == "text-augment":
        kwargs = {"augment": given.get("attack", "pwws"), "max_change": given.get("max_change", 0.2)}
        if "n" in given:
            kwargs["augment_n"] = given["n"]
    with progress_bar(f"training ({recipe})", enabled=not json_out) as callback:
        result = train_text_model(
            corpus,
            arch=arch or "embedding-bag",
            out=out,
            epochs=epochs,
            seed=seed if seed is not None else 0,
            test_size=test_size if test_size is not None else 0.25,
            adversarial=adversarial,
            robust_n=robust_n,
            progress=callback,
            **kwargs,
        )
    payload = {
        "model": str(out),
        "card": str(out / "model.json"),
        "recipe": result.recipe,
        "architecture": arch or "embedding-bag",
        "data": corpus.name,
        "seed": seed if seed is not None else 0,
        **result.metrics,
        "robustness": result.robustness,
        "rounds": list(result.rounds),
    }
    if json_out:
        emit_json(payload)
        return
    console = out_console()
    m = result.metrics
    console.print(
        f"trained [bold]{escape(str(payload['architecture']))}[/] with {escape(result.recipe)} on "
        f"{escape(corpus.name)}: test accuracy [bold]{m['test_accuracy']:.4f}[/] "
        f"(train {m['train_accuracy']:.4f})"
    )
    for r in result.rounds:
        console.print(
            f"  epoch {r['epoch']}: attacked {r['attacked']}, fooled {r['added']} "
            f"(success {r['success_rate']:.3f}), all added to training"
        )
    if result.robustness is not None:
        r = result.robustness
        console.print(
            f"{escape(r['attack'])} ({r['max_change']:.0%} of words, {r['n']} test texts): robust accuracy "
            f"[bold]{r['robust_accuracy']:.4f}[/], attack success {r['success_rate']:.3f}"
        )
    console.print(f"wrote {escape(str(out))} (config.json, model.safetensors, tokenizer.json, model.json)")


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
