"""dlsec: a deep-learning security toolkit for PyTorch.

Attack models the way adversaries do, harden them, ship them as scanned and signed
artifacts, serve them behind an access-controlled gateway, and watch them in production.

Example:
    >>> from dlsec.core import load_model, load_dataset
    >>> model = load_model("zoo:digits-mlp")          # doctest: +SKIP
    >>> data = load_dataset("builtin:digits")         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from dlsec.errors import Error

__all__ = ["Error", "__version__"]


def __getattr__(name: str) -> Any:
    # importlib.metadata costs ~50 ms at start-up; only `dlsec version` and reports need it
    if name != "__version__":
        raise AttributeError(f"module 'dlsec' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("dlsec")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
