"""Training checkpoints: one safetensors file with the tensors and a JSON state, never pickle.

A checkpoint holds everything needed to continue a run bit for bit at an epoch boundary: the
weights, the optimiser's state, every random generator's state, the history and the recipe's
own state (an accountant's history, a guard's best weights). It carries a fingerprint of the
run's configuration; a checkpoint made by another configuration is refused rather than
silently mixed in. It is written to a temporary name and renamed, so an interruption at any
moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from dlsec.errors import UsageError
from dlsec.fsutil import atomic_write_with

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "fingerprint", "flatten_optimizer", "unflatten_optimizer"]

CHECKPOINT_FILE = "checkpoint.safetensors"
_SCHEMA = "dlsec.train-checkpoint/1"
_META_KEY = "dlsec-checkpoint"


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of what determines a run."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class Checkpoint:
    """The checkpoint file of one run, in ``folder``.

    Args:
        folder: where ``checkpoint.safetensors`` lives (created on the first save).
        fingerprint: the run's configuration fingerprint; a file with another one is refused.
    """

    def __init__(self, folder: str | Path, *, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
        """Write the tensors and the JSON ``state`` atomically."""
        from safetensors.torch import save_file

        meta = {"schema": _SCHEMA, "fingerprint": self.fingerprint, "state": state}
        clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        metadata = {_META_KEY: json.dumps(meta, sort_keys=True)}
        return atomic_write_with(self.path, lambda tmp: save_file(clean, str(tmp), metadata=metadata))

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The saved tensors and state, or ``None`` when there is no checkpoint.

        Raises:
            UsageError: the file is unreadable or was made by another configuration.
        """
        if not self.exists():
            return None
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        from dlsec.scan import verify_safe

        verify_safe(self.path)  # the same gate as every model load: a tampered header is refused
        try:
            with safe_open(str(self.path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
            tensors = load_file(str(self.path))
            meta = json.loads(raw) if raw is not None else None
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(
                f"{self.path}: unreadable training checkpoint ({exc}); delete it to start over"
            ) from None
        if not isinstance(meta, dict) or meta.get("schema") != _SCHEMA:
            raise UsageError(f"{self.path}: not a dlsec training checkpoint; delete it to start over")
        if meta.get("fingerprint") != self.fingerprint:
            raise UsageError(
                f"{self.path} was made by a different training configuration; rerun the same command "
                "to resume it, or delete it (or pass --force) to start over"
            )
        return tensors, meta["state"]

    def remove(self) -> None:
        """Delete the checkpoint (after the final model is written)."""
        self.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and JSON-serialisable rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(
    tensors: dict[str, torch.Tensor], rest: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Rebuild an optimizer ``state_dict`` from :func:`flatten_optimizer`'s output."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            index, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, entry in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": rest["param_groups"]}
