"""Where dlsec keeps state: one home directory.

``DLSEC_HOME`` (or the CLI's ``--home``) names it; by default it is the platform's user data
directory. The registry, audit log, key store and caches (the model zoo among them) all live
under it, and nothing else in the file system is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["home_dir", "cache_dir", "default_key_dir"]


def home_dir(override: str | Path | None = None) -> Path:
    """The dlsec home: ``override``, else ``$DLSEC_HOME``, else the user data directory."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("DLSEC_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("dlsec", appauthor=False))


def cache_dir(override: str | Path | None = None) -> Path:
    """Caches (e.g. trained zoo models) under the home directory."""
    return home_dir(override) / "cache"


def default_key_dir(home: str | Path | None = None) -> Path:
    """Where ``dlsec keys generate`` writes by default, and what verification trusts by default."""
    return home_dir(home) / "keys"
