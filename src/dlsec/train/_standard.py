"""The standard training recipe: cross-entropy, Adam, optional regularisation."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.core.arch import build_architecture, default_arch_for
from dlsec.core.data import Dataset
from dlsec.core.evaluate import evaluate
from dlsec.core.model import WhiteBoxModel, default_device, inference_mode
from dlsec.core.seeding import torch_generator
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["TrainConfig", "TrainedModel", "fit", "train", "fit_normalisation"]

Progress = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the standard recipe.

    Args:
        epochs: passes over the training set.
        batch_size: examples per step.
        lr: Adam learning rate.
        weight_decay: L2 penalty (AdamW-style decoupled decay).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        seed: seeds weight initialisation, batch order and dropout.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")


def fit_normalisation(data: Dataset) -> InputSpec:
    """``data.spec`` with mean/std measured on ``data`` (per channel, or per feature)."""
    x = data.x.astype(np.float64)
    if data.spec.kind == "image":
        axes = (0,) + tuple(range(2, x.ndim))
        mean, std = x.mean(axis=axes), x.std(axis=axes)
    else:
        flat = x.reshape(x.shape[0], -1)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return replace(data.spec, mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def fit(
    model: WhiteBoxModel, data: Dataset, config: TrainConfig, *, progress: Progress | None = None
) -> list[dict[str, float]]:
    """Train ``model.module`` in place on ``data`` with the standard recipe.

    Batches are drawn in input space and normalised by the wrapper's spec. Randomness (batch
    order, dropout) comes from ``config.seed`` without touching the caller's global RNG
    state. The module's train/eval flags are restored afterwards.

    Returns:
        One dict per epoch with ``loss`` and ``train_accuracy``.
    """
    module = model.module
    device = model.device
    x_all = torch.from_numpy(data.x).to(device)
    y_all = torch.from_numpy(data.y).to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise UsageError("the model has no trainable parameters")
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    gen = torch_generator(config.seed)
    norm = model.spec.normalisation(device=device)
    history: list[dict[str, float]] = []
    flags = [(m, m.training) for m in module.modules()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            module.train()
            n = len(data)
            for epoch in range(config.epochs):
                order = torch.randperm(n, generator=gen).to(device)
                total, correct, seen = 0.0, 0, 0
                for start in range(0, n, config.batch_size):
                    idx = order[start : start + config.batch_size]
                    xb, yb = x_all[idx], y_all[idx]
                    if norm is not None:
                        xb = (xb - norm[0]) / norm[1]
                    logits = module(xb)
                    loss = loss_fn(logits, yb)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(idx)
                    correct += int((logits.argmax(1) == yb).sum())
                    seen += len(idx)
                stats = {"loss": total / seen, "train_accuracy": correct / seen}
                history.append(stats)
                if progress is not None:
                    progress(epoch + 1, config.epochs, stats)
    finally:
        for m, was_training in flags:
            m.training = was_training
    return history


@dataclass
class TrainedModel:
    """A model trained by :func:`train`, with what is needed to write its card."""

    model: WhiteBoxModel
    arch: str
    arch_kwargs: dict[str, Any]
    config: TrainConfig
    dataset: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: str = "standard"

    def card(self, *, name: str | None = None, weights_sha256: str | None = None) -> dict[str, Any]:
        """The model card: architecture, spec, recipe, seeds, data hash, metrics, versions."""
        import dlsec

        return {
            "schema": "dlsec.model-card/1",
            "name": name,
            "architecture": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "input_spec": self.model.spec.to_dict(),
            "recipe": self.recipe,
            "train_config": asdict(self.config),
            "seed": self.config.seed,
            "dataset": self.dataset,
            "metrics": self.metrics,
            "weights": {"file": "model.safetensors", "sha256": weights_sha256},
            "versions": {
                "dlsec": dlsec.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "platform": sys.platform,
            },
        }

    def save(self, out_dir: str | Path, *, name: str | None = None) -> tuple[Path, Path]:
        """Write ``model.safetensors`` and its card ``model.json`` into ``out_dir`` atomically."""
        import json

        from dlsec.core.fsutil import atomic_write_text, sha256_file
        from dlsec.core.io import save_safetensors_model

        out = Path(out_dir)
        weights = save_safetensors_model(
            self.model.module,
            self.model.spec,
            out / "model.safetensors",
            arch=self.arch,
            arch_kwargs=self.arch_kwargs,
        )
        card = self.card(name=name, weights_sha256=sha256_file(weights))
        card_path = atomic_write_text(out / "model.json", json.dumps(card, indent=2) + "\n")
        return weights, card_path


def train(
    data: Dataset,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    test_size: float = 0.25,
    split_seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> TrainedModel:
    """Split ``data``, train a classifier on the train part and score it on the test part.

    Args:
        data: the labelled dataset.
        arch: a built-in architecture name or ``module:factory``; default chosen from the data.
        arch_kwargs: factory keyword arguments; for the default architecture they are merged
            over the defaults derived from the data.
        config: the recipe's hyperparameters.
        test_size: fraction held out for the clean-accuracy measurement.
        split_seed: seed of the deterministic stratified split.
        device: where to train (default CUDA when present, else CPU).
        progress: called after each epoch with ``(epoch, epochs, stats)``.

    Example:
        >>> from dlsec.core import load_dataset
        >>> result = train(load_dataset("builtin:breast-cancer"), config=TrainConfig(epochs=5))
        >>> result.metrics["clean_accuracy"] > 0.8
        True
    """
    config = config or TrainConfig()
    train_set, test_set = data.split(test_size=test_size, seed=split_seed)
    default_name, default_kwargs = default_arch_for(data.spec.kind, data.spec.shape, data.spec.num_classes)
    if arch is None or arch == default_name:
        arch, kwargs = default_name, {**default_kwargs, **(arch_kwargs or {})}
    else:
        kwargs = dict(arch_kwargs or {})
    spec = fit_normalisation(train_set)
    target = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = build_architecture(arch, kwargs).to(target)
    model = WhiteBoxModel(module, spec, device=target)
    with inference_mode(module):
        out = model(torch.from_numpy(train_set.x[:2]).to(target))
    if out.ndim != 2 or out.shape[1] != spec.num_classes:
        raise UsageError(
            f"architecture {arch!r} outputs shape {tuple(out.shape)}; expected (N, {spec.num_classes}) logits"
        )
    history = fit(model, train_set, config, progress=progress)
    metrics = {
        "clean_accuracy": evaluate(model, test_set).accuracy,
        "train_accuracy": evaluate(model, train_set).accuracy,
    }
    dataset = {
        "name": data.name,
        "sha256": data.sha256,
        "rows": len(data),
        "split": {
            "test_size": test_size,
            "seed": split_seed,
            "train_rows": len(train_set),
            "test_rows": len(test_set),
        },
    }
    return TrainedModel(model, arch, kwargs, config, dataset, metrics, history)
