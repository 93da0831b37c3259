"""The training card (``model.json``): what trained a model, read and written in one place.

``dlsec train`` writes the card beside ``model.safetensors``; the zoo caches one per model;
the privacy audit reads its split (which rows were the training members) and its training
configuration (for reference models); the registry reads its data hash and configuration into
a version's lineage. :class:`TrainingCard` is the one reader and writer. It is a read-only
mapping of the card's JSON fields (so ``card["metrics"]`` works), with typed accessors for the
fields dlsec itself uses. A card that is not a JSON object, or whose known fields have the
wrong type, raises :class:`~dlsec.errors.ModelLoadError` naming the file.

Example:
    >>> card = TrainingCard.read("out/model.json")       # doctest: +SKIP
    >>> card.data_sha256, card.split["test_size"]        # doctest: +SKIP
    ('3f2a...', 0.25)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dlsec.errors import ModelLoadError
from dlsec.fsutil import atomic_write_text

__all__ = ["CARD_FILE", "CARD_SCHEMA", "TrainingCard"]

CARD_FILE = "model.json"
CARD_SCHEMA = "dlsec.model-card/1"

# Fields that, when present and not null, must be JSON objects.
_OBJECTS = (
    "arch_kwargs",
    "input_spec",
    "recipe_params",
    "train_config",
    "seeds",
    "dataset",
    "metrics",
    "robustness",
    "privacy",
    "training",
    "weights",
    "versions",
    "zoo",
)


class TrainingCard(Mapping[str, Any]):
    """A model's training card: its fields as written, with typed accessors.

    Args:
        fields: the card's top-level fields (a JSON object).
        source: where the card was read from (named in errors).

    Raises:
        ModelLoadError: ``fields`` is not a mapping, or a known field has the wrong type.
    """

    def __init__(self, fields: Mapping[str, Any], *, source: str | Path | None = None) -> None:
        where = f"{source}: " if source is not None else ""
        if not isinstance(fields, Mapping):
            raise ModelLoadError(f"{where}not a training card (expected a JSON object)")
        for key in _OBJECTS:
            value = fields.get(key)
            if value is not None and not isinstance(value, Mapping):
                raise ModelLoadError(f"{where}malformed training card: {key} must be an object")
        split = (fields.get("dataset") or {}).get("split")
        if split is not None and not isinstance(split, Mapping):
            raise ModelLoadError(f"{where}malformed training card: dataset.split must be an object")
        self._fields = dict(fields)
        self.source = Path(source) if source is not None else None

    # -- the mapping --------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"TrainingCard(name={self.get('name')!r}, architecture={self.architecture!r})"

    # -- reading and writing ------------------------------------------------------------------

    @staticmethod
    def path_for(model: str | Path) -> Path:
        """Where the card of ``model`` lives: ``DIR/model.json`` for a folder, else beside the file."""
        path = Path(model)
        return path / CARD_FILE if path.is_dir() else path.with_name(CARD_FILE)

    @classmethod
    def read(cls, path: str | Path) -> TrainingCard:
        """Read a card from ``path``; a missing, unreadable or malformed card raises ``ModelLoadError``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: no training card") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: unreadable training card ({exc})") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{path}: unreadable training card (not JSON: {exc})") from None
        return cls(value, source=path)

    @classmethod
    def find(cls, model: str | Path) -> TrainingCard | None:
        """The card beside ``model`` (a model file or folder), or ``None`` when there is none.

        A card that is there but malformed raises ``ModelLoadError``.
        """
        path = cls.path_for(model)
        return cls.read(path) if path.is_file() else None

    def write(self, path: str | Path) -> Path:
        """Write the card as indented JSON to ``path``, atomically; returns the path."""
        return atomic_write_text(Path(path), json.dumps(self._fields, indent=2) + "\n")

    def with_fields(self, **fields: Any) -> TrainingCard:
        """A copy with ``fields`` set (added at the end, or replaced in place)."""
        return TrainingCard({**self._fields, **fields}, source=self.source)

    def to_dict(self) -> dict[str, Any]:
        """The card's fields as a plain dict (what :meth:`write` writes)."""
        return json.loads(json.dumps(self._fields))

    # -- typed accessors ----------------------------------------------------------------------

    def _object(self, key: str) -> dict[str, Any]:
        return dict(self._fields.get(key) or {})

    @property
    def name(self) -> str | None:
        return self._fields.get("name")

    @property
    def architecture(self) -> str | None:
        """The architecture's registered name (or ``module:factory``)."""
        return self._fields.get("architecture")

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        return self._object("arch_kwargs")

    @property
    def recipe(self) -> str | None:
        return self._fields.get("recipe")

    @property
    def recipe_params(self) -> dict[str, Any]:
        return self._object("recipe_params")

    @property
    def seed(self) -> int | None:
        return self._fields.get("seed")

    @property
    def train_config(self) -> dict[str, Any]:
        """The recorded :class:`~dlsec.core.trainconfig.TrainConfig` fields (empty if none)."""
        return self._object("train_config")

    @property
    def dataset(self) -> dict[str, Any]:
        """``name``, ``sha256``, ``rows`` and ``split`` of the data the model was trained on."""
        return self._object("dataset")

    @property
    def data_sha256(self) -> str | None:
        return self.dataset.get("sha256")

    @property
    def split(self) -> dict[str, Any]:
        """The train/test split: ``test_size``, ``seed``, row counts, validation rows and seed."""
        return dict(self.dataset.get("split") or {})

    @property
    def weights_sha256(self) -> str | None:
        return self._object("weights").get("sha256")

    @property
    def zoo(self) -> dict[str, Any]:
        """The zoo's cache record (``recipe_hash``, ``description``); empty outside the zoo."""
        return self._object("zoo")
