"""Validators shared by every package's hyperparameters (attacks, recipes, audits)."""

from __future__ import annotations

from dlsec.errors import UsageError

__all__ = ["positive_int"]


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an integer >= 1, else a ``UsageError`` naming the parameter.

    Example:
        >>> positive_int("steps", 10)
        10
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value
