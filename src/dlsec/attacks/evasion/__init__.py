"""Evasion attacks: white-box, score-based and decision-based, under one contract."""

from dlsec.attacks.evasion._constraints import TabularConstraints
from dlsec.attacks.evasion.base import ATTACKS, Attack, AttackResult, Oracle, get_attack, register_attack
from dlsec.attacks.evasion.gradient import FGSM, MIFGSM, PGD

__all__ = [
    "ATTACKS",
    "FGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "Oracle",
    "TabularConstraints",
    "get_attack",
    "register_attack",
]
