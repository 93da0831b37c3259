"""AutoAttack, standard version (Croce & Hein, ICML 2020), as published.

Four attacks run in sequence, each only on the points that are still robust:

1. APGD-CE, 100 iterations, no restarts;
2. APGD-T (targeted DLR loss), 100 iterations, 9 target classes, one restart each;
3. FAB-T, 100 iterations, 9 target classes, one restart each;
4. Square, 5,000 queries, ``p_init = 0.8``, one restart.

The result holds, for each example, the first adversarial example any of them found (the
per-example worst case), and ``extras["fooled_by"]`` says how many points each attack took.
For L-inf and L2 budgets. Changing the components or their settings is not AutoAttack; use
the attacks themselves (or a campaign) for custom ensembles.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, Prepared, get_attack, register_attack

__all__ = ["AutoAttack"]


@register_attack("autoattack")
class AutoAttack(Attack):
    """AutoAttack, standard version: APGD-CE, APGD-T, FAB-T and Square on the robust points.

    Args:
        eps: budget.
        norm: ``linf`` or ``l2``.
        seed: seed of every component.
        batch_size: examples attacked at once.

    Example:
        >>> result = AutoAttack(eps=8 / 255, norm="linf")(model, x, y)    # doctest: +SKIP
        >>> result.extras["fooled_by"]                                    # doctest: +SKIP
        {'apgd-ce': 412, 'apgd-t': 9, 'fab-t': 0, 'square': 0}
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(self, *, eps: float, norm: str = "linf", seed: int = 0, batch_size: int = 512) -> None:
        super().__init__(norm=norm, eps=eps, targeted=False, seed=seed, batch_size=batch_size)

    def components(self) -> list[Attack]:
        """The four attacks of the standard version, in order, with the published settings."""
        common: dict[str, Any] = {
            "eps": self.eps,
            "norm": self.norm,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        return [
            get_attack("apgd-ce", steps=100, restarts=1, **common),
            get_attack("apgd-t", steps=100, n_target_classes=9, restarts=1, **common),
            get_attack("fab-t", steps=100, n_target_classes=9, restarts=1, **common),
            get_attack("square", n_queries=5000, p_init=0.8, restarts=1, **common),
        ]

    def _attack(self, p: Prepared) -> tuple[torch.Tensor, int, dict[str, Any]]:
        scorer = Oracle(p.model)
        x_adv = p.x.clone()
        robust = self._predict_all(scorer, p.x) == p.y
        fooled_by: dict[str, int] = {}
        queries = 0
        components = self.components()
        for stage, attack in enumerate(components, start=1):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                fooled_by[attack.name] = 0
            else:
                adv, q, _ = attack._attack(p.subset(idx))
                queries += q
                hit = self._predict_all(scorer, adv) != p.y[idx]
                x_adv[idx[hit]] = adv[hit]
                robust[idx[hit]] = False
                fooled_by[attack.name] = int(hit.sum())
            if p.progress is not None:
                p.progress(stage, len(components), {"robust": float(robust.float().mean())})
        return x_adv, queries, {"fooled_by": fooled_by, "version": "standard"}

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """The same sequence on one batch, for wrappers that call ``run`` directly."""
        x_adv = x.clone()
        robust = model.predict(x) == y
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        for attack in self.components():
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = attack._project(x[idx], attack.run(model, x[idx], y[idx], None, gen), lower, upper)
            hit = model.predict(adv) != y[idx]
            x_adv[idx[hit]] = adv[hit]
            robust[idx[hit]] = False
        return x_adv
