"""Transfer attacks: craft on a surrogate the attacker owns, then try on the target.

Reference: N. Papernot, P. McDaniel, I. Goodfellow, "Transferability in machine learning: from
phenomena to black-box attacks using adversarial samples", 2016,
https://arxiv.org/abs/1605.07277.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.model import Access, Model
from dlsec.errors import UsageError

__all__ = ["Transfer"]


@register_attack("transfer")
class Transfer(Attack):
    """Transfer attack: run ``attack`` on ``surrogate`` and replay its examples on the target.

    The adversarial examples are crafted with full access to the surrogate (typically a
    :class:`~dlsec.core.WhiteBoxModel` trained by the attacker on similar data); the target is
    never queried while crafting, so ``result.queries`` is 0 and the target needs only decision
    access. The threat model (``norm``, ``eps``, ``targeted``, ``seed``, ``batch_size``) is the
    inner attack's; the base projects onto its budget and scores on the target as for any attack.

    Args:
        surrogate: the attacker's model, with the same input spec shape and number of classes
            as the target and at least the access ``attack`` needs.
        attack: any attack instance (PGD, MI-FGSM, Square, ...), configured with its budget.

    Example:
        >>> from dlsec.attacks import PGD
        >>> from dlsec.attacks.evasion.transfer import Transfer
        >>> attack = Transfer(load_model("zoo:digits-mlp"), PGD(eps=0.2, steps=40))  # doctest: +SKIP
        >>> attack(target.as_decision(), x, y).robust_accuracy  # doctest: +SKIP
    """

    access: ClassVar[Access] = Access.DECISION
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    # The inner attack has validated its own budget (a minimal inner attack may have none).
    minimal: ClassVar[bool] = True

    def __init__(self, surrogate: Model, attack: Attack) -> None:
        if not isinstance(attack, Attack):
            raise UsageError(f"Transfer needs an attack instance, got {type(attack).__name__}")
        if not isinstance(surrogate, Model):
            raise UsageError(f"Transfer needs a dlsec Model as surrogate, got {type(surrogate).__name__}")
        if surrogate.access < attack.access:
            raise UsageError(
                f"{attack.name} needs {attack.access.label} access; the surrogate offers "
                f"{surrogate.access.label}"
            )
        super().__init__(
            norm=attack.norm,
            eps=attack.eps,
            targeted=attack.targeted,
            seed=attack.seed,
            batch_size=attack.batch_size,
        )
        self.surrogate = surrogate
        self.attack = attack

    def get_params(self) -> dict[str, Any]:
        return {"surrogate": self.surrogate, "attack": self.attack}

    def __repr__(self) -> str:
        return f"Transfer(surrogate=<{type(self.surrogate).__name__}>, attack={self.attack!r})"

    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        spec, own = model.spec, self.surrogate.spec
        if own.shape != spec.shape or own.num_classes != spec.num_classes:
            raise UsageError(
                f"surrogate takes shape {own.shape} with {own.num_classes} classes; the target takes "
                f"{spec.shape} with {spec.num_classes}"
            )
        result = self.attack(self.surrogate, x, y, target=target)
        return result.x_adv.to(x.device)
