"""Fairness beside robustness: Fairlearn's group metrics, per-group robust accuracy, mitigation.

A model can be accurate and robust on average and unfair, or fragile, for one group. This module
measures both, group by group, over a protected attribute that is a column of a tabular dataset
or, when it is no model input (a model trained without it, an image classifier), over group
labels given per row (:func:`load_groups`):

* **Fairlearn's metrics**, never re-implemented: a :class:`~fairlearn.metrics.MetricFrame` with
  count, accuracy, selection rate, true and false positive rates per group, and
  :func:`~fairlearn.metrics.demographic_parity_difference`,
  :func:`~fairlearn.metrics.demographic_parity_ratio` and
  :func:`~fairlearn.metrics.equalized_odds_difference`. Rates count one class as the positive
  decision (``positive``, default 1: ``approve`` in ``builtin:credit-bias``); with more than
  two classes every other class is the negative one.
* **Robustness per group**: one of dlsec's evasion attacks (:mod:`dlsec.attacks.evasion`, e.g.
  PGD at a given ``eps`` and norm) runs on every row, with the protected column held fixed
  (an attacker does not change an applicant's group), and a MetricFrame splits robust accuracy
  and attack success by group; the report names the worst group and the gap.
* **Mitigation** with Fairlearn: ``threshold`` post-processes the model's scores with
  :class:`~fairlearn.postprocessing.ThresholdOptimizer` (``prefit``: group-specific,
  randomised thresholds; any model with scores); ``reduction`` retrains the model's own network
  under :class:`~fairlearn.reductions.ExponentiatedGradient` (a randomised mixture of weighted
  fine-tunes; white-box models). Both fit on one split and are scored on another, before and
  after.

The data: no labelled dataset with a protected attribute ships inside an installable package
(Fairlearn's and AIF360's loaders download at run time, which dlsec never does), so dlsec
generates one, ``builtin:credit-bias`` (:func:`dlsec.core.data.load_dataset`): 2,000 credit
applicants from a fixed seed with a ``group`` column and two injected biases of known size
(30% of qualified group-1 applicants labelled *deny*; group 1's merit with half the spread, so
its rows sit closer to the boundary). A CSV with a group column works the same way.

Example:
    >>> from dlsec.attacks import get_attack
    >>> from dlsec.core import load_dataset, load_model
    >>> data = load_dataset("builtin:credit-bias")
    >>> model = load_model("runs/credit/model.safetensors")              # doctest: +SKIP
    >>> report = fairness_report(model, data, protected="group",
    ...                          attack=get_attack("pgd", eps=0.05))    # doctest: +SKIP
    >>> report.demographic_parity_difference, report.robust_worst_group  # doctest: +SKIP
    (0.21, '1')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dlsec.core.data import Dataset
from dlsec.core.model import Model, WhiteBoxModel
from dlsec.errors import DataError, UsageError

if TYPE_CHECKING:
    from dlsec.attacks.evasion import Attack

__all__ = [
    "FairnessReport",
    "GroupMetrics",
    "MitigationResult",
    "fairness_metrics",
    "fairness_report",
    "load_groups",
    "mitigate",
    "protected_column",
]

#: At most this many distinct values in a protected column (else it is continuous: bin it).
MAX_GROUPS = 20
Progress = Callable[[int, int, dict[str, float]], None]
Method = Literal["threshold", "reduction"]
Constraint = Literal["demographic_parity", "equalized_odds"]


# --------------------------------------------------------------------------- the protected column


def protected_column(data: Dataset, protected: str | int) -> int:
    """The index of the protected attribute among ``data``'s features.

    Args:
        data: a tabular dataset.
        protected: a feature name (``spec.feature_names``) or a feature index.

    Raises:
        DataError: the dataset is not tabular, the column does not exist, or it holds more than
            :data:`MAX_GROUPS` distinct values.
    """
    spec = data.spec
    if len(spec.shape) != 1:
        raise DataError(
            f"{data.name}: the protected attribute must be a column of a tabular dataset; "
            f"this one has examples of shape {spec.shape}"
        )
    names = list(spec.feature_names or [])
    if isinstance(protected, str) and protected in names:
        index = names.index(protected)
    elif isinstance(protected, int) or (isinstance(protected, str) and protected.isdigit()):
        index = int(protected)
        if not 0 <= index < spec.shape[0]:
            raise DataError(f"{data.name}: protected column index {index} outside 0..{spec.shape[0] - 1}")
    else:
        shown = ", ".join(names[:12]) + ("..." if len(names) > 12 else "")
        raise DataError(
            f"{data.name}: no column {protected!r} for the protected attribute; "
            f"name one of its columns ({shown or 'unnamed: give an index'})"
        )
    distinct = np.unique(data.x[:, index])
    if len(distinct) > MAX_GROUPS:
        raise DataError(
            f"{data.name}: column {protected!r} has {len(distinct)} distinct values; a protected "
            f"attribute needs at most {MAX_GROUPS} groups: bin it first"
        )
    return index


def _group_labels(values: np.ndarray) -> np.ndarray:
    """Readable group names: ``1`` for 1.0, a number as written, a string as it is."""

    def name(v: Any) -> str:
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() else f"{v:g}"
        return str(v)

    return np.array([name(v) for v in np.asarray(values).tolist()], dtype=object)


def load_groups(path: str | Path) -> np.ndarray:
    """Per-row group labels from a file: ``.npy`` (numbers or strings, no pickles) or text, one a line.

    For a protected attribute that is not a model input (a model trained without it, an image
    classifier): the i-th label belongs to the i-th row of the dataset.

    Raises:
        DataError: the file cannot be read, holds objects, or is empty.
    """
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            values = np.load(p, allow_pickle=False)
        else:
            lines = p.read_text(encoding="utf-8").splitlines()
            values = np.array([line.strip() for line in lines if line.strip()])
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{p}: cannot read group labels ({exc}); give a .npy array or one label a line"
        ) from None
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        raise DataError(f"{p}: no group labels")
    return values


def _groups_of(data: Dataset, protected: str | int | np.ndarray) -> tuple[np.ndarray, int | None, str]:
    """Each row's group name, the protected column's index (``None`` for given labels), its name."""
    if isinstance(protected, np.ndarray):
        values = protected.reshape(-1)
        if len(values) != len(data):
            raise DataError(f"{data.name}: {len(values)} group labels for {len(data)} rows; give one per row")
        groups = _group_labels(values)
        if len(set(groups.tolist())) > MAX_GROUPS:
            raise DataError(f"{data.name}: more than {MAX_GROUPS} distinct group labels: bin them first")
        return groups, None, "groups"
    index = protected_column(data, protected)
    return _group_labels(data.x[:, index]), index, _column_name(data, index)


# --------------------------------------------------------------------------- the metrics


@dataclass(frozen=True)
class GroupMetrics:
    """One group's numbers (rates for the positive class; robust ones only with an attack)."""

    count: int
    accuracy: float
    selection_rate: float
    true_positive_rate: float
    false_positive_rate: float
    robust_accuracy: float | None = None
    attack_success: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _num(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class FairnessReport:
    """Fairlearn's group metrics and per-group robustness of one model on one dataset.

    Attributes:
        data: where the rows came from; ``n`` how many.
        protected: the protected column's name (or index), ``groups`` for labels given per row;
            ``positive`` the positive class.
        groups: per group (named by the column's value), its :class:`GroupMetrics`.
        accuracy, selection_rate: over all rows.
        demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference:
            Fairlearn's aggregates over the groups.
        accuracy_gap, accuracy_worst_group: the largest difference in accuracy between groups
            and the group with the lowest.
        attack: the attack's parameters (``None`` without one); ``robust_accuracy`` over all
            rows, ``robust_gap`` and ``robust_worst_group`` between the groups.
        mitigation: before/after numbers when a mitigation ran.
    """

    data: str
    n: int
    protected: str
    positive: str
    groups: dict[str, GroupMetrics]
    accuracy: float
    selection_rate: float
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float
    accuracy_gap: float
    accuracy_worst_group: str
    attack: dict[str, Any] | None = None
    robust_accuracy: float | None = None
    robust_gap: float | None = None
    robust_worst_group: str | None = None
    mitigation: MitigationResult | None = None
    notes: list[str] = field(default_factory=list)

    def check(
        self,
        *,
        max_dp_diff: float | None = None,
        max_eo_diff: float | None = None,
        max_robust_gap: float | None = None,
    ) -> list[str]:
        """The gates that fail, one line each (empty when every given gate holds).

        A robustness gate without an attack in the report fails: nothing was measured.
        """
        failed = []
        if max_dp_diff is not None and not self.demographic_parity_difference <= max_dp_diff:
            failed.append(
                f"demographic parity difference {self.demographic_parity_difference:.3f} > {max_dp_diff:g}"
            )
        if max_eo_diff is not None and not self.equalized_odds_difference <= max_eo_diff:
            failed.append(f"equalised-odds difference {self.equalized_odds_difference:.3f} > {max_eo_diff:g}")
        if max_robust_gap is not None:
            if self.robust_gap is None:
                failed.append("robust-accuracy gap not measured: run with an attack")
            elif not self.robust_gap <= max_robust_gap:
                failed.append(
                    f"robust-accuracy gap {self.robust_gap:.3f} > {max_robust_gap:g} "
                    f"(worst group {self.robust_worst_group})"
                )
        return failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN written as ``null``)."""
        return {
            "data": self.data,
            "n": self.n,
            "protected": self.protected,
            "positive": self.positive,
            "groups": {g: m.to_dict() for g, m in self.groups.items()},
            "accuracy": _num(self.accuracy),
            "selection_rate": _num(self.selection_rate),
            "demographic_parity_difference": _num(self.demographic_parity_difference),
            "demographic_parity_ratio": _num(self.demographic_parity_ratio),
            "equalized_odds_difference": _num(self.equalized_odds_difference),
            "accuracy_gap": _num(self.accuracy_gap),
            "accuracy_worst_group": self.accuracy_worst_group,
            "attack": self.attack,
            "robust_accuracy": _num(self.robust_accuracy),
            "robust_gap": _num(self.robust_gap),
            "robust_worst_group": self.robust_worst_group,
            "mitigation": self.mitigation.to_dict() if self.mitigation is not None else None,
            "notes": list(self.notes),
        }


def _num(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, int | np.integer):
        return int(v)
    f = float(v)
    return None if math.isnan(f) else f


def fairness_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, positive: int = 1
) -> dict[str, Any]:
    """Fairlearn's metrics of predictions ``y_pred`` against ``y_true``, split by ``groups``.

    Accuracy counts every class; the rates and the parity aggregates count ``positive`` as the
    positive decision and every other class as the negative one.

    Returns:
        ``by_group`` (group -> count, accuracy, selection_rate, true_positive_rate,
        false_positive_rate) and the overall ``accuracy``, ``selection_rate``,
        ``demographic_parity_difference``, ``demographic_parity_ratio``,
        ``equalized_odds_difference``, ``accuracy_gap`` and ``accuracy_worst_group``.

    Example:
        >>> y, pred = np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0])
        >>> m = fairness_metrics(y, pred, np.array(["a", "a", "b", "b"]))
        >>> m["demographic_parity_difference"]
        0.5
    """
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    groups = np.asarray(groups, dtype=object)
    yb = (y_true == positive).astype(np.int64)
    pb = (y_pred == positive).astype(np.int64)
    with warnings.catch_warnings():
        # a group without positives (or negatives) has an undefined rate: NaN, named by Fairlearn
        warnings.simplefilter("ignore")
        acc = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
        rates = MetricFrame(
            metrics={
                "count": count,
                "selection_rate": selection_rate,
                "true_positive_rate": _rate(true_positive_rate),
                "false_positive_rate": _rate(false_positive_rate),
            },
            y_true=yb,
            y_pred=pb,
            sensitive_features=groups,
        )
        dp_diff = demographic_parity_difference(yb, pb, sensitive_features=groups)
        dp_ratio = demographic_parity_ratio(yb, pb, sensitive_features=groups)
        eo_diff = equalized_odds_difference(yb, pb, sensitive_features=groups)
    by_group: dict[str, dict[str, float]] = {}
    for g in acc.by_group.index:
        row = rates.by_group.loc[g]
        by_group[str(g)] = {
            "count": int(row["count"]),
            "accuracy": float(acc.by_group.loc[g]),
            "selection_rate": float(row["selection_rate"]),
            "true_positive_rate": float(row["true_positive_rate"]),
            "false_positive_rate": float(row["false_positive_rate"]),
        }
    return {
        "by_group": by_group,
        "accuracy": float(acc.overall),
        "selection_rate": float(rates.overall["selection_rate"]),
        "demographic_parity_difference": float(dp_diff),
        "demographic_parity_ratio": float(dp_ratio),
        "equalized_odds_difference": float(eo_diff),
        "accuracy_gap": float(acc.difference()),
        "accuracy_worst_group": str(acc.by_group.idxmin()),
    }


def _rate(metric: Callable[..., float]) -> Callable[..., float]:
    """A Fairlearn rate for binary 0/1 labels, NaN (not an error) where it is undefined."""

    def rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(metric(y_true, y_pred, pos_label=1))

    rate.__name__ = metric.__name__
    return rate


def _attack_success(
    y_true: np.ndarray, y_pred: np.ndarray, clean_correct: np.ndarray, success: np.ndarray
) -> float:
    """Of the rows the model got right, the fraction the attack fooled (NaN when none)."""
    mask = np.asarray(clean_correct, dtype=bool)
    return float(np.asarray(success, dtype=bool)[mask].mean()) if mask.any() else float("nan")


def _robust_by_group(
    model: Model,
    data: Dataset,
    index: int | None,
    groups: np.ndarray,
    attack: Attack,
    progress: Progress | None,
) -> tuple[dict[str, tuple[float, float]], float, float, str, dict[str, Any]]:
    import torch
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    from dlsec.attacks.evasion import TabularConstraints

    result = attack(
        model,
        torch.from_numpy(data.x),
        torch.from_numpy(data.y),
        constraints=TabularConstraints(immutable=(index,)) if index is not None else None,
        progress=progress,
    )
    adv = result.adv_pred.cpu().numpy()
    frame = MetricFrame(
        metrics={"robust_accuracy": accuracy_score, "attack_success": _attack_success},
        y_true=data.y,
        y_pred=adv,
        sensitive_features=groups,
        sample_params={
            "attack_success": {
                "clean_correct": result.clean_correct.cpu().numpy(),
                "success": result.success.cpu().numpy(),
            }
        },
    )
    robust = frame.by_group["robust_accuracy"]
    per_group = {
        str(g): (float(robust.loc[g]), float(frame.by_group["attack_success"].loc[g])) for g in robust.index
    }
    summary = result.summary()
    params = {k: summary[k] for k in ("attack", "norm", "eps", "seed", "targeted")}
    return (
        per_group,
        float(frame.overall["robust_accuracy"]),
        float(robust.max() - robust.min()),
        str(robust.idxmin()),
        params,
    )


def fairness_report(
    model: Model,
    data: Dataset,
    *,
    protected: str | int | np.ndarray,
    positive: int = 1,
    attack: Attack | None = None,
    progress: Progress | None = None,
) -> FairnessReport:
    """Measure ``model``'s fairness over the ``protected`` column of ``data``, and its robustness per group.

    Args:
        model: the model under test (any access level; ``attack`` needs what it declares).
        data: tabular rows whose ``protected`` column names each row's group; the model's
            input spec must match them.
        protected: the protected column (a feature name or index), or each row's group label
            (an array, e.g. from :func:`load_groups`, for an attribute that is not a model input).
        positive: the class counted as the positive decision for the rates.
        attack: an evasion attack (e.g. ``get_attack("pgd", eps=0.05)``); the protected column
            is immutable for it. Without one, no robust numbers.
        progress: ``progress(done, total, stats)`` as the attack's batches finish.

    Raises:
        DataError: no such column, or too many distinct values in it.
        UsageError: ``positive`` is not a class of the model, or the data do not fit it.

    Example:
        >>> report = fairness_report(model, data, protected="group")  # doctest: +SKIP
        >>> report.to_dict()["groups"]["1"]["selection_rate"]           # doctest: +SKIP
        0.18
    """
    groups, index, column = _groups_of(data, protected)
    _check_fit(model, data, positive)
    pred = model.predict(data.x).numpy()
    m = fairness_metrics(data.y, pred, groups, positive=positive)
    robust: dict[str, tuple[float, float]] = {}
    extra: dict[str, Any] = {}
    if attack is not None:
        robust, overall, gap, worst, params = _robust_by_group(model, data, index, groups, attack, progress)
        extra = {
            "attack": {**params, "immutable": [column] if index is not None else []},
            "robust_accuracy": overall,
            "robust_gap": gap,
            "robust_worst_group": worst,
        }
    per_group = {
        g: GroupMetrics(
            count=int(v["count"]),
            accuracy=v["accuracy"],
            selection_rate=v["selection_rate"],
            true_positive_rate=v["true_positive_rate"],
            false_positive_rate=v["false_positive_rate"],
            robust_accuracy=robust[g][0] if g in robust else None,
            attack_success=robust[g][1] if g in robust else None,
        )
        for g, v in m["by_group"].items()
    }
    notes = [
        f"group {g}: no rows of class {positive}, its true positive rate is undefined"
        for g, v in per_group.items()
        if math.isnan(v.true_positive_rate)
    ]
    return FairnessReport(
        data=data.name,
        n=len(data),
        protected=column,
        positive=_class_name(model, positive),
        groups=per_group,
        accuracy=m["accuracy"],
        selection_rate=m["selection_rate"],
        demographic_parity_difference=m["demographic_parity_difference"],
        demographic_parity_ratio=m["demographic_parity_ratio"],
        equalized_odds_difference=m["equalized_odds_difference"],
        accuracy_gap=m["accuracy_gap"],
        accuracy_worst_group=m["accuracy_worst_group"],
        notes=notes,
        **extra,
    )


def _check_fit(model: Model, data: Dataset, positive: int) -> None:
    if tuple(model.spec.shape) != tuple(data.spec.shape):
        raise UsageError(
            f"{data.name}: rows have shape {data.spec.shape} but the model expects {model.spec.shape}; "
            "use the dataset the model was trained on"
        )
    if not 0 <= positive < model.spec.num_classes:
        raise UsageError(
            f"positive class {positive} is not a class of the model (0..{model.spec.num_classes - 1})"
        )
    if int(data.y.max()) >= model.spec.num_classes:
        raise UsageError(
            f"{data.name}: labels reach {int(data.y.max())}, "
            f"but the model has {model.spec.num_classes} classes"
        )


def _column_name(data: Dataset, index: int) -> str:
    names = data.spec.feature_names
    return names[index] if names else str(index)


def _class_name(model: Model, positive: int) -> str:
    names = model.spec.class_names
    return names[positive] if names else str(positive)


# --------------------------------------------------------------------------- mitigation


@dataclass(frozen=True)
class MitigationResult:
    """Fairlearn's mitigation of one model: the numbers before and after, on held-out rows.

    Attributes:
        method: ``threshold`` (ThresholdOptimizer on the model's scores) or ``reduction``
            (ExponentiatedGradient over weighted fine-tunes of the model).
        constraint: ``demographic_parity`` or ``equalized_odds``.
        fitted_on, evaluated_on: rows the mitigation learned from, and rows it is scored on.
        before, after: accuracy, selection rate, demographic parity difference and ratio,
            equalised-odds difference, and per-group selection rate and accuracy.
        details: what the mitigation learned (per-group thresholds, number of predictors).
        predict: the mitigated predictor, ``predict(x, groups=None) -> labels``, randomised as
            Fairlearn's are (drawn with ``seed``); ``groups`` is needed when they are no column.
        members: for ``reduction``, the mixture: (weight, fine-tuned model) for each predictor
            Fairlearn kept (weight > 0); :func:`save_mitigated_model` saves it as one model.
    """

    method: str
    constraint: str
    seed: int
    fitted_on: int
    evaluated_on: int
    before: dict[str, Any]
    after: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    predict: Callable[..., np.ndarray] | None = field(default=None, repr=False, compare=False)
    members: list[tuple[float, WhiteBoxModel]] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "constraint": self.constraint,
            "seed": self.seed,
            "fitted_on": self.fitted_on,
            "evaluated_on": self.evaluated_on,
            "before": self.before,
            "after": self.after,
            "details": self.details,
        }


def _summary(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, positive: int) -> dict[str, Any]:
    m = fairness_metrics(y, pred, groups, positive=positive)
    keys = (
        "accuracy",
        "selection_rate",
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
    )
    out: dict[str, Any] = {k: _num(m[k]) for k in keys}
    out["groups"] = {
        g: {"accuracy": _num(v["accuracy"]), "selection_rate": _num(v["selection_rate"])}
        for g, v in m["by_group"].items()
    }
    return out


def mitigate(
    model: Model,
    fit_data: Dataset,
    eval_data: Dataset,
    *,
    protected: str | int | tuple[np.ndarray, np.ndarray],
    method: Method = "threshold",
    constraint: Constraint = "demographic_parity",
    positive: int = 1,
    seed: int = 0,
    max_iter: int = 30,
    steps: int = 60,
    lr: float = 0.05,
    progress: Progress | None = None,
) -> MitigationResult:
    """Mitigate unfairness with Fairlearn, learning on ``fit_data``, scoring on ``eval_data``.

    ``threshold`` fits :class:`~fairlearn.postprocessing.ThresholdOptimizer` (``prefit=True``)
    on the model's probability of the ``positive`` class: group-specific thresholds (randomised
    between two where needed) that maximise accuracy under ``constraint``. It needs scores
    (white-box or score-based access); the model is not changed. ``reduction`` runs
    :class:`~fairlearn.reductions.ExponentiatedGradient` (``max_iter`` iterations) with
    :class:`~fairlearn.reductions.DemographicParity` or
    :class:`~fairlearn.reductions.EqualizedOdds`, each best response a copy of the white-box
    model fine-tuned for ``steps`` full-batch Adam steps on the reweighted rows; the result is
    Fairlearn's randomised mixture of those networks. Both treat the decision as ``positive``
    against the rest; predictions are drawn with ``seed``. ``protected`` is a column of both
    datasets, or a pair of per-row group labels (fit rows, eval rows); the mitigated predictor
    then needs the rows' labels too (``result.predict(x, groups)``).

    Raises:
        UsageError: an unknown method or constraint, too little access, or a model with one
            class only in the fit rows.

    Example:
        >>> result = mitigate(model, train, test, protected="group")  # doctest: +SKIP
        >>> before, after = result.before, result.after                       # doctest: +SKIP
        >>> before["demographic_parity_difference"], after["demographic_parity_difference"]  # doctest: +SKIP
        (0.21, 0.03)
    """
    if method not in ("threshold", "reduction"):
        raise UsageError(f"unknown mitigation {method!r}; choose threshold or reduction")
    if constraint not in ("demographic_parity", "equalized_odds"):
        raise UsageError(f"unknown constraint {constraint!r}; choose demographic_parity or equalized_odds")
    if isinstance(protected, tuple):
        g_fit, index, _ = _groups_of(fit_data, protected[0])
        g_eval, _, _ = _groups_of(eval_data, protected[1])
    else:
        g_fit, index, _ = _groups_of(fit_data, protected)
        g_eval, _, _ = _groups_of(eval_data, protected)
    _check_fit(model, fit_data, positive)
    _check_fit(model, eval_data, positive)
    y_fit = (fit_data.y == positive).astype(np.int64)
    if len(np.unique(y_fit)) < 2:
        raise UsageError(f"{fit_data.name}: the fit rows hold one decision only; mitigation needs both")
    before_pred = model.predict(eval_data.x).numpy()
    before = _summary(eval_data.y, before_pred, g_eval, positive)

    details: dict[str, Any]
    members: list[tuple[float, WhiteBoxModel]] = []
    if method == "threshold":
        predict, details = _threshold(model, fit_data.x, y_fit, g_fit, constraint, positive, seed)
    else:
        predict, details, members = _reduction(
            model, fit_data.x, y_fit, g_fit, constraint, positive, max_iter, steps, lr, seed, progress
        )

    def mitigated(x: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        if groups is None and index is None:
            raise UsageError("the groups are not a model input: pass each row's group label")
        g = _group_labels(np.asarray(x)[:, index]) if groups is None else groups
        decision = predict(np.asarray(x, dtype=np.float32), g)
        # back to class indices: the positive class, or the model's best other class
        other = _best_other(model, np.asarray(x, dtype=np.float32), positive)
        return np.where(decision == 1, positive, other)

    after_pred = mitigated(eval_data.x, g_eval)
    after = _summary(eval_data.y, after_pred, g_eval, positive)
    return MitigationResult(
        method=method,
        constraint=constraint,
        seed=seed,
        fitted_on=len(fit_data),
        evaluated_on=len(eval_data),
        before=before,
        after=after,
        details=details,
        predict=mitigated,
        members=members,
    )


def _best_other(model: Model, x: np.ndarray, positive: int) -> np.ndarray:
    probs = getattr(model, "probs", None)
    if model.spec.num_classes == 2 or probs is None:
        return np.full(len(x), 1 - positive if model.spec.num_classes == 2 else (0 if positive else 1))
    import torch

    p = probs(torch.as_tensor(x)).detach().cpu().numpy()
    p[:, positive] = -np.inf
    return np.asarray(p.argmax(axis=1))


def _threshold(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    constraint: Constraint,
    positive: int,
    seed: int,
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any]]:
    from fairlearn.postprocessing import ThresholdOptimizer

    from dlsec.comply._fair_mitigate import ScoreEstimator
    from dlsec.core.model import Access

    if model.access < Access.SCORE:
        raise UsageError("threshold mitigation needs the model's scores: score-based or white-box access")
    optimiser = ThresholdOptimizer(
        estimator=ScoreEstimator(model=model, positive=positive),
        constraints=constraint,
        objective="accuracy_score",
        prefit=True,
        predict_method="predict_proba",
    )
    optimiser.fit(x, y, sensitive_features=groups)

    def predict(rows: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.asarray(optimiser.predict(rows, sensitive_features=g, random_state=seed), dtype=np.int64)

    thresholds = {
        str(g): {k: (str(v) if k.startswith("operation") else _num(v)) for k, v in rule.items()}
        for g, rule in optimiser.interpolated_thresholder_.interpolation_dict.items()
    }
    return predict, {"thresholds": thresholds}


def _reduction(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    constraint: Constraint,
    positive: int,
    max_iter: int,
    steps: int,
    lr: float,
    seed: int,
    progress: Progress | None,
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any], list[tuple[float, WhiteBoxModel]]]:
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

    from dlsec.comply._fair_mitigate import WeightedFineTune

    if not isinstance(model, WhiteBoxModel):
        raise UsageError("reduction mitigation retrains the network: it needs a white-box model")
    fits = [0]

    def tick() -> None:
        fits[0] += 1
        if progress is not None:
            progress(fits[0], max(max_iter, fits[0]), {})

    reduction = ExponentiatedGradient(
        WeightedFineTune(model=model, positive=positive, steps=steps, lr=lr, progress=tick),
        constraints=DemographicParity() if constraint == "demographic_parity" else EqualizedOdds(),
        max_iter=max_iter,
    )
    with warnings.catch_warnings():
        # pandas deprecations inside Fairlearn's own code: nothing the caller can act on
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="fairlearn")
        reduction.fit(x, y, sensitive_features=groups)

    def predict(rows: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.asarray(reduction.predict(rows, random_state=seed), dtype=np.int64)

    weights = np.asarray(reduction.weights_)
    members = [
        (float(w), p.model_) for w, p in zip(weights, list(reduction.predictors_), strict=True) if w > 0
    ]
    return (
        predict,
        {
            "iterations": int(reduction.n_oracle_calls_),
            "predictors": int(len(reduction.predictors_)),
            "predictors_used": int((weights > 0).sum()),
            "fine_tune_steps": steps,
        },
        members,
    )


def save_mitigated_model(result: MitigationResult, source: str | Path, out: str | Path) -> Path:
    """Save a ``reduction`` mitigation as one deployable dlsec model in folder ``out``.

    The model is the mixture Fairlearn's ExponentiatedGradient found: an ``ensemble`` of the
    fine-tuned copies, each voting with its weight, so the saved model's probabilities are the
    randomised classifier's distribution over decisions and its ``predict`` the most likely one
    (deterministic). ``source`` is the mitigated model's file or folder (its architecture and
    training card are read from there). The training card is copied with the mitigation added.

    Raises:
        UsageError: not a reduction, or a source whose architecture is not recorded.
    """
    from dlsec.core.arch import Ensemble
    from dlsec.core.card import CARD_FILE, TrainingCard
    from dlsec.core.io import read_dlsec_metadata, save_safetensors_model
    from dlsec.fsutil import sha256_file

    if result.method != "reduction" or not result.members:
        raise UsageError("only a reduction mitigation is a model of its own; use --mitigate reduction")
    src = Path(source)
    weights_file = src / "model.safetensors" if src.is_dir() else src
    meta = read_dlsec_metadata(weights_file)
    if not meta.get("arch"):
        raise UsageError(f"{weights_file}: its architecture is not recorded; save it with dlsec train")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    member_models = [m for _, m in result.members]
    ensemble = Ensemble(
        member=str(meta["arch"]),
        member_kwargs=dict(meta.get("arch_kwargs") or {}),
        n=len(member_models),
        aggregate="vote",
        weights=[w for w, _ in result.members],
    )
    for slot, fitted in zip(ensemble.members, member_models, strict=True):
        slot.load_state_dict(fitted.module.state_dict())
    spec = member_models[0].spec
    kwargs = {
        "member": str(meta["arch"]),
        "member_kwargs": dict(meta.get("arch_kwargs") or {}),
        "n": len(member_models),
        "aggregate": "vote",
        "weights": list(ensemble.weights),
    }
    path = save_safetensors_model(
        ensemble, spec, out / "model.safetensors", arch="ensemble", arch_kwargs=kwargs
    )
    card = TrainingCard.find(src)
    fields = dict(card) if card is not None else {}
    fields.update(
        architecture="ensemble",
        arch_kwargs=kwargs,
        recipe="fair-reduction",
        fairness_mitigation=result.to_dict(),
        weights={"file": path.name, "sha256": sha256_file(path)},
        parent_weights=(card.get("weights") if card is not None else None),
    )
    TrainingCard(fields, source=out / CARD_FILE).write(out / CARD_FILE)
    return out
