"""Constraints that keep tabular adversarial examples valid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dlsec.attacks.evasion._norms import Norm
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError

__all__ = ["TabularConstraints"]


@dataclass(frozen=True)
class TabularConstraints:
    """Which features may change, and how, for tabular data.

    Args:
        immutable: indices of features that must keep their clean values (e.g. age, sex).
        integer: indices of features that must stay whole numbers (counts, ordinal codes).
        one_hot: groups of indices that encode one categorical feature; exactly one of each
            group is 1 in a valid row.

    After an attack, immutable features are reset, integer features are rounded to a whole
    value inside the budget and bounds (else left at their clean value), and each one-hot group
    is snapped to its largest entry, reverting to the clean category when the switch would
    exceed the budget. Success is scored on the repaired examples.

    Example:
        >>> c = TabularConstraints(immutable=[0], integer=[3], one_hot=[[4, 5, 6]])
    """

    immutable: Sequence[int] = field(default=())
    integer: Sequence[int] = field(default=())
    one_hot: Sequence[Sequence[int]] = field(default=())

    def check(self, spec: InputSpec) -> None:
        n = spec.num_features
        for name, idx in (
            ("immutable", self.immutable),
            ("integer", self.integer),
            ("one_hot", [i for g in self.one_hot for i in g]),
        ):
            bad = [i for i in idx if not 0 <= int(i) < n]
            if bad:
                raise UsageError(f"constraint {name}: feature indices {bad} outside 0..{n - 1}")
        if any(len(g) < 2 for g in self.one_hot):
            raise UsageError("constraint one_hot: each group needs at least two features")

    def mutable_tensor(self, spec: InputSpec, device: torch.device) -> torch.Tensor | None:
        if not self.immutable:
            return None
        mask = torch.ones(spec.num_features, dtype=torch.bool, device=device)
        mask[list(self.immutable)] = False
        return mask.reshape(spec.shape)

    def apply(
        self,
        x: torch.Tensor,
        adv: torch.Tensor,
        norm: Norm,
        eps: float | None,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> torch.Tensor:
        """Repair ``adv`` (a batch) so every constraint holds, staying within budget and bounds."""
        shape = adv.shape
        xf, af = x.reshape(len(x), -1), adv.reshape(len(adv), -1).clone()
        lo = lower.expand(shape).reshape(len(x), -1) if lower.ndim else lower.expand(af.shape)
        hi = upper.expand(shape).reshape(len(x), -1) if upper.ndim else upper.expand(af.shape)
        if self.immutable:
            idx = list(self.immutable)
            af[:, idx] = xf[:, idx]

        def within(candidate: torch.Tensor) -> torch.Tensor:
            ok = (candidate >= lo - 1e-6).all(1) & (candidate <= hi + 1e-6).all(1)
            if eps is not None:
                ok &= norm.distance(candidate - xf) <= eps + 1e-6
            return ok

        for i in self.integer:
            for rounding in (torch.round, torch.floor, torch.ceil):
                pending = af[:, i] != torch.round(af[:, i])
                trial = af.clone()
                trial[:, i] = rounding(af[:, i])
                af[:, i] = torch.where(pending & within(trial), trial[:, i], af[:, i])
            whole = af[:, i] == torch.round(af[:, i])
            af[:, i] = torch.where(whole, af[:, i], xf[:, i])
        for group in self.one_hot:
            g = list(group)
            snapped = torch.zeros_like(af[:, g])
            snapped.scatter_(1, af[:, g].argmax(1, keepdim=True), 1.0)
            trial = af.clone()
            trial[:, g] = snapped
            ok = within(trial)
            af[:, g] = torch.where(ok[:, None], snapped, xf[:, g])
        return af.reshape(shape)
