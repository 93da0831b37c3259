"""The training-set audit: score every row, flag the poisoned ones, name the target class.

Signals (each also available alone in :mod:`dlsec.defend._signals`): training dynamics
(early-learning loss per row), spectral signatures and activation clustering per class on the
penultimate representation, per-class outlier scores, and cross-validated confident learning.
Two of them decide:

* **Label noise** (flipped labels): confident learning on out-of-fold probabilities of
  ``folds`` models, each trained without the rows it scores, plus rows whose out-of-fold
  probability of their label is below ``noise_threshold``.
* **Backdoors**: a backdoor's rows carry their source class's content and are learned late
  within their (target) label, until the trigger is learned. Per class, the rows learned
  latest (early-learning loss above the class's ``exclude_quantile``) are held out together
  and a model trained without them re-classifies them. Held out together, the poison no
  longer teaches the trigger, so poisoned rows are confidently assigned their source class.
  A class whose held-out rows are rejected far more often than other classes' (robust
  anomaly index above ``class_threshold``) is a suspected target; it is confirmed by a Neural
  Cleanse scan of the model trained on all rows (the class is reached by an abnormally small
  trigger). A second model, trained without the confirmed class's held-out rows, rejects the
  poison; a third, trained without only the rejected rows (so the class's clean rows are
  back), gives the final verdict on them. Rows of the class whose prediction leaves it once
  a trigger is wiped (its pixels set to the other classes' median) are flagged too: the
  trigger Neural Cleanse reconstructs, and the one the flagged rows share (the pixels where
  their mean difference from their source classes' means exceeds 0.3).

The input is never modified; :meth:`AuditReport.clean` returns a copy without flagged rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlsec.attacks.poisoning import penultimate, train_victim
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.defend._signals import (
    activation_clustering_scores,
    confident_learning,
    early_learning_scores,
    outlier_scores,
    robust_z,
    spectral_signature_scores,
)
from dlsec.errors import UsageError

__all__ = ["AuditReport", "DataAuditor"]

Progress = Callable[[int, int, dict[str, float]], None]
Runner = Callable[[Callable[..., Any], tuple[Any, ...], Sequence[tuple[Any, ...]]], Iterator[tuple[int, Any]]]


@dataclass(frozen=True)
class AuditReport:
    """What the audit found.

    Attributes:
        scores: one suspicion score per row in [0, 1] (higher: more suspicious): the largest of
            the label-noise and backdoor verdicts' ``1 - p(label)``.
        flagged: sorted indices of the rows judged poisoned.
        signals: per-row scores of every signal, by name.
        suspected_target: the backdoor's target class, or ``None``.
        reasons: per flagged row, ``label-noise`` and/or ``backdoor``.
        classes: per-class statistics (held-out rejection rate, anomaly index, clustering).
        trigger_regions: per backdoor row, where its trigger sits: ``[row_min, row_max,
            col_min, col_max]`` of the pixels that send it to the target (images).
    """

    scores: np.ndarray
    flagged: np.ndarray
    signals: dict[str, np.ndarray]
    suspected_target: int | None
    reasons: dict[int, list[str]]
    classes: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    trigger_regions: dict[int, list[int]] = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        out = np.zeros(len(self.scores), dtype=bool)
        out[self.flagged] = True
        return out

    def clean(self, data: Dataset) -> Dataset:
        """A copy of ``data`` without the flagged rows."""
        keep = np.flatnonzero(~self.mask())
        return data.subset(keep, name=f"{data.name}[audited]")

    def to_dict(self, *, with_scores: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": len(self.scores),
            "flagged": self.flagged.tolist(),
            "flagged_count": len(self.flagged),
            "suspected_target": self.suspected_target,
            "reasons": {str(k): v for k, v in self.reasons.items()},
            "classes": self.classes,
            "params": self.params,
            "trigger_regions": {str(k): v for k, v in self.trigger_regions.items()},
        }
        if with_scores:
            out["scores"] = [round(float(s), 6) for s in self.scores]
            out["signals"] = {k: [round(float(v), 6) for v in arr] for k, arr in self.signals.items()}
        return out


class DataAuditor:
    """Audit a labelled training set for poisoning, backdoors and label noise.

    Args:
        model: optional white-box model trained on the data; its penultimate representation
            feeds the representation signals and its architecture (re-initialised) is the one
            the audit trains. Default: the data's architecture (:func:`train_victim`'s).
        epochs: epochs of each model the audit trains; the training-dynamics run records
            every row's loss after each epoch and its first ``early_epochs`` make the
            early-learning score.
        folds: cross-validation folds of confident learning.
        exclude_quantile: per class, rows whose early-learning loss is above this quantile are
            held out and re-classified.
        class_threshold: robust anomaly index above which a class's rejection rate makes it a
            suspected backdoor target.
        confirm_fraction: for models the trigger scan cannot take (not images): fraction of a
            suspected class's held-out rows a second model must reject with confidence
            (``p(label) < 0.01``) to confirm a backdoor. Image models are confirmed by a
            Neural Cleanse scan instead.
        noise_threshold: besides confident learning's pruning, rows whose out-of-fold
            probability of their label is below this are label issues (0 turns it off).
        seed: seeds every model and split.
        device: where models train.
        runner: trains the cross-validation folds side by side (``runner(fn, common, items)``
            yields ``(index, fn(*common, *item))`` as each finishes; the assessment's Ray
            engine's ``starmap`` is one); default one after the other here, with the same models.

    Example:
        >>> from dlsec.core import load_dataset
        >>> from dlsec.attacks.backdoor import BadNets
        >>> train, _ = load_dataset("builtin:digits").split()
        >>> poisoned = BadNets(rate=0.1, target=0).poison(train)
        >>> report = DataAuditor().audit(poisoned.data)           # doctest: +SKIP
        >>> report.suspected_target                                # doctest: +SKIP
        0
    """

    def __init__(
        self,
        *,
        model: WhiteBoxModel | None = None,
        epochs: int = 30,
        early_epochs: int = 3,
        folds: int = 4,
        exclude_quantile: float = 0.15,
        class_threshold: float = 2.5,
        confirm_fraction: float = 0.5,
        noise_threshold: float = 0.1,
        seed: int = 0,
        device: torch.device | str | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.runner = runner
        self.model = model
        self.epochs = epochs
        self.early_epochs = early_epochs
        self.folds = folds
        self.exclude_quantile = exclude_quantile
        self.class_threshold = class_threshold
        self.confirm_fraction = confirm_fraction
        self.noise_threshold = noise_threshold
        self.seed = seed
        self.device = device

    def get_params(self) -> dict[str, Any]:
        return {
            "model": None if self.model is None else "given",
            "epochs": self.epochs,
            "early_epochs": self.early_epochs,
            "folds": self.folds,
            "exclude_quantile": self.exclude_quantile,
            "class_threshold": self.class_threshold,
            "confirm_fraction": self.confirm_fraction,
            "noise_threshold": self.noise_threshold,
            "seed": self.seed,
        }

    def _check(self, data: Dataset) -> None:
        for name in ("epochs", "early_epochs", "folds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.early_epochs > self.epochs:
            raise UsageError(f"early_epochs ({self.early_epochs}) cannot exceed epochs ({self.epochs})")
        if self.folds < 2:
            raise UsageError(f"folds must be at least 2 (cross-validation), got {self.folds}")
        if not 0.0 < self.exclude_quantile < 1.0:
            raise UsageError(
                f"exclude_quantile must be strictly between 0 and 1, got {self.exclude_quantile}"
            )
        if not self.class_threshold > 0:
            raise UsageError(f"class_threshold must be positive, got {self.class_threshold}")
        if not 0.0 < self.confirm_fraction <= 1.0:
            raise UsageError(f"confirm_fraction must be in (0, 1], got {self.confirm_fraction}")
        if not 0.0 <= self.noise_threshold < 1.0:
            raise UsageError(f"noise_threshold must be in [0, 1), got {self.noise_threshold}")
        counts = np.bincount(data.y, minlength=data.spec.num_classes)
        present = counts[counts > 0]
        if len(present) < 2:
            raise UsageError(f"{data.name}: the audit needs at least two classes with rows")
        if present.min() < self.folds:
            raise UsageError(
                f"{data.name}: the smallest class has {int(present.min())} rows, fewer than "
                f"folds={self.folds}; lower --folds or add rows"
            )
        if self.model is not None and self.model.spec.shape != data.spec.shape:
            raise UsageError(
                f"the model expects inputs of shape {self.model.spec.shape}, the data has {data.spec.shape}"
            )

    def _train(
        self, data: Dataset, *, seed: int, epochs: int, progress: Progress | None = None
    ) -> WhiteBoxModel:
        module = self.model.module if self.model is not None else None
        return train_victim(
            data, epochs=epochs, seed=seed, device=self.device, progress=progress, module=module
        )

    def _fold_probs(
        self, data: Dataset, train_idx: np.ndarray, test_idx: np.ndarray, seed: int
    ) -> np.ndarray:
        """One cross-validation fold: a model trained without ``test_idx``, its probabilities there."""
        fold_model = self._train(data.subset(train_idx), seed=seed, epochs=self.epochs)
        return fold_model.probs(data.x[test_idx]).cpu().double().numpy()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runner": None}  # shipped to the runner's workers without it

    def audit(self, data: Dataset, *, progress: Progress | None = None) -> AuditReport:
        """Score every row of ``data`` and flag the suspicious ones (``data`` is not modified)."""
        self._check(data)
        n, k = len(data), data.spec.num_classes
        y = data.y
        total = 3 + self.folds
        done = 0

        def tick(what: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, {})

        # 1. Training dynamics: per-row loss after every epoch of a model trained on all rows.
        losses: list[np.ndarray] = []
        holder: dict[str, WhiteBoxModel] = {}

        def record(epoch: int, epochs: int, stats: dict[str, float]) -> None:
            model = holder.get("model")
            if model is None:
                return
            logits = model.logits(data.x).cpu()
            losses.append(
                torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none").numpy()
            )

        dyn = self._prepare_dynamics(data, holder)
        _fit_recording(dyn, data, self.epochs, self.seed, record)
        loss_hist = np.stack(losses)
        early = np.log(loss_hist[: self.early_epochs].mean(axis=0) + 1e-8)
        tick("dynamics")

        # 2. Representation signals.
        rep_model = self.model if self.model is not None else dyn
        feats = penultimate(rep_model, data.x)
        ac_scores, ac_stats = activation_clustering_scores(feats, y, seed=self.seed)
        signals: dict[str, np.ndarray] = {
            "early_learning": early_learning_scores(loss_hist, y, early_epochs=self.early_epochs),
            "spectral_signature": spectral_signature_scores(feats, y),
            "activation_clustering": ac_scores,
            "outlier": outlier_scores(feats, y),
        }

        # 3. Confident learning on out-of-fold probabilities.
        from sklearn.model_selection import StratifiedKFold

        oof = np.zeros((n, k))
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        splits = list(splitter.split(np.zeros(n), y))
        items = [
            (train_idx, test_idx, self.seed + 1 + fold) for fold, (train_idx, test_idx) in enumerate(splits)
        ]
        if self.runner is None:
            folds: Iterator[tuple[int, np.ndarray]] = (
                (i, self._fold_probs(data, *item)) for i, item in enumerate(items)
            )
        else:
            folds = self.runner(self._fold_probs, (data,), items)
        for fold, probs in folds:
            oof[splits[fold][1]] = probs
            tick("fold")
        cl_issues, cl_scores = confident_learning(oof, y)
        cl_issues |= cl_scores > 1.0 - self.noise_threshold
        signals["label_noise"] = cl_scores

        # 4. Held-out re-classification of each class's late-learned rows.
        held = np.zeros(n, dtype=bool)
        for c in range(k):
            idx = np.flatnonzero(y == c)
            if len(idx) >= 3:
                held[idx] = early[idx] > np.quantile(early[idx], self.exclude_quantile)
        m1 = self._train(data.subset(np.flatnonzero(~held)), seed=self.seed + 101, epochs=self.epochs)
        p1 = m1.probs(data.x).cpu().double().numpy()[np.arange(n), y]
        tick("held-out")
        reject = np.full(k, np.nan)
        for c in range(k):
            rows = held & (y == c)
            if rows.sum() >= 3:
                reject[c] = float((p1[rows] < 0.01).mean())
        valid = ~np.isnan(reject)
        anomaly = np.full(k, np.nan)
        if valid.sum() >= 3:
            anomaly[valid] = robust_z(reject[valid])
        suspects = [c for c in range(k) if valid[c] and anomaly[c] > self.class_threshold]
        backdoor = np.zeros(n)
        bd_flag = np.zeros(n, dtype=bool)
        confirmed: list[int] = []
        confirm_rate: dict[int, float] = {}
        trigger_index: np.ndarray | None = None
        nc_masks: np.ndarray | None = None
        removal = np.zeros(n)
        if suspects and _scannable(dyn):
            # A backdoor's target is reached by an abnormally small trigger: Neural Cleanse on the
            # model trained on all rows confirms (or clears) each suspected class.
            from dlsec.defend.scan import NeuralCleanse

            scan = NeuralCleanse(seed=self.seed).scan(dyn, data)
            trigger_index = scan.anomaly_index
            nc_masks = scan.masks
            confirmed = [c for c in suspects if scan.anomaly_index[c] > scan.threshold]
            # Trigger removal: the reconstructed mask's pixels replaced by the other classes'
            # median; a row whose prediction then leaves its class carried the trigger.
            for c in confirmed:
                rows = np.flatnonzero(y == c)
                fill = np.median(data.x[y != c], axis=0)
                mask = scan.masks[c][None, None] if data.x.ndim == 4 else scan.masks[c]
                wiped = ((1.0 - mask) * data.x[rows] + mask * fill).astype(np.float32)
                removal[rows] = 1.0 - dyn.probs(wiped).cpu().double().numpy()[:, c]
            signals["trigger_removal"] = removal
        elif suspects:
            exclude = held & np.isin(y, suspects)
            m2 = self._train(data.subset(np.flatnonzero(~exclude)), seed=self.seed + 202, epochs=self.epochs)
            p2 = m2.probs(data.x).cpu().double().numpy()[np.arange(n), y]
            for c in suspects:
                confirm_rate[c] = float((p2[exclude & (y == c)] < 0.01).mean())
            confirmed = [c for c in suspects if confirm_rate[c] >= self.confirm_fraction]
        if confirmed:
            # Re-classify the confirmed classes' held-out rows without them, then once more
            # without only the rows rejected: the clean rows of the class are back in training,
            # the poison (and so the trigger) is not.
            exclude = held & np.isin(y, confirmed)
            m2 = self._train(data.subset(np.flatnonzero(~exclude)), seed=self.seed + 202, epochs=self.epochs)
            p2 = m2.probs(data.x).cpu().double().numpy()[np.arange(n), y]
            rejected = exclude & (p2 < 0.5)
            m3 = self._train(data.subset(np.flatnonzero(~rejected)), seed=self.seed + 303, epochs=self.epochs)
            p3 = m3.probs(data.x).cpu().double().numpy()[np.arange(n), y]
            backdoor[rejected] = 1.0 - p3[rejected]
            bd_flag = rejected & (p3 < 0.5)
            probs3 = m3.probs(data.x).cpu().double().numpy()
            for c in confirmed:
                removal = np.maximum(removal, self._residual_removal(dyn, data, c, bd_flag, probs3))
            signals["trigger_removal"] = removal
            backdoor = np.maximum(backdoor, removal)
            bd_flag |= removal > 0.5
            for c in confirmed:
                confirm_rate.setdefault(c, float(bd_flag[y == c].sum() / max(int((y == c).sum()), 1)))
        tick("confirm")
        signals["backdoor"] = backdoor
        suspected_target = None
        if confirmed:
            suspected_target = max(confirmed, key=lambda c: int(bd_flag[y == c].sum()))

        flagged_mask = cl_issues | bd_flag
        reasons: dict[int, list[str]] = {}
        for i in np.flatnonzero(flagged_mask):
            reasons[int(i)] = [r for r, m in (("label-noise", cl_issues[i]), ("backdoor", bd_flag[i])) if m]
        scores = np.maximum(np.where(cl_issues, cl_scores, np.minimum(cl_scores, 0.5)), backdoor)
        classes = {
            str(c): {
                "rows": int((y == c).sum()),
                "held_out": int((held & (y == c)).sum()),
                "held_out_rejected": None if np.isnan(reject[c]) else reject[c],
                "anomaly_index": None if np.isnan(anomaly[c]) else float(anomaly[c]),
                "confirmation_rejected": confirm_rate.get(c),
                "trigger_anomaly_index": None if trigger_index is None else float(trigger_index[c]),
                "label_issues": int((cl_issues & (y == c)).sum()),
                **{f"ac_{key}": v for key, v in ac_stats.get(c, {}).items()},
            }
            for c in range(k)
        }
        # Each backdoor row's trigger: the region that sends it to the target in the model
        # trained on all rows (occlusion, as dlsec.defend.localise), as a bounding box.
        regions: dict[int, list[int]] = {}
        bd_rows = np.flatnonzero(bd_flag)
        if suspected_target is not None and len(bd_rows) and data.spec.kind == "image" and _scannable(dyn):
            from dlsec.defend.localise import localise_trigger

            # as many pixels as the trigger Neural Cleanse reconstructed (its mask's L1 norm)
            pixels = max(1, round(float(nc_masks[suspected_target].sum()))) if nc_masks is not None else None
            found = localise_trigger(dyn, data.x[bd_rows], suspected_target, k=pixels)
            for row, box in zip(bd_rows, found.boxes(), strict=True):
                if box is not None:
                    regions[int(row)] = box
        return AuditReport(
            scores=scores,
            flagged=np.flatnonzero(flagged_mask),
            signals=signals,
            suspected_target=suspected_target,
            reasons=reasons,
            classes=classes,
            params=self.get_params(),
            trigger_regions=regions,
        )

    @staticmethod
    def _residual_removal(
        model: WhiteBoxModel, data: Dataset, c: int, flagged: np.ndarray, probs: np.ndarray
    ) -> np.ndarray:
        """Wipe the trigger the flagged rows share, then see which rows of class ``c`` leave it.

        Each flagged row of class ``c`` minus the mean of its source class (the class the
        re-classifying model gives it) leaves the trigger plus content noise; averaged, the
        noise cancels and the pixels where the mean residual exceeds 0.3 are the trigger. They
        are set to the other classes' median in every row of class ``c``.
        """
        out = np.zeros(len(data))
        rows = np.flatnonzero(flagged & (data.y == c))
        if len(rows) < 5:
            return out
        source = probs[rows].argmax(axis=1)
        means = {s: data.x[(data.y == s) & ~flagged].mean(axis=0) for s in np.unique(source) if s != c}
        residual = [data.x[r] - means[s] for r, s in zip(rows, source, strict=True) if s in means]
        if not residual:
            return out
        mask = (np.abs(np.mean(residual, axis=0)) > 0.3).astype(np.float32)
        if not mask.any():
            return out
        members = np.flatnonzero(data.y == c)
        fill = np.median(data.x[data.y != c], axis=0)
        wiped = ((1.0 - mask) * data.x[members] + mask * fill).astype(np.float32)
        out[members] = 1.0 - model.probs(wiped).cpu().double().numpy()[:, c]
        return out

    def _prepare_dynamics(self, data: Dataset, holder: dict[str, WhiteBoxModel]) -> WhiteBoxModel:
        from dlsec.attacks.poisoning import fresh_copy, victim_architecture
        from dlsec.core.arch import build_architecture
        from dlsec.core.loop import fit_normalisation
        from dlsec.core.model import default_device

        target = torch.device(self.device) if self.device is not None else default_device()
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            torch.manual_seed(self.seed)
            if self.model is not None:
                module = fresh_copy(self.model.module)
            else:
                arch, kwargs = victim_architecture(data)
                module = build_architecture(arch, kwargs)
        model = WhiteBoxModel(module.to(target), fit_normalisation(data), device=target)
        holder["model"] = model
        return model


def _fit_recording(model: WhiteBoxModel, data: Dataset, epochs: int, seed: int, record: Progress) -> None:
    from dlsec.core.loop import fit
    from dlsec.core.trainconfig import TrainConfig

    fit(model, data, TrainConfig(epochs=epochs, seed=seed), progress=record)


def _scannable(model: WhiteBoxModel) -> bool:
    return model.spec.kind == "image" and len(model.spec.shape) == 3 and model.spec.num_classes >= 3
