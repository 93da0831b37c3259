"""A uvicorn server on a free loopback port in a thread, for demos and live tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from dlsec.errors import UsageError

__all__ = ["LiveServer"]


class LiveServer:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread (``with`` gives the URL)."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dlsec-live-server", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise UsageError("the demo gateway did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
