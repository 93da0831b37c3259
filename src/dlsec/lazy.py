"""Names a package face resolves on first use (PEP 562), so importing the package stays cheap.

Example (in a package's ``__init__``)::

    _EXPORTS = {"load_model": "loading"}          # name -> the submodule that defines it

    def __getattr__(name: str) -> Any:
        return resolve(globals(), __name__, _EXPORTS, name)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["resolve"]


def resolve(namespace: MutableMapping[str, Any], package: str, exports: Mapping[str, str], name: str) -> Any:
    """Import ``name`` from ``package.<exports[name]>`` and keep it in ``namespace`` for later lookups.

    Raises:
        AttributeError: ``name`` is not one of ``exports``.
    """
    try:
        module = exports[name]
    except KeyError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
    namespace[name] = value  # later lookups skip __getattr__
    return value
