"""dlsec: a deep-learning security toolkit for PyTorch.

Attack models the way adversaries do, harden them, ship them as scanned and signed
artifacts, serve them behind an access-controlled gateway, and watch them in production.

Example:
    >>> from dlsec.core import load_model, load_dataset
    >>> model = load_model("zoo:digits-mlp")          # doctest: +SKIP
    >>> data = load_dataset("builtin:digits")         # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dlsec.errors import Error

try:
    __version__ = version("dlsec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["Error", "__version__"]
