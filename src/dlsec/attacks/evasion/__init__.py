"""Evasion attacks: white-box, score-based and decision-based, under one contract."""

from dlsec.attacks.evasion._constraints import TabularConstraints
from dlsec.attacks.evasion.apgd import APGD, APGDDLR, APGDT
from dlsec.attacks.evasion.autoattack import AutoAttack
from dlsec.attacks.evasion.base import ATTACKS, Attack, AttackResult, Oracle, get_attack, register_attack
from dlsec.attacks.evasion.cw import CarliniWagnerL2
from dlsec.attacks.evasion.deepfool import DeepFool
from dlsec.attacks.evasion.diagnostics import Finding, MaskingReport, check_gradient_masking
from dlsec.attacks.evasion.fab import FAB, FABTargeted
from dlsec.attacks.evasion.gradient import FGSM, MIFGSM, PGD
from dlsec.attacks.evasion.hsj import HopSkipJump
from dlsec.attacks.evasion.square import Square
from dlsec.attacks.evasion.transfer import Transfer
from dlsec.attacks.evasion.wrappers import EOT, ExpectationModel, Restarts, Targeted

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "FAB",
    "FABTargeted",
    "CarliniWagnerL2",
    "DeepFool",
    "EOT",
    "FGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "ExpectationModel",
    "Finding",
    "MaskingReport",
    "Oracle",
    "Restarts",
    "Transfer",
    "Square",
    "HopSkipJump",
    "TabularConstraints",
    "Targeted",
    "check_gradient_masking",
    "get_attack",
    "register_attack",
]
