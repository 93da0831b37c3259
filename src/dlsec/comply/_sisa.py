"""SISA training (Bourtoule et al. 2021, "Machine Unlearning", IEEE S&P): sharded, isolated,
sliced, aggregated.

The training rows are split into ``shards`` disjoint shards and each shard into ``slices``
slices. Shard ``k``'s model trains on slice 0, is checkpointed, trains on slices 0-1, is
checkpointed, ... (the paper's incremental slicing); the ensemble of shard models aggregates
their probabilities (or votes). Erasing a row then retrains only the shard that held it, from
the checkpoint before the first slice that held an erased row.

A row's shard and slice come from a keyed hash of its content (``seed``, the row's bytes), not
from its position: the same row always lands in the same place, so a SISA model retrained after
an erasure equals, shard for shard, one trained from scratch without the erased rows. Within a
slice, rows are ordered by their hash; every (shard, slice) trains from its own derived seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlsec.core.arch import Ensemble, build_architecture
from dlsec.core.data import Dataset
from dlsec.core.loop import run_training
from dlsec.core.model import WhiteBoxModel, default_device
from dlsec.core.recipe import Recipe, Standard, register_recipe
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import ModelLoadError, UsageError
from dlsec.fsutil import atomic_write_text, atomic_write_with, sha256_file

__all__ = [
    "SISA",
    "SISA_DIR",
    "SisaState",
    "assign",
    "row_hashes",
    "slice_epochs",
    "train_shards",
]

SISA_DIR = "sisa"
STATE_FILE = "state.json"
_SCHEMA = "dlsec.sisa/1"

Progress = Callable[[int, int, dict[str, float]], None]


def row_hashes(data: Dataset) -> list[str]:
    """SHA-256 of each row (its float32 input bytes, then its int64 label): the row's identity.

    Example:
        >>> row_hashes(load_dataset("builtin:digits"))[0][:12]   # doctest: +SKIP
        '5d1f0c...'
    """
    x = np.ascontiguousarray(data.x, dtype=np.float32).reshape(len(data), -1)
    y = np.ascontiguousarray(data.y, dtype=np.int64)
    return [hashlib.sha256(x[i].tobytes() + y[i].tobytes()).hexdigest() for i in range(len(data))]


def _keyed(seed: int, what: str, digest: str, modulo: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{what}:{digest}".encode()).digest()[:8], "big") % modulo


def assign(digest: str, *, seed: int, shards: int, slices: int) -> tuple[int, int]:
    """The (shard, slice) of the row whose hash is ``digest``: a keyed hash, independent of other rows."""
    return _keyed(seed, "shard", digest, shards), _keyed(seed, "slice", digest, slices)


def slice_epochs(epochs: int, slices: int) -> int:
    """Epochs per slice so that a shard sees about ``epochs`` passes over its rows in all.

    Slice ``j`` trains on ``(j + 1) / slices`` of the shard, so ``e`` epochs per slice give
    ``e (slices + 1) / 2`` passes: ``e = 2 epochs / (slices + 1)`` (the paper's schedule).
    """
    return max(1, round(2 * epochs / (slices + 1)))


def _seed(seed: int, shard: int, piece: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:train:{shard}:{piece}".encode()).digest()[:4], "big")


@register_recipe("sisa")
class SISA(Recipe):
    """SISA training: an ensemble of shard models, each trained slice by slice with checkpoints.

    ``dlsec train --recipe sisa`` trains it (:func:`dlsec.comply.erasure.train_sisa_and_save`);
    ``dlsec erase`` then retrains only the shards that held the erased rows. The members use
    the architecture ``--arch`` names (default: the data's), trained with the standard recipe
    and the shared options; ``epochs`` is each shard's total passes over its rows.

    Args:
        shards: disjoint shards (one model each).
        slices: slices per shard (a checkpoint after each).
        aggregate: ``mean`` (average the members' probabilities) or ``vote`` (their labels).

    Example:
        >>> from dlsec.comply.erasure import train_sisa
        >>> trained = train_sisa(train_set, recipe=SISA(shards=5, slices=5))  # doctest: +SKIP
    """

    def __init__(self, *, shards: int = 5, slices: int = 5, aggregate: str = "mean") -> None:
        for name, value in (("shards", shards), ("slices", slices)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"sisa: {name} must be an integer >= 1, got {value!r}")
        if aggregate not in ("mean", "vote"):
            raise UsageError(f"sisa: aggregate must be mean or vote, got {aggregate!r}")
        self.shards = shards
        self.slices = slices
        self.aggregate = aggregate

    def check(self, model: WhiteBoxModel, n_train: int, config: TrainConfig) -> None:
        raise UsageError(
            "sisa trains shard by shard, not in one loop: use `dlsec train --recipe sisa` or "
            "dlsec.comply.erasure.train_sisa"
        )


@dataclass
class SisaState:
    """What an erasure needs to resume SISA training: the settings, the row map, the checkpoints.

    ``rows`` maps each training row's hash to its ``(shard, slice)``; ``erased`` lists the
    hashes erased so far (they stay out of every later retraining); ``checkpoints[k][j]`` is
    shard ``k``'s state after slice ``j``.
    """

    shards: int
    slices: int
    aggregate: str
    seed: int
    member: str
    member_kwargs: dict[str, Any]
    config: TrainConfig
    epochs_per_slice: int
    rows: dict[str, tuple[int, int]]
    erased: list[str] = field(default_factory=list)
    checkpoints: list[list[dict[str, torch.Tensor]]] = field(default_factory=list)
    shard_sha256: list[str] = field(default_factory=list)

    def shard_rows(self, shard: int) -> dict[str, int]:
        """Hash -> slice of the rows in ``shard``."""
        return {h: j for h, (k, j) in self.rows.items() if k == shard}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": _SCHEMA,
            "shards": self.shards,
            "slices": self.slices,
            "aggregate": self.aggregate,
            "seed": self.seed,
            "member": self.member,
            "member_kwargs": self.member_kwargs,
            "train_config": asdict(self.config),
            "epochs_per_slice": self.epochs_per_slice,
            "assignment": "sha256(seed:shard|slice:row sha256) mod shards|slices",
            "rows": {h: list(v) for h, v in sorted(self.rows.items())},
            "erased": sorted(self.erased),
            "shard_files": [f"shard-{k}.safetensors" for k in range(self.shards)],
            "shard_sha256": self.shard_sha256,
        }

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, *, keep: Iterable[int] = (), source: Path | None = None) -> Path:
        """Write ``state.json`` and one checkpoint file per shard into ``folder/sisa``.

        Shards in ``keep`` are copied byte for byte from ``source/sisa`` (an erasure leaves them
        untouched); the others are written from :attr:`checkpoints`.
        """
        out = Path(folder) / SISA_DIR
        out.mkdir(parents=True, exist_ok=True)
        kept = set(keep)
        digests = []
        for k in range(self.shards):
            path = out / f"shard-{k}.safetensors"
            if k in kept and source is not None:
                shutil.copyfile(source / SISA_DIR / path.name, path)
            else:
                tensors = {
                    f"slice{j}.{name}": t.detach().cpu().contiguous()
                    for j, state in enumerate(self.checkpoints[k])
                    for name, t in state.items()
                }
                atomic_write_with(path, partial(_write_tensors, tensors))
            digests.append(sha256_file(path))
        self.shard_sha256 = digests
        return atomic_write_text(out / STATE_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> SisaState:
        """Read the state and checkpoints saved beside a SISA model (each file scanned first)."""
        from safetensors.torch import load_file

        from dlsec.scan import verify_safe

        base = Path(folder) / SISA_DIR
        path = base / STATE_FILE
        if not path.is_file():
            raise ModelLoadError(f"{Path(folder)}: no SISA state ({SISA_DIR}/{STATE_FILE}); not a SISA model")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("schema") != _SCHEMA:
                raise ValueError(f"schema {raw.get('schema')!r}")
            state = cls(
                shards=int(raw["shards"]),
                slices=int(raw["slices"]),
                aggregate=str(raw["aggregate"]),
                seed=int(raw["seed"]),
                member=str(raw["member"]),
                member_kwargs=dict(raw["member_kwargs"]),
                config=TrainConfig(**raw["train_config"]),
                epochs_per_slice=int(raw["epochs_per_slice"]),
                rows={h: (int(v[0]), int(v[1])) for h, v in raw["rows"].items()},
                erased=list(raw.get("erased", [])),
                shard_sha256=list(raw.get("shard_sha256", [])),
            )
        except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
            raise ModelLoadError(f"{path}: unreadable SISA state ({exc})") from None
        for k in range(state.shards):
            file = base / f"shard-{k}.safetensors"
            if not file.is_file():
                raise ModelLoadError(f"{file}: missing SISA checkpoint")
            if state.shard_sha256 and sha256_file(file) != state.shard_sha256[k]:
                raise ModelLoadError(f"{file}: the checkpoint does not match its hash in {STATE_FILE}")
            verify_safe(file)
            tensors = load_file(str(file))
            slices: list[dict[str, torch.Tensor]] = [{} for _ in range(state.slices)]
            for name, t in tensors.items():
                head, _, rest = name.partition(".")
                slices[int(head.removeprefix("slice"))][rest] = t
            state.checkpoints.append(slices)
        return state

    def ensemble(self, device: torch.device | None = None) -> Ensemble:
        """The ensemble module with each shard's final weights."""
        module = Ensemble(self.member, self.member_kwargs, self.shards, self.aggregate)
        for k, member in enumerate(module.members):
            member.load_state_dict(self.checkpoints[k][-1])
        return module.to(device or torch.device("cpu"))


def _write_tensors(tensors: dict[str, torch.Tensor], tmp: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(tmp))


def _slice_data(data: Dataset, hashes: list[str], wanted: set[str]) -> Dataset:
    """The rows of ``data`` whose hash is in ``wanted``, ordered by hash (deterministic)."""
    pairs = sorted((h, i) for i, h in enumerate(hashes) if h in wanted)
    index = np.array([i for _, i in pairs], dtype=np.int64)
    return data.subset(index, name=f"{data.name}[sisa]")


def train_shards(
    state: SisaState,
    data: Dataset,
    hashes: list[str],
    *,
    spec_model: Callable[[torch.nn.Module], WhiteBoxModel],
    restart: dict[int, int],
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> dict[int, list[dict[str, float]]]:
    """Train shard ``k`` from slice ``restart[k]`` onward (0: from its initialisation), in place.

    ``data`` holds (at least) every row of :attr:`SisaState.rows`; ``hashes`` are their row
    hashes. Shard ``k`` starts from its checkpoint after slice ``restart[k] - 1``. Returns the
    per-epoch history of each retrained shard.
    """
    device = device or default_device()
    histories: dict[int, list[dict[str, float]]] = {}
    total = sum(state.slices - j for j in restart.values())
    done = 0
    if not state.checkpoints:
        state.checkpoints = [[] for _ in range(state.shards)]
    for k in sorted(restart):
        start = restart[k]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(_seed(state.seed, k, -1))
            member = build_architecture(state.member, state.member_kwargs, allow_import=False)
        if start > 0:
            member.load_state_dict(state.checkpoints[k][start - 1])
        member = member.to(device)
        model = spec_model(member)
        in_shard = state.shard_rows(k)
        kept = state.checkpoints[k][:start]
        history: list[dict[str, float]] = []
        for j in range(start, state.slices):
            wanted = {h for h, s in in_shard.items() if s <= j}
            if wanted:
                config = replace(state.config, seed=_seed(state.seed, k, j), epochs=state.epochs_per_slice)
                outcome = run_training(model, _slice_data(data, hashes, wanted), config, Standard())
                history += [{**h, "shard": float(k), "slice": float(j)} for h in outcome.history]
            kept.append({n: t.detach().cpu().clone() for n, t in member.state_dict().items()})
            done += 1
            if progress is not None:
                progress(done, total, {"shard": float(k), "slice": float(j)})
        state.checkpoints[k] = kept
        histories[k] = history
    return histories
