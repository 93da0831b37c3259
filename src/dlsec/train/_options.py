"""Training options from three places, the later winning: the recipe's defaults, a YAML file, the caller.

What ``dlsec train`` runs: :func:`train_options` merges a config file (read with the one YAML
reader, :func:`dlsec.core.config.load_yaml_model`) with the options given directly, builds the
recipe and the :class:`TrainConfig`; :func:`train_and_save` trains as they say into a folder
(resumable) and writes the weights and the training card.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from dlsec.core.config import load_yaml_model
from dlsec.core.loop import Progress
from dlsec.core.recipe import RECIPES, Recipe, get_recipe
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import UsageError
from dlsec.train._standard import TrainedModel, train

__all__ = ["CHECKPOINT_DIR", "RUN_OPTIONS", "TrainOptions", "train_and_save", "train_options"]

CHECKPOINT_DIR = ".checkpoint"

# Options of a run besides the TrainConfig fields and the recipe's hyperparameters.
RUN_OPTIONS = (
    "recipe",
    "data",
    "arch",
    "arch_args",
    "test_size",
    "split_seed",
    "label_column",
    "robust_n",
    "robust_eps",
)


class _TrainFile(BaseModel):
    """A training config file: the run options are typed here; the training and recipe
    options are kept as written and checked by :class:`TrainConfig` and the recipe."""

    model_config = ConfigDict(extra="allow", frozen=True)

    recipe: str | None = None
    data: str | None = None
    arch: str | None = None
    arch_args: dict[str, Any] | None = None
    test_size: float | None = None
    split_seed: int | None = None
    label_column: str | None = None
    robust_n: int | None = None
    robust_eps: float | None = None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    loaded = load_yaml_model(
        path,
        _TrainFile,
        error=UsageError,
        what="training config",
        hint="recipe, data, arch, epochs, ... as the options of dlsec train",
    )
    return loaded.model_dump(exclude_unset=True)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs, merged by :func:`train_options`."""

    recipe: Recipe
    config: TrainConfig
    data: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    test_size: float = 0.25
    split_seed: int = 0
    label_column: str | None = None
    robust_n: int = 200
    robust_eps: float | None = None


def _given(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if v is not None}


def train_options(
    config_file: str | Path | None = None,
    *,
    recipe: str | None = None,
    data: str | None = None,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    test_size: float | None = None,
    split_seed: int | None = None,
    label_column: str | None = None,
    robust_n: int | None = None,
    robust_eps: float | None = None,
    recipe_params: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> TrainOptions:
    """Merge a YAML config file with the options given here (which win; ``None`` is not given).

    The file holds the run options (:data:`RUN_OPTIONS`; ``arch_args`` is a mapping that
    ``arch_kwargs`` updates), :class:`TrainConfig` fields and the recipe's hyperparameters,
    all by their Python names. ``recipe_params`` and ``train_config`` are the recipe's
    hyperparameters and the training options given directly. ``names`` maps a parameter to
    the name a message should use for it (``dlsec train`` maps ``epsilon`` to ``--epsilon``).

    Raises:
        UsageError: an unreadable or invalid file (naming the line and field), an option that
            the recipe does not take, a missing required hyperparameter, or no data.

    Example:
        >>> opts = train_options("dp.yaml", train_config={"lr": 0.5})  # doctest: +SKIP
        >>> opts.recipe.name, opts.config.lr                           # doctest: +SKIP
        ('dp-sgd', 0.5)
    """
    names = names or {}
    path = Path(config_file) if config_file is not None else None
    file_opts = _read_file(path) if path is not None else {}
    recipe_name = recipe or file_opts.get("recipe") or "standard"
    if recipe_name not in RECIPES:
        raise UsageError(f"unknown recipe {recipe_name!r}; choose one of: {', '.join(RECIPES)}")
    recipe_cls = RECIPES[recipe_name]
    config_keys = set(TrainConfig.field_names())
    param_keys = set(recipe_cls.param_names())
    unknown = sorted(set(file_opts) - config_keys - param_keys - set(RUN_OPTIONS))
    if unknown:
        raise UsageError(
            f"{path}: unknown option(s) {', '.join(unknown)} for recipe {recipe_name}; "
            f"use training options ({', '.join(sorted(config_keys))}), run options "
            f"({', '.join(RUN_OPTIONS)}) or the recipe's ({', '.join(sorted(param_keys)) or 'none'})"
        )
    given_params = _given(recipe_params)
    for key in given_params:
        if key not in param_keys:
            raise UsageError(f"{names.get(key, key)} does not apply to recipe {recipe_name}")
    params = {**{k: v for k, v in file_opts.items() if k in param_keys}, **given_params}
    missing = [p for p in recipe_cls.required_params() if p not in params]
    if missing:
        raise UsageError(f"recipe {recipe_name} needs {', '.join(names.get(p, p) for p in missing)}")
    chosen = get_recipe(recipe_name, **params)
    overrides = {**{k: v for k, v in file_opts.items() if k in config_keys}, **_given(train_config)}
    try:
        config = chosen.default_config(**overrides)
    except TypeError as exc:
        raise UsageError(f"bad training option: {exc}") from None
    data_ref = data or file_opts.get("data")
    if not data_ref:
        raise UsageError(f"pass {names.get('data', 'data')} (or data: in the config file)")
    run = {
        **file_opts,
        **_given(
            {
                "arch": arch,
                "test_size": test_size,
                "split_seed": split_seed,
                "label_column": label_column,
                "robust_n": robust_n,
                "robust_eps": robust_eps,
            }
        ),
    }
    kwargs = {**(file_opts.get("arch_args") or {}), **(arch_kwargs or {})}
    return TrainOptions(
        recipe=chosen,
        config=config,
        data=str(data_ref),
        arch=run.get("arch"),
        arch_kwargs=kwargs or None,
        test_size=float(run.get("test_size", 0.25)),
        split_seed=int(run.get("split_seed", 0)),
        label_column=run.get("label_column"),
        robust_n=int(run.get("robust_n", 200)),
        robust_eps=run.get("robust_eps"),
    )


def train_and_save(
    options: TrainOptions,
    out: str | Path,
    *,
    force: bool = False,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> tuple[TrainedModel, Path, Path]:
    """Train as ``options`` say and write ``OUT/model.safetensors`` and its card ``OUT/model.json``.

    The run checkpoints into ``OUT/.checkpoint`` after every epoch, so calling again with the
    same options resumes an interrupted run; the checkpoint is removed once the model is
    written. A model already in ``out`` is refused unless ``force`` (which also discards the
    checkpoint).

    Returns:
        The trained model, the weights' path and the card's path.
    """
    from dlsec.core.data import load_dataset

    out = Path(out)
    weights_path = out / "model.safetensors"
    checkpoint_dir = out / CHECKPOINT_DIR
    if weights_path.exists() and not force:
        raise UsageError(f"{weights_path} exists; pass --force to replace it or pick another --out")
    dataset = load_dataset(options.data, label_column=options.label_column)
    if force and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    trained = train(
        dataset,
        recipe=options.recipe,
        arch=options.arch,
        arch_kwargs=options.arch_kwargs,
        config=options.config,
        test_size=options.test_size,
        split_seed=options.split_seed,
        device=device,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        robust_n=options.robust_n,
        robust_eps=options.robust_eps,
    )
    weights, card_path = trained.save(out)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return trained, weights, card_path
