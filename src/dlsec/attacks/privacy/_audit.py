"""Membership audits of a trained model: train reference models, run attacks, report metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlsec.attacks.privacy._membership import MIA_ATTACKS, get_membership_attack
from dlsec.attacks.privacy._metrics import MembershipMetrics, membership_metrics, min_non_members
from dlsec.attacks.privacy._shadow import ReferenceModels, ShadowTrainer, half_inclusion
from dlsec.core.data import Dataset
from dlsec.core.model import Access, Model
from dlsec.errors import DataError, UsageError

__all__ = ["MembershipAudit", "audit_membership", "default_attacks", "members_mask"]

Progress = Callable[[int, int, dict[str, float]], None]


def default_attacks(access: Access, *, references: bool) -> list[str]:
    """The attacks an audit runs by default for ``access`` (with or without reference models)."""
    if access == Access.DECISION:
        return ["label-only"]
    names = ["loss", "confidence", "label-only"]
    if references:
        names += ["shadow", "lira-offline", "lira-online", "rmia"]
    return names


def members_mask(n_rows: int, members: np.ndarray, non_members: np.ndarray | None = None) -> np.ndarray:
    """An ``int8`` label per row: 1 member, 0 non-member, -1 left out; checks the index sets.

    Raises:
        DataError: indices outside ``0..n_rows-1``, repeated, or in both sets.
    """
    mem = np.asarray(members).reshape(-1)
    if mem.dtype.kind not in "iu":
        raise DataError(f"member indices must be integers, got dtype {mem.dtype}")
    if mem.size == 0:
        raise DataError("no members given: membership inference needs member rows")
    if mem.min() < 0 or mem.max() >= n_rows:
        bad = mem.max() if mem.max() >= n_rows else mem.min()
        raise DataError(
            f"members are not a subset of the data: index {int(bad)} is outside the {n_rows} rows of --data"
        )
    if np.unique(mem).size != mem.size:
        raise DataError("member indices repeat; list each member row once")
    label = np.zeros(n_rows, dtype=np.int8)
    label[mem] = 1
    if non_members is not None:
        out = np.asarray(non_members).reshape(-1)
        if out.dtype.kind not in "iu" or (out.size and (out.min() < 0 or out.max() >= n_rows)):
            raise DataError(f"non-members are not a subset of the data's {n_rows} rows")
        if np.intersect1d(out, mem).size:
            raise DataError("a row is both a member and a non-member")
        label[:] = -1
        label[mem] = 1
        label[out] = 0
    if not (label == 0).any():
        raise DataError("every row is a member: membership inference needs non-member rows too")
    return label


@dataclass
class MembershipAudit:
    """The outcome of :func:`audit_membership`.

    Attributes:
        metrics: per attack, its :class:`MembershipMetrics`.
        best: the strongest attack (highest TPR at the lowest FPR measured, then AUC).
        scores: per attack, the scores of the candidate rows.
        labels: 1 member, 0 non-member, per candidate row.
        references: reference models trained (0 without).
        skipped: attacks not run, with the reason; any entry makes the audit ``partial``.
    """

    metrics: dict[str, MembershipMetrics]
    best: str
    scores: dict[str, np.ndarray]
    labels: np.ndarray
    references: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """Whether a stronger attack that applies could not run (see ``skipped``)."""
        return bool(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "partial": self.partial,
            "best": self.best,
            "attacks": {k: m.to_dict() for k, m in self.metrics.items()},
            "members": int((self.labels == 1).sum()),
            "non_members": int((self.labels == 0).sum()),
            "references": self.references,
            "skipped": self.skipped,
            "settings": self.settings,
        }


def _strength(m: MembershipMetrics) -> tuple[float, float]:
    rows = sorted(m.tpr_at_fpr.values(), key=lambda r: r["fpr"])
    return (float(rows[0]["tpr"]) if rows else 0.0, m.auc)


def audit_membership(
    model: Model,
    data: Dataset,
    labels: np.ndarray,
    *,
    attacks: Sequence[str] | None = None,
    references: ReferenceModels | None = None,
    trainer: ShadowTrainer | None = None,
    n_references: int = 16,
    references_dir: str | Path | None = None,
    fprs: tuple[float, ...] | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    attack_params: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> MembershipAudit:
    """Run membership-inference attacks against ``model`` on the rows of ``data``.

    Args:
        model: the target (white-box, score or decision access).
        data: candidate rows, members and non-members of the target's training set.
        labels: per row 1 (member), 0 (non-member) or -1 (left out); see :func:`members_mask`.
        attacks: names from :data:`MIA_ATTACKS` (default: :func:`default_attacks`).
        references: reference models already trained on the candidate rows.
        trainer: trains ``n_references`` reference models on random halves of the candidate
            rows when an attack needs them and ``references`` is not given.
        n_references: how many reference models to train.
        references_dir: where reference models are saved (resumable).
        fprs: false positive rates to report (must be measurable); default: those that are.
        bootstrap: bootstrap resamples for the intervals.
        seed: seeds the reference split and the attacks.
        attack_params: per attack, keyword arguments.
        progress: called with ``(done, total, stats)`` while reference models train.

    Example:
        >>> audit = audit_membership(model, data, labels, attacks=["loss"])    # doctest: +SKIP
        >>> audit.metrics["loss"].auc                                          # doctest: +SKIP
    """
    labels = np.asarray(labels, dtype=np.int8)
    if labels.shape != (len(data),):
        raise UsageError(f"labels must have one entry per row ({len(data)}), got shape {labels.shape}")
    keep = labels >= 0
    rows = data.subset(np.nonzero(keep)[0], name=f"{data.name}[candidates]")
    lab = labels[keep]
    n_out = int((lab == 0).sum())
    if fprs is not None:
        for rate in fprs:
            if n_out < min_non_members(rate):
                raise UsageError(
                    f"a TPR at FPR {rate:g} needs at least {min_non_members(rate)} non-members, got {n_out}; "
                    "give more non-members or a higher --fpr"
                )
    have_refs = references is not None or trainer is not None
    # Without references the default still names the reference attacks, so that what could not
    # run is reported as skipped (and the audit as partial) instead of silently left out.
    names = list(attacks) if attacks is not None else default_attacks(model.access, references=True)
    unknown = [a for a in names if a not in MIA_ATTACKS]
    if unknown:
        raise UsageError(
            f"unknown membership attack(s) {', '.join(unknown)}; choose from {', '.join(MIA_ATTACKS)}"
        )
    params = attack_params or {}
    built = {a: get_membership_attack(a, **params.get(a, {})) for a in names}
    skipped: dict[str, str] = {}
    for a, atk in list(built.items()):
        if model.access < atk.access:
            skipped[a] = f"needs {atk.access.label} access"
            del built[a]
    if not have_refs:
        wanted = [a for a, t in built.items() if t.needs_references]
        if wanted and attacks is not None:
            needed = ", ".join(wanted)
            raise UsageError(
                f"attacks {needed} need reference models: give a trainer (the target's architecture)"
            )
        for a in wanted:
            skipped[a] = (
                "needs reference models trained like the target, and none could be built: give the "
                "target's architecture (--arch) and how it was trained (--ref-config), or a model "
                "file whose metadata names its architecture"
            )
            del built[a]
    needs_refs = any(atk.needs_references for atk in built.values())
    if needs_refs and references is None:
        assert trainer is not None  # have_refs
        inclusion = half_inclusion(n_references, len(rows), seed=seed)
        references = trainer.train(rows, inclusion, spec=model.spec, out=references_dir, progress=progress)
    scores: dict[str, np.ndarray] = {}
    metrics: dict[str, MembershipMetrics] = {}
    for a, atk in built.items():
        s = atk(model, rows.x, rows.y, references=references if atk.needs_references else None)
        scores[a] = s
        metrics[a] = membership_metrics(s[lab == 1], s[lab == 0], fprs=fprs, bootstrap=bootstrap, seed=seed)
    if not metrics:
        raise UsageError("no membership attack can run with this access: " + "; ".join(skipped.values()))
    best = max(metrics, key=lambda k: _strength(metrics[k]))
    return MembershipAudit(
        metrics=metrics,
        best=best,
        scores=scores,
        labels=lab,
        references=len(references) if references is not None and needs_refs else 0,
        skipped=skipped,
        settings={"attacks": names, "seed": seed, "n_references": n_references if needs_refs else 0},
    )
