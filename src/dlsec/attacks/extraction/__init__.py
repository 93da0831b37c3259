"""Model extraction: clone a model through its prediction interface within a query budget.

Three methods, each against a dlsec model at score or decision access or a plain query
callable (a gateway client): :class:`KnockoffNets` (random or adaptive transfer-set sampling),
:class:`JacobianAugmentation` (Papernot et al.'s JBDA with reservoir sampling) and
:class:`Copycat` (natural data labelled by the target's top-1). Each returns an
:class:`ExtractionResult` with the clone, its accuracy, its agreement with the target, the
queries spent and, with checkpoints, the agreement curve.

Example:
    >>> from dlsec.attacks.extraction import KnockoffNets, out_of_domain_pool, mixed_pool
    >>> pool = mixed_pool(train.x, out_of_domain_pool(model.spec, 2000))   # doctest: +SKIP
    >>> result = KnockoffNets(budget=1500)(model.as_score(), pool, test=test)  # doctest: +SKIP
    >>> result.agreement, result.queries                                    # doctest: +SKIP
"""

from dlsec.attacks.extraction._oracle import Answer, BudgetExceededError, QueryFn, QueryOracle
from dlsec.attacks.extraction._pools import (
    DEFAULT_QUERIES,
    MIN_POOL,
    QUERY_SOURCES,
    QueryPool,
    attacker_pool,
    mixed_pool,
    out_of_domain_pool,
    query_pool,
)
from dlsec.attacks.extraction.base import (
    EXTRACTION_ATTACKS,
    ExtractionAttack,
    ExtractionResult,
    get_extraction_attack,
    register_extraction_attack,
)
from dlsec.attacks.extraction.copycat import Copycat
from dlsec.attacks.extraction.jbda import JacobianAugmentation
from dlsec.attacks.extraction.knockoff import KnockoffNets

__all__ = [
    "DEFAULT_QUERIES",
    "EXTRACTION_ATTACKS",
    "MIN_POOL",
    "QUERY_SOURCES",
    "Answer",
    "BudgetExceededError",
    "Copycat",
    "ExtractionAttack",
    "ExtractionResult",
    "JacobianAugmentation",
    "KnockoffNets",
    "QueryFn",
    "QueryOracle",
    "QueryPool",
    "attacker_pool",
    "get_extraction_attack",
    "mixed_pool",
    "out_of_domain_pool",
    "query_pool",
    "register_extraction_attack",
]
