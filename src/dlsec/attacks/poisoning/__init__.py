"""Poisoning attacks: the attacker edits the training set.

Label flipping (random and targeted), feature-collision targeted poisoning (Shafahi et al.
2018), and, for recommenders, fake-profile injection (random, average and bandwagon shilling)
against :class:`MatrixFactorization`. Backdoor attacks live in :mod:`dlsec.attacks.backdoor`
and register here too. Each attack returns a :class:`PoisonResult` that scores itself
(attack success rate and clean accuracy) on a model trained with :func:`train_victim`.

Example:
    >>> from dlsec.core import load_dataset
    >>> from dlsec.attacks.poisoning import LabelFlip, train_victim
    >>> train, test = load_dataset("builtin:digits").split()
    >>> result = LabelFlip(rate=0.1, mode="targeted", source=3, target=8).poison(train)
    >>> result.evaluate(train_victim(result.data), test)        # doctest: +SKIP
"""

import dlsec.attacks.backdoor  # noqa: E402,F401,I001  (registers the backdoor attacks)
from dlsec.attacks.poisoning._base import (
    POISONINGS,
    PoisoningAttack,
    PoisonResult,
    fresh_copy,
    get_poisoning,
    register_poisoning,
    retrain_head,
    train_victim,
    victim_architecture,
)
from dlsec.attacks.poisoning._features import penultimate
from dlsec.attacks.poisoning.feature_collision import FeatureCollision
from dlsec.attacks.poisoning.label_flip import LabelFlip
from dlsec.attacks.poisoning.recommender import (
    MatrixFactorization,
    ShillingAttack,
    ShillingResult,
    item_rank,
    synthetic_ratings,
)

__all__ = [
    "FeatureCollision",
    "fresh_copy",
    "penultimate",
    "victim_architecture",
    "get_poisoning",
    "item_rank",
    "LabelFlip",
    "MatrixFactorization",
    "PoisoningAttack",
    "POISONINGS",
    "PoisonResult",
    "register_poisoning",
    "retrain_head",
    "ShillingAttack",
    "ShillingResult",
    "synthetic_ratings",
    "train_victim",
]
