"""The training loop every recipe shares: epochs, validation, early stopping, checkpoints.

It lives in core so that attacks (shadow and victim models), audits and the zoo train through
one loop; :mod:`dlsec.train` adds the hardened recipes and the ``train`` entry point with its
card.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlsec.core.arch import default_arch_for
from dlsec.core.checkpoint import Checkpoint, fingerprint, flatten_optimizer, unflatten_optimizer
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.core.recipe import Recipe, Standard, TrainState, fit_normalisation, get_recipe
from dlsec.core.seeding import torch_generator
from dlsec.core.spec import InputSpec
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import UsageError

__all__ = [
    "FitOutcome",
    "Progress",
    "as_recipe",
    "fit",
    "fit_normalisation",
    "make_optimizer",
    "resolve_architecture",
    "run_training",
]

Progress = Callable[[int, int, dict[str, float]], None]


@dataclass
class FitOutcome:
    """What a training run produced besides the weights (which are trained in place)."""

    history: list[dict[str, float]]
    summary: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    best_epoch: int | None = None
    resumed_from: int = 0


def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser the config names, over ``params``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def run_training(
    model: WhiteBoxModel,
    data: Dataset,
    config: TrainConfig,
    recipe: Recipe,
    *,
    validation: Dataset | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
) -> FitOutcome:
    """Train ``model.module`` in place with ``recipe``; see :func:`fit`."""
    module = model.module
    device = model.device
    if config.early_stopping and validation is None:
        raise UsageError("early stopping needs a validation split")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise UsageError("the model has no trainable parameters")
    recipe.check(model, len(data), config)
    optimizer = make_optimizer(config, params)
    state = TrainState(
        model=model,
        module=module,
        optimizer=optimizer,
        config=config,
        x=torch.from_numpy(data.x).to(device),
        y=torch.from_numpy(data.y).to(device),
        gen=torch_generator(config.seed),
    )
    x_val = y_val = None
    if validation is not None:
        x_val = torch.from_numpy(validation.x).to(device)
        y_val = torch.from_numpy(validation.y).to(device)
    outcome = FitOutcome(history=[])
    best: dict[str, torch.Tensor] | None = None
    best_score, stale = -1.0, 0
    flags = [(m, m.training) for m in module.modules()]
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(config.seed)
            recipe.prepare(state)
            if checkpoint is not None:
                restored = _restore(checkpoint, state, recipe, cuda)
                if restored is not None:
                    outcome.history, best, best_score, stale, outcome.best_epoch = restored
                    outcome.resumed_from = state.epoch
            module.train()
            while state.epoch < config.epochs and state.stop is None:
                if config.lr_schedule != "constant":
                    for group in state.optimizer.param_groups:
                        group["lr"] = config.lr_at(state.epoch)
                started = time.perf_counter()
                total, correct, seen = 0.0, 0, 0
                for idx in recipe.batches(state):
                    loss_sum, right = recipe.train_step(state, state.x[idx], state.y[idx])
                    state.steps += 1
                    total += loss_sum
                    correct += right
                    seen += len(idx)
                stats = {"loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
                stats["seconds"] = time.perf_counter() - started
                stats.update(recipe.end_epoch(state))
                state.epoch += 1
                if x_val is not None and y_val is not None and config.early_stopping:
                    score = recipe.validation_score(state, x_val, y_val)
                    stats["val_score"] = score
                    if score > best_score:
                        best_score, stale, outcome.best_epoch = score, 0, state.epoch
                        best = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    else:
                        stale += 1
                        if stale >= config.early_stopping:
                            state.stop = f"early stopping: no validation gain for {stale} epochs"
                outcome.history.append(stats)
                if checkpoint is not None:
                    _save(checkpoint, state, recipe, outcome, best, best_score, stale, cuda)
                if progress is not None:
                    progress(state.epoch, config.epochs, stats)
            if best is not None:
                module.load_state_dict(best)
            outcome.stopped = state.stop
            outcome.summary = recipe.summary(state)
    finally:
        recipe.cleanup(state)
        for m, was_training in flags:
            m.training = was_training
    return outcome


def _save(
    checkpoint: Checkpoint,
    state: TrainState,
    recipe: Recipe,
    outcome: FitOutcome,
    best: dict[str, torch.Tensor] | None,
    best_score: float,
    stale: int,
    cuda: list[torch.device],
) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in state.model.module.state_dict().items()}
    opt_tensors, opt_rest = flatten_optimizer(state.optimizer.state_dict(), "optim.")
    tensors.update(opt_tensors)
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors["rng.gen"] = state.gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    for i, dev in enumerate(cuda):
        tensors[f"rng.cuda.{i}"] = torch.cuda.get_rng_state(dev)
    rec_tensors, rec_values = recipe.state_dict(state)
    tensors.update({f"recipe.{k}": v for k, v in rec_tensors.items()})
    values = {
        "epoch": state.epoch,
        "steps": state.steps,
        "stop": state.stop,
        "history": outcome.history,
        "optimizer": opt_rest,
        "best_score": best_score,
        "best_epoch": outcome.best_epoch,
        "stale": stale,
        "has_best": best is not None,
        "recipe": rec_values,
    }
    checkpoint.save(tensors, values)


def _restore(
    checkpoint: Checkpoint, state: TrainState, recipe: Recipe, cuda: list[torch.device]
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor] | None, float, int, int | None] | None:
    loaded = checkpoint.load()
    if loaded is None:
        return None
    tensors, values = loaded
    device = state.model.device

    def section(prefix: str, *, move: bool = True) -> dict[str, torch.Tensor]:
        # Optimiser state stays on the CPU: load_state_dict places each entry as its policy says.
        return {
            k[len(prefix) :]: (v.to(device) if move else v)
            for k, v in tensors.items()
            if k.startswith(prefix)
        }

    try:
        state.model.module.load_state_dict(section("model."), strict=True)
        state.optimizer.load_state_dict(
            unflatten_optimizer(section("optim.", move=False), values["optimizer"], "")
        )
        state.gen.set_state(tensors["rng.gen"])
        torch.set_rng_state(tensors["rng.torch"])
        for i, dev in enumerate(cuda):
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], dev)
        recipe.load_state_dict(state, section("recipe."), values["recipe"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"{checkpoint.path}: cannot resume from this checkpoint ({str(exc).splitlines()[0][:200]}); "
            "delete it (or pass --force) to start over"
        ) from None
    state.epoch = int(values["epoch"])
    state.steps = int(values["steps"])
    state.stop = values["stop"]
    best = section("best.") if values["has_best"] else None
    return values["history"], best, float(values["best_score"]), int(values["stale"]), values["best_epoch"]


def as_recipe(recipe: Recipe | str | None) -> Recipe:
    if recipe is None:
        return Standard()
    if isinstance(recipe, str):
        return get_recipe(recipe)
    if not isinstance(recipe, Recipe):
        raise UsageError(f"recipe must be a Recipe or a registered name, got {type(recipe).__name__}")
    return recipe


def fit(
    model: WhiteBoxModel,
    data: Dataset,
    config: TrainConfig,
    *,
    recipe: Recipe | str | None = None,
    validation: Dataset | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> list[dict[str, float]]:
    """Train ``model.module`` in place on ``data`` with ``recipe`` (default: standard).

    Batches are drawn in input space and normalised by the wrapper's spec. Randomness (batch
    order, dropout, augmentation, attack starts, DP noise) comes from ``config.seed`` without
    touching the caller's global RNG state. The module's train/eval flags are restored
    afterwards.

    Args:
        model: the white-box model whose module is trained.
        data: the training rows.
        config: the shared hyperparameters.
        recipe: a :class:`Recipe` or a registered name.
        validation: rows for early stopping (required when ``config.early_stopping`` is on).
        checkpoint_dir: where to keep a checkpoint after every epoch; a run started again
            with the same arguments resumes from it.
        progress: called after each epoch with ``(epoch, epochs, stats)``.

    Returns:
        One dict per epoch with ``loss``, ``train_accuracy``, ``seconds`` and what the recipe
        adds.

    Example:
        >>> history = fit(model, train_set, TrainConfig(epochs=5))     # doctest: +SKIP
        >>> history[-1]["loss"] < history[0]["loss"]                   # doctest: +SKIP
        True
    """
    chosen = as_recipe(recipe)
    checkpoint = None
    if checkpoint_dir is not None:
        key = {
            "recipe": chosen.name,
            "params": chosen.get_params(),
            "config": asdict(config),
            "data": data.sha256,
            "spec": model.spec.to_dict(),
        }
        checkpoint = Checkpoint(checkpoint_dir, fingerprint=fingerprint(key))
    outcome = run_training(
        model, data, config, chosen, validation=validation, progress=progress, checkpoint=checkpoint
    )
    return outcome.history


def resolve_architecture(
    recipe: Recipe,
    spec: InputSpec,
    arch: str | None,
    arch_kwargs: dict[str, Any] | None,
    config: TrainConfig,
) -> tuple[str, dict[str, Any]]:
    """The architecture to build: ``arch`` (default: the recipe's, else the data's) and its kwargs."""
    defaults = dict([default_arch_for(spec.kind, spec.shape, spec.num_classes)])
    suggested = recipe.default_arch(spec)
    if suggested is not None:
        defaults[suggested[0]] = suggested[1]
    if arch is None:
        arch = suggested[0] if suggested is not None else next(iter(defaults))
    kwargs = {**defaults.get(arch, {}), **(arch_kwargs or {})}
    if config.dropout:
        if kwargs.get("dropout", config.dropout) != config.dropout:
            raise UsageError(
                f"dropout {config.dropout} conflicts with the architecture argument "
                f"dropout={kwargs['dropout']}"
            )
        kwargs["dropout"] = config.dropout
    return arch, kwargs
