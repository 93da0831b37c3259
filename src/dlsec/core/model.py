"""The model contract: a classifier under test at one of three access levels.

* :class:`WhiteBoxModel` wraps a ``torch.nn.Module`` that maps a batch to logits; attacks may
  take gradients through it.
* :class:`ScoreModel` wraps any callable returning class probabilities (an ONNX session, a
  remote gateway, a white-box model seen from outside).
* :class:`DecisionModel` exposes predicted labels only.

Every level offers :meth:`predict`; richer levels can be downgraded (``as_score()``,
``as_decision()``) to check what an attacker with less access can do.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dlsec.core.spec import InputSpec
from dlsec.errors import SpecError, UsageError

__all__ = [
    "AMP_DTYPES",
    "Access",
    "Model",
    "WhiteBoxModel",
    "ScoreModel",
    "DecisionModel",
    "default_device",
    "inference_mode",
    "is_out_of_memory",
    "release_cached_memory",
    "restrict_access",
]

ArrayLike = np.ndarray | torch.Tensor
log = logging.getLogger(__name__)

#: Mixed-precision modes of :class:`WhiteBoxModel` (``amp=``) and the autocast dtype of each.
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
Amp = Literal["bf16", "fp16"]


class Access(enum.IntEnum):
    """What an attacker can see; higher values see more."""

    DECISION = 1
    SCORE = 2
    WHITE_BOX = 3

    @property
    def label(self) -> str:
        return {1: "decision", 2: "score", 3: "white-box"}[int(self)]


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (CUDA's or the allocator's message).

    ``torch.cuda.OutOfMemoryError`` (alias ``torch.OutOfMemoryError``), and the plain
    ``RuntimeError`` that older releases, MPS and some CPU kernels raise with "out of memory"
    in the message. Callers that adapt their batch size catch these and nothing else.
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory(device: torch.device) -> None:
    """Return the caching allocator's free blocks after an out-of-memory error (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def inference_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own flag.

    Gradients with respect to inputs still flow (attacks need them); only the train/eval flags
    are switched, and they are put back exactly as the caller left them.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, was_training in flags:
            m.training = was_training


class Model:
    """Base of the three access levels: a spec, an access level and :meth:`predict`."""

    access: Access
    spec: InputSpec

    def __init__(self, spec: InputSpec, *, batch_size: int = 256) -> None:
        if not isinstance(spec, InputSpec):
            raise SpecError("a model needs an InputSpec")
        if batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size

    def predict(self, x: ArrayLike) -> torch.Tensor:
        """Predicted labels for a batch, as a CPU ``int64`` tensor."""
        raise NotImplementedError

    def _as_batch(self, x: ArrayLike) -> torch.Tensor:
        t = torch.as_tensor(x)
        if tuple(t.shape[1:]) != self.spec.shape or t.ndim != len(self.spec.shape) + 1:
            raise SpecError(
                f"expected a batch of shape (N, {', '.join(map(str, self.spec.shape))}), got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            t = t.float()
        return t

    def _batches(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, x.shape[0], self.batch_size):
            yield x[start : start + self.batch_size]


class WhiteBoxModel(Model, nn.Module):
    """A white-box classifier: the module, with normalisation folded in.

    Calling it (``model(x)``) returns logits for an input-space batch ``x`` and keeps the
    autograd graph, so attacks can differentiate through it. The wrapped module is switched to
    eval mode only for the duration of each call and its flags restored afterwards.

    Args:
        module: a ``torch.nn.Module`` mapping a (normalised) batch to logits.
        spec: the input spec; its ``mean``/``std`` are applied before ``module``.
        device: where to run; defaults to the device of the module's parameters, else CUDA
            when present, else CPU. The module is not moved: pass a module already placed.
        batch_size: batch size for :meth:`predict` and :meth:`probs` over large inputs.
        amp: mixed precision: ``"bf16"`` or ``"fp16"`` runs the module under
            ``torch.autocast`` in that dtype (bf16 on CPU; fp16 or bf16 on CUDA). Logits come
            back as float32 and gradients with respect to the input stay float32. ``None``
            (default): full float32.
        channels_last: store the module's 4-D weights and each 4-D input batch in the
            channels-last memory format (faster convolutions on recent CPUs and GPUs; the
            numbers do not change beyond rounding).
        compiled: run the module through ``torch.compile`` (off by default). When compiling
            or running the compiled module fails (no compiler toolchain, an unsupported op),
            the model logs one warning naming the error and runs eagerly from then on.

    Speed options can also be set on a loaded model with :meth:`tuned`.

    Example:
        >>> spec = InputSpec(shape=(4,), num_classes=3, kind="tabular")
        >>> model = WhiteBoxModel(torch.nn.Linear(4, 3), spec)
        >>> model.predict(torch.zeros(2, 4)).shape
        torch.Size([2])
    """

    access = Access.WHITE_BOX

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 256,
        amp: Amp | None = None,
        channels_last: bool = False,
        compiled: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        Model.__init__(self, spec, batch_size=batch_size)
        if not isinstance(module, nn.Module):
            raise UsageError(f"WhiteBoxModel needs a torch.nn.Module, got {type(module).__name__}")
        if amp is not None and amp not in AMP_DTYPES:
            raise UsageError(f"amp must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
        param = next(module.parameters(), None)
        if device is None:
            device = param.device if param is not None else default_device()
        self.device = torch.device(device)
        self.module = module.to(self.device)  # in place: a device given explicitly is where it runs
        norm = spec.normalisation(device=self.device)
        self._norm = norm
        self.amp = amp
        self.channels_last = bool(channels_last)
        self.compiled = bool(compiled)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # Kept out of the module tree (a plain list), so state_dict() has no second copy of it.
        self._compiled: list[Callable[[torch.Tensor], torch.Tensor]] = []
        if self.compiled:
            try:
                self._compiled.append(torch.compile(self.module))
            except Exception as exc:  # torch.compile refuses some platforms outright
                _warn_compile(exc)

    def tuned(
        self, *, amp: Amp | None = None, channels_last: bool = False, compiled: bool = False
    ) -> WhiteBoxModel:
        """The same module (shared, not copied) with other speed options; see the class.

        Example:
            >>> fast = model.tuned(amp="bf16", channels_last=True)  # doctest: +SKIP
        """
        return WhiteBoxModel(
            self.module,
            self.spec,
            device=self.device,
            batch_size=self.batch_size,
            amp=amp,
            channels_last=channels_last,
            compiled=compiled,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input-space batch; differentiable (float32, whatever ``amp`` is)."""
        x = x.to(self.device)
        if self._norm is not None:
            mean, std = self._norm
            x = (x - mean) / std
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with inference_mode(self.module), self._autocast():
            out = self._run(x)
        return out.float() if self.amp is not None else out

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp])

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self._compiled:
            return self.module(x)
        try:
            out: torch.Tensor = self._compiled[0](x)
            return out
        except Exception as exc:
            if is_out_of_memory(exc):
                raise  # the caller's batch is too large; compiling is not what failed
            # torch.compile fails in many ways (no C compiler, an unsupported op, a backend
            # error); each raises its own type. The eager module computes the same function.
            self._compiled.clear()
            _warn_compile(exc)
            return self.module(x)

    def logits(self, x: ArrayLike) -> torch.Tensor:
        """Logits for any number of examples, batched, without gradients (on ``device``)."""
        t = self._as_batch(x)
        with torch.no_grad():
            outs = [self(b.to(self.device)) for b in self._batches(t)]
        if not outs:
            return torch.empty(0, self.spec.num_classes, device=self.device)
        return torch.cat(outs)

    def probs(self, x: ArrayLike) -> torch.Tensor:
        """Class probabilities (softmax of the logits), on the model's device."""
        return torch.softmax(self.logits(x), dim=1)

    def predict(self, x: ArrayLike) -> torch.Tensor:
        return self.logits(x).argmax(dim=1).cpu()

    def as_score(self) -> ScoreModel:
        """The same model seen by a score-based attacker (probabilities, no gradients)."""
        return ScoreModel(lambda x: self.probs(x), self.spec, batch_size=self.batch_size)

    def as_decision(self) -> DecisionModel:
        """The same model seen by a decision-based attacker (labels only)."""
        return DecisionModel(self.predict, self.spec, batch_size=self.batch_size)


def _warn_compile(exc: BaseException) -> None:
    first = str(exc).splitlines()[0] if str(exc) else ""
    log.warning(
        "torch.compile failed on this machine (%s: %s); running the model eagerly", type(exc).__name__, first
    )


class ScoreModel(Model):
    """A score-based black-box classifier: a callable from a batch to class probabilities.

    Args:
        fn: maps a float32 batch (a CPU tensor in input space) to probabilities of shape
            ``(N, num_classes)``, as a tensor or NumPy array; rows must sum to 1.
        spec: the input spec.
        batch_size: the largest batch passed to ``fn`` at once.

    Example:
        >>> spec = InputSpec(shape=(2,), num_classes=2, kind="tabular")
        >>> m = ScoreModel(lambda x: torch.softmax(x, 1), spec)
        >>> m.predict(torch.tensor([[0.1, 0.9]])).tolist()
        [1]
    """

    access = Access.SCORE

    def __init__(self, fn: Callable[[torch.Tensor], Any], spec: InputSpec, *, batch_size: int = 256) -> None:
        super().__init__(spec, batch_size=batch_size)
        if not callable(fn):
            raise UsageError("ScoreModel needs a callable returning probabilities")
        self._fn = fn

    def probs(self, x: ArrayLike) -> torch.Tensor:
        """Probabilities from the wrapped callable, checked, as a CPU float tensor."""
        t = self._as_batch(x).detach()
        outs = []
        for b in self._batches(t):
            p = torch.as_tensor(np.asarray(_to_numpy(self._fn(b.cpu().float()))), dtype=torch.float32)
            if p.shape != (b.shape[0], self.spec.num_classes):
                raise UsageError(
                    f"score model returned shape {tuple(p.shape)}, expected "
                    f"({b.shape[0]}, {self.spec.num_classes})"
                )
            if (
                not torch.isfinite(p).all()
                or (p < -1e-6).any()
                or not torch.allclose(p.sum(1), torch.ones(p.shape[0]), atol=1e-3)
            ):
                raise UsageError("score model must return probabilities (finite, >= 0, rows sum to 1)")
            outs.append(p)
        if not outs:
            return torch.empty(0, self.spec.num_classes)
        return torch.cat(outs)

    def predict(self, x: ArrayLike) -> torch.Tensor:
        return self.probs(x).argmax(dim=1)

    def as_decision(self) -> DecisionModel:
        """The same model seen by a decision-based attacker (labels only)."""
        return DecisionModel(self.predict, self.spec, batch_size=self.batch_size)


class DecisionModel(Model):
    """A decision-based black-box classifier: labels only.

    Args:
        fn: maps a float32 CPU batch in input space to integer labels of shape ``(N,)``.
        spec: the input spec.
        batch_size: the largest batch passed to ``fn`` at once.
    """

    access = Access.DECISION

    def __init__(self, fn: Callable[[torch.Tensor], Any], spec: InputSpec, *, batch_size: int = 256) -> None:
        super().__init__(spec, batch_size=batch_size)
        if not callable(fn):
            raise UsageError("DecisionModel needs a callable returning labels")
        self._fn = fn

    def predict(self, x: ArrayLike) -> torch.Tensor:
        t = self._as_batch(x).detach()
        outs = []
        for b in self._batches(t):
            labels = torch.as_tensor(np.asarray(_to_numpy(self._fn(b.cpu().float())))).reshape(-1)
            if labels.shape[0] != b.shape[0] or labels.is_floating_point():
                raise UsageError("decision model must return one integer label per example")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.spec.num_classes):
                raise UsageError(f"decision model returned a label outside 0..{self.spec.num_classes - 1}")
            outs.append(labels.long())
        if not outs:
            return torch.empty(0, dtype=torch.long)
        return torch.cat(outs)


def restrict_access(model: Model, access: str | Access | None) -> Model:
    """``model`` as an attacker with ``access`` sees it (``white-box``, ``score`` or ``decision``).

    Raises:
        UsageError: the access asked for is unknown or more than the model offers.
    """
    if access is None:
        return model
    levels = {"white-box": Access.WHITE_BOX, "score": Access.SCORE, "decision": Access.DECISION}
    wanted = access if isinstance(access, Access) else levels.get(str(access))
    if wanted is None:
        raise UsageError(f"access must be white-box, score or decision, got {access!r}")
    if wanted > model.access:
        raise UsageError(f"the model offers {model.access.label} access, not {wanted.label}")
    if wanted == model.access:
        return model
    if wanted == Access.SCORE and isinstance(model, WhiteBoxModel):
        return model.as_score()
    if isinstance(model, WhiteBoxModel | ScoreModel):
        return model.as_decision()
    raise UsageError(f"cannot reduce {model.access.label} access to {wanted.label}")  # pragma: no cover


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value
