"""The attack contract.

An attack is configured by keyword-only hyperparameters (the threat model: ``norm``, ``eps``,
``targeted``, ``seed``) and called as ``attack(model, x, y)``. :meth:`Attack.__call__` is the
one verb: it validates the inputs, checks the model's access level, splits the work into
batches, hands each to the subclass's :meth:`Attack.run` (the algorithm, and nothing else),
projects what comes back to the budget and the input bounds, applies tabular constraints, and
scores success with one prediction (for an attack run with EOT on a randomised model, by the
expectation over as many fresh passes). A subclass never re-implements any of that.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from dlsec.attacks.evasion._constraints import TabularConstraints
from dlsec.attacks.evasion._expectation import DrawLoss, ExpectationModel, expected_scores
from dlsec.attacks.evasion._norms import Norm, get_norm
from dlsec.core.model import Access, Model, WhiteBoxModel, is_out_of_memory, release_cached_memory
from dlsec.core.registration import register_in
from dlsec.core.seeding import seeded_draws, torch_generator
from dlsec.core.validate import positive_int
from dlsec.errors import SpecError, UsageError

__all__ = ["Aimable", "Attack", "AttackResult", "Oracle", "register_attack", "ATTACKS", "get_attack"]

ATTACKS: dict[str, type[Attack]] = {}
log = logging.getLogger(__name__)
Progress = Callable[[int, int, dict[str, float]], None]
#: Offset of the seed that scoring by expectation draws a randomised model's noise from.
_SCORING_STREAM = 7919
#: Picks the classes an attack aims at from the clean scores ``(N, K)``: one ``(N,)`` tensor a run.
Aims = Callable[[torch.Tensor], list[torch.Tensor]]


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register an attack under ``name``; duplicates raise ``UsageError``."""

    return register_in(ATTACKS, name, "attack")


def get_attack(name: str, **params: Any) -> Attack:
    """Build the registered attack ``name`` with ``params``."""
    key = name.lower()
    if key not in ATTACKS:
        raise UsageError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[key](**params)


class Oracle:
    """The model as an attack sees it: every question it asks is counted.

    ``oracle(x)`` returns differentiable logits (white-box only), ``oracle.probs(x)``
    probabilities (score-based and up), ``oracle.predict(x)`` labels (any access). ``queries``
    counts examples evaluated. With tabular constraints, features that must not change get no
    gradient (the base resets them to their clean values before scoring).
    """

    def __init__(self, model: Model, *, mutable: torch.Tensor | None = None) -> None:
        self.model = model
        self.spec = model.spec
        self.access = model.access
        self.device = model.device if isinstance(model, WhiteBoxModel) else torch.device("cpu")
        self.queries = 0
        self._mutable = mutable

    def _hold(self, x: torch.Tensor) -> torch.Tensor:
        # Features that must not change get no gradient; the base resets them at the end.
        if self._mutable is None:
            return x
        return torch.where(self._mutable, x, x.detach())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.model, WhiteBoxModel):
            raise UsageError("this attack needs gradients: it requires white-box access")
        self.queries += x.shape[0]
        return self.model(self._hold(x))

    def draws(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of each forward pass on ``x``, ``(S, N, K)``, without gradients: ``S`` passes for a
        randomised model under EOT, one for any other white-box model."""
        if not isinstance(self.model, WhiteBoxModel):
            raise UsageError("this attack needs gradients: it requires white-box access")
        self.queries += x.shape[0]
        with torch.no_grad():
            if isinstance(self.model, ExpectationModel):
                return self.model.draws(self._hold(x))
            return self.model(self._hold(x)).unsqueeze(0)

    def loss_and_grad(
        self, x: torch.Tensor, loss: DrawLoss
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A per-draw loss at ``x``, averaged over the forward passes, and its gradient.

        ``loss`` maps logits ``(m, N, K)`` of ``m`` passes to per-example losses ``(m, N)``. For a
        randomised model under EOT the mean runs over its ``S`` passes (stacked, one forward and
        backward pass per stack), so the gradient is the mean of the per-pass gradients; for any
        other model ``S = 1`` and this is the plain loss and gradient.

        Returns:
            the logits of the passes ``(S, N, K)``, the mean loss ``(N,)`` and its gradient, all
            detached.
        """
        if not isinstance(self.model, WhiteBoxModel):
            raise UsageError("this attack needs gradients: it requires white-box access")
        self.queries += x.shape[0]
        if isinstance(self.model, ExpectationModel):
            return self.model.loss_and_grad(x, loss, self._hold)
        with torch.enable_grad():
            point = x.detach().requires_grad_(True)
            logits = self.model(self._hold(point)).unsqueeze(0)
            per_draw = loss(logits)
            (grad,) = torch.autograd.grad(per_draw.sum(), point)
        return logits.detach(), per_draw.detach()[0], grad.detach()

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        x = self._hold(x)
        if isinstance(self.model, WhiteBoxModel):
            with torch.no_grad():
                return torch.softmax(self.model(x), dim=1)
        probs = getattr(self.model, "probs", None)
        if probs is None:
            raise UsageError("this attack needs scores: it requires score-based or white-box access")
        return probs(x.detach().cpu()).to(x.device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        x = self._hold(x)
        if isinstance(self.model, WhiteBoxModel):
            with torch.no_grad():
                return self.model(x).argmax(dim=1)
        return self.model.predict(x.detach().cpu()).to(x.device)


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial batch, same shape, dtype and device as the input.
        success: per example, whether the goal holds at ``x_adv`` (misclassified, or classified
            as the target when targeted). Examples the model already got wrong count as
            successes for an untargeted attack (``x_adv = x`` suffices).
        norms: per-example perturbation norm in the attack's norm.
        adv_pred: per-example predicted label at ``x_adv``.
        clean_correct: per-example, whether the model was right on the clean input.
        queries: model evaluations the attack used (examples x calls), scoring excluded.
        y: true labels; ``target``: target labels of a targeted attack.
        passes: forward passes each example is scored by. An attack run with expectation over
            transformation (:class:`~dlsec.attacks.evasion.wrappers.EOT`, AutoAttack's ``rand``
            version) on a randomised model is scored by the expectation: ``passes`` fresh
            forward passes per example, ``correct_rate`` and ``clean_rate`` the fraction of them
            that get ``x_adv`` and ``x`` right, ``adv_pred`` the class most of them predict.
            Robust and clean accuracy are then the means of those fractions. With one pass
            (every other attack) the rates are ``None``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    norms: torch.Tensor
    adv_pred: torch.Tensor
    clean_correct: torch.Tensor
    queries: int
    y: torch.Tensor
    attack: str
    norm: str
    eps: float | None
    targeted: bool = False
    target: torch.Tensor | None = None
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    passes: int = 1
    correct_rate: torch.Tensor | None = None
    clean_rate: torch.Tensor | None = None

    @property
    def clean_accuracy(self) -> float:
        if not len(self.y):
            return float("nan")
        if self.clean_rate is not None:
            return float(self.clean_rate.double().mean())
        return float(self.clean_correct.double().mean())

    @property
    def robust(self) -> torch.Tensor:
        """Per example, how robust it is at ``x_adv``: 1.0 or 0.0 (classified correctly or not),
        or under expectation scoring the fraction of passes that classify it correctly."""
        if self.correct_rate is not None:
            return self.correct_rate.double()
        return (self.adv_pred == self.y).double()

    @property
    def robust_accuracy(self) -> float:
        """Fraction of examples still classified correctly at ``x_adv`` (the mean of :attr:`robust`)."""
        return float(self.robust.mean()) if len(self.y) else float("nan")

    @property
    def success_rate(self) -> float:
        """Fraction of the clean-correct examples on which the attack succeeded."""
        n = int(self.clean_correct.sum())
        return float(self.success[self.clean_correct].double().mean()) if n else float("nan")

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the run."""
        fooled = self.success & self.clean_correct
        norms = self.norms[fooled].double()
        return {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "targeted": self.targeted,
            "seed": self.seed,
            "n": len(self.y),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "success_rate": self.success_rate,
            "queries": self.queries,
            "queries_per_example": self.queries / max(len(self.y), 1),
            **({"version": self.extras["version"]} if "version" in self.extras else {}),
            **({"scoring": f"expectation over {self.passes} passes"} if self.passes > 1 else {}),
            **({"skipped": self.extras["skipped"]} if self.extras.get("skipped") else {}),
            "perturbation_norms": {
                "mean": float(norms.mean()) if len(norms) else None,
                "median": float(norms.median()) if len(norms) else None,
                "max": float(norms.max()) if len(norms) else None,
            },
        }


@dataclass
class BatchMemory:
    """The largest batch known to fit in device memory, shared by every stage of one call.

    A composite attack (AutoAttack's four attacks, restarts, EOT, the scoring of the result)
    passes its subsets the same memory, so an out-of-memory error is met once per call: later
    stages start at the size that fit instead of failing again from ``batch_size``.
    """

    fits: int | None = None

    def cap(self, size: int) -> int:
        """``size``, or less when a smaller batch is all that is known to fit."""
        return size if self.fits is None else min(size, self.fits)

    def shrunk(self, size: int) -> None:
        """Record that a batch of ``size`` fits after a larger one did not."""
        self.fits = size if self.fits is None else min(self.fits, size)


@dataclass(frozen=True)
class Prepared:
    """Validated inputs of one attack call, on the model's device (float32)."""

    model: Model
    x_in: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    constraints: TabularConstraints | None
    lower: torch.Tensor
    upper: torch.Tensor
    progress: Progress | None = None
    memory: BatchMemory = field(default_factory=BatchMemory)

    def subset(self, index: torch.Tensor) -> Prepared:
        """The same call restricted to the rows at ``index`` (without progress reporting; the
        batch size found to fit is shared)."""
        return Prepared(
            self.model,
            self.x_in[index.to(self.x_in.device)],
            self.x[index],
            self.y[index],
            None if self.target is None else self.target[index],
            self.constraints,
            self.lower,
            self.upper,
            memory=self.memory,
        )


class Attack(ABC):
    """Base class of evasion attacks. Subclasses implement :meth:`run` only.

    Class attributes a subclass sets: ``access`` (the least access it needs), ``norms`` (the
    threat models it supports) and ``minimal`` (True for minimal-norm attacks, whose ``eps``
    is optional). ``name`` is set by :func:`register_attack`.
    """

    name: ClassVar[str] = "attack"
    access: ClassVar[Access] = Access.WHITE_BOX
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    minimal: ClassVar[bool] = False
    randomised: ClassVar[bool] = True

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = None,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        self.norm = norm
        self.eps = eps
        self.targeted = targeted
        self.seed = seed
        self.batch_size = batch_size
        self._norm: Norm = get_norm(norm)
        if self._norm.name not in self.norms:
            raise UsageError(f"{self.name} supports norms {', '.join(self.norms)}, not {norm!r}")
        if eps is None:
            if not self.minimal:
                raise UsageError(f"{self.name} needs a budget: pass eps")
        elif not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
            raise UsageError(f"eps must be a finite number >= 0, got {eps!r}")
        positive_int("batch_size", batch_size)
        if not isinstance(seed, int):
            raise UsageError(f"seed must be an integer, got {seed!r}")

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The keyword arguments this attack was built with."""
        params = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def replace(self, **changes: Any) -> Attack:
        """A copy with some hyperparameters changed (the original is untouched)."""
        return type(self)(**{**self.get_params(), **changes})

    def __repr__(self) -> str:
        # A function (a loss) by its name, not its address: the repr stays the same across runs.
        params = self.get_params().items()
        shown = [f"{k}={v.__qualname__ if inspect.isfunction(v) else repr(v)}" for k, v in params]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ the one verb
    def __call__(
        self,
        model: Model,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        *,
        target: torch.Tensor | np.ndarray | None = None,
        constraints: TabularConstraints | None = None,
        progress: Progress | None = None,
    ) -> AttackResult:
        """Attack ``model`` on ``(x, y)``.

        Args:
            model: a :class:`~dlsec.core.Model` with at least the access this attack needs.
            x: a batch in input space, within the model's bounds.
            y: true labels.
            target: target labels; required when the attack is targeted.
            constraints: tabular constraints (features that must not change, integer and
                one-hot features).
            progress: called as ``progress(done, total, stats)`` as batches (or, for
                composite attacks, stages) finish.

        Raises:
            UsageError: bad inputs (NaN, out of bounds, wrong shape, labels out of range,
                missing target) or too little access.
        """
        prepared = self._prepare(model, x, y, target, constraints, progress)
        x_adv, queries, extras = self._attack(prepared)
        return self._assemble(prepared, x_adv, queries, extras)

    def _prepare(
        self,
        model: Model,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray | None,
        constraints: TabularConstraints | None,
        progress: Progress | None = None,
    ) -> Prepared:
        if not isinstance(model, Model):
            raise UsageError(f"attacks take a dlsec Model, got {type(model).__name__}")
        if model.access < self.access:
            raise UsageError(
                f"{self.name} needs {self.access.label} access; the model offers {model.access.label}"
            )
        x_in = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if not x_in.is_floating_point():
            raise UsageError(f"x must be floating point, got {x_in.dtype}")
        model.spec.check_batch(x_in, what="x")
        y_t = self._labels(y, x_in.shape[0], model.spec.num_classes, "y")
        tgt = None
        if self.targeted:
            if target is None:
                raise UsageError(f"{self.name} is targeted: pass target labels (or wrap it in Targeted)")
            tgt = self._labels(target, x_in.shape[0], model.spec.num_classes, "target")
            if bool((tgt == y_t).any()):
                raise UsageError("target labels must differ from the true labels")
        elif target is not None:
            raise UsageError("target given to an untargeted attack; build it with targeted=True")
        if constraints is not None:
            constraints.check(model.spec)
        device = model.device if isinstance(model, WhiteBoxModel) else torch.device("cpu")
        return Prepared(
            model=model,
            x_in=x_in,
            x=x_in.detach().to(device=device, dtype=torch.float32),
            y=y_t.to(device),
            target=tgt.to(device) if tgt is not None else None,
            constraints=constraints,
            lower=model.spec.lower_tensor(device=device),
            upper=model.spec.upper_tensor(device=device),
            progress=progress,
        )

    def _attack(self, p: Prepared) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Run the algorithm batch by batch; project each batch to the budget, bounds and constraints.

        The evaluation set streams through in batches of ``batch_size``: each batch's result is
        written into one preallocated output, so memory holds the inputs, the output and one
        batch's work, whatever the number of examples. When a batch runs out of device memory
        the batch size halves and the batch reruns from the same random state (the results are
        those of the smaller batches). Later batches, and every later stage of the same call (the
        ``memory`` its subsets share), start at the size that fit; ``extras["batch_size"]`` then
        reports it.

        Composite attacks (AutoAttack, restarts) override this, not ``__call__``.
        """
        gen = torch_generator(self.seed)
        n = p.x.shape[0]
        x_adv = torch.empty_like(p.x)
        queries, size, start = 0, p.memory.cap(self.batch_size), 0
        mutable = p.constraints.mutable_tensor(p.model.spec, p.x.device) if p.constraints else None
        while start < n:
            sl = slice(start, min(start + size, n))
            xb = p.x[sl]
            oracle = Oracle(p.model, mutable=mutable)
            tb = p.target[sl] if p.target is not None else None
            drawn = gen.get_state()
            try:
                adv = self.run(oracle, xb, p.y[sl], tb, gen)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                size = self._smaller_batch(size, p.x.device, exc)
                p.memory.shrunk(size)
                gen.set_state(drawn)
                continue
            adv = adv.detach().to(device=xb.device, dtype=torch.float32)
            if adv.shape != xb.shape:
                raise RuntimeError(f"{self.name}.run returned shape {tuple(adv.shape)} for {tuple(xb.shape)}")
            x_adv[sl] = self._finish(p, xb, adv)
            queries += oracle.queries
            start = sl.stop
            if p.progress is not None:
                p.progress(start, n, {})
        return x_adv, queries, {}

    def _smaller_batch(self, size: int, device: torch.device, exc: BaseException) -> int:
        """Half of ``size`` after an out-of-memory error; raises when one example does not fit."""
        release_cached_memory(device)
        if size <= 1:
            raise UsageError(
                f"{self.name}: one example does not fit in {device.type} memory ({exc}); "
                "use a smaller model, amp='bf16', or another device"
            ) from None
        log.warning(
            "%s: out of %s memory at batch size %d; retrying with %d", self.name, device.type, size, size // 2
        )
        return size // 2

    def _finish(self, p: Prepared, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Project ``adv`` onto the budget and the bounds, then repair tabular constraints."""
        adv = self._project(x, adv, p.lower, p.upper)
        if p.constraints is not None:
            adv = p.constraints.apply(x, adv, self._norm, self.eps, p.lower, p.upper)
        return adv

    def _assemble(
        self, p: Prepared, x_adv: torch.Tensor, queries: int, extras: dict[str, Any]
    ) -> AttackResult:
        passes = int(extras.get("eot_samples", 1))
        rates: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if passes > 1 and isinstance(p.model, WhiteBoxModel):
            # Scored by the expectation, on draws of their own (not the ones the attack saw).
            with seeded_draws(self.seed + _SCORING_STREAM, p.x.device):
                clean_pred, clean_rate = self._expected_all(p.model, p.x, p.y, passes, p.memory)
                adv_pred, adv_rate = self._expected_all(p.model, x_adv, p.y, passes, p.memory)
            rates = (adv_rate.cpu(), clean_rate.cpu())
        else:
            passes = 1
            scorer = Oracle(p.model)
            clean_pred = self._predict_all(scorer, p.x, memory=p.memory)
            adv_pred = self._predict_all(scorer, x_adv, memory=p.memory)
        if p.memory.fits is not None and p.memory.fits < self.batch_size:
            extras = {**extras, "batch_size": p.memory.fits}  # the size the whole call ran at
        success = (adv_pred == p.target) if p.target is not None else (adv_pred != p.y)
        # Per batch: x_adv - x over the whole set at once would be one more copy of the set.
        step = self.batch_size
        parts = [
            self._norm.distance(x_adv[i : i + step] - p.x[i : i + step]) for i in range(0, len(p.x), step)
        ]
        norms = torch.cat(parts) if parts else torch.empty(0, device=p.x.device)
        return AttackResult(
            x_adv=x_adv.to(device=p.x_in.device, dtype=p.x_in.dtype),
            success=success.cpu(),
            norms=norms.cpu(),
            adv_pred=adv_pred.cpu(),
            clean_correct=(clean_pred == p.y).cpu(),
            queries=queries,
            y=p.y.cpu(),
            attack=self.name,
            norm=self._norm.name,
            eps=self.eps,
            targeted=self.targeted,
            target=p.target.cpu() if p.target is not None else None,
            seed=self.seed,
            extras=extras,
            passes=passes,
            correct_rate=rates[0],
            clean_rate=rates[1],
        )

    def _predict_all(
        self, oracle: Oracle, x: torch.Tensor, size: int | None = None, *, memory: BatchMemory | None = None
    ) -> torch.Tensor:
        """Labels for ``x`` in batches of ``size`` (default ``batch_size``, or less when
        ``memory`` knows a smaller one fits), halving the batch when device memory runs out."""
        parts = self._in_batches(lambda sl: (oracle.predict(x[sl]),), len(x), x.device, size, memory)
        if not parts:
            return torch.empty(0, dtype=torch.long, device=x.device)
        return torch.cat([labels for (labels,) in parts])

    def _expected_all(
        self, model: WhiteBoxModel, x: torch.Tensor, y: torch.Tensor, passes: int, memory: BatchMemory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`expected_scores` of ``x`` in batches that adapt to device memory like
        :meth:`_predict_all`'s."""
        if len(x) == 0:
            return expected_scores(model, x, y, passes)

        def part(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
            return expected_scores(model, x[sl], y[sl], passes, batch_size=sl.stop - sl.start)

        parts = self._in_batches(part, len(x), x.device, None, memory)
        return torch.cat([v for v, _ in parts]), torch.cat([r for _, r in parts])

    def _in_batches(
        self,
        fn: Callable[[slice], tuple[torch.Tensor, ...]],
        n: int,
        device: torch.device,
        size: int | None,
        memory: BatchMemory | None,
    ) -> list[tuple[torch.Tensor, ...]]:
        """``fn`` over ``range(n)`` in slices, in order; a slice that runs out of device
        memory is retried at half the size, and ``memory`` learns the size that fit."""
        size = size or self.batch_size
        if memory is not None:
            size = memory.cap(size)
        parts: list[tuple[torch.Tensor, ...]] = []
        start = 0
        while start < n:
            sl = slice(start, min(start + size, n))
            try:
                parts.append(fn(sl))
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                size = self._smaller_batch(size, device, exc)
                if memory is not None:
                    memory.shrunk(size)
                continue
            start = sl.stop
        return parts

    def _project(
        self, x: torch.Tensor, adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
    ) -> torch.Tensor:
        if not torch.isfinite(adv).all():
            adv = torch.where(torch.isfinite(adv), adv, x)
        if self.eps is not None:
            delta = adv - x
            projected = self._norm.project(delta, self.eps)
            # Keep adv's own values where projection changed nothing (x + (adv - x) may differ
            # from adv in the last bit, enough to move a point that sits on a boundary).
            adv = torch.where(projected == delta, adv, x + projected)
        return torch.clamp(adv, lower, upper)

    @staticmethod
    def _labels(labels: torch.Tensor | np.ndarray, n: int, num_classes: int, what: str) -> torch.Tensor:
        t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
        if t.ndim != 1 or t.shape[0] != n:
            raise SpecError(f"{what}: expected {n} labels in a 1-D tensor, got shape {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise SpecError(f"{what}: labels must be integers, got {t.dtype}")
        t = t.long()
        if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise SpecError(f"{what}: labels must lie in 0..{num_classes - 1}")
        return t

    # ------------------------------------------------------------------ the algorithm
    @abstractmethod
    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """Return adversarial examples for one batch (the base projects and scores them).

        Args:
            model: the counted oracle (``model(x)`` logits, ``.probs``, ``.predict``).
            x: clean batch on the model's device, float32, within bounds.
            y: true labels.
            target: target labels when targeted, else ``None``.
            gen: the seeded CPU generator for every random draw (move draws to ``x.device``).
        """


class Aimable(Attack):
    """An attack that can aim at a class without having to reach it.

    Aiming steers the search (APGD's targeted loss, FAB's boundary with the class) while any
    misclassification counts as success. That is how AutoAttack's targeted versions sweep the
    likeliest classes: :class:`~dlsec.attacks.evasion.wrappers.TopTargets` wraps an aimable
    attack. A subclass implements :meth:`search`; :meth:`run` is the search aimed at the target
    when there is one, and otherwise aimed at no class.
    """

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        return self.search(model, x, y, target, None, gen)

    @abstractmethod
    def search(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        aims: Aims | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """Adversarial examples for one batch, aimed at ``target`` or at the classes ``aims`` picks.

        Args:
            model, x, y, gen: as for :meth:`Attack.run`.
            target: target labels when targeted (the class to aim at and to reach), else ``None``.
            aims: untargeted only: picks, from the clean scores, the classes to aim at in turn;
                an example fooled in one run is not attacked in the next. ``None``: one search,
                aimed at ``target``.
        """
