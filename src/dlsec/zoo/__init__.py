"""The model zoo: small built-in models, trained deterministically on first use and cached.

Example:
    >>> from dlsec.zoo import load_zoo_model
    >>> load_zoo_model("breast-cancer-mlp").spec.num_classes  # doctest: +SKIP
    2
"""

from dlsec.zoo._zoo import (
    ZOO,
    ZooEntry,
    cached_card,
    load_zoo_model,
    load_zoo_ref,
    model_file,
    register_zoo,
    zoo_card,
    zoo_path,
)

__all__ = [
    "ZOO",
    "ZooEntry",
    "cached_card",
    "load_zoo_model",
    "load_zoo_ref",
    "model_file",
    "register_zoo",
    "zoo_card",
    "zoo_path",
]
