"""Differentially private SGD (Abadi et al. 2016) with Opacus as the engine.

Poisson sampling (each row joins each step independently with probability ``q``), per-example
gradient clipping, Gaussian noise, and Opacus' PRV accountant (Gopi et al. 2021), which is
tight where the RDP accountant overstates epsilon. The noise multiplier is calibrated from the
target ``(epsilon, delta)`` for the planned number of steps; the epsilon actually spent is
computed from the accountant's history at the end and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.core.recipe import Recipe, TrainState, register_recipe
from dlsec.core.seeding import torch_generator
from dlsec.core.spec import InputSpec
from dlsec.core.trainconfig import TrainConfig
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["DPSGD", "GRAD_SAMPLE_MODES", "bounds_normalisation"]

log = logging.getLogger(__name__)

#: Opacus' ways of getting per-example gradients (``ghost`` gets their norms only).
GRAD_SAMPLE_MODES = ("auto", "hooks", "ew", "functorch", "ghost")
_ACCOUNTANT = "prv"
# The attribute Opacus keeps per-example gradients in (absent from torch's type stubs).
_GRAD_SAMPLE = "grad_sample"
# Noise from Opacus' own warnings that says nothing to a dlsec user: backward hooks on a
# module whose input needs no gradient, and the RDP order range PRV uses to size its domain.
_QUIET = ("Full backward hook is firing", "Optimal order is the largest alpha")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Opacus' uninformative warnings for the block."""
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


def bounds_normalisation(spec: InputSpec) -> InputSpec:
    """``spec`` normalised from its bounds alone: centre ``(lower + upper) / 2``, scale
    ``(upper - lower) / 2``, per channel (images) or per feature (tabular).

    DP-SGD protects the training rows only if nothing else learned from them leaves the
    mechanism; a mean and standard deviation measured on the rows would. Bounds are part of
    the data's declaration (note that a CSV's default bounds are its observed ranges: pass
    explicit bounds to keep them data-independent).
    """
    lo = np.broadcast_to(np.asarray(spec.lower, dtype=np.float64), (spec.num_features,)).reshape(spec.shape)
    hi = np.broadcast_to(np.asarray(spec.upper, dtype=np.float64), (spec.num_features,)).reshape(spec.shape)
    if spec.kind == "image":
        lo_c = lo.reshape(spec.shape[0], -1).min(axis=1)
        hi_c = hi.reshape(spec.shape[0], -1).max(axis=1)
    else:
        lo_c, hi_c = lo.reshape(-1), hi.reshape(-1)
    mean, std = (lo_c + hi_c) / 2, (hi_c - lo_c) / 2
    return replace(spec, mean=tuple(mean.tolist()), std=tuple(std.tolist()))


class _DPStep:
    """One DP-SGD step through Opacus: per-example gradients, clipping, noise, update.

    ``augmult`` views of each example (De et al. 2022) are averaged into one per-example
    gradient before clipping, so the sensitivity stays ``max_grad_norm`` per example.

    Args:
        module: the model's module; wrapped in place by Opacus (hooks) until :meth:`close`.
        optimizer: the plain optimiser over the module's parameters.
        noise_multiplier: noise standard deviation over ``max_grad_norm``.
        max_grad_norm: the per-example clipping norm.
        expected_batch_size: ``q * n``, the denominator of the averaged gradient.
        mode: ``hooks``, ``ew``, ``functorch`` or ``ghost``.
        augmult: views per example.
        generator: the noise generator (on the parameters' device).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        mode: str,
        augmult: int = 1,
        generator: torch.Generator | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
        from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        if mode == "ghost" and augmult > 1:
            raise UsageError("grad_sample_mode 'ghost' gives gradient norms only; augmult > 1 needs hooks")
        self.mode = mode
        self.augmult = augmult
        self.label_smoothing = label_smoothing
        self.params = [p for p in module.parameters() if p.requires_grad]
        common = {"noise_multiplier": noise_multiplier, "max_grad_norm": max_grad_norm}
        self.gsm: nn.Module
        self.optimizer: torch.optim.Optimizer
        self.criterion: Any = None
        with _quiet():
            if mode == "ghost":
                self.gsm = GradSampleModuleFastGradientClipping(
                    module, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm
                )
                self.optimizer = DPOptimizerFastGradientClipping(
                    optimizer, expected_batch_size=expected_batch_size, generator=generator, **common
                )
                self.criterion = DPLossFastGradientClipping(
                    self.gsm, self.optimizer, nn.CrossEntropyLoss(label_smoothing=label_smoothing), "mean"
                )
            else:
                if mode == "ew":
                    self.gsm = GradSampleModuleExpandedWeights(
                        module, batch_first=True, loss_reduction="mean"
                    )
                else:
                    self.gsm = GradSampleModule(
                        module, batch_first=True, loss_reduction="mean", force_functorch=mode == "functorch"
                    )
                self.optimizer = DPOptimizer(
                    optimizer, expected_batch_size=expected_batch_size, generator=generator, **common
                )

    def __call__(self, forward: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """Step on ``x`` (``len(y) * augmult`` rows, views of an example adjacent) and ``y``.

        ``forward`` maps an input-space batch to logits through :attr:`gsm`. Returns the summed
        loss (over examples, views averaged) and the number of correct views over ``augmult``.
        (Wrap training in :func:`_quiet` to hide Opacus' hook warning; per step it would cost
        as much as the step of a small model.)
        """
        n = len(y)
        self.optimizer.zero_grad(set_to_none=True)
        if n == 0:
            # An empty Poisson batch still takes a step: the noise alone.
            for p in self.params:
                if self.mode == "ghost":
                    p.grad = torch.zeros_like(p)
                else:
                    setattr(p, _GRAD_SAMPLE, p.new_zeros((0, *p.shape)))
            self.optimizer.step()
            return 0.0, 0
        ys = y.repeat_interleave(self.augmult) if self.augmult > 1 else y
        logits = forward(x)
        if self.mode == "ghost":
            dp_loss = self.criterion(logits, ys)
            dp_loss.backward()
            total = float(dp_loss.loss_per_sample.detach().sum())
        else:
            loss = F.cross_entropy(logits, ys, label_smoothing=self.label_smoothing)
            loss.backward()
            total = float(loss.detach()) * len(ys)
            if self.augmult > 1:
                for p in self.params:
                    gs = getattr(p, _GRAD_SAMPLE)
                    views = gs.reshape(n, self.augmult, *gs.shape[1:])
                    setattr(p, _GRAD_SAMPLE, views.mean(dim=1))
        self.optimizer.step()
        correct = int((logits.detach().argmax(1) == ys).sum())
        return total / self.augmult, correct // self.augmult

    def close(self) -> None:
        """Remove Opacus' hooks and per-example attributes from the module."""
        close = getattr(self.gsm, "_close", None)
        if callable(close):
            close()


@register_recipe("dp-sgd")
class DPSGD(Recipe):
    """Differentially private SGD: Poisson sampling, per-example clipping, Gaussian noise.

    The noise multiplier is the smallest that keeps the planned run (``epochs`` epochs of
    ``round(n / batch_size)`` steps at sampling rate ``batch_size / n``) within
    ``(epsilon, delta)`` under Opacus' PRV accountant; the epsilon actually spent is recorded
    in the card (with the looser RDP figure beside it). Gradients come from Opacus, whose modes
    differ a lot in speed (``benchmarks/train.py`` measures them): ``auto`` picks ``ghost``
    clipping (norms without materialising per-example gradients; 2.8x the non-private epoch on
    dlsec's CNN where ``hooks`` takes 7x, and faster on an MLP), except for a single-layer
    (linear) model, where ``hooks`` is faster, and when ``augmult > 1`` needs the per-example
    gradients themselves (``hooks`` then too).

    The model carries a normalisation derived from the input bounds, not from the data (a
    measured mean would leak outside the guarantee). BatchNorm mixes the examples of a batch,
    so per-example gradients do not exist: such models are refused. Early stopping is refused
    (selecting on held-out rows is outside the guarantee). With no ``arch`` the recipe trains
    a linear model (``mlp`` with no hidden layer): the noise grows with the parameter count,
    and on small data a linear model is the strongest private baseline (Tramèr & Boneh 2021).

    The noise comes from a seeded torch generator so that a run can be reproduced; it is not
    a cryptographically secure generator (Opacus' ``secure_mode`` needs torchcsprng), which
    floating-point attacks on the Gaussian sampler can exploit in principle. The card says so.

    Args:
        epsilon: the privacy budget's epsilon (> 0).
        delta: the budget's delta, in (0, 1/n) for n training rows.
        max_grad_norm: per-example clipping norm.
        augmult: augmented views per example, averaged before clipping (De et al. 2022);
            needs ``augment`` on in the config.
        grad_sample_mode: ``auto``, ``hooks``, ``ew``, ``functorch`` or ``ghost``.

    Example:
        >>> from dlsec.core import load_dataset
        >>> from dlsec.train import train
        >>> recipe = DPSGD(epsilon=1.0, delta=1e-5)
        >>> result = train(load_dataset("builtin:digits"), recipe=recipe)   # doctest: +SKIP
        >>> result.privacy["epsilon_spent"] <= 1.0                          # doctest: +SKIP
        True
    """

    config_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "sgd",
        "lr": 1.0,
        "batch_size": 256,
        "epochs": 30,
    }

    def __init__(
        self,
        *,
        epsilon: float,
        delta: float = 1e-5,
        max_grad_norm: float = 1.0,
        augmult: int = 1,
        grad_sample_mode: str = "auto",
    ) -> None:
        if not _positive_number(epsilon):
            raise UsageError(f"epsilon must be a positive number, got {epsilon!r}")
        if not _positive_number(delta) or not delta < 1:
            raise UsageError(f"delta must be in (0, 1), got {delta!r}")
        if not _positive_number(max_grad_norm):
            raise UsageError(f"max_grad_norm must be a positive number, got {max_grad_norm!r}")
        positive_int("augmult", augmult)
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise UsageError(
                f"grad_sample_mode must be one of {', '.join(GRAD_SAMPLE_MODES)}, got {grad_sample_mode!r}"
            )
        if grad_sample_mode == "ghost" and augmult > 1:
            raise UsageError(
                "augmult > 1 needs per-example gradients: use grad_sample_mode 'hooks' or 'auto'"
            )
        self.epsilon = epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.augmult = augmult
        self.grad_sample_mode = grad_sample_mode

    def resolve_mode(self, module: nn.Module) -> str:
        """The grad-sample mode used for ``module`` (what ``auto`` resolves to)."""
        if self.grad_sample_mode != "auto":
            return self.grad_sample_mode
        layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
        return "hooks" if self.augmult > 1 or len(layers) <= 1 else "ghost"

    # ------------------------------------------------------------------ set-up
    def default_arch(self, spec: InputSpec) -> tuple[str, dict[str, Any]] | None:
        return "mlp", {"in_features": spec.num_features, "num_classes": spec.num_classes, "hidden": []}

    def input_spec(self, train_set: Dataset) -> InputSpec:
        return bounds_normalisation(train_set.spec)

    def check(self, model: WhiteBoxModel, n_train: int, config: TrainConfig) -> None:
        if not self.delta < 1 / n_train:
            raise UsageError(
                f"delta {self.delta:g} must be below 1/n = {1 / n_train:.3g} for the {n_train} training rows "
                "(a delta of 1/n allows publishing a row outright); "
                f"use e.g. --delta {_suggest_delta(n_train):g}"
            )
        if config.batch_size > n_train:
            raise UsageError(
                f"batch size {config.batch_size} exceeds the {n_train} training rows; the sampling rate "
                "batch_size / n must be at most 1"
            )
        if config.early_stopping:
            raise UsageError(
                "dp-sgd does not early-stop: selecting on held-out rows is outside the DP guarantee"
            )
        if self.augmult > 1 and not config.augment:
            raise UsageError(
                "augmult averages gradients over augmented views: turn augmentation on (--augment)"
            )
        _refuse_unsupported(model.module)

    def plan(self, n: int, config: TrainConfig) -> tuple[float, int, int]:
        """``(sample_rate, steps_per_epoch, total_steps)`` for ``n`` rows under ``config``."""
        rate = config.batch_size / n
        per_epoch = max(1, round(n / config.batch_size))
        return rate, per_epoch, per_epoch * config.epochs

    def noise_multiplier(self, n: int, config: TrainConfig) -> float:
        """The noise multiplier that spends at most ``epsilon`` over the planned run."""
        from opacus.accountants.utils import get_noise_multiplier

        rate, _, total = self.plan(n, config)
        with _quiet():
            try:
                return float(
                    get_noise_multiplier(
                        target_epsilon=self.epsilon,
                        target_delta=self.delta,
                        sample_rate=rate,
                        steps=total,
                        accountant=_ACCOUNTANT,
                    )
                )
            except ValueError as exc:
                raise UsageError(f"cannot reach epsilon {self.epsilon:g}: {exc}") from None

    def prepare(self, state: TrainState) -> None:
        from opacus.accountants import PRVAccountant

        quiet = contextlib.ExitStack()
        quiet.enter_context(_quiet())
        state.extra["quiet"] = quiet

        config = state.config
        rate, per_epoch, total = self.plan(state.n, config)
        sigma = self.noise_multiplier(state.n, config)
        noise_gen = torch_generator(state.draw_seed(), device=state.model.device)
        step = _DPStep(
            state.module,
            state.optimizer,
            noise_multiplier=sigma,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=config.batch_size,
            mode=self.resolve_mode(state.module),
            augmult=self.augmult,
            generator=noise_gen,
            label_smoothing=config.label_smoothing,
        )
        state.module = step.gsm
        state.optimizer = step.optimizer
        state.extra.update(
            dp_step=step,
            noise_gen=noise_gen,
            accountant=PRVAccountant(),
            sigma=sigma,
            rate=rate,
            per_epoch=per_epoch,
            planned_steps=total,
        )
        log.warning(
            "dp-sgd: the noise comes from a seeded torch generator (reproducible, not a cryptographic RNG)"
        )

    def cleanup(self, state: TrainState) -> None:
        step = state.extra.get("dp_step")
        if step is not None:
            step.close()
        quiet = state.extra.get("quiet")
        if quiet is not None:
            quiet.close()

    # ------------------------------------------------------------------ one epoch
    def batches(self, state: TrainState) -> Iterator[torch.Tensor]:
        """Poisson sampling: each row joins each of the epoch's steps with probability ``q``.

        The draw is Opacus' ``UniformWithReplacementSampler``'s (``rand(n) < q`` from the run's
        generator), kept as a tensor: at small batch sizes the list it builds costs more than
        the step.
        """
        rate = state.extra["rate"]
        for _ in range(state.extra["per_epoch"]):
            mask = torch.rand(state.n, generator=state.gen) < rate
            yield mask.nonzero().reshape(-1).to(state.x.device)

    def train_step(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        views = x.repeat_interleave(self.augmult, dim=0) if self.augmult > 1 else x
        x = state.augment(views)
        result = state.extra["dp_step"](state.forward, x, y)
        state.extra["accountant"].step(noise_multiplier=state.extra["sigma"], sample_rate=state.extra["rate"])
        return result

    # ------------------------------------------------------------------ records
    def state_dict(self, state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        history = [list(entry) for entry in state.extra["accountant"].history]
        return {"noise_gen": state.extra["noise_gen"].get_state()}, {"accountant_history": history}

    def load_state_dict(
        self, state: TrainState, tensors: dict[str, torch.Tensor], values: dict[str, Any]
    ) -> None:
        state.extra["noise_gen"].set_state(tensors["noise_gen"].cpu())
        state.extra["accountant"].history = [tuple(entry) for entry in values["accountant_history"]]

    def summary(self, state: TrainState) -> dict[str, Any]:
        history = state.extra["accountant"].history
        steps = sum(int(entry[2]) for entry in history)
        return {
            "privacy": {
                "mechanism": "dp-sgd (Poisson sampling, per-example clipping, Gaussian noise)",
                "epsilon_spent": spent_epsilon(history, self.delta, _ACCOUNTANT),
                "epsilon_target": self.epsilon,
                "delta": self.delta,
                "accountant": "prv (Opacus PRVAccountant, Gopi et al. 2021)",
                "epsilon_rdp": spent_epsilon(history, self.delta, "rdp"),
                "noise_multiplier": state.extra["sigma"],
                "max_grad_norm": self.max_grad_norm,
                "sample_rate": state.extra["rate"],
                "expected_batch_size": state.config.batch_size,
                "steps": steps,
                "planned_steps": state.extra["planned_steps"],
                "training_rows": state.n,
                "augmult": self.augmult,
                "grad_sample_mode": state.extra["dp_step"].mode,
                "normalisation": "from the input bounds (data-independent)",
                "noise_rng": "seeded torch generator (reproducible; not a cryptographic RNG)",
            }
        }


def spent_epsilon(
    history: list[tuple[float, float, int]], delta: float, accountant: str = _ACCOUNTANT
) -> float:
    """Epsilon of an Opacus accountant ``history`` of ``(noise_multiplier, sample_rate, steps)``."""
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [tuple(entry) for entry in history]
    if not acc.history:
        return 0.0
    with _quiet():
        return float(acc.get_epsilon(delta=delta))


def _positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
    )


def _suggest_delta(n: int) -> float:
    return float(10 ** math.floor(math.log10(1 / n) - 1))


def _refuse_unsupported(module: nn.Module) -> None:
    batch_norms = [
        name or "(root)"
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if batch_norms:
        raise UsageError(
            f"dp-sgd cannot train BatchNorm layers ({', '.join(batch_norms[:3])}): they mix the "
            "examples of a batch, so per-example gradients do not exist; use GroupNorm or LayerNorm, "
            "or no normalisation"
        )
    from opacus.validators import ModuleValidator

    with _quiet():
        errors = ModuleValidator.validate(module, strict=False)
    if errors:
        first = str(errors[0]).strip().splitlines()[0][:200]
        raise UsageError(f"dp-sgd cannot train this model: {first}")


class UnsafeNoNoiseDPSGD(DPSGD):
    """UNSAFE: ``dp-sgd`` that adds no noise but still claims its configured epsilon.

    A deliberately broken mechanism for checking that a DP audit catches a false claim: the
    noise multiplier is calibrated and recorded (the accountant, the card and the claim all
    say ``epsilon``) but the optimiser adds none. Never registered as a recipe, so no command
    can train with it by name; it warns every time it is used.
    """

    def prepare(self, state: TrainState) -> None:
        super().prepare(state)
        log.warning("UnsafeNoNoiseDPSGD: training WITHOUT noise while claiming epsilon %g", self.epsilon)
        state.extra["dp_step"].optimizer.noise_multiplier = 0.0
