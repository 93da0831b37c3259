"""Where the gateway's per-query detectors run: a worker process (default) or a thread.

The extraction detector costs about as much CPU per query as a small model's prediction, in
Python that holds the GIL. In the gateway's own process it would steal the interpreter from the
request path; in a separate process it runs on another core and the request path only hands over
batches. Both forms answer the same way: for each batch, the alerts raised and the action in
force for each client in it.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Any

import numpy as np

from dlsec.serve.detection import DetectorConfig, ExtractionDetector

__all__ = ["Watcher"]

Batch = list[tuple[str, np.ndarray, np.ndarray]]
Result = tuple[list[dict[str, Any]], dict[str, str]]


def _observe(detector: ExtractionDetector, batch: Batch) -> Result:
    alerts: list[dict[str, Any]] = []
    for key_id, x, probs in batch:
        alerts += [a.to_dict() for a in detector.observe(key_id, x, probs)]
    return alerts, {key_id: detector.action(key_id) for key_id in {k for k, _, _ in batch}}


def _serve(config: dict[str, Any], reference: np.ndarray | None, inbox: Any, outbox: Any) -> None:
    detector = ExtractionDetector(DetectorConfig.model_validate(config))
    if reference is not None:
        detector.fit(reference)
    while True:
        batch = inbox.get()
        if batch is None:
            return
        try:
            outbox.put(_observe(detector, batch))
        except Exception as exc:  # noqa: BLE001 - report, keep watching
            outbox.put(([{"signal": "detector-error", "action": "alert", "message": str(exc)[:200]}], {}))


class Watcher:
    """Runs the extraction detector on batches of ``(client, inputs, probabilities)``."""

    def __init__(self, config: DetectorConfig, reference: np.ndarray | None, *, in_process: bool) -> None:
        self.in_process = in_process
        self.inflight = 0
        self._ready: list[Result] = []
        if in_process:
            self._detector = ExtractionDetector(config)
            if reference is not None:
                self._detector.fit(reference)
            return
        ctx = mp.get_context("spawn")  # never fork a process that holds torch and threads
        self._inbox: Any = ctx.Queue()
        self._outbox: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_serve,
            args=(config.model_dump(), reference, self._inbox, self._outbox),
            name="dlsec-gateway-detector",
            daemon=True,
        )
        self._proc.start()

    def submit(self, batch: Batch) -> None:
        if not batch:
            return
        if self.in_process:
            self._ready.append(_observe(self._detector, batch))
            return
        self.inflight += 1
        self._inbox.put(batch)

    def results(self, *, wait: float = 0.0) -> list[Result]:
        out, self._ready = self._ready, []
        if self.in_process:
            return out
        while self.inflight:
            try:
                out.append(self._outbox.get(timeout=wait) if wait else self._outbox.get_nowait())
            except queue.Empty:
                break
            self.inflight -= 1
        return out

    def close(self) -> None:
        if not self.in_process:
            self._inbox.put(None)
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
