"""The input spec: what a model under test expects, in input space."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from dlsec.errors import SpecError

DataKind = Literal["image", "tabular"]
Bound = float | tuple[float, ...]


def _as_bound(value: Any, name: str) -> Bound:
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise SpecError(f"input spec: {name} must be finite, got {value}")
        return float(value)
    try:
        values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"input spec: {name} must be a number or a list of numbers") from exc
    if not values or not all(math.isfinite(v) for v in values):
        raise SpecError(f"input spec: {name} must be non-empty and finite")
    return values


@dataclass(frozen=True)
class InputSpec:
    """What a classifier expects, in input space.

    Attacks, detectors and training all work in *input space*: values between ``lower`` and
    ``upper``. A model's own mean/std normalisation is folded into the model wrapper
    (:class:`dlsec.core.WhiteBoxModel`), so nothing else needs to know about it.

    Args:
        shape: shape of one example, without the batch dimension, e.g. ``(1, 8, 8)``.
        num_classes: number of output classes (at least 2).
        lower: lower value bound, one number or one per feature (flattened example).
        upper: upper value bound, like ``lower``.
        mean: optional normalisation mean, one per channel (images) or per feature (tabular).
        std: optional normalisation std, same length as ``mean``; all positive.
        kind: ``"image"`` or ``"tabular"``; selects assessment defaults.
        class_names: optional names of the classes.
        feature_names: optional names of tabular features.

    Example:
        >>> spec = InputSpec(shape=(1, 8, 8), num_classes=10)
        >>> spec.num_features
        64
    """

    shape: tuple[int, ...]
    num_classes: int
    lower: Bound = 0.0
    upper: Bound = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    kind: DataKind = "image"
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"input spec: shape must be a tuple of ints, got {self.shape!r}") from exc
        if not shape or any(s <= 0 for s in shape):
            raise SpecError(f"input spec: shape must be non-empty and positive, got {shape}")
        object.__setattr__(self, "shape", shape)
        if int(self.num_classes) < 2:
            raise SpecError(f"input spec: num_classes must be at least 2, got {self.num_classes}")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if self.kind not in ("image", "tabular"):
            raise SpecError(f"input spec: kind must be 'image' or 'tabular', got {self.kind!r}")
        lower = _as_bound(self.lower, "lower")
        upper = _as_bound(self.upper, "upper")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        n = self.num_features
        for name, b in (("lower", lower), ("upper", upper)):
            if isinstance(b, tuple) and len(b) not in (1, n):
                raise SpecError(f"input spec: {name} has {len(b)} values; give one, or one per feature ({n})")
        lo, hi = np.broadcast_arrays(np.asarray(lower), np.asarray(upper))
        if np.any(lo >= hi):
            raise SpecError("input spec: every lower bound must be below its upper bound")
        self._check_normalisation()
        for name in ("class_names", "feature_names"):
            names = getattr(self, name)
            if names is not None:
                object.__setattr__(self, name, tuple(str(v) for v in names))
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise SpecError(f"input spec: {len(self.class_names)} class names for {self.num_classes} classes")
        if self.feature_names is not None and len(self.feature_names) != n:
            raise SpecError(f"input spec: {len(self.feature_names)} feature names for {n} features")

    def _check_normalisation(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise SpecError("input spec: give both mean and std, or neither")
        if self.mean is None or self.std is None:
            return
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != len(std):
            raise SpecError(f"input spec: mean has {len(mean)} values but std has {len(std)}")
        if len(mean) not in (1, self._norm_axis_len()):
            raise SpecError(
                f"input spec: mean/std need 1 or {self._norm_axis_len()} values "
                f"(one per {'channel' if self.kind == 'image' else 'feature'}), got {len(mean)}"
            )
        if not all(math.isfinite(v) for v in mean + std) or any(s <= 0 for s in std):
            raise SpecError("input spec: mean must be finite and std positive")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def _norm_axis_len(self) -> int:
        return self.shape[0] if self.kind == "image" else self.num_features

    @property
    def num_features(self) -> int:
        """Number of scalar values in one example."""
        return int(np.prod(self.shape))

    def _broadcast(
        self, values: Bound, *, device: torch.device | str | None, dtype: torch.dtype
    ) -> torch.Tensor:
        t = torch.as_tensor(values, dtype=dtype, device=device)
        if t.ndim == 0 or t.numel() == 1:
            return t.reshape(())
        return t.reshape(self.shape)

    def lower_tensor(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Lower bound as a tensor broadcastable to a batch ``(N, *shape)``."""
        return self._broadcast(self.lower, device=device, dtype=dtype)

    def upper_tensor(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Upper bound as a tensor broadcastable to a batch ``(N, *shape)``."""
        return self._broadcast(self.upper, device=device, dtype=dtype)

    def normalisation(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, std)`` shaped to broadcast against ``(N, *shape)``, or ``None``."""
        if self.mean is None or self.std is None:
            return None
        mean = torch.as_tensor(self.mean, dtype=dtype, device=device)
        std = torch.as_tensor(self.std, dtype=dtype, device=device)
        if mean.numel() > 1:
            view = (len(self.mean),) + (1,) * (len(self.shape) - 1) if self.kind == "image" else self.shape
            mean, std = mean.reshape(view), std.reshape(view)
        return mean, std

    def check_batch(self, x: np.ndarray | torch.Tensor, *, what: str = "inputs") -> None:
        """Raise :class:`SpecError` unless ``x`` is a finite batch of this shape within bounds."""
        shape = tuple(x.shape)
        if shape[1:] != self.shape:
            raise SpecError(
                f"{what}: expected a batch of shape (N, {', '.join(map(str, self.shape))}), got {shape}"
            )
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise SpecError(f"{what}: values must be real numbers, got dtype {arr.dtype}")
        if not arr.size:
            return
        flat = arr.reshape(arr.shape[0], -1)
        tol = 1e-6
        if isinstance(self.lower, tuple) or isinstance(self.upper, tuple):
            if not np.all(np.isfinite(arr)):
                raise SpecError(f"{what}: contains NaN or infinite values; clean or impute them first")
            lo = np.asarray(self.lower, dtype=np.float64)
            hi = np.asarray(self.upper, dtype=np.float64)
            outside = bool(np.any(flat < lo - tol) or np.any(flat > hi + tol))
        else:  # scalar bounds (the common case, and the gateway's hot path): two reductions
            low, high = flat.min(), flat.max()
            if not (np.isfinite(low) and np.isfinite(high)):  # NaN propagates, inf shows at an end
                raise SpecError(f"{what}: contains NaN or infinite values; clean or impute them first")
            outside = bool(low < self.lower - tol or high > self.upper + tol)
        if outside:
            raise SpecError(
                f"{what}: values lie outside the input bounds "
                f"[{_fmt_bound(self.lower)}, {_fmt_bound(self.upper)}] "
                f"(found min {flat.min():.4g}, max {flat.max():.4g}); rescale the data or set the bounds"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` reverses it."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        for key in ("lower", "upper"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        for key in ("mean", "std", "class_names", "feature_names"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Build a spec from :meth:`to_dict` output, validating every field."""
        if not isinstance(data, dict):
            raise SpecError("input spec: expected a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"input spec: unknown field(s) {sorted(unknown)}")
        try:
            kwargs = dict(data)
            for key in ("shape", "mean", "std", "class_names", "feature_names"):
                if kwargs.get(key) is not None:
                    kwargs[key] = tuple(kwargs[key])
            return cls(**kwargs)
        except TypeError as exc:
            raise SpecError(f"input spec: {exc}") from exc


def _fmt_bound(b: Bound) -> str:
    if isinstance(b, tuple):
        return f"per-feature {min(b):.4g}..{max(b):.4g}"
    return f"{b:.4g}"
