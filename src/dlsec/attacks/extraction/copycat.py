"""Copycat CNN (Correia-Silva et al. 2018): natural data labelled by the target's top-1."""

from __future__ import annotations

import numpy as np

from dlsec.attacks.extraction.base import ExtractionAttack, RunContext, register_extraction_attack
from dlsec.core.model import WhiteBoxModel

__all__ = ["Copycat", "draw_without_replacement"]


def draw_without_replacement(ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query up to the whole budget with pool rows in a seeded random order (no row twice).

    Returns the inputs sent, the target's labels and its probabilities (one-hot at decision
    access), all in query order.
    """
    n = min(ctx.remaining, len(ctx.pool))
    order = ctx.rng.permutation(len(ctx.pool))[:n]
    x = ctx.pool.x[order]
    answer = ctx.query(x)
    return x, answer.labels, answer.targets(ctx.spec.num_classes)


@register_extraction_attack("copycat")
class Copycat(ExtractionAttack):
    """Copycat: query natural data, label it with the target's top-1 prediction, train a clone.

    The attacker holds unlabelled natural images, either from the problem domain or not (the
    paper's main setting: non-problem-domain images); each is sent once, in a random order,
    until the budget or the pool runs out. Only the top-1 label is used even when the target
    returns probabilities (the paper's threat model: a label-only API). The clone is trained
    on the (image, label) pairs with cross-entropy.

    See :class:`~dlsec.attacks.extraction.base.ExtractionAttack` for the shared arguments.

    Example:
        >>> pool = out_of_domain_pool(model.spec, 3000, seed=0)           # doctest: +SKIP
        >>> Copycat(budget=2000, seed=0)(model, pool, test=test).agreement  # doctest: +SKIP
    """

    def run(self, ctx: RunContext) -> WhiteBoxModel:
        x, labels, _ = draw_without_replacement(ctx)
        targets = np.eye(ctx.spec.num_classes, dtype=np.float32)[labels]
        ctx.extras["_history"] = (x, targets)
        ctx.extras["pool_size"] = len(ctx.pool)
        clone = ctx.new_clone()
        ctx.fit(clone, x, targets)
        return clone
