"""Text classifiers behind the gateway: loading a registered text folder, validating texts, the spec.

A text model is registered like any other (``dlsec registry add FOLDER``: the Hugging Face
style folder ``dlsec text train`` or ``dlsec train`` writes, signed and scanned); the gateway
serves it by alias, and ``POST /v1/models/{name}/predict`` takes ``{"inputs": ["text", ...]}``
with the same keys, roles, rate limits, budgets (one unit per text), output policies and query
log as any model. The extraction detector and the monitors read numeric inputs, so text
predictions are charged and logged but not watched by them (``served()`` says so per model).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlsec.serve._middleware import ApiError

if TYPE_CHECKING:
    from dlsec.core.model import Model
    from dlsec.store import Registry
    from dlsec.text import TextClassifier

__all__ = [
    "is_text",
    "is_text_folder",
    "load_served",
    "served_spec",
    "text_probs",
    "to_texts",
    "truncated_rows",
]


def is_text_folder(path: Path) -> bool:
    """A Hugging Face style text model folder (``config.json`` and ``tokenizer.json``)."""
    return path.is_dir() and (path / "tokenizer.json").is_file() and (path / "config.json").is_file()


def load_served(registry: Registry, name: str, version: int) -> Model | TextClassifier:
    """Load ``name@version`` for serving: a text folder with :func:`dlsec.text.load_text_model`
    after the registry's checks (status, signature, scan), anything else with ``load_model``."""
    ref = f"{name}@{version}"
    record = registry.get(ref)
    if record.kind == "dir" and is_text_folder(record.path):
        from dlsec.text import load_text_model

        registry.open_for_use(ref)  # what load_model("registry:...") checks: status, signature, scan
        return load_text_model(record.path)
    from dlsec.core.loading import load_model

    return load_model(f"registry:{ref}", home=registry.home)


def is_text(model: object) -> bool:
    from dlsec.text import TextClassifier

    return isinstance(model, TextClassifier)


def served_spec(model: Model | TextClassifier) -> dict[str, Any]:
    """What ``GET /v1/models/{name}`` says about the input: an ``InputSpec`` or, for text, the
    classes and the longest token sequence (longer texts are truncated and reported)."""
    from dlsec.text import TextClassifier, TokenizedModel

    if isinstance(model, TextClassifier):
        return {
            "kind": "text",
            "num_classes": model.num_classes,
            "class_names": list(model.class_names),
            "max_length": model.max_length if isinstance(model, TokenizedModel) else None,
            "watched": False,
        }
    return model.spec.to_dict()


def to_texts(inputs: list[Any], max_chars: int) -> list[str]:
    """The request's texts, or a 422: each a non-empty string of at most ``max_chars`` characters."""
    for i, value in enumerate(inputs):
        if not isinstance(value, str):
            raise ApiError(422, f"inputs[{i}]: a text model takes strings", reason="invalid")
        if not value.strip():
            raise ApiError(422, f"inputs[{i}]: the text is empty", reason="invalid")
        if len(value) > max_chars:
            raise ApiError(
                422, f"inputs[{i}]: {len(value)} characters; at most {max_chars}", reason="invalid"
            )
    return list(inputs)


def text_probs(model: Model | TextClassifier, texts: list[str]) -> np.ndarray:
    from dlsec.text import TextClassifier

    if not isinstance(model, TextClassifier):
        raise ApiError(422, "this model takes numeric inputs, not texts", reason="invalid")
    return np.asarray(model.probs(texts), dtype=np.float64)


def truncated_rows(model: Model | TextClassifier, texts: list[str]) -> list[int]:
    """Indices of the texts longer than the model's maximum (they are truncated, never silently)."""
    from dlsec.text import TokenizedModel

    if not isinstance(model, TokenizedModel):
        return []
    encodings = model.tokenizer.encode_batch(texts)
    return [i for i, e in enumerate(encodings) if len(e.ids) > model.max_length]
