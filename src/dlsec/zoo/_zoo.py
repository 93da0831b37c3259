"""The model zoo: small models trained deterministically on first use, then cached.

Each entry names a built-in dataset, an architecture and a training recipe. The first use
trains it (seconds on 2 CPU cores) and caches ``model.safetensors`` plus a JSON card under
``<home>/cache/zoo/NAME/``. A cache entry is trusted only if its card matches the current
recipe and the weights' SHA-256 matches the card; otherwise it is retrained. The zoo sits above
:mod:`dlsec.train` (it trains with it); ``load_model("zoo:NAME")`` reaches it through the
``dlsec.model_schemes`` entry point.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlsec.core.card import CARD_FILE, TrainingCard
from dlsec.core.home import cache_dir
from dlsec.core.loading import LoadOptions
from dlsec.core.model import WhiteBoxModel
from dlsec.errors import ModelLoadError, UsageError
from dlsec.fsutil import sha256_file

__all__ = [
    "ZOO",
    "ZooEntry",
    "load_zoo_model",
    "load_zoo_ref",
    "model_file",
    "register_zoo",
    "zoo_card",
    "zoo_path",
]

log = logging.getLogger(__name__)

# Bump when the cached files' layout changes (e.g. safetensors metadata), so old caches retrain.
_CACHE_FORMAT = 2


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: how to train it, fully determined by these fields."""

    name: str
    dataset: str
    arch: str
    arch_kwargs: dict[str, Any]
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    test_size: float = 0.25
    split_seed: int = 0
    description: str = ""
    tags: tuple[str, ...] = field(default=())

    @property
    def recipe_hash(self) -> str:
        """SHA-256 of everything that determines the trained weights."""
        fields = asdict(self)
        for key in ("description", "tags"):
            fields.pop(key)
        fields["cache_format"] = _CACHE_FORMAT
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


ZOO: dict[str, ZooEntry] = {}


def register_zoo(entry: ZooEntry) -> ZooEntry:
    """Add an entry to the zoo; a duplicate name raises ``UsageError``."""
    if entry.name in ZOO:
        raise UsageError(f"zoo model {entry.name!r} is already registered")
    ZOO[entry.name] = entry
    return entry


register_zoo(
    ZooEntry(
        name="digits-cnn",
        dataset="builtin:digits",
        arch="cnn",
        arch_kwargs={"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 16, "hidden": 64},
        epochs=30,
        description="small CNN on 8x8 digits (the demo model)",
        tags=("image",),
    )
)
register_zoo(
    ZooEntry(
        name="digits-mlp",
        dataset="builtin:digits",
        arch="mlp",
        arch_kwargs={"in_features": 64, "num_classes": 10, "hidden": [128, 64]},
        epochs=30,
        description="MLP on 8x8 digits",
        tags=("image",),
    )
)
register_zoo(
    ZooEntry(
        name="breast-cancer-mlp",
        dataset="builtin:breast-cancer",
        arch="mlp",
        arch_kwargs={"in_features": 30, "num_classes": 2, "hidden": [64, 32]},
        epochs=40,
        batch_size=32,
        description="MLP on the Wisconsin breast-cancer table",
        tags=("tabular",),
    )
)

# Models of real size (issue 21): CIFAR-shaped, trained on generated images, because their
# compute is the point, not their accuracy. First use trains one epoch on the 900 training
# images of builtin:synthetic-cifar: 6.5 min (ResNet-18, 0.76 test accuracy) and 8 min
# (ViT-tiny, 0.99) measured on 2 CPU cores shared with other jobs; seconds on a GPU.
register_zoo(
    ZooEntry(
        name="cifar-resnet18",
        dataset="builtin:synthetic-cifar",
        arch="resnet18",
        arch_kwargs={"in_channels": 3, "num_classes": 10},
        epochs=1,
        batch_size=64,
        lr=1e-3,
        description="ResNet-18 (CIFAR variant, 11.2M parameters) on generated 3x32x32 images",
        tags=("image", "large"),
    )
)
register_zoo(
    ZooEntry(
        name="cifar-vit-tiny",
        dataset="builtin:synthetic-cifar",
        arch="vit-tiny",
        arch_kwargs={"in_channels": 3, "num_classes": 10, "image_size": 32, "patch": 4},
        epochs=1,
        batch_size=64,
        lr=5e-4,
        description="ViT-tiny (patch 4, width 192, depth 12, 5.4M parameters) on generated 3x32x32 images",
        tags=("image", "large"),
    )
)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ModelLoadError(
            f"unknown zoo model {name!r}; choose one of: " + ", ".join(f"zoo:{n}" for n in ZOO)
        )
    return ZOO[name]


def zoo_path(name: str, *, home: str | Path | None = None) -> Path:
    """The cache folder of zoo model ``name``."""
    return cache_dir(home) / "zoo" / _entry(name).name


def model_file(
    model_ref: str | Path,
    *,
    home: str | Path | None = None,
    device: torch.device | str | None = None,
    ensure: bool = False,
) -> Path | None:
    """The file behind a model reference: ``zoo:NAME``'s cached safetensors, a folder's
    ``model.safetensors``, or the path itself; ``None`` for other schemes (``registry:``, URLs).

    ``ensure`` trains and caches a zoo model that is not cached yet.

    Example:
        >>> model_file("runs/bc")  # doctest: +SKIP
        PosixPath('runs/bc/model.safetensors')
    """
    ref = str(model_ref)
    if ref.startswith("zoo:"):
        name = ref.removeprefix("zoo:")
        if ensure:
            zoo_card(name, home=home, device=device)
        return zoo_path(name, home=home) / "model.safetensors"
    if ":" in ref and not Path(ref).exists():
        return None
    path = Path(ref)
    return path / "model.safetensors" if path.is_dir() else path


def cached_card(
    name: str, recipe_hash: str, folder: Path, *, also: tuple[str, ...] = ()
) -> TrainingCard | None:
    """The card of a cached zoo folder, or None when the cache cannot be trusted (retrain it).

    Trusted means: the weights, the card and the files named in ``also`` are there, the card was
    written by the same recipe (its hash) and the weights have the SHA-256 the card records.
    """
    weights, card_path = folder / "model.safetensors", folder / CARD_FILE
    if not all(p.is_file() for p in (weights, card_path, *(folder / n for n in also))):
        return None
    try:
        card = TrainingCard.read(card_path)
    except ModelLoadError:
        log.warning("zoo:%s: unreadable cache card; retraining", name)
        return None
    if card.zoo.get("recipe_hash") != recipe_hash:
        log.warning("zoo:%s: cache made by another recipe; retraining", name)
        return None
    if card.weights_sha256 != sha256_file(weights):
        log.warning("zoo:%s: cached weights do not match their recorded SHA-256; retraining", name)
        return None
    return card


def _train_entry(
    entry: ZooEntry,
    folder: Path,
    device: torch.device | str | None,
    progress: Callable[[int, int, dict[str, float]], None] | None,
) -> TrainingCard:
    from dlsec.core.data import load_dataset
    from dlsec.core.trainconfig import TrainConfig
    from dlsec.train import train

    data = load_dataset(entry.dataset)
    config = TrainConfig(
        epochs=entry.epochs,
        batch_size=entry.batch_size,
        lr=entry.lr,
        weight_decay=entry.weight_decay,
        seed=entry.seed,
    )
    trained = train(
        data,
        arch=entry.arch,
        arch_kwargs=entry.arch_kwargs,
        config=config,
        test_size=entry.test_size,
        split_seed=entry.split_seed,
        device=device,
        progress=progress,
    )
    zoo = {"recipe_hash": entry.recipe_hash, "description": entry.description}
    _, card_path = trained.save(folder, name=f"zoo:{entry.name}", extra={"zoo": zoo})
    return TrainingCard.read(card_path)


def zoo_card(
    name: str,
    *,
    home: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainingCard:
    """The training card of zoo model ``name``, training and caching the model first if needed."""
    entry = _entry(name)
    folder = zoo_path(name, home=home)
    card = cached_card(entry.name, entry.recipe_hash, folder)
    if card is None:
        card = _train_entry(entry, folder, device, progress)
    return card


def load_zoo_model(
    name: str,
    *,
    home: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> WhiteBoxModel:
    """Load zoo model ``name`` as a white-box model, training it on first use.

    Example:
        >>> model = load_zoo_model("breast-cancer-mlp")    # doctest: +SKIP
        >>> model.spec.num_classes                         # doctest: +SKIP
        2
    """
    from dlsec.core.io import load_safetensors_model

    entry = _entry(name)
    zoo_card(name, home=home, device=device, progress=progress)
    folder = zoo_path(name, home=home)
    return load_safetensors_model(
        folder / "model.safetensors", arch=entry.arch, arch_kwargs=entry.arch_kwargs, device=device
    )


def load_zoo_ref(ref: str, options: LoadOptions) -> WhiteBoxModel:
    """The ``zoo:NAME`` scheme of :func:`dlsec.core.load_model` (registered as an entry point)."""
    return load_zoo_model(ref.split(":", 1)[1], home=options.home, device=options.device)
