"""Name registries for pluggable classes (attacks, recipes, detectors): one decorator for all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dlsec.errors import UsageError

__all__ = ["register_in"]

T = TypeVar("T", bound=type)


def register_in(table: dict[str, Any], name: str, kind: str) -> Callable[[T], T]:
    """A class decorator that files the class in ``table`` under ``name`` and sets ``cls.name``.

    A second class under the same name raises :class:`~dlsec.errors.UsageError` naming ``kind``.
    """

    def decorator(cls: T) -> T:
        if name in table:
            raise UsageError(f"{kind} {name!r} is already registered")
        setattr(cls, "name", name)  # noqa: B010 - every registered class declares ``name``
        table[name] = cls
        return cls

    return decorator
