"""Ray cluster addresses: checked before Ray is asked to join them.

``ray.init(address=...)`` retries an address nothing answers at for minutes; a command that
takes ``--ray ADDRESS`` checks it here first, in three seconds, and fails with one line.
Standard library only (Ray itself is imported by the callers that run on it).
"""

from __future__ import annotations

import socket

from dlsec.errors import UsageError

__all__ = ["check_ray_address"]


def check_ray_address(address: str, *, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing answers at a Ray address (``host:port``,
    ``ray://host:port`` or ``auto``, which Ray resolves itself).

    Raises:
        UsageError: a malformed address, or one nothing accepts a connection at.

    Example:
        >>> check_ray_address("auto")
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray {address!r}: give host:port (e.g. 10.0.0.5:6379), ray://host:port or auto")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
