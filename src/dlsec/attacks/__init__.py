"""The adversary's toolbox. ``from dlsec.attacks import PGD`` is the quick way in."""

from dlsec.attacks.evasion import (
    ATTACKS,
    FGSM,
    MIFGSM,
    PGD,
    Attack,
    AttackResult,
    TabularConstraints,
    get_attack,
)

__all__ = ["ATTACKS", "FGSM", "MIFGSM", "PGD", "Attack", "AttackResult", "TabularConstraints", "get_attack"]
