"""The privacy section of an assessment: membership inference, model inversion, attribute inference.

Disabled by default (a campaign turns it on with ``privacy: {enabled: true}``), because it
needs the rows the model was trained on and, for the strongest attacks, reference models.
Findings carry OWASP ML04 (membership inference) / ML03 (model inversion) and MITRE ATLAS
AML.T0024.000 (Infer Training Data Membership) / AML.T0024.001 (Invert AI Model).
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlsec.core.card import TrainingCard
from dlsec.core.data import Dataset, load_dataset, with_spec
from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import DataError, UsageError

if TYPE_CHECKING:
    import torch

    from dlsec.attacks.privacy import AttributeResult, InversionResult, ShadowTrainer
    from dlsec.core.recipe import Recipe
    from dlsec.core.trainconfig import TrainConfig

__all__ = [
    "ATLAS_INVERSION",
    "ATLAS_MEMBERSHIP",
    "Privacy",
    "dp_audit_setup",
    "reference_config_source",
    "attribute_findings",
    "dp_audit_findings",
    "infer_attribute",
    "invert_classes",
    "inversion_findings",
    "membership_findings",
    "read_index_file",
    "reference_trainer",
    "references_dir",
    "resolve_members",
    "roc_svg",
    "run_privacy",
    "split_indices",
    "training_card",
]

OWASP_MEMBERSHIP = "ML04 Membership Inference Attack"
OWASP_INVERSION = "ML03 Model Inversion Attack"
ATLAS_MEMBERSHIP = "AML.T0024.000 Infer Training Data Membership"
ATLAS_INVERSION = "AML.T0024.001 Invert AI Model"

Step = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


class Privacy(BaseModel):
    """Campaign settings of the privacy section (all optional; off by default).

    ``members`` (read by :func:`resolve_members`, as ``dlsec privacy audit --members``):
    ``train`` (the train split of ``data`` at ``test_size``/``split_seed``, the split
    ``dlsec train`` and the zoo use), ``card`` (the split recorded in the training card beside
    the model file), a ``.npy``/``.txt`` file of member row indices or a ``.npz`` of member
    rows; the other rows of ``data`` are the non-members. ``data`` defaults to the assessed
    dataset. ``references`` reference models of the model file's architecture enable LiRA,
    RMIA and the shadow-model attack (0: the threshold and label-only attacks only, and the
    audit is reported partial, naming them). ``arch`` / ``arch_args`` give the architecture
    when the model file does not name it; ``ref_config`` (the YAML ``dlsec train --config``
    reads) says how the target was trained when it has no training card.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    data: str | None = None
    members: str = "train"
    test_size: float = Field(0.25, gt=0, lt=1)
    split_seed: int = 0
    attacks: list[str] | None = None
    references: int = Field(0, ge=0)
    reference_epochs: int | None = Field(None, ge=1)
    arch: str | None = None
    arch_args: dict[str, Any] = Field(default_factory=dict)
    ref_config: str | None = None
    fprs: list[float] | None = None
    bootstrap: int = Field(100, ge=0)
    inversion: bool = True
    inversion_steps: int = Field(300, ge=1)
    attribute: str | None = None

    @field_validator("fprs")
    @classmethod
    def _rates(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not 0 < v < 1 for v in value):
            raise ValueError("false positive rates must be in (0, 1)")
        return value


def split_indices(labels: np.ndarray, num_classes: int, *, test_size: float, seed: int) -> np.ndarray:
    """Row indices of the train part of :meth:`Dataset.split` for these labels (same rows)."""
    from dlsec.core.spec import InputSpec

    n = len(labels)
    index = Dataset(
        np.arange(n, dtype=np.float32)[:, None],
        np.asarray(labels, dtype=np.int64),
        InputSpec(shape=(1,), num_classes=num_classes, kind="tabular", lower=0.0, upper=float(max(n, 1))),
        "index",
    )
    train, _ = index.split(test_size=test_size, seed=seed)
    return train.x[:, 0].astype(np.int64)


def read_index_file(path: str | Path, *, what: str = "members") -> np.ndarray:
    """Row indices from a ``.npy`` integer array or a text file with one index per line."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file not found: {p}")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"{p}: not a numeric .npy array ({exc})") from None
    else:
        try:
            tokens = p.read_text(encoding="utf-8").replace(",", "\n").split()
            arr = np.array([int(t) for t in tokens], dtype=np.int64)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{p}: expected one integer row index per line ({exc})") from None
    arr = np.asarray(arr).reshape(-1)
    if arr.dtype.kind not in "iu":
        raise UsageError(f"{p}: {what} must be integer row indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def training_card(
    model_ref: str | Path, *, home: str | Path | None = None, option: str = "--members"
) -> TrainingCard:
    """The training card of ``model_ref``: a zoo model's, or ``model.json`` beside a model file or folder.

    Raises:
        UsageError: there is no card (``option`` names the setting that chose the card).
        ModelLoadError: the card is malformed.
    """
    ref = str(model_ref)
    if ref.startswith("zoo:"):
        from dlsec.zoo import zoo_card

        return zoo_card(ref.removeprefix("zoo:"), home=home)
    card = TrainingCard.find(ref)
    if card is None:
        raise UsageError(f"no training card (model.json) next to {ref}; pass {option} train or an index file")
    return card


def _rows_to_index(data: Dataset, path: Path) -> np.ndarray:
    """The row index in ``data`` of each row of the dataset file ``path`` (each must be there)."""
    rows = load_dataset(path)
    if rows.x.shape[1:] != data.x.shape[1:]:
        raise DataError(f"{path}: member rows have shape {rows.x.shape[1:]}, the data has {data.x.shape[1:]}")
    lookup: dict[bytes, list[int]] = {}
    for i in range(len(data)):
        lookup.setdefault(data.x[i].tobytes() + data.y[i].tobytes(), []).append(i)
    out, missing = [], 0
    for i in range(len(rows)):
        hits = lookup.get(rows.x[i].tobytes() + rows.y[i].tobytes())
        if not hits:
            missing += 1
        else:
            out.append(hits.pop(0))
    if missing:
        raise DataError(
            f"members are not a subset of the data: {missing} of {len(rows)} rows in {path} are not rows of "
            f"{data.name}; give the dataset the model was trained on"
        )
    return np.array(out, dtype=np.int64)


def _card_split(card: TrainingCard, data: Dataset, option: str) -> tuple[np.ndarray, str]:
    """The member rows of ``data`` by the split the training card records (validation rows left out)."""
    dataset, split = card.dataset, card.split
    if dataset.get("sha256") not in (None, data.sha256):
        raise DataError(
            f"the model was trained on {dataset.get('name')!r}, not on these rows of the data; "
            f"pass the training dataset or {option} FILE"
        )
    if "test_size" not in split or "seed" not in split:
        raise UsageError(f"the training card records no split; pass {option} train or an index file")
    index = split_indices(data.y, data.spec.num_classes, test_size=split["test_size"], seed=split["seed"])
    if split.get("validation_rows"):
        val_size = card.train_config.get("val_size", 0.1)
        seed = split.get("validation_seed", 0)
        keep = split_indices(data.y[index], data.spec.num_classes, test_size=val_size, seed=seed)
        index = index[keep]
    return index, f"card split (test_size={split['test_size']}, seed={split['seed']})"


def resolve_members(
    data: Dataset,
    members: str = "card",
    *,
    model_ref: str | Path | None = None,
    non_members: str | Path | None = None,
    test_size: float = 0.25,
    split_seed: int = 0,
    home: str | Path | None = None,
    option: str = "--members",
) -> tuple[np.ndarray, str]:
    """Which rows of ``data`` the model was trained on: a label per row and how they were named.

    ``members`` is ``card`` (the split recorded in the training card of ``model_ref``: the zoo
    entry's, or ``model.json`` beside the model file), ``train`` (the train split of ``data`` at
    ``test_size``/``split_seed``), a ``.npy`` or text file of row indices into ``data``, or a
    ``.npz`` of member rows (each must be a row of ``data``). Non-members are the other rows
    unless ``non_members`` names a file of row indices. ``option`` names the setting in errors.

    Returns:
        Per row of ``data``: 1 member, 0 non-member, -1 not scored (see ``members_mask``); and
        a description of where the members came from.

    Example:
        >>> labels, how = resolve_members(load_dataset("builtin:digits"), "card",
        ...                               model_ref="zoo:digits-mlp")   # doctest: +SKIP
        >>> how                                                          # doctest: +SKIP
        'card split (test_size=0.25, seed=0)'
    """
    from dlsec.attacks.privacy import members_mask

    if members == "card":
        if model_ref is None:
            raise UsageError(f"{option} card needs the model's file; pass {option} train or an index file")
        index, how = _card_split(training_card(model_ref, home=home, option=option), data, option)
    elif members == "train":
        index = split_indices(data.y, data.spec.num_classes, test_size=test_size, seed=split_seed)
        how = f"train split (test_size={test_size}, seed={split_seed})"
    else:
        path = Path(members)
        if not path.exists():
            raise UsageError(f"{option}: {members!r} is not card, train or an existing file")
        index = _rows_to_index(data, path) if path.suffix.lower() == ".npz" else read_index_file(path)
        how = str(path)
    outside = read_index_file(non_members, what="non-members") if non_members is not None else None
    return members_mask(len(data), index, outside), how


def _source_data(data: Dataset, config: Privacy, spec_model: Model) -> Dataset:
    ref = config.data or re.sub(r"\[[^\]]*\]$", "", data.name)
    try:
        full = load_dataset(ref)
    except UsageError as exc:
        raise UsageError(f"privacy.data: cannot load {ref!r} ({exc}); name the training dataset") from None
    return with_spec(full, spec_model.spec)


def membership_findings(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings from a membership audit's ``to_dict()``: the best attack's leak, if any."""
    best = section["best"]
    m = section["attacks"][best]
    rows = sorted(m["tpr_at_fpr"].values(), key=lambda r: r["fpr"])
    findings = []
    severity = None
    detail = f"best attack {best}: AUC {m['auc']:.3f} (CI {m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f})"
    if rows:
        low = rows[0]
        detail += f", TPR {low['tpr']:.2%} at FPR {low['fpr']:g} (CI lower {low['ci'][0]:.2%})"
        if low["ci"][0] > 10 * low["fpr"]:
            severity = "high"
        elif low["ci"][0] > 2 * low["fpr"]:
            severity = "medium"
    if m["auc"] >= 0.75:
        severity = "high"
    elif m["auc_ci"][0] > 0.55 and severity is None:
        severity = "medium"
    if severity is not None:
        findings.append(
            {
                "code": "membership-inference",
                "severity": severity,
                "title": f"Membership inference: {best} identifies training rows (AUC {m['auc']:.2f})",
                "detail": detail
                + "; consider regularisation or dp-sgd training (dlsec train --recipe dp-sgd)",
                "evidence": {"attack": best, "auc": m["auc"], "auc_ci": m["auc_ci"], "tpr_at_fpr": rows},
                "owasp": OWASP_MEMBERSHIP,
                "atlas": ATLAS_MEMBERSHIP,
            }
        )
    skipped = section.get("skipped") or {}
    if skipped:
        findings.append(
            {
                "code": "membership-audit-partial",
                "severity": "medium",
                "title": f"Membership audit is partial: {', '.join(skipped)} did not run",
                "detail": "; ".join(f"{name}: {why}" for name, why in skipped.items())
                + f". The numbers above come from the weaker attacks only (best: {best}); "
                "they are a lower bound on the leak, not a verdict",
                "evidence": {"skipped": skipped, "best": best},
                "owasp": OWASP_MEMBERSHIP,
                "atlas": ATLAS_MEMBERSHIP,
            }
        )
    return findings


def inversion_findings(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A finding when an independent classifier recognises most MI-Face reconstructions."""
    rate = section["recognition_rate"]
    if rate < 0.5:
        return []
    return [
        {
            "code": "model-inversion",
            "severity": "medium" if rate < 0.8 else "high",
            "title": f"Model inversion: an independent classifier recognises {rate:.0%} of reconstructions",
            "detail": f"MI-Face per class; {section['closer_to_own_class']:.0%} lie nearer to a real row of "
            "their class than to any other class; limit output precision or return labels only",
            "evidence": {k: section[k] for k in ("recognition_rate", "closer_to_own_class")},
            "owasp": OWASP_INVERSION,
            "atlas": ATLAS_INVERSION,
        }
    ]


def attribute_findings(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A finding when model access recovers the sensitive feature better than the baseline."""
    if section["advantage"] < 0.05:
        return []
    return [
        {
            "code": "attribute-inference",
            "severity": "medium",
            "title": f"Attribute inference: model access recovers {section['feature']!r} "
            f"{section['advantage']:.1%} more often than a baseline without it",
            "detail": "on the training rows; compare the non-members' figures to separate memorisation "
            "from population knowledge",
            "evidence": section,
            "owasp": OWASP_INVERSION,
            "atlas": ATLAS_INVERSION,
        }
    ]


def dp_audit_findings(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A critical finding when the audited lower bound on epsilon exceeds the claim."""
    if not result["exceeds_claim"]:
        return []
    return [
        {
            "code": "dp-audit",
            "severity": "critical",
            "title": f"DP audit: epsilon is at least {result['epsilon_lower']:.2f}, above the claimed "
            f"{result['epsilon_claimed']:.2f}",
            "detail": "the training does not give the privacy it claims (broken noise, clipping or "
            "accounting); do not rely on its epsilon",
            "evidence": {k: result[k] for k in ("epsilon_lower", "epsilon_claimed", "delta", "one_run")},
            "owasp": OWASP_MEMBERSHIP,
            "atlas": ATLAS_MEMBERSHIP,
        }
    ]


def roc_svg(attacks: dict[str, dict[str, Any]], *, width: int = 420, height: int = 300) -> str:
    """A log-log ROC chart (inline SVG) of each attack's ``roc`` points, with the diagonal."""
    pad_l, pad_b, pad_t, pad_r = 48, 36, 10, 120
    pw, ph = width - pad_l - pad_r, height - pad_b - pad_t
    floor = 1e-4
    for m in attacks.values():
        pos = [f for f in m["roc"]["fpr"] if f > 0]
        if pos:
            floor = min(floor, min(pos))
    lo = math.floor(math.log10(floor))

    def px(v: float) -> float:
        return pad_l + pw * (math.log10(max(v, 10**lo)) - lo) / -lo

    def py(v: float) -> float:
        return pad_t + ph * (1 - (math.log10(max(v, 10**lo)) - lo) / -lo)

    parts = [
        f'<svg class="chart" role="img" aria-label="ROC, log-log" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for e in range(lo, 1):
        v = 10.0**e
        parts.append(
            f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{pad_t}" y2="{pad_t + ph}" stroke="#eee"/>'
        )
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{px(v):.1f}" y="{pad_t + ph + 14}" font-size="10" text-anchor="middle">{v:g}</text>'
        )
        parts.append(
            f'<text x="{pad_l - 4}" y="{py(v) + 3:.1f}" font-size="10" text-anchor="end">{v:g}</text>'
        )
    parts.append(
        f'<line x1="{px(10**lo):.1f}" y1="{py(10**lo):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
    )
    colours = ("#3b6ea5", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")
    for i, (name, m) in enumerate(attacks.items()):
        c = colours[i % len(colours)]
        pts = " ".join(
            f"{px(f):.1f},{py(t):.1f}" for f, t in zip(m["roc"]["fpr"], m["roc"]["tpr"], strict=True)
        )
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        ly = pad_t + 12 + 14 * i
        label = html.escape(f"{name} ({m['auc']:.2f})")
        parts.append(f'<rect x="{pad_l + pw + 8}" y="{ly - 8}" width="9" height="9" fill="{c}"/>')
        parts.append(f'<text x="{pad_l + pw + 20}" y="{ly}" font-size="10">{label}</text>')
    parts.append(
        f'<text x="{pad_l + pw / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "false positive rate</text>"
    )
    parts.append(
        f'<text x="12" y="{pad_t + ph / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + ph / 2:.1f})">true positive rate</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def reference_trainer(
    model_ref: str | Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    group_size: int = 16,
    device: torch.device | str | None = None,
    home: str | Path | None = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    ref_config: str | Path | None = None,
    data_ref: str | None = None,
) -> ShadowTrainer | None:
    """A trainer of reference models like ``model_ref``, or ``None`` when its architecture is unknown.

    The architecture is ``arch`` (with ``arch_kwargs``) when given, else the one the
    ``.safetensors`` file's metadata names (a zoo model's cached file for ``zoo:NAME``). How
    the references train: ``ref_config`` (the YAML ``dlsec train --config`` reads) when given,
    else the model's training card (``model.json`` beside it), else :class:`TrainConfig`
    defaults; always without early stopping and augmentation, ``epochs`` overriding.
    :func:`reference_config_source` says which. ONNX files and files without an architecture,
    and no ``arch``, give ``None``.

    Example:
        >>> trainer = reference_trainer("zoo:breast-cancer-mlp", epochs=10)   # doctest: +SKIP
        >>> trainer.arch                                                     # doctest: +SKIP
        'mlp'
    """
    from dlsec.attacks.privacy import ShadowTrainer
    from dlsec.core.io import read_dlsec_metadata

    path = _model_path(model_ref, home=home, device=device)
    meta: dict[str, Any] = {}
    if path is not None and path.suffix.lower() == ".safetensors" and path.is_file():
        meta = read_dlsec_metadata(path)
    if arch is None:
        arch, arch_kwargs = meta.get("arch"), meta.get("arch_kwargs", {})
    if not arch:
        return None
    card = TrainingCard.find(path) if path is not None and path.is_file() else None
    return ShadowTrainer(
        arch=arch,
        arch_kwargs=dict(arch_kwargs or {}),
        config=_reference_config(card, epochs, ref_config=ref_config, data_ref=data_ref),
        group_size=group_size,
        seed=seed,
        device=device,
    )


def _model_path(
    model_ref: str | Path, *, home: str | Path | None, device: torch.device | str | None
) -> Path | None:
    from dlsec.zoo import model_file

    return model_file(model_ref, home=home, device=device, ensure=True)


def reference_config_source(
    model_ref: str | Path, *, ref_config: str | Path | None = None, home: str | Path | None = None
) -> str:
    """Where the reference models' training configuration comes from, in words for a report."""
    if ref_config is not None:
        return f"--ref-config {ref_config}"
    path = _model_path(model_ref, home=home, device=None)
    if path is not None and path.is_file() and TrainingCard.find(path) is not None:
        return "the model's training card"
    from dlsec.core.trainconfig import TrainConfig

    default = TrainConfig(epochs=20)
    return (
        "a stated default (no training card and no --ref-config): "
        f"{default.epochs} epochs, batch {default.batch_size}, {default.optimizer}, lr {default.lr}; "
        "references trained unlike the target make LiRA and RMIA weaker, so give --ref-config"
    )


def _reference_config(
    card: TrainingCard | None,
    epochs: int | None,
    *,
    ref_config: str | Path | None = None,
    data_ref: str | None = None,
) -> TrainConfig:
    """The training configuration for reference models (defaults without a usable one)."""
    from dlsec.core.trainconfig import TrainConfig

    names = TrainConfig.field_names()
    if ref_config is not None:
        from dataclasses import asdict

        from dlsec.train import train_options

        # train_options insists on a data reference; the references train on the audit's own
        # rows whatever the file names, so only its training options are read here.
        values = asdict(train_options(ref_config, data=data_ref or "-").config)
    else:
        values = dict(card.train_config) if card is not None else {}
    values = {k: v for k, v in values.items() if k in names}
    for key in ("early_stopping", "augment"):
        values.pop(key, None)
    if epochs is not None:
        values["epochs"] = epochs
    try:
        return TrainConfig(**values)
    except UsageError:
        if ref_config is not None:
            raise
        return TrainConfig(epochs=epochs or 20)


def dp_audit_setup(
    *,
    epsilon: float,
    delta: float,
    max_grad_norm: float = 1.0,
    unsafe_no_noise: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
) -> tuple[Recipe, TrainConfig]:
    """The DP-SGD recipe and training configuration a DP audit trains with.

    The recipe's defaults, with ``epochs``, ``batch_size`` and ``lr`` overriding when given.
    ``unsafe_no_noise`` trains with no noise while claiming ``epsilon`` (to test the audit).

    Example:
        >>> recipe, config = dp_audit_setup(epsilon=1.0, delta=1e-5, epochs=3)
        >>> recipe.name, config.epochs
        ('dp-sgd', 3)
    """
    from dataclasses import replace

    from dlsec.train import DPSGD, UnsafeNoNoiseDPSGD

    cls = UnsafeNoNoiseDPSGD if unsafe_no_noise else DPSGD
    recipe = cls(epsilon=epsilon, delta=delta, max_grad_norm=max_grad_norm)
    changes: dict[str, Any] = {"seed": seed}
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            changes[key] = value
    return recipe, replace(recipe.default_config(), **changes)


def references_dir(
    model_ref: str | Path, data: Dataset, references: int, seed: int, *, home: str | Path | None = None
) -> Path:
    """Where an audit of ``model_ref`` on ``data`` keeps its reference models (resumable), in the cache."""
    from dlsec.core.home import cache_dir

    key = hashlib.sha256(f"{model_ref}:{data.sha256}:{references}:{seed}".encode()).hexdigest()[:16]
    return cache_dir(home) / "privacy" / f"references-{key}"


def invert_classes(
    model: Model, data: Dataset, labels: np.ndarray, *, steps: int, seed: int = 0
) -> tuple[np.ndarray, list[int], InversionResult]:
    """MI-Face per class of ``model`` (white-box), scored by a classifier trained on the member rows.

    ``labels`` marks the members of ``data`` (1) as :func:`resolve_members` returns them.
    Returns the reconstructions (one per class), the classes, and the scored result.
    """
    from dlsec.attacks.privacy import MIFace, score_inversion, train_evaluator

    members = data.subset(np.nonzero(labels == 1)[0])
    recon = MIFace(steps=steps)(model)
    classes = list(range(model.spec.num_classes))
    evaluator = train_evaluator(members, seed=seed + 1)
    return recon, classes, score_inversion(recon, classes, target=model, evaluator=evaluator, data=members)


def infer_attribute(
    model: Model, data: Dataset, labels: np.ndarray, *, feature: str | int, bins: int = 2, seed: int = 0
) -> AttributeResult:
    """Attribute inference of ``feature`` on the members, beside a no-model baseline.

    Half of the non-members (a seeded permutation) are the attacker's auxiliary rows, the
    other half are scored. A feature given as a string of digits is a column index.
    """
    from dlsec.attacks.privacy import AttributeInference

    if isinstance(feature, str) and feature.isdigit():
        feature = int(feature)
    outside = np.random.default_rng(seed).permutation(np.nonzero(labels == 0)[0])
    half = len(outside) // 2
    if half < 2:
        raise DataError("attribute inference needs at least 4 non-member rows (auxiliary and scored)")
    return AttributeInference(feature=feature, bins=bins, seed=seed)(
        model,
        members=data.subset(np.nonzero(labels == 1)[0]),
        non_members=data.subset(outside[half:]),
        auxiliary=data.subset(outside[:half]),
    )


def run_privacy(
    model: Model,
    data: Dataset,
    config: Privacy,
    *,
    step: Step,
    seed: int = 0,
    model_file: str | Path | None = None,
    units_dir: Path | None = None,
    runner: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the privacy section: returns the report section and its findings.

    Each part is one resumable unit through ``step``; reference models are saved (resumable)
    under ``units_dir``; ``runner`` (an engine's ``starmap``) trains their groups side by side.
    """
    from dlsec.assess.report import png_data_uri
    from dlsec.attacks.privacy import audit_membership

    full = _source_data(data, config, model)
    labels, _ = resolve_members(
        full,
        config.members,
        model_ref=model_file,
        test_size=config.test_size,
        split_seed=config.split_seed,
        option="privacy.members",
    )
    section: dict[str, Any] = {}
    findings: list[dict[str, Any]] = []

    def membership() -> dict[str, Any]:
        trainer = None
        if config.references:
            if model_file is None:
                raise UsageError(
                    "privacy.references needs the model's file (its architecture) to train references"
                )
            trainer = reference_trainer(
                model_file,
                epochs=config.reference_epochs,
                seed=seed,
                arch=config.arch,
                arch_kwargs=config.arch_args,
                ref_config=config.ref_config,
                data_ref=config.data or data.name,
            )
            if trainer is None:
                raise UsageError(
                    f"{model_file}: no architecture in the file; set privacy.arch (or privacy.references: 0)"
                )
            trainer.runner = runner
        audit = audit_membership(
            model,
            full,
            labels,
            attacks=config.attacks,
            trainer=trainer,
            n_references=config.references or 16,
            references_dir=(units_dir / "privacy-references") if units_dir is not None else None,
            fprs=tuple(config.fprs) if config.fprs else None,
            bootstrap=config.bootstrap,
            seed=seed,
        )
        out = audit.to_dict()
        if trainer is not None and model_file is not None:
            out["references_trained_as"] = reference_config_source(model_file, ref_config=config.ref_config)
        out["roc_svg"] = roc_svg(out["attacks"])
        return out

    section["membership"] = step("privacy-membership", membership)
    findings += membership_findings(section["membership"])

    if config.inversion and isinstance(model, WhiteBoxModel) and model.spec.kind == "image":

        def inversion() -> dict[str, Any]:
            recon, classes, result = invert_classes(
                model, full, labels, steps=config.inversion_steps, seed=seed
            )
            out = result.to_dict()
            names = list(model.spec.class_names or [str(c) for c in classes])
            scale = max(1, 64 // max(model.spec.shape[1:]))
            out["gallery"] = [
                {
                    "label": names[c],
                    "src": png_data_uri(recon[i], scale=scale),
                    "recognised": bool(result.recognised[i]),
                }
                for i, c in enumerate(classes)
            ]
            return out

        section["inversion"] = step("privacy-inversion", inversion)
        findings += inversion_findings(section["inversion"])

    if config.attribute is not None:
        feature = config.attribute

        def attribute() -> dict[str, Any]:
            return infer_attribute(model, full, labels, feature=feature, seed=seed).to_dict()

        section["attribute"] = step("privacy-attribute", attribute)
        findings += attribute_findings(section["attribute"])
    return section, findings


def unit_keys(config: Privacy, model: Model) -> list[str]:
    """The unit keys :func:`run_privacy` runs (for progress totals)."""
    keys = ["privacy-membership"]
    if config.inversion and isinstance(model, WhiteBoxModel) and model.spec.kind == "image":
        keys.append("privacy-inversion")
    if config.attribute is not None:
        keys.append("privacy-attribute")
    return keys
