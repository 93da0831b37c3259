"""Attribution methods: each a thin class over one Captum method, filed in one registry.

A method declares what it needs (``needs_gradients``, ``uses_baseline``, ``random``) and writes
only :meth:`AttributionMethod.attribute`, which builds the Captum object and calls it.
:func:`dlsec.explain.explain` does everything around it, once for all methods: it checks the
model's access level, resolves targets and the baseline, seeds the random draws, silences
Captum's expected warnings and checks the shape of what comes back.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from dlsec.core.model import Model, WhiteBoxModel
from dlsec.core.registration import register_in
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = [
    "METHODS",
    "AttributionContext",
    "AttributionMethod",
    "get_method",
    "register_method",
]

METHODS: dict[str, type[AttributionMethod]] = {}

# Captum warns about what dlsec does on purpose: inputs it sets requires_grad on, the hooks
# DeepLift places on activations, Kernel SHAP fitting one surrogate per example of a batch.
_EXPECTED_WARNINGS = (
    r"Input Tensor \d+ did not already require gradients"
    r"|Setting forward, backward hooks and attributes on non-linear"
    r"|You are providing multiple inputs for Lime / Kernel SHAP"
)


def register_method(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator: register an attribution method under ``name``; duplicates raise ``UsageError``."""
    return register_in(METHODS, name, "attribution method")


def get_method(name: str, **params: Any) -> AttributionMethod:
    """Build the registered method ``name`` with ``params``.

    Raises:
        UsageError: the method is unknown, or a parameter is not one it takes.
    """
    key = str(name).lower()
    if key not in METHODS:
        raise UsageError(f"unknown explanation method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    cls = METHODS[key]
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        takes = ", ".join(cls.param_names()) or "none"
        raise UsageError(f"method {key} has no parameter {', '.join(unknown)}; its parameters: {takes}")
    return cls(**params)


@dataclass
class AttributionContext:
    """What a method needs besides the inputs and targets.

    Attributes:
        model: the model explained.
        forward: maps an input-space batch to the explained output: logits for a white-box
            model, probabilities for a score-based one.
        baseline: the reference input, shaped like the batch and on its device.
        baseline_rows: the distinct baseline rows, ``(1, *shape)`` for a shared baseline.
        notes: what a method resolved by itself (Grad-CAM's layer), recorded in the
            explanation's parameters.
    """

    model: Model
    forward: Callable[[torch.Tensor], torch.Tensor]
    baseline: torch.Tensor
    baseline_rows: torch.Tensor
    notes: dict[str, Any] = field(default_factory=dict)


class AttributionMethod(ABC):
    """One attribution method: keyword-only hyperparameters in ``__init__``, one verb.

    Subclasses set ``needs_gradients`` (white-box only), ``uses_baseline`` (the baseline is
    part of the result's meaning, so it is recorded) and ``random`` (the method draws random
    numbers; they come from the explanation's seed).
    """

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = True
    uses_baseline: ClassVar[bool] = False
    random: ClassVar[bool] = False

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The keyword-only parameters of ``__init__``."""
        return _param_names(cls)

    def get_params(self) -> dict[str, Any]:
        """The parameters this method was built with."""
        return {n: getattr(self, n) for n in self.param_names()}

    def check(self, model: Model) -> None:  # noqa: B027 - a hook: by default any model will do
        """Raise :class:`UsageError` if this method cannot explain ``model`` (before any work)."""

    @abstractmethod
    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attributions shaped like ``x`` for the ``targets`` outputs."""


@functools.cache
def _param_names(cls: type[AttributionMethod]) -> tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings Captum gives about what dlsec does on purpose (and only those)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EXPECTED_WARNINGS)
        yield


def _value_range(model: Model) -> float:
    """The mean width of the input bounds (noise scales are fractions of it)."""
    lower = model.spec.lower_tensor(dtype=torch.float64)
    upper = model.spec.upper_tensor(dtype=torch.float64)
    return float((upper - lower).mean())


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise UsageError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _is_image(model: Model) -> bool:
    return model.spec.kind == "image" and len(model.spec.shape) == 3


def _patch(model: Model, size: int | None) -> int:
    """A square patch side for images: the given one, else an eighth of the smaller side."""
    if size is not None:
        return size
    _, h, w = model.spec.shape
    return max(1, min(h, w) // 8)


# --------------------------------------------------------------------------- gradient methods


@register_method("saliency")
class Saliency(AttributionMethod):
    """The gradient of the target output with respect to the input (Simonyan et al. 2014).

    Args:
        abs: return its absolute value (the classic saliency map).
    """

    def __init__(self, *, abs: bool = True) -> None:
        self.abs = bool(abs)

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(ctx.forward).attribute(x, target=targets, abs=self.abs)


@register_method("ig")
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from the baseline to the input.

    Attributions sum to ``f(x) - f(baseline)`` for the target output (completeness).

    Args:
        n_steps: points of the path integral.
        rule: Captum's integration rule (``gausslegendre``, ``riemann_trapezoid``, ...).
        internal_batch_size: largest batch of path points evaluated at once (default: all).
    """

    uses_baseline = True

    def __init__(
        self, *, n_steps: int = 50, rule: str = "gausslegendre", internal_batch_size: int | None = None
    ) -> None:
        self.n_steps = positive_int("n_steps", n_steps)
        self.rule = str(rule)
        self.internal_batch_size = (
            None if internal_batch_size is None else positive_int("internal_batch_size", internal_batch_size)
        )

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(ctx.forward).attribute(
            x,
            baselines=ctx.baseline,
            target=targets,
            n_steps=self.n_steps,
            method=self.rule,
            internal_batch_size=self.internal_batch_size,
        )


@register_method("smoothgrad")
class SmoothGrad(AttributionMethod):
    """SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies (Captum's NoiseTunnel).

    Args:
        samples: noisy copies per input.
        noise: standard deviation of the Gaussian noise, as a fraction of the input range.
        abs: average absolute gradients (as saliency) rather than signed ones.
    """

    random = True

    def __init__(self, *, samples: int = 25, noise: float = 0.15, abs: bool = True) -> None:
        self.samples = positive_int("samples", samples)
        self.noise = _non_negative("noise", noise)
        self.abs = bool(abs)

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        return NoiseTunnel(CaptumSaliency(ctx.forward)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=self.samples,
            stdevs=self.noise * _value_range(ctx.model),
            target=targets,
            abs=self.abs,
        )


@register_method("deeplift")
class DeepLift(AttributionMethod):
    """DeepLIFT's rescale rule (Shrikumar et al. 2017) from the baseline, on Captum's hooks.

    The model's activation modules must not be reused within one forward pass (a Captum rule).
    """

    uses_baseline = True

    def __init__(self) -> None:
        pass

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import DeepLift as CaptumDeepLift

        if not isinstance(ctx.model, WhiteBoxModel):  # pragma: no cover - checked before
            raise UsageError("deeplift needs a white-box model")
        return CaptumDeepLift(ctx.model).attribute(x, baselines=ctx.baseline, target=targets)


@register_method("gradient-shap")
class GradientShap(AttributionMethod):
    """GradientSHAP (Lundberg and Lee 2017, Captum): expected gradients over a baseline distribution.

    The distribution is the baseline plus ``n_random`` inputs drawn uniformly within the input
    bounds (the "uniform" baseline of Sturmfels et al. 2020), all seeded.

    Args:
        samples: random (baseline, point on the path) draws per input.
        n_random: uniform random baselines added to the distribution.
        noise: standard deviation of Gaussian noise added to the inputs, as a fraction of the
            input range (Captum's ``stdevs``).
    """

    uses_baseline = True
    random = True

    def __init__(self, *, samples: int = 20, n_random: int = 8, noise: float = 0.0) -> None:
        self.samples = positive_int("samples", samples)
        if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
            raise UsageError(f"n_random must be a non-negative integer, got {n_random!r}")
        self.n_random = n_random
        self.noise = _non_negative("noise", noise)

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import GradientShap as CaptumGradientShap

        spec = ctx.model.spec
        rows = ctx.baseline_rows
        if self.n_random:
            lower = spec.lower_tensor(device=x.device, dtype=x.dtype)
            upper = spec.upper_tensor(device=x.device, dtype=x.dtype)
            u = torch.rand((self.n_random, *spec.shape), device=x.device, dtype=x.dtype)
            rows = torch.cat([rows, lower + u * (upper - lower)])
        return CaptumGradientShap(ctx.forward).attribute(
            x,
            baselines=rows,
            n_samples=self.samples,
            stdevs=self.noise * _value_range(ctx.model),
            target=targets,
        )


@register_method("gradcam")
class GradCam(AttributionMethod):
    """Grad-CAM (Selvaraju et al. 2017) on a convolutional layer, upsampled to the input.

    The layer's class activation map is interpolated to the input's height and width and
    spread evenly over its channels, so the attributions have the input's shape.

    Args:
        layer: name of the layer (as ``named_modules`` of the wrapped module lists it);
            default: the last ``Conv2d``.
        relu: keep only the positive evidence (the paper's ReLU).
        interpolation: ``bilinear`` or ``nearest``.
    """

    def __init__(
        self, *, layer: str | None = None, relu: bool = True, interpolation: str = "bilinear"
    ) -> None:
        self.layer = layer
        self.relu = bool(relu)
        if interpolation not in ("bilinear", "nearest"):
            raise UsageError(f"interpolation must be bilinear or nearest, got {interpolation!r}")
        self.interpolation = interpolation

    def check(self, model: Model) -> None:
        if not _is_image(model):
            raise UsageError("gradcam explains images (C, H, W inputs); use ig or saliency for tabular data")
        self._find_layer(model)

    def _find_layer(self, model: Model) -> tuple[str, nn.Module]:
        if not isinstance(model, WhiteBoxModel):
            raise UsageError("method gradcam needs gradients (white-box); use occlusion or kernel-shap")
        found: tuple[str, nn.Module] | None = None
        for n, m in model.module.named_modules():
            if (n == self.layer) if self.layer is not None else isinstance(m, nn.Conv2d):
                found = (n, m)
                if self.layer is not None:
                    break
        if found is not None:
            return found
        names = ", ".join(n for n, _ in model.module.named_modules() if n) or "none"
        if self.layer is None:
            raise UsageError(
                "gradcam needs a convolutional layer and the model has none; "
                f"name one with layer= (layers: {names})"
            )
        raise UsageError(f"the model has no layer {self.layer!r}; its layers: {names}")

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        name, layer = self._find_layer(ctx.model)
        ctx.notes["layer"] = name
        cam = LayerGradCam(ctx.forward, layer).attribute(x, target=targets, relu_attributions=self.relu)
        if not isinstance(cam, torch.Tensor) or cam.ndim != 4:
            shape = tuple(cam.shape) if isinstance(cam, torch.Tensor) else "several tensors"
            raise UsageError(
                f"layer {name!r} gives Grad-CAM maps of shape {shape}; name a convolutional layer "
                "with an (N, C, H, W) output"
            )
        up = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=self.interpolation)
        channels = x.shape[1]
        return up if channels == 1 else up.expand(-1, channels, -1, -1) / channels


# --------------------------------------------------------------------------- gradient-free methods


@register_method("occlusion")
class Occlusion(AttributionMethod):
    """Occlusion (Zeiler and Fergus 2014): the output's drop when a window is set to the baseline.

    Needs only scores, so it explains score-based (black-box) models too.

    Args:
        window: side of the square patch for images (default: an eighth of the smaller side),
            length of the window for other data (default 1: one feature at a time).
        stride: step between windows (default: half the window, at least 1).
        perturbations_per_eval: occluded copies evaluated in one forward pass.
    """

    needs_gradients = False
    uses_baseline = True

    def __init__(
        self, *, window: int | None = None, stride: int | None = None, perturbations_per_eval: int = 16
    ) -> None:
        self.window = None if window is None else positive_int("window", window)
        self.stride = None if stride is None else positive_int("stride", stride)
        self.perturbations_per_eval = positive_int("perturbations_per_eval", perturbations_per_eval)

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import Occlusion as CaptumOcclusion

        spec = ctx.model.spec
        if _is_image(ctx.model):
            w = _patch(ctx.model, self.window)
            s = self.stride or max(1, w // 2)
            window: tuple[int, ...] = (spec.shape[0], w, w)
            strides: tuple[int, ...] = (spec.shape[0], s, s)
        else:
            w = self.window or 1
            s = self.stride or max(1, w // 2)
            window = (1,) * (len(spec.shape) - 1) + (w,)
            strides = (1,) * (len(spec.shape) - 1) + (s,)
        return CaptumOcclusion(ctx.forward).attribute(
            x,
            sliding_window_shapes=window,
            strides=strides,
            baselines=ctx.baseline,
            target=targets,
            perturbations_per_eval=self.perturbations_per_eval,
        )


@register_method("kernel-shap")
class KernelShap(AttributionMethod):
    """Kernel SHAP (Lundberg and Lee 2017, Captum): Shapley values from a weighted linear surrogate.

    Features are the input's features (tabular) or square patches shared by all channels
    (images). One surrogate is fitted per example. Needs only scores.

    Args:
        samples: coalitions evaluated per example.
        patch: side of the image patches (default: an eighth of the smaller side).
        perturbations_per_eval: coalitions evaluated in one forward pass.
    """

    needs_gradients = False
    uses_baseline = True
    random = True

    def __init__(
        self, *, samples: int = 256, patch: int | None = None, perturbations_per_eval: int = 64
    ) -> None:
        self.samples = positive_int("samples", samples)
        self.patch = None if patch is None else positive_int("patch", patch)
        self.perturbations_per_eval = positive_int("perturbations_per_eval", perturbations_per_eval)

    def attribute(self, ctx: AttributionContext, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import KernelShap as CaptumKernelShap

        mask = None
        if _is_image(ctx.model):
            _, h, w = ctx.model.spec.shape
            p = _patch(ctx.model, self.patch)
            rows = torch.arange(h, device=x.device) // p
            cols = torch.arange(w, device=x.device) // p
            mask = (rows[:, None] * ((w + p - 1) // p) + cols[None, :]).reshape(1, 1, h, w)
        return CaptumKernelShap(ctx.forward).attribute(
            x,
            baselines=ctx.baseline,
            target=targets,
            feature_mask=mask,
            n_samples=self.samples,
            perturbations_per_eval=self.perturbations_per_eval,
        )
