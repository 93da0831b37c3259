"""Verification of an erasure with dlsec's own membership inference: LiRA on the erased rows.

The erased rows (members of the old model) and fresh non-members (test-split rows no model
trained on) are the candidates. Reference models are trained like the target on the retained
rows plus a random half of the candidates (Carlini et al. 2022's online LiRA, each candidate in
half the references); for a SISA target each reference is itself a SISA ensemble (the rows
assigned to shards by the same keyed hash). LiRA then scores the candidates against the new
model, and against the old one with the same references (the "before" figure: whether the test
could see the rows at all). The erasure is verified when the 95% interval of the AUC on the
new model contains 0.5: the erased rows cannot be told from rows never trained on, in either
direction (an unlearning that overshoots, leaving the rows *less* member-like than fresh rows,
fails too).

The interval that decides is Hanley and McNeil's (1982), from the AUC's variance as a
Mann-Whitney statistic, never narrower than the AUC's spread under chance itself
(``(n1 + n0 + 1) / (12 n1 n0)``): with a handful of erased rows (one erasure request often
names one row) the Hanley-McNeil variance shrinks at extreme AUCs and the bootstrap interval
collapses (resampling one row changes nothing), so either alone would fail correct erasures far
more often than 5% of the time. So the erasure fails when the rank test rejects "the erased rows
score like fresh ones" at 5%, two-sided. The bootstrap interval and the Mann-Whitney p-value
are shown beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from dlsec.attacks.privacy import (
    ReferenceModels,
    ShadowTrainer,
    get_membership_attack,
    half_inclusion,
    membership_metrics,
)
from dlsec.comply._sisa import assign
from dlsec.core.data import Dataset
from dlsec.core.model import Model
from dlsec.core.spec import InputSpec
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import UsageError

__all__ = ["ReferencePlan", "Verification", "hanley_mcneil", "lira_verify"]

ATTACK = "lira-online"


@dataclass(frozen=True)
class ReferencePlan:
    """How reference models are trained: like the target.

    ``shards`` > 1 makes each reference a SISA ensemble of ``shards`` members, rows assigned
    by :func:`~dlsec.comply._sisa.assign` with ``sisa_seed``.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    config: TrainConfig
    spec: InputSpec
    shards: int = 1
    sisa_seed: int = 0
    aggregate: str = "mean"

    def describe(self) -> str:
        c = self.config
        what = f"{self.arch}, {c.epochs} epochs, batch {c.batch_size}, {c.optimizer}, lr {c.lr:g}"
        if self.shards > 1:
            return f"SISA ensembles of {self.shards} shard models ({what} per shard, unsliced)"
        return what


@dataclass(frozen=True)
class Verification:
    """The result of :func:`lira_verify` (also what the erasure record keeps)."""

    verified: bool
    attack: str
    auc: float
    auc_ci: tuple[float, float]
    auc_before: float
    auc_ci_before: tuple[float, float]
    auc_bootstrap_ci: tuple[float, float]
    p_value: float
    n_erased: int
    n_fresh: int
    n_references: int
    references_trained_as: str
    confidence: float = 0.95
    notes: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        lo, hi = self.auc_ci
        if self.verified:
            return (
                f"LiRA AUC {self.auc:.3f} (CI {lo:.3f}-{hi:.3f}) contains 0.5: "
                "the erased rows look like fresh rows"
            )
        side = "more" if lo > 0.5 else "less"
        return (
            f"LiRA AUC {self.auc:.3f} (CI {lo:.3f}-{hi:.3f}) excludes 0.5: the erased rows are still told "
            f"apart from fresh rows ({side} member-like)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "attack": self.attack,
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "auc_before": self.auc_before,
            "auc_ci_before": list(self.auc_ci_before),
            "n_erased": self.n_erased,
            "n_fresh": self.n_fresh,
            "n_references": self.n_references,
            "references_trained_as": self.references_trained_as,
            "auc_bootstrap_ci": list(self.auc_bootstrap_ci),
            "p_value": self.p_value,
            "confidence": self.confidence,
            "interval": "Hanley-McNeil 1982, floored at the variance under chance; bootstrap beside it",
            "reason": self.reason,
            "notes": self.notes,
        }


def hanley_mcneil(auc: float, n_pos: int, n_neg: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Hanley-McNeil (1982) interval of an AUC from ``n_pos`` positives and ``n_neg`` negatives,
    its variance floored at the AUC's variance under chance (see the module docstring).

    Example:
        >>> lo, hi = hanley_mcneil(0.5, 10, 200)
        >>> round(lo, 3), round(hi, 3)
        (0.316, 0.684)
    """
    from scipy.stats import norm

    a = min(max(auc, 1e-9), 1 - 1e-9)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    var = max(var, (n_pos + n_neg + 1) / (12 * n_pos * n_neg))  # never narrower than chance's spread
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


class _EnsembleReferences(ReferenceModels):
    """Reference SISA ensembles: ``n`` ensembles of ``shards`` stacked member models."""

    def __init__(self, members: ReferenceModels, n: int, shards: int, inclusion: np.ndarray, aggregate: str):
        super().__init__(
            members.base, members.params, members.buffers, inclusion, members.spec, device=members.device
        )
        self._members = members
        self._n = n
        self._shards = shards
        self._aggregate = aggregate

    def logits(self, x: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        out = self._members.logits(x, batch_size=batch_size)  # (n * shards, N, C)
        out = out.reshape(self._n, self._shards, out.shape[1], out.shape[2])
        if self._aggregate == "vote":
            votes = torch.nn.functional.one_hot(out.argmax(-1), out.shape[-1]).to(out.dtype).mean(1)
            return torch.log((votes + 1e-3) / (1 + 1e-3 * out.shape[-1]))
        return torch.logsumexp(torch.log_softmax(out, dim=-1), dim=1) - math.log(self._shards)


def _references(
    plan: ReferencePlan,
    retained: Dataset,
    candidates: Dataset,
    hashes: list[str],
    *,
    n_references: int,
    seed: int,
    device: torch.device | None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> ReferenceModels:
    pool = Dataset(
        np.concatenate([retained.x, candidates.x]),
        np.concatenate([retained.y, candidates.y]),
        retained.spec,
        f"{retained.name}[references]",
    )
    n_ret, n_cand = len(retained), len(candidates)
    halves = half_inclusion(n_references, n_cand, seed=seed)
    base = np.concatenate([np.ones((n_references, n_ret), dtype=bool), halves], axis=1)
    config = replace(plan.config, early_stopping=0, augment=False)
    trainer = ShadowTrainer(
        arch=plan.arch, arch_kwargs=plan.arch_kwargs, config=config, seed=seed, device=device
    )
    if plan.shards <= 1:
        refs = trainer.train(pool, base, spec=plan.spec, progress=progress)
        return ReferenceModels(refs.base, refs.params, refs.buffers, halves, refs.spec, device=refs.device)
    shard_of = np.array(
        [assign(h, seed=plan.sisa_seed, shards=plan.shards, slices=1)[0] for h in hashes], dtype=np.int64
    )
    inclusion = np.concatenate(
        [base[k : k + 1] & (shard_of == s)[None, :] for k in range(n_references) for s in range(plan.shards)]
    )
    empty = inclusion.sum(axis=1) == 0
    inclusion[empty, 0] = True  # a shard with no rows at all (tiny data): one row keeps it trainable
    members = trainer.train(pool, inclusion, spec=plan.spec, progress=progress)
    return _EnsembleReferences(members, n_references, plan.shards, halves, plan.aggregate)


def lira_verify(
    new_model: Model,
    old_model: Model,
    *,
    retained: Dataset,
    retained_hashes: list[str],
    erased: Dataset,
    erased_hashes: list[str],
    fresh: Dataset,
    fresh_hashes: list[str],
    plan: ReferencePlan,
    n_references: int = 16,
    bootstrap: int = 500,
    seed: int = 0,
    device: torch.device | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Verification:
    """LiRA (online) on ``erased`` against ``fresh`` non-members, on the new and the old model.

    Raises:
        UsageError: no erased rows, or too few fresh rows (at least 10) or references (at least 4).
    """
    if len(erased) == 0:
        raise UsageError("nothing to verify: no erased rows")
    if len(fresh) < 10:
        raise UsageError(f"verification needs at least 10 fresh non-member rows, got {len(fresh)}")
    if n_references < 4:
        raise UsageError(f"verification needs at least 4 reference models, got {n_references}")
    candidates = Dataset(
        np.concatenate([erased.x, fresh.x]),
        np.concatenate([erased.y, fresh.y]),
        erased.spec,
        f"{erased.name}[candidates]",
    )
    refs = _references(
        plan,
        retained,
        candidates,
        retained_hashes + erased_hashes + fresh_hashes,
        n_references=n_references,
        seed=seed,
        device=device,
        progress=progress,
    )
    attack = get_membership_attack(ATTACK)
    lab = np.r_[np.ones(len(erased), dtype=bool), np.zeros(len(fresh), dtype=bool)]
    after = attack(new_model, candidates.x, candidates.y, references=refs)
    before = attack(old_model, candidates.x, candidates.y, references=refs)
    from scipy.stats import mannwhitneyu

    m_after = membership_metrics(after[lab], after[~lab], fprs=(), bootstrap=bootstrap, seed=seed)
    m_before = membership_metrics(before[lab], before[~lab], fprs=(), bootstrap=bootstrap, seed=seed)
    n1, n0 = len(erased), len(fresh)
    lo, hi = hanley_mcneil(m_after.auc, n1, n0)
    lo_b, hi_b = hanley_mcneil(m_before.auc, n1, n0)
    p_value = float(mannwhitneyu(after[lab], after[~lab], alternative="two-sided").pvalue)
    notes = []
    if lo_b <= 0.5:
        notes.append(
            "low power: before the erasure LiRA could not tell these rows from fresh ones either "
            f"(AUC {m_before.auc:.3f}, CI {lo_b:.3f}-{hi_b:.3f}); a pass says little beyond that"
        )
    return Verification(
        verified=bool(lo <= 0.5 <= hi),
        attack=ATTACK,
        auc=m_after.auc,
        auc_ci=(lo, hi),
        auc_before=m_before.auc,
        auc_ci_before=(lo_b, hi_b),
        auc_bootstrap_ci=(float(m_after.auc_ci[0]), float(m_after.auc_ci[1])),
        p_value=p_value,
        n_erased=len(erased),
        n_fresh=len(fresh),
        n_references=n_references,
        references_trained_as=plan.describe(),
        notes=notes,
    )
