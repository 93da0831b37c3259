"""The clone: a built-in architecture trained on what the target answered, and its scores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.core.arch import build_architecture, default_arch_for
from dlsec.core.model import WhiteBoxModel, default_device
from dlsec.core.seeding import torch_generator
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["CloneTrainer", "build_clone"]


def build_clone(
    spec: InputSpec,
    arch: str | None,
    arch_kwargs: dict[str, Any] | None,
    *,
    seed: int,
    device: torch.device | str | None = None,
) -> tuple[WhiteBoxModel, str, dict[str, Any]]:
    """A freshly initialised clone (seeded) for inputs of ``spec``; default: the data's usual architecture."""
    if arch is None:
        arch, defaults = default_arch_for(spec.kind, spec.shape, spec.num_classes)
        kwargs = {**defaults, **(arch_kwargs or {})}
    else:
        kwargs = dict(arch_kwargs or {})
    dev = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        module = build_architecture(arch, kwargs).to(dev)
    clone = WhiteBoxModel(module, spec, device=dev)
    with torch.no_grad():
        out = clone(torch.zeros((1, *spec.shape), device=dev))
    if out.shape != (1, spec.num_classes):
        raise UsageError(
            f"clone architecture {arch!r} gives outputs of shape {tuple(out.shape)}, "
            f"expected (1, {spec.num_classes})"
        )
    return clone, arch, kwargs


@dataclass
class CloneTrainer:
    """Trains a clone on (input, soft target) pairs with cross-entropy, Adam and seeded shuffles.

    A run lasts ``epochs`` passes over the data, and at least ``min_steps`` optimiser steps (a
    clone trained on a hundred queries needs more passes than one trained on thousands).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    min_steps: int = 300
    seed: int = 0

    def fit(
        self, clone: WhiteBoxModel, x: np.ndarray, targets: np.ndarray, *, epochs: int | None = None
    ) -> float:
        """Train ``clone.module`` in place; returns the last epoch's mean loss."""
        module, device = clone.module, clone.device
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        tt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(device)
        n = xt.shape[0]
        if n == 0:
            return float("nan")
        per_epoch = math.ceil(n / self.batch_size)
        n_epochs = epochs if epochs is not None else max(self.epochs, math.ceil(self.min_steps / per_epoch))
        gen = torch_generator(self.seed)  # the same data and seed give the same clone
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=self.lr)
        norm = clone.spec.normalisation(device=device)
        flags = [(m, m.training) for m in module.modules()]
        module.train()
        loss_sum = 0.0
        try:
            for _ in range(n_epochs):
                order = torch.randperm(n, generator=gen).to(device)
                loss_sum = 0.0
                for start in range(0, n, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    xb = xt[idx]
                    if norm is not None:
                        xb = (xb - norm[0]) / norm[1]
                    loss = torch.nn.functional.cross_entropy(module(xb), tt[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += float(loss.detach()) * len(idx)
        finally:
            for m, was_training in flags:
                m.training = was_training
        return loss_sum / n


def agreement(clone: WhiteBoxModel, x: np.ndarray, target_labels: np.ndarray) -> float:
    """Fraction of ``x`` on which the clone's top-1 equals the target's."""
    if len(x) == 0:
        return float("nan")
    pred = clone.predict(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    return float((pred == target_labels).mean())
