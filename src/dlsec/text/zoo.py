"""Built-in text models: trained on first use, cached under the home, like the zoo's classifiers.

``zoo:rotten-tomatoes-bag`` is dlsec's embedding bag trained on ``builtin:rotten-tomatoes``
(seconds on a CPU). It lives here, not in :mod:`dlsec.zoo`: the zoo sits below ``text`` and its
entries are tensor classifiers loaded as ``WhiteBoxModel``s, while a text model is a Hugging
Face style folder that only this package trains and loads; an entry in the zoo would make the
zoo import ``text``, an upward import (the same reason ``generative`` owns its generators). The
cache follows the zoo's rule: ``<home>/cache/zoo/NAME/``, trusted only when the card's
``zoo.recipe_hash`` names the current recipe and the weights' SHA-256 matches the card;
otherwise it is trained again (into a temporary folder, renamed into place when complete).
Names are unique across both zoos.

Example:
    >>> folder = text_zoo_folder("rotten-tomatoes-bag")     # doctest: +SKIP
    >>> load_text_model("zoo:rotten-tomatoes-bag")          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dlsec.errors import ModelLoadError, UsageError

__all__ = [
    "TEXT_ZOO",
    "TextZooEntry",
    "is_text_zoo_ref",
    "register_text_zoo",
    "resolve_text_model",
    "text_zoo_folder",
]


_CACHE_FORMAT = 1


@dataclass(frozen=True)
class TextZooEntry:
    """A built-in text model, fully determined by these fields (``description`` aside)."""

    name: str
    dataset: str
    arch: str = "embedding-bag"
    epochs: int = 8
    seed: int = 0
    test_size: float = 0.25
    vocab_size: int = 20000
    max_length: int = 128
    description: str = ""

    @property
    def recipe_hash(self) -> str:
        """SHA-256 of everything that determines the trained weights."""
        fields = asdict(self)
        fields.pop("description")
        fields["cache_format"] = _CACHE_FORMAT
        fields["kind"] = "text"
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


TEXT_ZOO: dict[str, TextZooEntry] = {}


def register_text_zoo(entry: TextZooEntry) -> TextZooEntry:
    """Add a text model to the zoo; a name already in either zoo raises ``UsageError``."""
    from dlsec.zoo import ZOO

    if entry.name in TEXT_ZOO or entry.name in ZOO:
        raise UsageError(f"zoo model {entry.name!r} is already registered")
    TEXT_ZOO[entry.name] = entry
    return entry


register_text_zoo(
    TextZooEntry(
        name="rotten-tomatoes-bag",
        dataset="builtin:rotten-tomatoes",
        description="embedding bag (mean of word embeddings, linear head) on Rotten Tomatoes snippets",
    )
)


def is_text_zoo_ref(ref: str | Path) -> bool:
    """Whether ``ref`` is ``zoo:NAME`` for a built-in text model."""
    text = str(ref)
    return text.startswith("zoo:") and text.removeprefix("zoo:") in TEXT_ZOO


def _folder(name: str, home: str | Path | None) -> Path:
    from dlsec.core.home import cache_dir

    return cache_dir(home) / "zoo" / name


def _trusted(entry: TextZooEntry, folder: Path) -> bool:
    from dlsec.zoo import cached_card

    also = ("config.json", "tokenizer.json")
    return cached_card(entry.name, entry.recipe_hash, folder, also=also) is not None


def text_zoo_folder(
    name: str,
    *,
    home: str | Path | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Path:
    """The cached folder of text zoo model ``name``, training it first when needed."""
    if name not in TEXT_ZOO:
        raise ModelLoadError(
            f"unknown text zoo model {name!r}; choose one of: " + ", ".join(f"zoo:{n}" for n in TEXT_ZOO)
        )
    entry = TEXT_ZOO[name]
    folder = _folder(name, home)
    if _trusted(entry, folder):
        return folder
    from dlsec.text.corpus import load_text_dataset
    from dlsec.text.training import train_text_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        train_text_model(
            load_text_dataset(entry.dataset),
            arch=entry.arch,
            out=staging / "m",
            epochs=entry.epochs,
            seed=entry.seed,
            test_size=entry.test_size,
            vocab_size=entry.vocab_size,
            max_length=entry.max_length,
            name=f"zoo:{name}",
            extra_card={"zoo": {"recipe_hash": entry.recipe_hash, "description": entry.description}},
            progress=progress,
        )
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "m").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_text_model(ref: str | Path, *, home: str | Path | None = None) -> Path:
    """The folder behind a text model reference: ``zoo:NAME`` (trained on first use) or a path."""
    if is_text_zoo_ref(ref):
        return text_zoo_folder(str(ref).removeprefix("zoo:"), home=home)
    if str(ref).startswith("zoo:"):
        raise ModelLoadError(
            f"{ref}: not a built-in text model; choose one of: " + ", ".join(f"zoo:{n}" for n in TEXT_ZOO)
        )
    return Path(ref)
