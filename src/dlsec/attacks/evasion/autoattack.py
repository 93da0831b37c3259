"""AutoAttack (Croce & Hein, ICML 2020), as published: the standard and the rand versions.

The **standard** version runs four attacks in sequence, each only on the points that are still
robust:

1. APGD-CE, 100 iterations, no restarts;
2. APGD-T (targeted DLR loss), 100 iterations, 9 target classes, one restart each;
3. FAB-T, 100 iterations, 9 target classes, one restart each;
4. Square, 5,000 queries, ``p_init = 0.8``, one restart.

The **rand** version, for models whose forward pass is random (noise on the input, random
transformations), runs APGD-CE and then APGD-DLR, 100 iterations and one restart each, with
expectation over transformation (EOT) over 20 forward passes: every loss and gradient is the
mean over 20 passes, stacked into one batched pass (the reference code's ``eot_iter = 20``).
Its result is scored by the expectation: each example's robustness is the fraction of 20
fresh passes that still classify it correctly, and robust accuracy their mean. A point the
attacks could not fool on every pass is carried from one attack to the next, and each example
keeps the point the fewest passes got right.

``version="auto"`` (the default) picks rand when two forward passes on the inputs differ (the
masking check's ``stochastic-forward`` flag) and standard otherwise; ``extras["version"]`` and
the result's summary say which ran. The result holds, for each example, the per-example worst
case over the attacks, and ``extras["fooled_by"]`` says on how many points each attack gave
it. For L-inf and L2 budgets. Changing the components or their settings is not AutoAttack; use
the attacks themselves (or a campaign) for custom ensembles.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, Prepared, get_attack, register_attack
from dlsec.attacks.evasion.diagnostics import forward_is_random
from dlsec.attacks.evasion.wrappers import EOT
from dlsec.core.model import Model, WhiteBoxModel
from dlsec.core.seeding import seeded_draws
from dlsec.errors import UsageError

__all__ = ["AutoAttack"]

VERSIONS = ("auto", "standard", "rand")
#: Forward passes the rand version averages over (the reference's ``eot_iter``) and scores by.
RAND_SAMPLES = 20
#: Offset of the seed the rand version's between-attack scoring draws the model's noise from.
_SELECTION_STREAM = 104729


@register_attack("autoattack")
class AutoAttack(Attack):
    """AutoAttack: the standard version (APGD-CE, APGD-T, FAB-T, Square), or on randomised
    models the rand version (APGD-CE and APGD-DLR with EOT over 20 passes), as published.

    Args:
        eps: budget.
        norm: ``linf`` or ``l2``.
        version: ``auto`` (rand when the model's forward pass is random, else standard),
            ``standard`` or ``rand``.
        seed: seed of every component (and, for rand, of the model's own noise draws).
        batch_size: examples attacked at once.

    Example:
        >>> result = AutoAttack(eps=8 / 255, norm="linf")(model, x, y)    # doctest: +SKIP
        >>> result.extras["version"], result.extras["fooled_by"]          # doctest: +SKIP
        ('standard', {'apgd-ce': 412, 'apgd-t': 9, 'fab-t': 0, 'square': 0})
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(
        self, *, eps: float, norm: str = "linf", version: str = "auto", seed: int = 0, batch_size: int = 512
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=False, seed=seed, batch_size=batch_size)
        if version not in VERSIONS:
            raise UsageError(f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {version!r}")
        self.version = version

    def components(self, version: str | None = None) -> list[Attack]:
        """The attacks of ``version`` (default: this attack's; ``auto`` lists standard's), in
        order, with the published settings."""
        version = version or self.version
        if version not in VERSIONS:
            raise UsageError(f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {version!r}")
        common: dict[str, Any] = {
            "eps": self.eps,
            "norm": self.norm,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        if version == "rand":
            return [
                EOT(get_attack("apgd-ce", steps=100, restarts=1, **common), samples=RAND_SAMPLES),
                EOT(get_attack("apgd-dlr", steps=100, restarts=1, **common), samples=RAND_SAMPLES),
            ]
        return [
            get_attack("apgd-ce", steps=100, restarts=1, **common),
            get_attack("apgd-t", steps=100, n_target_classes=9, restarts=1, **common),
            get_attack("fab-t", steps=100, n_target_classes=9, restarts=1, **common),
            get_attack("square", n_queries=5000, p_init=0.8, restarts=1, **common),
        ]

    def resolve_version(self, model: Model, x: torch.Tensor) -> str:
        """The version a call on ``(model, x)`` runs: ``auto`` becomes rand when two forward
        passes on (the first batch of) ``x`` differ, else standard. The check draws from the
        model's noise without disturbing the caller's random state."""
        if self.version != "auto":
            return self.version
        if not isinstance(model, WhiteBoxModel):
            return "standard"
        probe = x[: self.batch_size]
        with seeded_draws(self.seed, probe.device):
            return "rand" if forward_is_random(model, probe) else "standard"

    def _attack(self, p: Prepared) -> tuple[torch.Tensor, int, dict[str, Any]]:
        version = self.resolve_version(p.model, p.x)
        passes = RAND_SAMPLES if version == "rand" else 1
        components, skipped = self.components(version), {}
        if version == "rand" and p.model.spec.num_classes < 3:
            components = components[:1]  # the DLR loss needs three classes
            skipped["apgd-dlr"] = (
                f"the DLR loss needs at least 3 classes; the model has {p.model.spec.num_classes}"
            )
        scorer = Oracle(p.model)

        def correct(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """Per example, the fraction of passes that classify ``x`` as ``y``."""
            if passes == 1:
                return (self._predict_all(scorer, x, memory=p.memory) == y).double()
            assert isinstance(p.model, WhiteBoxModel)
            return self._expected_all(p.model, x, y, passes, p.memory)[1]

        # The model's own noise, if any, is drawn from seeded global generators (restored after):
        # the standard version's attacks draw from the seed, the rand version's scoring between
        # attacks from a stream of its own (its EOT attacks seed themselves).
        with seeded_draws(self.seed + (_SELECTION_STREAM if passes > 1 else 0), p.x.device):
            x_adv = p.x.clone()
            rate = correct(p.x, p.y)
            fooled_by: dict[str, int] = {}
            queries = 0
            for stage, attack in enumerate(components, start=1):
                name = attack.attack.name if isinstance(attack, EOT) else attack.name
                idx = (rate > 0).nonzero().squeeze(1)
                if idx.numel() == 0:
                    fooled_by[name] = 0
                else:
                    adv, q, _ = attack._attack(p.subset(idx))
                    queries += q
                    new = correct(adv, p.y[idx])
                    better = new < rate[idx]
                    x_adv[idx[better]] = adv[better]
                    rate[idx[better]] = new[better]
                    fooled_by[name] = int(better.sum())
                if p.progress is not None:
                    p.progress(stage, len(components), {"robust": float(rate.mean())})
        extras: dict[str, Any] = {"fooled_by": fooled_by, "version": version}
        if passes > 1:
            extras["eot_samples"] = passes  # the base scores the result over as many passes
        if skipped:
            extras["skipped"] = skipped
        return x_adv, queries, extras

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """The same sequence on one batch, for wrappers that call ``run`` directly (the version
        is resolved on this batch; points are kept by one pass's prediction)."""
        version = self.resolve_version(model.model, x)
        components = self.components(version)
        if version == "rand" and model.spec.num_classes < 3:
            components = components[:1]
        x_adv = x.clone()
        robust = model.predict(x) == y
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        for attack in components:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = attack._project(x[idx], attack.run(model, x[idx], y[idx], None, gen), lower, upper)
            hit = model.predict(adv) != y[idx]
            x_adv[idx[hit]] = adv[hit]
            robust[idx[hit]] = False
        return x_adv
