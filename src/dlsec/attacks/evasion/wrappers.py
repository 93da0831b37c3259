"""Wrappers that change how an attack is run, not what it is: restarts, EOT, targeting, and
AutoAttack's sweep over the likeliest classes.

Each wraps any registered attack and is itself an attack (same contract, same result), so
they compose: ``Restarts(EOT(PGD(...), samples=10), restarts=5)``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from dlsec.attacks.evasion._constraints import TabularConstraints
from dlsec.attacks.evasion._expectation import ExpectationModel
from dlsec.attacks.evasion.base import Aimable, Attack, AttackResult, Oracle, Prepared, Progress
from dlsec.core.model import Access, Model, WhiteBoxModel
from dlsec.core.seeding import seeded_draws
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["Restarts", "EOT", "Targeted", "TopTargets", "ExpectationModel"]


class _Wrapper(Attack):
    """An attack around another; threat model, access and norms are the inner attack's."""

    def __init__(self, attack: Attack, *, seed: int | None = None, targeted: bool | None = None) -> None:
        if not isinstance(attack, Attack):
            raise UsageError(f"{type(self).__name__} wraps an Attack, got {type(attack).__name__}")
        self.attack = attack
        super().__init__(
            norm=attack.norm,
            eps=attack.eps,
            targeted=attack.targeted if targeted is None else targeted,
            seed=attack.seed if seed is None else seed,
            batch_size=attack.batch_size,
        )

    @property
    def access(self) -> Access:  # type: ignore[override]  # delegated to the wrapped attack
        return self.attack.access

    @property
    def norms(self) -> tuple[str, ...]:  # type: ignore[override]  # delegated to the wrapped attack
        return self.attack.norms

    @property
    def minimal(self) -> bool:  # type: ignore[override]  # delegated to the wrapped attack
        return self.attack.minimal

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        return self.attack.run(model, x, y, target, gen)


class Restarts(_Wrapper):
    """Run an attack several times with different seeds; keep each example's best result.

    Restart ``i`` uses seed ``seed + i`` and attacks only the examples not yet successful. For
    minimal-norm attacks every restart runs on every example and the smallest successful
    perturbation is kept.

    Args:
        attack: the attack to repeat.
        restarts: number of runs (at least 1).

    Example:
        >>> strong = Restarts(PGD(eps=0.1, steps=40), restarts=5)     # doctest: +SKIP
    """

    def __init__(self, attack: Attack, *, restarts: int = 5) -> None:
        positive_int("restarts", restarts)
        self.restarts = restarts
        super().__init__(attack)

    def get_params(self) -> dict[str, Any]:
        return {"attack": self.attack, "restarts": self.restarts}

    def _attack(self, p: Prepared) -> tuple[torch.Tensor, int, dict[str, Any]]:
        best = p.x.clone()
        best_norm = torch.full((len(p.x),), float("inf"), device=p.x.device)
        done = torch.zeros(len(p.x), dtype=torch.bool, device=p.x.device)
        queries = 0
        scorer = Oracle(p.model)
        kept: dict[str, Any] = {}
        for i in range(self.restarts):
            idx = torch.arange(len(p.x), device=p.x.device) if self.minimal else (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            sub = p.subset(idx)
            adv, q, extras = self.attack.replace(seed=self.seed + i)._attack(sub)
            kept = {k: v for k, v in extras.items() if k == "eot_samples"}  # how to score the result
            queries += q
            pred = self._predict_all(scorer, adv, memory=p.memory)
            hit = (pred == sub.target) if sub.target is not None else (pred != sub.y)
            norm = self._norm.distance(adv - sub.x)
            better = hit & (norm < best_norm[idx])
            best[idx[better]] = adv[better]
            best_norm[idx[better]] = norm[better]
            done[idx[hit]] = True
            if i == 0:  # unsuccessful examples keep the first run's (strongest-effort) point
                best[idx[~hit]] = adv[~hit]
        return best, queries, {**kept, "restarts": self.restarts}


class EOT(_Wrapper):
    """Expectation over transformation: attack a randomised model through its expectation.

    Every question the inner attack asks goes to ``samples`` forward passes, stacked into one
    batched pass (in chunks of at most ``max_rows`` rows) rather than looped: APGD averages its
    loss and gradient over the passes (as AutoAttack's ``rand`` version does); other attacks
    see the expected prediction, the log of the mean softmax. The model's own randomness is
    drawn from torch's global generators, seeded from ``seed`` for the run and restored after.
    The result is scored by the expectation too: ``samples`` fresh passes per example (see
    :class:`~dlsec.attacks.evasion.base.AttackResult`). Query counts include every pass. Use it
    when the model randomises its forward pass (noise, random transformations); the
    gradient-masking diagnostics flag such models, and AutoAttack switches to its ``rand``
    version for them.

    Args:
        attack: the attack to run (white-box).
        samples: forward passes averaged per question.
        max_rows: rows in one stacked pass (default: about 4M input values' worth).

    Example:
        >>> result = EOT(PGD(eps=0.1, steps=40), samples=20)(noisy_model, x, y)   # doctest: +SKIP
        >>> result.passes, result.robust_accuracy                                 # doctest: +SKIP
        (20, 0.41)
    """

    def __init__(self, attack: Attack, *, samples: int = 10, max_rows: int | None = None) -> None:
        positive_int("samples", samples)
        if max_rows is not None:
            positive_int("max_rows", max_rows)
        self.samples = samples
        self.max_rows = max_rows
        super().__init__(attack)

    def get_params(self) -> dict[str, Any]:
        return {"attack": self.attack, "samples": self.samples, "max_rows": self.max_rows}

    def _expectation(self, model: Model) -> Model:
        if isinstance(model, WhiteBoxModel) and not isinstance(model, ExpectationModel):
            return ExpectationModel(model, self.samples, max_rows=self.max_rows)
        return model

    def _attack(self, p: Prepared) -> tuple[torch.Tensor, int, dict[str, Any]]:
        sub = Prepared(
            self._expectation(p.model),
            p.x_in,
            p.x,
            p.y,
            p.target,
            p.constraints,
            p.lower,
            p.upper,
            p.progress,
            p.memory,
        )
        with seeded_draws(self.seed, p.x.device):
            adv, queries, extras = self.attack._attack(sub)
        return adv, queries * self.samples, {**extras, "eot_samples": self.samples}

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        inner = Oracle(self._expectation(model.model), mutable=model._mutable)
        adv = self.attack.run(inner, x, y, target, gen)
        model.queries += inner.queries * self.samples
        return adv


TargetPolicy = Literal["random", "least-likely", "next"]


class Targeted(_Wrapper):
    """Make an attack targeted, choosing each example's target by a policy.

    Policies: ``random`` (uniform over the other classes, seeded), ``least-likely`` (the class
    the model finds least likely on the clean input; needs scores), ``next`` (``(y + 1) mod K``).
    Explicit targets passed to the call take precedence. Success means reaching the target.

    Args:
        attack: the attack (built untargeted or targeted; it is run targeted).
        policy: how targets are chosen when none are given.
    """

    def __init__(self, attack: Attack, *, policy: TargetPolicy = "random") -> None:
        if policy not in ("random", "least-likely", "next"):
            raise UsageError(f"target policy must be random, least-likely or next, got {policy!r}")
        self.policy = policy
        super().__init__(attack.replace(targeted=True) if not attack.targeted else attack, targeted=True)

    def get_params(self) -> dict[str, Any]:
        return {"attack": self.attack, "policy": self.policy}

    def __call__(
        self,
        model: Model,
        x: Any,
        y: Any,
        *,
        target: Any = None,
        constraints: TabularConstraints | None = None,
        progress: Progress | None = None,
    ) -> AttackResult:
        if target is None:
            target = self.choose_targets(model, x, y)
        return super().__call__(model, x, y, target=target, constraints=constraints, progress=progress)

    def choose_targets(self, model: Model, x: Any, y: Any) -> torch.Tensor:
        """Targets for ``(x, y)`` under this wrapper's policy."""
        y_t = torch.as_tensor(y).long().cpu()
        k = model.spec.num_classes
        if self.policy == "next":
            return (y_t + 1) % k
        if self.policy == "random":
            gen = torch.Generator().manual_seed(self.seed)
            shift = torch.randint(1, k, y_t.shape, generator=gen)
            return (y_t + shift) % k
        if model.access < Access.SCORE:
            raise UsageError("the least-likely target policy needs scores; the model gives labels only")
        x_t = torch.as_tensor(x).float()
        if isinstance(model, WhiteBoxModel):
            x_t = x_t.to(model.device)
        oracle = Oracle(model)
        # In batches, as the attack itself runs: the whole set at once may not fit in memory.
        parts = self._in_batches(lambda sl: (oracle.probs(x_t[sl]).cpu(),), len(x_t), x_t.device, None, None)
        probs = torch.cat([p for (p,) in parts]) if parts else torch.empty(0, k)
        probs.scatter_(1, y_t[:, None], float("inf"))
        return probs.argmin(dim=1)


class TopTargets(_Wrapper):
    """AutoAttack's targeted sweep: aim the attack at each of the likeliest wrong classes in turn.

    For each of the ``n_target_classes`` classes the model scores highest on the clean input
    after its top class (the 2nd, then the 3rd, ...; at most ``K - 1``), the wrapped attack
    runs aimed at that class, on the examples no earlier class fooled. Aiming steers the search
    (APGD's targeted loss, FAB's boundary with the class); success is any misclassification.
    This is how APGD-T and FAB-T of AutoAttack (Croce & Hein, ICML 2020) try targets; what
    each example keeps is the wrapped attack's rule across its own runs (APGD the first
    adversarial point, else the highest-loss one; FAB the smallest adversarial perturbation).
    Built around a targeted attack, it runs it once on the given targets.

    Args:
        attack: an attack that can aim at a class (an :class:`~dlsec.attacks.evasion.base.Aimable`:
            APGD, FAB).
        n_target_classes: classes tried per example (9 in AutoAttack).

    Example:
        >>> from dlsec.attacks.evasion.fab import FAB
        >>> fab_t = TopTargets(FAB(norm="l2"), n_target_classes=9)
        >>> result = fab_t(model, x, y)                          # doctest: +SKIP
    """

    attack: Aimable

    def __init__(self, attack: Aimable, *, n_target_classes: int = 9) -> None:
        positive_int("n_target_classes", n_target_classes)
        if not isinstance(attack, Aimable):
            name = attack.name if isinstance(attack, Attack) else type(attack).__name__
            raise UsageError(f"TopTargets wraps an attack that can aim at a class (APGD, FAB), not {name}")
        self.n_target_classes = n_target_classes
        super().__init__(attack)

    def get_params(self) -> dict[str, Any]:
        return {"attack": self.attack, "n_target_classes": self.n_target_classes}

    def targets(self, scores: torch.Tensor) -> list[torch.Tensor]:
        """The classes to aim at, in order: per example, the 2nd, 3rd, ... highest of ``scores``."""
        ranking = scores.argsort(dim=1, descending=True)
        last = min(self.n_target_classes, scores.shape[1] - 1)
        return [ranking[:, rank] for rank in range(1, last + 1)]

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        return self.attack.search(model, x, y, target, None if target is not None else self.targets, gen)


# Wrappers are built around an attack, never by name alone, so they are not in the registry
# (apgd-t and fab-t, which are, are TopTargets around an attack they build themselves).
Restarts.name, EOT.name, Targeted.name, TopTargets.name = "restarts", "eot", "targeted", "top-targets"
