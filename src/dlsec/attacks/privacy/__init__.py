"""Privacy attacks and audits: membership inference, model inversion, attribute inference, DP audits.

Example:
    >>> from dlsec.attacks.privacy import audit_membership, members_mask, ShadowTrainer
    >>> labels = members_mask(len(data), member_index)                          # doctest: +SKIP
    >>> audit = audit_membership(model, data, labels, trainer=ShadowTrainer(arch="cnn"))  # doctest: +SKIP
    >>> audit.metrics[audit.best].tpr(0.01)                                      # doctest: +SKIP
"""

from dlsec.attacks.privacy._attribute import AttributeInference, AttributeResult
from dlsec.attacks.privacy._audit import MembershipAudit, audit_membership, default_attacks, members_mask
from dlsec.attacks.privacy._dpaudit import (
    CANARY_KINDS,
    DPAuditResult,
    dp_audit,
    make_canaries,
    one_run_audit,
)
from dlsec.attacks.privacy._epsilon import (
    EpsilonBound,
    epsilon_from_rates,
    epsilon_lower_bound,
    one_run_epsilon,
    one_run_p_value,
)
from dlsec.attacks.privacy._inversion import InversionResult, MIFace, score_inversion, train_evaluator
from dlsec.attacks.privacy._membership import (
    MIA_ATTACKS,
    RMIA,
    ConfidenceThreshold,
    LabelOnly,
    LiRA,
    LossThreshold,
    MembershipAttack,
    ShadowAttack,
    get_membership_attack,
    logit_confidence,
)
from dlsec.attacks.privacy._metrics import (
    DEFAULT_FPRS,
    MembershipMetrics,
    clopper_pearson,
    membership_metrics,
    min_non_members,
)
from dlsec.attacks.privacy._shadow import ReferenceModels, ShadowTrainer, half_inclusion

__all__ = [
    "CANARY_KINDS",
    "DEFAULT_FPRS",
    "MIA_ATTACKS",
    "RMIA",
    "AttributeInference",
    "AttributeResult",
    "ConfidenceThreshold",
    "DPAuditResult",
    "EpsilonBound",
    "InversionResult",
    "LabelOnly",
    "LiRA",
    "LossThreshold",
    "MIFace",
    "MembershipAttack",
    "MembershipAudit",
    "MembershipMetrics",
    "ReferenceModels",
    "ShadowAttack",
    "ShadowTrainer",
    "audit_membership",
    "clopper_pearson",
    "default_attacks",
    "dp_audit",
    "epsilon_from_rates",
    "epsilon_lower_bound",
    "get_membership_attack",
    "half_inclusion",
    "logit_confidence",
    "make_canaries",
    "members_mask",
    "membership_metrics",
    "min_non_members",
    "one_run_audit",
    "one_run_epsilon",
    "one_run_p_value",
    "score_inversion",
    "train_evaluator",
]
