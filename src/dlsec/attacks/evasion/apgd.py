"""Auto-PGD (Croce & Hein 2020): PGD with a step size that tunes itself, as in AutoAttack.

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690); the protocol
follows the authors' AutoAttack code (``autoattack/autopgd_base.py``).

One run of APGD on a batch, per example (Algorithm 1 of the paper):

* start at a random point ``x0`` on the boundary of the eps-ball (AutoAttack's start: a uniform
  draw from the cube rescaled to L-inf norm ``eps``, or a uniform direction with L2 norm
  ``eps``), clipped to the input bounds;
* step size ``eta = 2 * eps``; the first step is plain projected gradient ascent, later ones
  add momentum: ``z = P(x_k + eta * ascent(grad))``,
  ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with ``alpha = 0.75``;
* checkpoints at ``p_j * steps`` with ``p_0 = 0``, ``p_1 = 0.22`` and
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (in whole iterations, as in the reference
  code: the first gap is ``int(0.22 steps)``, each later one ``int(0.03 steps)`` shorter but
  at least ``int(0.06 steps)``); at each checkpoint the step size is halved, and the iterate
  restarts from the best point so far, when (1) the loss went up in at most a fraction
  ``rho = 0.75`` of the steps since the last checkpoint (``<=``, as in the reference code), or
  (2) neither the step size nor the best loss changed since the last checkpoint (not checked at
  the first one);
* the best loss and best point are tracked per example; an example counts as fooled at the
  first iterate the model misclassifies (or assigns the target).

On a randomised model under :class:`~dlsec.attacks.evasion.wrappers.EOT` (AutoAttack's rand
version), each loss and gradient is the mean over the passes, stacked into one batched forward
and backward pass (the reference code loops over its ``eot_iter`` passes and judges success
by the last one); an example counts as fooled once every pass misclassifies it, and one never
fooled comes back at the iterate the fewest passes got right.

Differences from the reference code that change no outcome: an example leaves the batch as
soon as it is fooled (so later iterations cost less; the others' trajectories are
unchanged, since examples are independent), and an example never fooled comes back at its
highest-loss point rather than at ``x``. Two deliberate deviations: the first oscillation
count compares with the loss at ``x0``, as in the paper (the reference code reads an unfilled
slot there); and, since the reference code has no targeted goal, when the goal is a given
target the targeted DLR loss compares it with the strongest other class, not the true class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from dlsec.attacks.evasion._losses import ce_loss, dlr_loss, targeted_dlr_loss
from dlsec.attacks.evasion.base import Aimable, Aims, Oracle, register_attack
from dlsec.attacks.evasion.wrappers import TopTargets
from dlsec.core.model import Access
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["APGD", "APGDDLR", "APGDT"]

_MOMENTUM = 0.75  # alpha in the paper
_FIRST_CHECK = 0.22  # p_1
_MIN_PERIOD = 0.06  # the smallest gap between checkpoints
_PERIOD_DECREASE = 0.03  # how much the gap shrinks from one checkpoint to the next

#: A per-example objective to ascend: ``loss(logits, y, target)``.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _objective(loss: str, num_classes: int, *, aimed: bool, reach_target: bool) -> Objective:
    """The per-example function APGD ascends.

    ``loss`` is ``ce`` or ``dlr``; given a target class, ``ce`` becomes the target's negated
    cross-entropy and ``dlr`` the targeted DLR loss ``-(z_r - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.
    The rival ``r`` is the true class ``y`` when the target only steers an untargeted attack
    (``aimed``, as APGD-T in AutoAttack); when the target is the goal (``reach_target``) it is
    the strongest class other than the target, so that the loss keeps rising until the target
    is on top.
    """
    targeted = aimed or reach_target
    needed = 0 if loss != "dlr" else 4 if targeted else 3
    if num_classes < needed:
        kind = "targeted DLR" if targeted else "DLR"
        raise UsageError(
            f"the {kind} loss needs at least {needed} classes, the model has {num_classes}; use apgd-ce"
        )

    def objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            return ce_loss(logits, y) if loss == "ce" else dlr_loss(logits, y)
        if loss == "ce":
            return -ce_loss(logits, target)
        rival = y
        if reach_target:
            others = logits.detach().scatter(1, target[:, None], -torch.inf)
            rival = others.argmax(1)
        return targeted_dlr_loss(logits, rival, target)

    return objective


def _missed(draws: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
    """Per pass and example ``(S, N)``: the pass still predicts ``y`` (or, with a goal, misses it)."""
    pred = draws.argmax(-1)
    return (pred != goal) if goal is not None else (pred == y)


def _expected_logits(draws: torch.Tensor) -> torch.Tensor:
    """The logits of one pass, or over several the log of their mean softmax."""
    if len(draws) == 1:
        return draws[0]
    return torch.log(torch.softmax(draws, dim=-1).mean(0).clamp_min(1e-30))


@dataclass
class _Run:
    """Per-example state of one APGD run over the examples still being attacked."""

    idx: torch.Tensor  # positions in the sub-batch this run started with
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None  # the loss's target class
    goal: torch.Tensor | None  # the class to reach when the attack is targeted
    x_adv: torch.Tensor  # the current iterate x_k
    x_prev: torch.Tensor  # x_{k-1}, for the momentum term
    grad: torch.Tensor  # gradient at x_adv
    x_best: torch.Tensor  # highest-loss point so far
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    loss_prev: torch.Tensor  # loss at the last evaluated iterate
    increases: torch.Tensor  # steps that raised the loss since the last checkpoint
    step: torch.Tensor  # step size eta, shape (N, 1, ..., 1)
    best_at_check: torch.Tensor  # loss_best at the last checkpoint
    halved_at_check: torch.Tensor  # whether the step was halved at the last checkpoint
    x_low: torch.Tensor  # the iterate the fewest passes got right (ties: the highest loss)
    low_loss: torch.Tensor
    low_missed: torch.Tensor  # passes that still got x_low right

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the examples where ``mask`` is False."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[mask])


@register_attack("apgd-ce")
class APGD(Aimable):
    """Auto-PGD (Croce & Hein, ICML 2020), L-inf or L2, on the cross-entropy or DLR loss.

    PGD without a step size to tune: momentum, and a step size that starts at ``2 * eps`` and is
    halved at checkpoints where progress stalls, restarting from the best point found. This is
    APGD-CE of AutoAttack; ``apgd-dlr`` (:class:`APGDDLR`) is the same attack on the
    difference-of-logits-ratio loss. Examples the model already gets wrong (or already assigns
    the target) are not attacked; with ``restarts > 1`` each restart runs only on the examples
    not yet fooled. Each iteration is one forward and one backward pass on the batch.

    Args:
        eps: budget in the chosen norm.
        steps: iterations per restart (100 in AutoAttack).
        norm: ``linf`` or ``l2``.
        loss: ``ce`` (cross-entropy) or ``dlr`` (difference of logits ratio, needs 3 classes;
            4 when targeted). Targeted, the target's cross-entropy is descended, or the targeted
            DLR loss of the target against the strongest other class ascended.
        restarts: independent random starts; examples fooled in one are not attacked again.
        rho: the step size is halved when the loss rose in at most this fraction of the steps
            since the last checkpoint.
        targeted: reach ``target`` instead of any wrong class.
        seed: seeds the random starts.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.apgd import APGD
        >>> attack = APGD(eps=8 / 255, steps=100, norm="linf", loss="ce", seed=0)
        >>> result = attack(model, x, y)                     # doctest: +SKIP
        >>> result.robust_accuracy                           # doctest: +SKIP
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    losses: ClassVar[tuple[str, ...]] = ("ce", "dlr")

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 100,
        norm: str = "linf",
        loss: str = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        positive_int("steps", steps)
        if loss not in self.losses:
            raise UsageError(f"loss must be one of {', '.join(self.losses)}, got {loss!r}")
        positive_int("restarts", restarts)
        if not isinstance(rho, int | float) or not 0.0 <= rho <= 1.0:
            raise UsageError(f"rho must be a number in [0, 1], got {rho!r}")
        self.steps = steps
        self.loss = loss
        self.restarts = restarts
        self.rho = rho

    # ------------------------------------------------------------------ the attack
    def search(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        aims: Aims | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """``restarts`` runs for each class aimed at: ``target``, or in turn each class ``aims``
        picks from the clean logits (none: untargeted).

        An example is attacked until a run fools it (that run's adversarial point is kept);
        the others keep their highest-loss point over all runs.
        """
        num_classes = model.spec.num_classes
        objective = _objective(
            self._loss_name(num_classes), num_classes, aimed=aims is not None, reach_target=self.targeted
        )
        draws = model.draws(x)  # one pass; several for a randomised model under EOT
        # An example is attacked while some pass still gets it right (or misses the target).
        todo = _missed(draws, y, target).sum(0) > 0
        best, best_loss = x.clone(), torch.full((len(x),), -torch.inf, device=x.device)
        best_missed = torch.full((len(x),), len(draws), dtype=torch.long, device=x.device)
        for aim in [target] if aims is None else aims(_expected_logits(draws)):
            for _ in range(self.restarts):
                self._attack_subset(model, x, y, aim, todo, (best, best_loss, best_missed), objective, gen)
        return best

    def _loss_name(self, num_classes: int) -> str:
        """The loss on a model with ``num_classes`` classes (APGD-T's falls back below four)."""
        return self.loss

    def _attack_subset(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        todo: torch.Tensor,
        kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        objective: Objective,
        gen: torch.Generator,
    ) -> None:
        """One APGD run on the examples ``todo``; updates ``todo`` and ``kept`` in place.

        ``kept`` is each example's best point so far, its loss and how many passes still get it
        right: a run's point replaces it when it fools every pass, gets fewer passes right, or
        as many with a higher loss. ``target`` is the loss's target class (None for an
        untargeted loss); success means reaching it only when the attack itself is targeted.
        """
        idx = todo.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        best, best_loss, best_missed = kept
        tgt = None if target is None else target[idx]
        adv, fooled, loss, missed = self._single_run(model, x[idx], y[idx], tgt, objective, gen)
        fewer, same = missed < best_missed[idx], missed == best_missed[idx]
        better = fooled | fewer | (same & (loss > best_loss[idx]))
        best[idx[better]] = adv[better]
        best_loss[idx[better]] = loss[better]
        best_missed[idx[better]] = missed[better]
        todo[idx[fooled]] = False

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """AutoAttack's random start: a random point on the sphere of radius eps."""
        assert self.eps is not None
        delta = self._norm.random(x.shape, 1.0, gen, device=x.device, dtype=x.dtype)
        radius = self._norm.distance(delta).reshape(-1, *([1] * (x.ndim - 1)))
        return delta * (self.eps / (radius + 1e-12))

    def _single_run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        objective: Objective,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Algorithm 1 of the paper on one batch.

        On a randomised model under EOT the loss and its gradient are means over the passes
        (the reference code's ``eot_iter``), an example counts as fooled once every pass
        misclassifies it, and one never fooled comes back at the iterate the fewest passes got
        right (ties: the highest loss; with one pass, simply the highest-loss point).

        Returns:
            per example: the first adversarial iterate, or else the point described above;
            whether it was fooled; its loss (``+inf`` where fooled); how many passes still got
            it right (0 where fooled).
        """
        assert self.eps is not None
        eps, norm, steps = self.eps, self._norm, self.steps
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)

        def to_ball(point: torch.Tensor) -> torch.Tensor:
            return torch.clamp(s.x + norm.project(point - s.x, eps), lower, upper)

        def per_draw(draws: torch.Tensor) -> torch.Tensor:
            m, k = len(draws), draws.shape[-1]
            if m == 1:
                return objective(draws[0], s.y, s.target).unsqueeze(0)
            tgt = None if s.target is None else s.target.repeat(m)
            return objective(draws.reshape(-1, k), s.y.repeat(m), tgt).reshape(m, -1)

        def evaluate(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            draws, loss, grad = model.loss_and_grad(point, per_draw)
            return _missed(draws, s.y, s.goal).sum(0), loss, grad

        def retire(missed: torch.Tensor, loss: torch.Tensor) -> None:
            """Track the iterate the fewest passes get right; retire the examples every pass misses."""
            fewer = (missed < s.low_missed) | ((missed == s.low_missed) & (loss > s.low_loss))
            s.x_low[fewer] = s.x_adv[fewer]
            s.low_loss = torch.where(fewer, loss, s.low_loss)
            s.low_missed = torch.where(fewer, missed, s.low_missed)
            done = missed == 0
            if done.any():
                fooled[s.idx[done]] = True
                out[s.idx[done]] = s.x_adv[done]
                s.keep(~done)

        n = len(x)
        out = torch.clamp(x + self._start(x, gen), lower, upper)
        out_loss = torch.full((n,), torch.inf, device=x.device)
        out_missed = torch.zeros(n, dtype=torch.long, device=x.device)
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        s = _Run(
            idx=torch.arange(n, device=x.device),
            x=x,
            y=y,
            target=target,
            goal=target if self.targeted else None,
            x_adv=out.clone(),
            x_prev=out.clone(),
            grad=torch.zeros_like(x),
            x_best=out.clone(),
            grad_best=torch.zeros_like(x),
            loss_best=out_loss.clone(),
            loss_prev=out_loss.clone(),
            increases=torch.zeros(n, dtype=torch.long, device=x.device),
            step=torch.full((n, *([1] * (x.ndim - 1))), 2.0 * eps, device=x.device, dtype=x.dtype),
            best_at_check=out_loss.clone(),
            halved_at_check=torch.ones(n, dtype=torch.bool, device=x.device),
            x_low=out.clone(),
            low_loss=torch.full((n,), -torch.inf, device=x.device),
            low_missed=torch.full((n,), torch.iinfo(torch.long).max, dtype=torch.long, device=x.device),
        )
        missed, loss, s.grad = evaluate(s.x_adv)
        s.grad_best, s.loss_best, s.loss_prev, s.best_at_check = s.grad.clone(), loss, loss, loss
        retire(missed, loss)

        # Checkpoints: the first after 22% of the iterations, then gaps shrinking by 3% to 6%.
        period = max(int(_FIRST_CHECK * steps), 1)
        min_period = max(int(_MIN_PERIOD * steps), 1)
        decrease = max(int(_PERIOD_DECREASE * steps), 1)
        since_check = 0
        for i in range(steps):
            if len(s.idx) == 0:
                break
            with torch.no_grad():
                a = _MOMENTUM if i > 0 else 1.0
                z = to_ball(s.x_adv + s.step * norm.ascent(s.grad))
                x_new = to_ball(s.x_adv + a * (z - s.x_adv) + (1 - a) * (s.x_adv - s.x_prev))
                s.x_prev, s.x_adv = s.x_adv, x_new
            missed, loss, s.grad = evaluate(s.x_adv)
            with torch.no_grad():
                s.increases += loss > s.loss_prev
                s.loss_prev = loss
                up = loss > s.loss_best
                s.x_best[up] = s.x_adv[up]
                s.grad_best[up] = s.grad[up]
                s.loss_best = torch.where(up, loss, s.loss_best)
                retire(missed, loss)
                since_check += 1
                if since_check < period:
                    continue
                # Halve where (1) the loss rose in at most rho of the steps since the last
                # checkpoint, or (2) neither the step size nor the best loss changed since then.
                oscillating = s.increases <= self.rho * period
                stalled = ~s.halved_at_check & (s.best_at_check >= s.loss_best)
                halve = oscillating | stalled
                s.step[halve] /= 2
                s.x_adv[halve] = s.x_best[halve]
                s.grad[halve] = s.grad_best[halve]
                s.halved_at_check = halve
                s.best_at_check = s.loss_best
                s.increases.zero_()
                since_check = 0
                period = max(period - decrease, min_period)
        out[s.idx] = s.x_low
        out_loss[s.idx] = s.low_loss
        out_missed[s.idx] = s.low_missed
        return out, fooled, out_loss, out_missed


@register_attack("apgd-dlr")
class APGDDLR(APGD):
    """APGD on the difference-of-logits-ratio loss (APGD-DLR of Croce & Hein, ICML 2020).

    The DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` is invariant to shifting and
    rescaling the logits, so it is not fooled by saturated softmax outputs. Needs at least three
    classes (four when targeted); with fewer it raises :class:`~dlsec.errors.UsageError`.

    Args:
        eps, steps, norm, restarts, rho, targeted, seed, batch_size: as for :class:`APGD`.

    Example:
        >>> from dlsec.attacks.evasion.apgd import APGDDLR
        >>> result = APGDDLR(eps=8 / 255)(model, x, y)       # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 100,
        norm: str = "linf",
        restarts: int = 1,
        rho: float = 0.75,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(
            eps=eps,
            steps=steps,
            norm=norm,
            loss="dlr",
            restarts=restarts,
            rho=rho,
            targeted=targeted,
            seed=seed,
            batch_size=batch_size,
        )


class _TargetedDLR(APGD):
    """APGD-T's search: the targeted DLR loss, or the targeted cross-entropy below four classes."""

    name: ClassVar[str] = "apgd-t"  # its errors speak for APGD-T

    def _loss_name(self, num_classes: int) -> str:
        return "dlr" if num_classes >= 4 else "ce"


@register_attack("apgd-t")
class APGDT(TopTargets):
    """APGD on the targeted DLR loss (APGD-T of Croce & Hein, ICML 2020).

    With ``targeted=False`` (as in AutoAttack) the goal is any wrong class: for each of the
    ``n_target_classes`` classes with the highest clean logits after the top one, taken in
    order (the 2nd largest, then the 3rd, ...), APGD runs ``restarts`` times on the targeted
    DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, each time only on the examples
    not yet fooled: :class:`~dlsec.attacks.evasion.wrappers.TopTargets` around APGD. With
    ``targeted=True`` it runs on the given ``target`` labels, and ``z_y`` in the loss is
    replaced by the largest logit other than ``z_t`` (with ``z_y`` alone, the loss is satisfied
    once the target beats the true class, even if a third class stays on top).

    The targeted DLR loss needs four classes; for models with two or three classes the attack
    uses the targeted cross-entropy loss ``-CE(z, t)`` instead.

    Args:
        n_target_classes: target classes tried per example when untargeted (9 in AutoAttack);
            at most ``num_classes - 1`` are used.
        params: :class:`APGD`'s, but for ``loss`` (``eps``, ``steps``, ``norm``, ``restarts``,
            ``rho``, ``targeted``, ``seed``, ``batch_size``).

    Example:
        >>> from dlsec.attacks.evasion.apgd import APGDT
        >>> result = APGDT(eps=8 / 255, n_target_classes=9)(model, x, y)   # doctest: +SKIP
    """

    # What the registry lists (a wrapper's own answers are its attack's, known once built).
    access: ClassVar[Access] = APGD.access
    norms: ClassVar[tuple[str, ...]] = APGD.norms
    minimal: ClassVar[bool] = APGD.minimal

    def __init__(self, *, n_target_classes: int = 9, **params: Any) -> None:
        super().__init__(_TargetedDLR(loss="dlr", **params), n_target_classes=n_target_classes)

    def get_params(self) -> dict[str, Any]:
        params = self.attack.get_params()
        del params["loss"]
        return {**params, "n_target_classes": self.n_target_classes}
