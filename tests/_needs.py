"""Prerequisites of the tests that need a server or a browser.

Locally, a missing one skips the test with a reason. Under CI (the ``CI`` environment variable,
which GitHub Actions and most runners set) it fails it: ``make test`` installs them, so a
missing one there is a broken set-up, not a reason for a green run that tested less.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under ``CI``."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails rather than skips)")
    pytest.skip(reason)


def need_module(name: str, why: str) -> ModuleType:
    """Import ``name``, or treat it as missing (``why`` says how it is installed)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package {name} is not installed ({why})")
