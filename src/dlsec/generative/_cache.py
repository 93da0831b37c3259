"""Trained-on-first-use weights under ``<home>/cache/generative/NAME/``, trusted only by their card.

Every built-in network of this package (the generators, the learned watermark, the synthetic-image
detector) is fully determined by a recipe: trained deterministically from its seed on first use
and cached as ``model.safetensors`` plus ``card.json``. A cache entry is trusted only if its card
names the current recipe hash and the weights' SHA-256 matches the card; otherwise it is
retrained. Loading reads the file once, hashes those bytes and parses the same bytes, so the
digest names the weights that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dlsec.core.home import cache_dir
from dlsec.errors import ModelLoadError
from dlsec.fsutil import atomic_write_text, atomic_write_with, sha256_file

log = logging.getLogger(__name__)

CARD = "card.json"
WEIGHTS = "model.safetensors"
CACHE_FORMAT = 1

M = TypeVar("M", bound=nn.Module)
T = TypeVar("T")


def recipe_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of the fields that determine a trained network (and the cache format)."""
    payload = {**fields, "cache_format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_folder(name: str, home: str | Path | None) -> Path:
    """``<home>/cache/generative/NAME``."""
    return cache_dir(home) / "generative" / name


@dataclass(frozen=True)
class Cached:
    """What a cache entry records beside its weights."""

    name: str
    version: str
    recipe_hash: str
    recipe: dict[str, Any]
    extra: dict[str, Any] | None = None


def _save(spec: Cached, module: nn.Module, folder: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"name": spec.name, "version": spec.version, "recipe_hash": spec.recipe_hash}
    metadata = {"dlsec": json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    weights = folder / WEIGHTS
    atomic_write_with(weights, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    digest = sha256_file(weights)
    card = {
        "name": spec.name,
        "version": spec.version,
        "recipe_hash": spec.recipe_hash,
        "recipe": spec.recipe,
        "weights_sha256": digest,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"extra": spec.extra} if spec.extra else {}),
    }
    atomic_write_text(folder / CARD, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return digest


def _card(spec: Cached, folder: Path) -> dict[str, Any] | None:
    weights, card_path = folder / WEIGHTS, folder / CARD
    if not weights.is_file() or not card_path.is_file():
        return None
    try:
        card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable cache card; retraining", spec.name)
        return None
    if card.get("recipe_hash") != spec.recipe_hash:
        log.warning("%s: cache made by another recipe; retraining", spec.name)
        return None
    if card.get("weights_sha256") != sha256_file(weights):
        log.warning("%s: cached weights do not match their recorded SHA-256; retraining", spec.name)
        return None
    return card


def load_or_train(
    spec: Cached,
    folder: Path,
    *,
    train: Callable[[], tuple[M, dict[str, Any] | None]],
    build: Callable[[], M],
) -> tuple[M, str, dict[str, Any]]:
    """The cached module (trained and saved first when the cache is missing or untrusted).

    ``train`` returns the trained module and extra facts for the card (a calibrated threshold);
    ``build`` makes an untrained module of the same architecture to load the weights into.
    Returns the module in eval mode, the SHA-256 of the weights loaded and the card.
    """
    from safetensors.torch import load as load_safetensors

    if _card(spec, folder) is None:
        log.info("%s: training (first use)", spec.name)
        module, extra = train()
        _save(Cached(spec.name, spec.version, spec.recipe_hash, spec.recipe, extra), module, folder)
    raw = (folder / WEIGHTS).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    card: dict[str, Any] = json.loads((folder / CARD).read_text(encoding="utf-8"))
    if card.get("weights_sha256") != digest:
        raise ModelLoadError(f"{spec.name}: the weights changed while loading; run again")
    module = build()
    try:
        module.load_state_dict(load_safetensors(raw))
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{spec.name}: cached weights do not fit the architecture ({exc})") from exc
    module.eval()
    return module, digest, card


def one_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on one torch thread: tiny layers run faster without hand-offs, and sums are
    ordered the same on every run (seeded training is then reproducible on one machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)
