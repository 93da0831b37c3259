"""Model architectures: a registry of built-in ones, and ``module:factory`` references.

Built-in architectures register by name with :func:`register_architecture`; duplicates are
refused. A saved model's metadata may name a *registered* architecture and be rebuilt from
it; a ``module:factory`` reference is imported only when the user passes it explicitly
(``--arch``), never because a file under test asked for it.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dlsec.errors import ModelLoadError, UsageError

__all__ = [
    "register_architecture",
    "ARCHITECTURES",
    "build_architecture",
    "parse_arch_kwargs",
    "SmallCNN",
    "MLP",
    "Ensemble",
]

ArchFactory = Callable[..., nn.Module]
ARCHITECTURES: dict[str, ArchFactory] = {}
_MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def register_architecture(name: str) -> Callable[[ArchFactory], ArchFactory]:
    """Register a factory under ``name``; registering a name twice raises ``UsageError``."""

    def decorator(factory: ArchFactory) -> ArchFactory:
        if name in ARCHITECTURES:
            raise UsageError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = factory
        return factory

    return decorator


def build_architecture(
    arch: str, kwargs: dict[str, Any] | None = None, *, allow_import: bool = True
) -> nn.Module:
    """Build a module from a registered name or a ``module:factory`` reference.

    Args:
        arch: a registered name (``cnn``, ``mlp``) or ``package.module:factory``.
        kwargs: keyword arguments for the factory.
        allow_import: whether a ``module:factory`` reference may be imported. Callers pass
            ``False`` when the name comes from a file rather than from the user.

    Raises:
        ModelLoadError: unknown name, import failure, or a factory that does not return a
            ``torch.nn.Module``.
    """
    kwargs = dict(kwargs or {})
    if arch in ARCHITECTURES:
        factory = ARCHITECTURES[arch]
    elif _MODULE_REF.match(arch):
        if not allow_import:
            raise ModelLoadError(
                f"the file names architecture {arch!r}, which is not built in; dlsec does not import "
                "code named by a file: pass --arch module:factory yourself if you trust it"
            )
        mod_name, func_name = arch.split(":")
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ModelLoadError(f"cannot import {mod_name!r} for --arch {arch}: {exc}") from None
        found = getattr(module, func_name, None)
        if found is None or not callable(found):
            raise ModelLoadError(f"{mod_name!r} has no callable {func_name!r} (from --arch {arch})")
        factory = found
    else:
        raise ModelLoadError(
            f"unknown architecture {arch!r}; use one of {', '.join(sorted(ARCHITECTURES))} or module:factory"
        )
    try:
        built = factory(**kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"architecture {arch!r} rejected its arguments: {exc}") from None
    if not isinstance(built, nn.Module):
        raise ModelLoadError(f"architecture {arch!r} returned {type(built).__name__}, not a torch.nn.Module")
    return built


def parse_arch_kwargs(items: Sequence[str], *, what: str = "architecture") -> dict[str, Any]:
    """Parse ``key=value`` strings; values are JSON literals when they parse, else strings.

    Example:
        >>> parse_arch_kwargs(["hidden=[64, 32]", "num_classes=2", "name=small"])
        {'hidden': [64, 32], 'num_classes': 2, 'name': 'small'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"bad {what} argument {item!r}; write key=value, e.g. steps=100")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@register_architecture("cnn")
class SmallCNN(nn.Module):
    """A small convolutional classifier for small images (e.g. 1x8x8 digits, 3x32x32).

    Two 3x3 convolution blocks (the second followed by 2x2 max-pooling), then a hidden
    fully-connected layer.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        image_size: input height and width (square).
        width: channels of the first convolution (the second has twice as many).
        hidden: units in the hidden fully-connected layer.
        dropout: dropout before the last layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 8,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pooled = image_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * pooled * pooled, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_architecture("mlp")
class MLP(nn.Module):
    """A multi-layer perceptron over flattened inputs.

    Args:
        in_features: number of input values per example.
        num_classes: output classes.
        hidden: sizes of the hidden layers.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        in_features: int = 64,
        num_classes: int = 10,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def default_arch_for(kind: str, shape: tuple[int, ...], num_classes: int) -> tuple[str, dict[str, Any]]:
    """A sensible built-in architecture for data of this kind and shape."""
    if kind == "image" and len(shape) == 3 and shape[1] == shape[2] and shape[1] >= 2:
        return "cnn", {"in_channels": shape[0], "num_classes": num_classes, "image_size": shape[1]}
    n = 1
    for s in shape:
        n *= s
    return "mlp", {"in_features": n, "num_classes": num_classes, "hidden": [64, 32]}


@register_architecture("ensemble")
class Ensemble(nn.Module):
    """Members of one registered architecture whose predictions are aggregated (SISA's ensemble).

    The output is ``log`` of the aggregated class probabilities, so it is a valid logit vector:
    ``mean`` averages the members' softmax probabilities; ``vote`` counts their argmax labels
    (each member one vote, smoothed so that no class has probability 0). The members are built
    from a *registered* architecture only (a file's metadata may name this one).

    Args:
        member: the members' registered architecture name (``mlp``, ``cnn``...).
        member_kwargs: its keyword arguments.
        n: how many members.
        aggregate: ``mean`` (probabilities) or ``vote`` (labels).
        weights: one non-negative weight per member (default: equal), normalised to sum 1: a
            mixture such as Fairlearn's ExponentiatedGradient returns, whose probabilities are
            then the randomised classifier's distribution over labels.
    """

    def __init__(
        self,
        member: str = "mlp",
        member_kwargs: dict[str, Any] | None = None,
        n: int = 1,
        aggregate: str = "mean",
        weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        if member == "ensemble" or member not in ARCHITECTURES:
            raise ModelLoadError(f"ensemble members must be a registered architecture, got {member!r}")
        if aggregate not in ("mean", "vote"):
            raise ModelLoadError(f"ensemble aggregate must be mean or vote, got {aggregate!r}")
        if int(n) < 1:
            raise ModelLoadError(f"an ensemble needs at least one member, got n={n}")
        w = [1.0] * int(n) if weights is None else [float(v) for v in weights]
        if len(w) != int(n) or any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
            raise ModelLoadError(
                f"ensemble weights must be {n} non-negative numbers, not all 0; got {weights!r}"
            )
        self.aggregate = aggregate
        self.weights = [v / sum(w) for v in w]
        self.members = nn.ModuleList(
            [build_architecture(member, member_kwargs, allow_import=False) for _ in range(int(n))]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members])  # (K, N, C)
        w = torch.tensor(self.weights, dtype=outs.dtype, device=outs.device).view(-1, 1, 1)
        if self.aggregate == "vote":
            onehot = torch.nn.functional.one_hot(outs.argmax(-1), outs.shape[-1]).to(outs.dtype)
            votes = (onehot * w).sum(0)
            return torch.log((votes + 1e-3) / (1 + 1e-3 * outs.shape[-1]))
        return torch.logsumexp(torch.log_softmax(outs, dim=-1) + torch.log(w.clamp_min(1e-300)), dim=0)


# The architectures of real size register on import of this module, like the ones above.
from dlsec.core import arch_large as _arch_large  # noqa: E402, F401
