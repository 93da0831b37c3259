"""Erasure ("right to be forgotten"): SISA training, unlearning, verification, a signed record.

Train with SISA (``dlsec train --recipe sisa``, :func:`train_sisa_and_save`): an ensemble of
shard models, each trained slice by slice with a checkpoint after every slice, saved as one
``ensemble`` safetensors file beside its training card, with the checkpoints and the row map in
``sisa/``. :func:`erase` then removes rows from a trained model by one of three methods:

* ``sisa``: retrain only the shards that held an erased row, each from its checkpoint before
  the first slice that held one (Bourtoule et al. 2021). The result equals a SISA model trained
  from scratch without those rows.
* ``exact``: drop the rows and retrain from scratch (the reference; any dlsec-trained model).
* ``approximate``: NegGrad+ (Kurmanji et al. 2023) for models not trained with SISA: fine-tune
  on the retained rows with a hinged gradient ascent on the erased ones. Cheap, not exact.

Every erasure is verified with LiRA (:mod:`dlsec.attacks.privacy`) on the erased rows against
fresh non-members: the bootstrap interval of the AUC must contain 0.5, else the erasure fails
(:class:`ErasureVerificationError`, nothing written, the failure recorded). A verified erasure
is written atomically, optionally signed, registered as a new version whose lineage names the
old one, and recorded in the signed audit log (the erased rows' hashes, never the rows; the old
and new digests; the method; the verification).

Example:
    >>> from dlsec.comply.erasure import erase
    >>> result = erase("runs/sisa", ids=[3, 17], out="runs/sisa-erased",
    ...                registry=Registry.open(), name="digits")     # doctest: +SKIP
    >>> result.verification.auc_ci, result.record_index               # doctest: +SKIP
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlsec.comply._sisa import SISA, SISA_DIR, SisaState, assign, row_hashes, slice_epochs, train_shards
from dlsec.comply._unlearn import NegGradPlus, retrain_exact, trained_config
from dlsec.comply._verify import ReferencePlan, Verification, lira_verify
from dlsec.core.card import CARD_FILE, TrainingCard
from dlsec.core.data import Dataset, load_dataset
from dlsec.core.model import WhiteBoxModel, default_device
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import DataError, ModelLoadError, SecurityFinding, UsageError

if TYPE_CHECKING:
    from dlsec.release import SigningKeys
    from dlsec.store import Registry
    from dlsec.train import TrainedModel, TrainOptions

__all__ = [
    "METHODS",
    "SISA",
    "ErasureResult",
    "ErasureVerificationError",
    "Verification",
    "erase",
    "erasure_key",
    "erasure_targets",
    "row_hashes",
    "row_hmacs",
    "train_sisa",
    "train_sisa_and_save",
    "verify_erasure",
]

METHODS = ("sisa", "exact", "approximate")
RECORD_ACTION = "erasure.record"
FAILED_ACTION = "erasure.failed"
WEIGHTS = "model.safetensors"

#: ``progress(stage, done, total)``: stages ``retrain``, ``references``.
Progress = Callable[[str, int, int], None]


class ErasureVerificationError(SecurityFinding):
    """The erased rows are still told apart from fresh rows by membership inference (exit 1)."""


# ------------------------------------------------------------------------------- training


@dataclass
class SisaTrained:
    """A SISA ensemble as :func:`train_sisa` returns it."""

    model: WhiteBoxModel
    state: SisaState
    history: list[dict[str, float]]


def train_sisa(
    train_set: Dataset,
    *,
    recipe: SISA | None = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> SisaTrained:
    """Train a SISA ensemble on ``train_set`` (every row is a training row).

    The members are ``arch`` (default: the data's architecture) trained with the standard
    recipe; ``config.epochs`` is each shard's total passes over its rows (spread over the
    slices, :func:`~dlsec.comply._sisa.slice_epochs`). Inputs are not normalised by statistics
    of the data (they would tie every shard to every row).

    Example:
        >>> trained = train_sisa(train_set, recipe=SISA(shards=5),
        ...                      config=TrainConfig(epochs=30))       # doctest: +SKIP
        >>> trained.model.predict(x)                                  # doctest: +SKIP
    """
    from dlsec.core.loop import resolve_architecture
    from dlsec.core.recipe import Standard

    recipe = recipe or SISA()
    config = config or TrainConfig()
    if config.early_stopping:
        raise UsageError("sisa does not use early stopping (a validation split would span every shard)")
    target = torch.device(device) if device is not None else default_device()
    member, kwargs = resolve_architecture(Standard(), train_set.spec, arch, arch_kwargs, config)
    if member == "ensemble":
        raise UsageError("sisa members cannot themselves be ensembles; pass --arch mlp or cnn")
    hashes = row_hashes(train_set)
    state = SisaState(
        shards=recipe.shards,
        slices=recipe.slices,
        aggregate=recipe.aggregate,
        seed=config.seed,
        member=member,
        member_kwargs=kwargs,
        config=config,
        epochs_per_slice=slice_epochs(config.epochs, recipe.slices),
        rows={h: assign(h, seed=config.seed, shards=recipe.shards, slices=recipe.slices) for h in hashes},
    )
    spec = train_set.spec
    histories = train_shards(
        state,
        train_set,
        hashes,
        spec_model=lambda m: WhiteBoxModel(m, spec, device=target),
        restart=dict.fromkeys(range(state.shards), 0),
        device=target,
        progress=progress,
    )
    model = WhiteBoxModel(state.ensemble(target), spec, device=target)
    return SisaTrained(model, state, [h for k in sorted(histories) for h in histories[k]])


def _sisa_summary(state: SisaState) -> dict[str, Any]:
    sizes = [len(state.shard_rows(k)) for k in range(state.shards)]
    return {
        "shards": state.shards,
        "slices": state.slices,
        "aggregate": state.aggregate,
        "epochs_per_slice": state.epochs_per_slice,
        "shard_rows": sizes,
        "erased_rows": len(state.erased),
        "state": f"{SISA_DIR}/state.json",
    }


def _trained_model(
    model: WhiteBoxModel,
    state: SisaState,
    dataset: dict[str, Any],
    metrics: dict[str, float],
    history: list[dict[str, float]],
) -> TrainedModel:
    from dlsec.train import TrainedModel

    return TrainedModel(
        model,
        "ensemble",
        {
            "member": state.member,
            "member_kwargs": state.member_kwargs,
            "n": state.shards,
            "aggregate": state.aggregate,
        },
        state.config,
        dataset,
        metrics,
        history,
        recipe="sisa",
        recipe_params={"shards": state.shards, "slices": state.slices, "aggregate": state.aggregate},
        training={"sisa": _sisa_summary(state)},
    )


def train_sisa_and_save(
    options: TrainOptions,
    out: str | Path,
    *,
    force: bool = False,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> tuple[TrainedModel, Path, Path]:
    """What ``dlsec train --recipe sisa`` runs: split, train with SISA, write the model folder.

    ``OUT/model.safetensors`` (architecture ``ensemble``, loadable like any dlsec model), its
    card ``OUT/model.json`` and ``OUT/sisa/`` (the row map and one checkpoint file per shard).
    """
    from dlsec.core.evaluation import evaluate

    if not isinstance(options.recipe, SISA):
        raise UsageError(f"train_sisa_and_save trains the sisa recipe, not {options.recipe.name!r}")
    out = Path(out)
    if (out / WEIGHTS).exists() and not force:
        raise UsageError(f"{out / WEIGHTS} exists; pass --force to replace it or pick another --out")
    data = load_dataset(options.data, label_column=options.label_column)
    train_set, test_set = data.split(test_size=options.test_size, seed=options.split_seed)
    trained = train_sisa(
        train_set,
        recipe=options.recipe,
        arch=options.arch,
        arch_kwargs=options.arch_kwargs,
        config=options.config,
        device=device,
        progress=progress,
    )
    dataset = {
        "name": data.name,
        "ref": options.data,
        "label_column": options.label_column,
        "sha256": data.sha256,
        "rows": len(data),
        "split": {
            "test_size": options.test_size,
            "seed": options.split_seed,
            "train_rows": len(train_set),
            "test_rows": len(test_set),
        },
    }
    metrics = {
        "clean_accuracy": evaluate(trained.model, test_set).accuracy,
        "train_accuracy": evaluate(trained.model, train_set).accuracy,
    }
    result = _trained_model(trained.model, trained.state, dataset, metrics, trained.history)
    if force and (out / SISA_DIR).exists():
        shutil.rmtree(out / SISA_DIR)
    trained.state.save(out)
    weights, card = result.save(out)
    return result, weights, card


# ------------------------------------------------------------------------------- erasure


@dataclass
class _Source:
    """A trained model folder and the data it was trained on, split as its card says."""

    folder: Path
    card: TrainingCard
    model: WhiteBoxModel
    data: Dataset
    hashes: list[str]
    train_index: np.ndarray  # rows of ``data`` that are training rows now
    test_index: np.ndarray
    val_index: np.ndarray | None
    sisa: SisaState | None

    def rows(self, index: np.ndarray, what: str) -> Dataset:
        return self.data.subset(np.asarray(index, dtype=np.int64), name=f"{self.data.name}[{what}]")


def _model_folder(model: str | Path) -> Path:
    path = Path(model)
    if path.is_file():
        path = path.parent
    if not (path / WEIGHTS).is_file():
        raise UsageError(f"{model}: no {WEIGHTS} there; give the folder `dlsec train --out` wrote")
    return path


def _load_source(model: str | Path, data_ref: str | None, device: torch.device) -> _Source:
    from dlsec.core.io import load_safetensors_model

    folder = _model_folder(model)
    card = TrainingCard.find(folder)
    if card is None:
        raise UsageError(f"{folder}: no training card ({CARD_FILE}); erasure needs to know the training rows")
    ds = card.dataset
    ref = data_ref or ds.get("ref") or ds.get("name")
    if not ref:
        raise UsageError(f"{card.source}: the card names no dataset; pass --data")
    data = load_dataset(str(ref), label_column=ds.get("label_column"))
    if ds.get("sha256") not in (None, data.sha256):
        raise DataError(
            f"{ref} is not the data the model was trained on (its SHA-256 differs from the card's); "
            "pass the training dataset with --data"
        )
    split = card.split
    if "test_size" not in split or "seed" not in split:
        raise UsageError(f"{card.source}: the card records no train/test split")
    from dlsec.assess.privacy import split_indices

    train_idx = split_indices(data.y, data.spec.num_classes, test_size=split["test_size"], seed=split["seed"])
    test_idx = np.setdiff1d(np.arange(len(data)), train_idx)
    hashes = row_hashes(data)
    sisa = SisaState.load(folder) if card.recipe == "sisa" else None
    loaded = load_safetensors_model(folder / WEIGHTS, device=device)
    if not isinstance(loaded, WhiteBoxModel):
        raise ModelLoadError(f"{folder / WEIGHTS}: not a white-box model")
    val_idx = None
    erased = set(sisa.erased if sisa is not None else (card.get("erasure") or {}).get("erased_sha256", []))
    if sisa is not None:
        train_idx = train_idx[np.array([hashes[i] in sisa.rows for i in train_idx], dtype=bool)]
    elif split.get("validation_rows"):
        config = trained_config(card)
        keep = split_indices(
            data.y[train_idx],
            data.spec.num_classes,
            test_size=config.val_size,
            seed=split.get("validation_seed", 0),
        )
        val_idx = np.setdiff1d(train_idx, train_idx[keep])
    if erased:
        train_idx = train_idx[np.array([hashes[i] not in erased for i in train_idx], dtype=bool)]
        if val_idx is not None:
            val_idx = val_idx[np.array([hashes[i] not in erased for i in val_idx], dtype=bool)]
    return _Source(folder, card, loaded, data, hashes, train_idx, test_idx, val_idx, sisa)


def erasure_targets(
    model: str | Path,
    *,
    rows: str | Path | Dataset | None = None,
    ids: Sequence[int] | None = None,
    data: str | None = None,
) -> list[str]:
    """The hashes of the rows to erase, each checked to be a training row of ``model``.

    ``rows`` is a dataset file (``.npz`` with ``x``/``y``, ``.csv``) or a :class:`Dataset` of the
    rows themselves; ``ids`` are row indices into the training dataset the card names.

    Raises:
        DataError: a row that is not (or no longer) in the model's training set.
    """
    return _targets(_load_source(model, data, torch.device("cpu")), rows, ids)


def _targets(src: _Source, rows: str | Path | Dataset | None, ids: Sequence[int] | None) -> list[str]:
    if (rows is None) == (ids is None):
        raise UsageError("name the rows to erase: --rows FILE or --ids N,N,... (one of them)")
    training = {src.hashes[i] for i in src.train_index}
    if ids is not None:
        index = np.asarray(list(ids), dtype=np.int64)
        if index.size == 0:
            raise UsageError("--ids is empty: give the row indices to erase")
        bad = index[(index < 0) | (index >= len(src.data))]
        if bad.size:
            raise DataError(f"row {int(bad[0])} is outside the {len(src.data)} rows of {src.data.name}")
        wanted = [src.hashes[i] for i in index]
        where = f"rows {', '.join(str(int(i)) for i in index[:5])}{'...' if index.size > 5 else ''}"
    else:
        given = rows if isinstance(rows, Dataset) else load_dataset(str(rows))
        if given.x.shape[1:] != src.data.x.shape[1:]:
            raise DataError(
                f"{given.name}: rows have shape {given.x.shape[1:]}, "
                f"the training data has {src.data.x.shape[1:]}"
            )
        wanted = row_hashes(given)
        where = f"rows of {given.name}"
    missing = [h for h in wanted if h not in training]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(wanted)} {where} are not in the model's training set "
            f"({src.data.name}, {len(src.train_index)} training rows; test rows and rows already erased "
            "are not); nothing was erased"
        )
    return sorted(set(wanted))


@dataclass
class ErasureResult:
    """What :func:`erase` did.

    Attributes:
        out: the new model's folder.
        method: ``sisa``, ``exact`` or ``approximate``.
        erased: how many rows were erased (distinct row hashes).
        shards_retrained: SISA: the shards retrained, each with the slice it restarted from.
        seconds: the time of the unlearning itself (not of verification or registration).
        verification: the LiRA verification (``None`` with ``verify=False``).
        metrics: the new model's clean accuracy (test split) and train accuracy (retained rows).
        record: the erasure record written to the audit log (``None`` without a registry).
        record_index: its audit-log index.
        version: the new registry version (``NAME@N``), ``parent`` the old one.
    """

    out: Path
    method: str
    erased: int
    row_sha256: list[str]
    old_digest: str
    new_digest: str
    seconds: float
    metrics: dict[str, float]
    verification: Verification | None
    shards_retrained: dict[int, int] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    record_index: int | None = None
    version: str | None = None
    parent: str | None = None
    signed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "method": self.method,
            "erased": self.erased,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "seconds": self.seconds,
            "metrics": self.metrics,
            "shards_retrained": {str(k): v for k, v in self.shards_retrained.items()},
            "verification": self.verification.to_dict() if self.verification is not None else None,
            "record_index": self.record_index,
            "version": self.version,
            "parent": self.parent,
            "signed": self.signed,
        }


def _unlearn_sisa(
    src: _Source, erased: list[str], *, exact: bool, device: torch.device, progress: Progress | None
) -> tuple[WhiteBoxModel, SisaState, dict[int, int], list[dict[str, float]]]:
    assert src.sisa is not None
    state = copy.copy(src.sisa)
    state.rows = {h: v for h, v in src.sisa.rows.items() if h not in set(erased)}
    state.erased = sorted(set(src.sisa.erased) | set(erased))
    state.checkpoints = [list(c) for c in src.sisa.checkpoints]
    restart: dict[int, int] = {}
    for h in erased:
        k, j = src.sisa.rows[h]
        restart[k] = min(restart.get(k, j), j)
    if exact:
        restart = dict.fromkeys(range(state.shards), 0)
    spec = src.model.spec
    train_rows = src.rows(src.train_index, "train")
    hashes = [src.hashes[i] for i in src.train_index]
    histories = train_shards(
        state,
        train_rows,
        hashes,
        spec_model=lambda m: WhiteBoxModel(m, spec, device=device),
        restart=restart,
        device=device,
        progress=(lambda d, t, s: progress("retrain", d, t)) if progress is not None else None,
    )
    model = WhiteBoxModel(state.ensemble(device), spec, device=device)
    return model, state, restart, [h for k in sorted(histories) for h in histories[k]]


def _plan(src: _Source, model: WhiteBoxModel, state: SisaState | None) -> ReferencePlan:
    if state is not None:
        return ReferencePlan(
            arch=state.member,
            arch_kwargs=state.member_kwargs,
            config=state.config,
            spec=model.spec,
            shards=state.shards,
            sisa_seed=state.seed,
            aggregate=state.aggregate,
        )
    if not src.card.architecture:
        raise ModelLoadError(f"{src.card.source}: the card names no architecture")
    return ReferencePlan(
        arch=src.card.architecture,
        arch_kwargs=src.card.arch_kwargs,
        config=trained_config(src.card),
        spec=model.spec,
    )


def _stage_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


ERASURE_KEY = "erasure-hmac.key"


def erasure_key(registry: Registry | None = None) -> bytes:
    """The secret that keys the row digests of erasure records (created on first use, mode 0600).

    It lives beside the registry's database (or under the dlsec home without a registry), never
    in the audit log: whoever holds it can check that a given row was erased; a reader of the
    log alone cannot test guesses of a row against the record.
    """
    import os
    import secrets

    from dlsec.core.home import home_dir

    root = Path(registry.db.root if registry is not None else home_dir() / "registry")
    path = root / ERASURE_KEY
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{ERASURE_KEY}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # whole, and never over a key another process made first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) != 32:
        raise DataError(f"{path}: not an erasure key (expected 32 bytes); restore it from a backup")
    return key


def row_hmacs(row_sha256: Sequence[str], registry: Registry | None = None) -> list[str]:
    """The keyed digests an erasure record holds for rows with these SHA-256 hashes."""
    import hmac

    key = erasure_key(registry)
    return [hmac.new(key, bytes.fromhex(h), "sha256").hexdigest() for h in row_sha256]


def erase(
    model: str | Path,
    *,
    out: str | Path,
    rows: str | Path | Dataset | None = None,
    ids: Sequence[int] | None = None,
    method: str | None = None,
    data: str | None = None,
    verify: bool = True,
    references: int = 16,
    fresh: int = 200,
    bootstrap: int = 500,
    seed: int = 0,
    approximate: NegGradPlus | None = None,
    registry: Registry | None = None,
    name: str | None = None,
    signing_keys: SigningKeys | None = None,
    force: bool = False,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> ErasureResult:
    """Erase rows from the model in folder ``model``, verify it, write, register and record it.

    Args:
        model: the folder ``dlsec train`` wrote (or its ``model.safetensors``).
        out: the new model's folder (must not exist unless ``force``).
        rows, ids: the rows to erase: a dataset file (or :class:`Dataset`) of the rows, or
            their indices in the training dataset. Each must be a training row.
        method: ``sisa`` (default for SISA models), ``exact`` (default otherwise) or
            ``approximate`` (NegGrad+, for models not trained with SISA).
        data: the training dataset, when the card's reference no longer resolves.
        verify: run the LiRA verification (``False`` is recorded as unverified, loudly).
        references, fresh, bootstrap, seed: reference models, fresh non-members (test rows)
            and bootstrap resamples of the verification; ``seed`` seeds all of it.
        approximate: NegGrad+ settings (default: the card's learning rate, 3 epochs).
        registry, name: register the new version as ``name`` with the old as its parent (the
            old is registered first if it is not there) and record the erasure in its audit log.
        signing_keys: sign the new model folder before registering it.

    Raises:
        DataError: a row that is not in the training set (nothing is written).
        ErasureVerificationError: LiRA still tells the erased rows apart (nothing is written;
            the failure is recorded in the audit log when a registry is given).
    """
    from dlsec.core.evaluation import evaluate
    from dlsec.core.io import save_safetensors_model
    from dlsec.fsutil import sha256_file
    from dlsec.release import hash_model

    target = torch.device(device) if device is not None else default_device()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder for the new model")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} exists and is not empty; pass --force or pick another --out")
    src = _load_source(model, data, target)
    if method is None:
        method = "sisa" if src.sisa is not None else "exact"
    if method not in METHODS:
        raise UsageError(f"unknown erasure method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "sisa" and src.sisa is None:
        raise UsageError(f"{src.folder} was not trained with SISA; use --method exact or approximate")
    if method == "approximate" and src.sisa is not None:
        raise UsageError(f"{src.folder} is a SISA model: --method sisa erases exactly and retrains one shard")
    if registry is not None and not name:
        raise UsageError("registering the new version needs a model name (--name)")
    erased = _targets(src, rows, ids)
    erased_set = set(erased)
    old_digest = hash_model(src.folder).root_digest
    old_weights = sha256_file(src.folder / WEIGHTS)
    keep_mask = np.array([src.hashes[i] not in erased_set for i in src.train_index], dtype=bool)
    retained_index = src.train_index[keep_mask]
    erased_index = src.train_index[~keep_mask]
    retained = src.rows(retained_index, "retained")
    test_set = src.rows(src.test_index, "test")

    started = time.perf_counter()
    state: SisaState | None = None
    restart: dict[int, int] = {}
    details: dict[str, Any] = {}
    if src.sisa is not None:
        new_model, state, restart, history = _unlearn_sisa(
            src, erased, exact=method == "exact", device=target, progress=progress
        )
        arch, arch_kwargs = "ensemble", dict(src.card.arch_kwargs)
    elif method == "exact":
        fit_index = retained_index
        val = None
        if src.val_index is not None:
            fit_index = np.setdiff1d(retained_index, src.val_index)
            val = src.rows(src.val_index, "validation")
        if progress is not None:
            progress("retrain", 0, 1)
        new_model, history = retrain_exact(src.card, src.rows(fit_index, "retained"), val, device=target)
        if progress is not None:
            progress("retrain", 1, 1)
        arch, arch_kwargs = str(src.card.architecture), src.card.arch_kwargs
    else:
        config = trained_config(src.card)
        unlearner = approximate or NegGradPlus(lr=config.lr, batch_size=config.batch_size, seed=seed)
        new_model = copy.deepcopy(src.model)
        forget = src.rows(erased_index, "erased")
        target_conf = unlearner.target_confidence(src.model, test_set)
        if progress is not None:
            progress("retrain", 0, 1)
        history = unlearner(new_model, retained, forget, target=target_conf)
        if progress is not None:
            progress("retrain", 1, 1)
        arch, arch_kwargs = str(src.card.architecture), src.card.arch_kwargs
        details = {
            "algorithm": "NegGrad+ (hinge at the held-out median confidence)",
            "target_confidence": target_conf,
            **asdict(unlearner),
        }
    seconds = time.perf_counter() - started

    verification = None
    if verify:
        plan = _plan(src, new_model, state)
        fresh_index = _fresh(src, erased_set, fresh, seed)
        verification = lira_verify(
            new_model,
            src.model,
            retained=retained,
            retained_hashes=[src.hashes[i] for i in retained_index],
            erased=src.rows(erased_index, "erased"),
            erased_hashes=[src.hashes[i] for i in erased_index],
            fresh=src.rows(fresh_index, "fresh"),
            fresh_hashes=[src.hashes[i] for i in fresh_index],
            plan=plan,
            n_references=references,
            bootstrap=bootstrap,
            seed=seed,
            device=target,
            progress=(lambda d, t, s: progress("references", d, t)) if progress is not None else None,
        )
    record: dict[str, Any] = {
        "schema": "dlsec.erasure-record/1",
        "method": method,
        "rows": len(erased),
        # Keyed, so that a reader of the (public, append-only) log cannot confirm a guessed row:
        # a plain hash of a low-entropy table row is as good as the row.
        "row_hmac": row_hmacs(erased, registry),
        "row_hash": "HMAC-SHA256 under the registry's erasure key of sha256(float32 input || int64 label)",
        "data_sha256": src.card.data_sha256,
        "old": {"folder": str(src.folder), "root_digest": old_digest, "weights_sha256": old_weights},
        "shards_retrained": {str(k): v for k, v in sorted(restart.items())},
        "seconds": seconds,
        "unlearning": details or None,
        "verification": verification.to_dict()
        if verification is not None
        else {
            "verified": False,
            "skipped": "--no-verify: the erasure was NOT verified by membership inference",
        },
    }
    if verification is not None and not verification.verified:
        if registry is not None:
            registry.audit.append(FAILED_ACTION, f"{name}", record, publish=True)
        raise ErasureVerificationError(f"erasure not verified: {verification.reason}; nothing was written")

    metrics = {
        "clean_accuracy": evaluate(new_model, test_set).accuracy,
        "train_accuracy": evaluate(new_model, retained).accuracy,
    }
    prior = list((src.card.get("erasure") or {}).get("erased_sha256", []))
    card_erasure = {
        "method": method,
        "parent_weights_sha256": old_weights,
        "parent_root_digest": old_digest,
        "erased_rows": len(erased),
        "erased_sha256": sorted(set(prior) | erased_set),
        "verified": verification.verified if verification is not None else False,
    }
    stage = _stage_dir(out)
    try:
        if state is not None:
            state.save(stage, keep=[k for k in range(state.shards) if k not in restart], source=src.folder)
        weights = save_safetensors_model(
            new_model.module, new_model.spec, stage / WEIGHTS, arch=arch, arch_kwargs=arch_kwargs
        )
        fields = src.card.to_dict()
        fields.update(
            input_spec=new_model.spec.to_dict(),
            metrics=metrics,
            history=history,
            weights={"file": WEIGHTS, "sha256": sha256_file(weights)},
            erasure=card_erasure,
        )
        if state is not None:
            fields["training"] = {**(fields.get("training") or {}), "sisa": _sisa_summary(state)}
        TrainingCard(fields).write(stage / CARD_FILE)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    signed = False
    if signing_keys is not None:
        from dlsec.release import sign_model

        sign_model(out, signing_keys)
        signed = True
    new_digest = hash_model(out).root_digest
    record["new"] = {
        "folder": str(out),
        "root_digest": new_digest,
        "weights_sha256": sha256_file(out / WEIGHTS),
    }
    result = ErasureResult(
        out=out,
        method=method,
        erased=len(erased),
        row_sha256=erased,
        old_digest=old_digest,
        new_digest=new_digest,
        seconds=seconds,
        metrics=metrics,
        verification=verification,
        shards_retrained=restart,
        signed=signed,
    )
    if registry is not None and name:
        parent = _parent_version(registry, name, src.folder, old_digest)
        version = registry.add(out, name, parent=parent, data_sha256=src.card.data_sha256)
        record["old"]["version"] = parent
        record["new"]["version"] = version.ref
        entry = registry.audit.append(RECORD_ACTION, version.ref, record, publish=True)
        result.record, result.record_index = record, entry.index
        result.version, result.parent = version.ref, parent
    else:
        result.record = record
    return result


def verify_erasure(
    old: str | Path,
    new: str | Path,
    *,
    rows: str | Path | Dataset | None = None,
    ids: Sequence[int] | None = None,
    data: str | None = None,
    references: int = 16,
    fresh: int = 200,
    bootstrap: int = 500,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Verification:
    """Verify (again, or for several erasures at once) that ``new`` no longer holds rows of ``old``.

    The rows must be training rows of ``old`` and not of ``new``; LiRA runs as in :func:`erase`
    (reference models trained like ``new`` on its training rows plus half the candidates).

    Example:
        >>> v = verify_erasure("runs/sisa", "runs/sisa-erased-13", ids=ids)   # doctest: +SKIP
        >>> v.verified, v.auc_ci                                               # doctest: +SKIP
    """
    target = torch.device(device) if device is not None else default_device()
    before = _load_source(old, data, target)
    after = _load_source(new, data, target)
    erased = set(_targets(before, rows, ids))
    still = erased & {after.hashes[i] for i in after.train_index}
    if still:
        raise DataError(f"{len(still)} of the rows are still training rows of {new}: they were not erased")
    erased_index = np.array([i for i in before.train_index if before.hashes[i] in erased], dtype=np.int64)
    fresh_index = _fresh(before, erased, fresh, seed)
    return lira_verify(
        after.model,
        before.model,
        retained=after.rows(after.train_index, "retained"),
        retained_hashes=[after.hashes[i] for i in after.train_index],
        erased=before.rows(erased_index, "erased"),
        erased_hashes=[before.hashes[i] for i in erased_index],
        fresh=before.rows(fresh_index, "fresh"),
        fresh_hashes=[before.hashes[i] for i in fresh_index],
        plan=_plan(after, after.model, after.sisa),
        n_references=references,
        bootstrap=bootstrap,
        seed=seed,
        device=target,
    )


def _fresh(src: _Source, erased: set[str], n: int, seed: int) -> np.ndarray:
    """Up to ``n`` test rows (a seeded sample) that are no training or erased row's duplicate."""
    seen = {src.hashes[i] for i in src.train_index} | erased
    pool = np.array([i for i in src.test_index if src.hashes[i] not in seen], dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(pool)[:n])


def _parent_version(registry: Registry, name: str, folder: Path, digest: str) -> str:
    """The registry version of the old model (by root digest); registered now if it is not there."""
    from dlsec.errors import RegistryError

    try:
        listed = registry.versions(name)
    except RegistryError:  # no such model yet: the old version is its first
        listed = []
    for row in listed:
        if row["root_digest"] == digest:
            return f"{name}@{row['version']}"
    return registry.add(folder, name).ref
