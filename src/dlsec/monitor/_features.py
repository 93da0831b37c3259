"""Embeddings: a model's hidden activations as features for drift and adversarial detectors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import UsageError
from dlsec.monitor._base import CannotRun

__all__ = ["FeatureFn", "embedding_fn", "model_probs"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _resolve_layer(module: nn.Module, layer: str | None) -> nn.Module:
    if layer is not None:
        named = dict(module.named_modules())
        if layer not in named:
            raise UsageError(f"the model has no layer {layer!r}; layers: {', '.join(n for n in named if n)}")
        return named[layer]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError("no nn.Linear layer found for the penultimate features; name a layer")
    return linears[-1]


def embedding_fn(model: Model, *, layer: str | None = None) -> FeatureFn:
    """A function from an input-space batch to the model's hidden features (differentiable).

    By default the features are the *input* of the last ``nn.Linear`` (the penultimate
    layer); with ``layer`` they are the output of that named submodule. A forward hook
    captures them during one forward pass, so gradients flow through (adaptive attacks use it).

    Example:
        >>> from dlsec.core import InputSpec, WhiteBoxModel
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> f = embedding_fn(WhiteBoxModel(net, InputSpec(shape=(4,), num_classes=3, kind="tabular")))
        >>> f(torch.zeros(2, 4)).shape
        torch.Size([2, 8])
    """
    if not isinstance(model, WhiteBoxModel):
        raise CannotRun(f"embeddings need a white-box model, this one offers {model.access.label} access")
    target = _resolve_layer(model.module, layer)
    use_input = layer is None

    def features(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            captured.append(inputs[0] if use_input else output)

        handle = target.register_forward_hook(hook)
        try:
            model(x.to(model.device))
        finally:
            handle.remove()
        if not captured:
            raise UsageError("the chosen layer was not called in the forward pass")
        return captured[-1].flatten(1)

    return features


def apply_features(fn: FeatureFn | None, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """``x`` flattened to ``(N, F)`` float64, through ``fn`` when given (batched, no gradients)."""
    if fn is None:
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    outs = []
    with torch.no_grad():
        for start in range(0, len(t), batch_size):
            outs.append(fn(t[start : start + batch_size]).detach().cpu().double())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0))


def model_probs(model: Model, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class probabilities of ``model`` on ``x`` (labels only: one-hot), as float64 NumPy."""
    if isinstance(model, WhiteBoxModel):
        return model.probs(x).detach().cpu().double().numpy()
    probs = getattr(model, "probs", None)
    if callable(probs):
        return np.asarray(probs(x).detach().cpu().double().numpy())
    labels = model.predict(x).numpy()
    return np.eye(model.spec.num_classes)[labels]
