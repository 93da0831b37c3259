"""Penultimate representations: the input of a model's last linear layer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dlsec.core.model import WhiteBoxModel, inference_mode
from dlsec.errors import UsageError

__all__ = ["last_linear", "penultimate", "penultimate_tensor"]


def last_linear(model: WhiteBoxModel) -> nn.Linear:
    """The model's last ``nn.Linear`` module (the classifier head)."""
    found = [m for m in model.module.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UsageError("the model has no linear layer, so it has no penultimate representation")
    return found[-1]


def penultimate_tensor(model: WhiteBoxModel, x: torch.Tensor) -> torch.Tensor:
    """The input of the last linear layer for an input-space batch; differentiable."""
    head = last_linear(model)
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])

    handle = head.register_forward_pre_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


def penultimate(model: WhiteBoxModel, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Penultimate representations of ``x`` as a float64 array ``(N, D)``."""
    outs = []
    with inference_mode(model.module), torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(model.device)
            outs.append(penultimate_tensor(model, batch).cpu().double().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, last_linear(model).in_features))
