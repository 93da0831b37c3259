"""Where the gateway's detectors run: a worker process (default) or a thread.

The extraction detector (per API key) and the monitors of ``monitor.yaml`` (per served model:
drift, adversarial inputs) cost about as much CPU per query as a small model's prediction, in
Python that holds the GIL. In the gateway's own process they would steal the interpreter from the
request path; in a separate process they run on another core and the request path only hands
over batches. Both forms answer the same way: for each batch, the alerts raised (as dicts with
``source``, ``signal``, ``severity`` and the key or model they are about) and the extraction
action in force for each client in it.

A model's monitor is fitted on the reference data with the model itself (probabilities,
embeddings), loaded from the registry through the same verified path as the gateway; when the
gateway starts serving another version, the monitor is fitted again for it.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlsec.monitor.extraction import DetectorConfig, ExtractionDetector

__all__ = ["MonitorSpec", "Watcher"]

Batch = list[tuple[str, str, int, np.ndarray, np.ndarray]]  # key id, model, version, inputs, probs
Result = tuple[list[dict[str, Any]], dict[str, str]]
_SEVERITY = {"alert": "medium", "throttle": "high", "block": "critical"}
_RANK = {"allow": 0, "alert": 1, "throttle": 2, "block": 3}
MAX_MONITORS = 8  # fitted (model, version) monitors kept


@dataclass(frozen=True)
class MonitorSpec:
    """What the watcher needs to monitor served models: the rules, reference data, the registry."""

    config: dict[str, Any]  # a MonitorConfig, as JSON-able data
    reference: str  # dataset reference for fitting
    home: str | None
    registry_url: str | None


class _Engine:
    def __init__(
        self, extraction: dict[str, Any] | None, reference: np.ndarray | None, monitor: MonitorSpec | None
    ):
        # One extraction detector per served model (a detector takes one input size); a client's
        # action is the strongest over the models it queries.
        self.extraction = DetectorConfig.model_validate(extraction) if extraction is not None else None
        self.reference = reference
        self.detectors: dict[str, ExtractionDetector] = {}
        self.monitor_spec = monitor
        # Keyed by (model, version): events a version answered before a rollback still reach the
        # monitor fitted for it. A few versions are kept, the least recently used dropped first.
        self.monitors: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._reference_x: np.ndarray | None = None
        self._status: list[dict[str, Any]] = []  # monitors fitted in part, said with the next batch

    def _detector(self, model: str, x: np.ndarray) -> ExtractionDetector:
        detector = self.detectors.get(model)
        if detector is None:
            assert self.extraction is not None
            detector = ExtractionDetector(self.extraction)
            ref = self.reference
            if ref is not None and ref.shape[1:] == x.shape[1:]:
                detector.fit(ref)  # the natural data: enables the distribution signal
            self.detectors[model] = detector
        return detector

    def prepare(self, model: str, version: int) -> None:
        """Fit the model's monitor now, before its traffic arrives (fitting takes seconds)."""
        if self.monitor_spec is not None:
            self._monitor(model, version)

    def _monitor(self, name: str, version: int) -> Any:
        held = self.monitors.get((name, version))
        if held is not None:
            self.monitors.move_to_end((name, version))
            return held
        from dlsec.core.data import load_dataset
        from dlsec.core.loading import load_model
        from dlsec.monitor import MonitorConfig, build_monitor, make_window

        spec = self.monitor_spec
        assert spec is not None
        if spec.registry_url:
            import os

            os.environ["DLSEC_REGISTRY_URL"] = spec.registry_url
        model = load_model(f"registry:{name}@{version}", home=spec.home)
        if self._reference_x is None:
            data = load_dataset(spec.reference)
            if data.name.startswith("builtin:"):  # the held-out split: the model never trained on it
                data = data.split(test_size=0.25, seed=0)[1]
            self._reference_x = data.x
        monitor = build_monitor(MonitorConfig.model_validate(spec.config), model=model)
        monitor.fit(make_window(self._reference_x, model=model))
        if monitor.not_run:  # watched in part: said once, as its own source, never as drift
            self._status.append(
                {
                    "source": "monitor-status",
                    "signal": "not-run",
                    "severity": "low",
                    "subject": f"model:{name}",
                    "model": name,
                    "version": version,
                    "not_run": list(monitor.not_run),
                }
            )
        self.monitors[(name, version)] = monitor
        while len(self.monitors) > MAX_MONITORS:
            self.monitors.popitem(last=False)
        return monitor

    def observe(self, batch: Batch) -> Result:
        alerts: list[dict[str, Any]] = []
        actions: dict[str, str] = {}
        if self.extraction is not None:
            for key_id, model, _version, x, probs in batch:
                for a in self._detector(model, x).observe(key_id, x, probs):
                    alerts.append(
                        {
                            "source": "extraction",
                            "severity": _SEVERITY.get(a.action, "medium"),
                            "subject": f"apikey:{key_id}",
                            "key_id": key_id,
                            "model": model,
                            **a.to_dict(),
                        }
                    )
            for key_id in {b[0] for b in batch}:
                found = [d.action(key_id) for d in self.detectors.values()]
                actions[key_id] = max(found, key=_RANK.__getitem__, default="allow")
        if self.monitor_spec is not None:
            by_model: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]] = {}
            for _key, model, version, x, probs in batch:
                by_model.setdefault((model, version), []).append((x, probs))
            for (model, version), parts in by_model.items():
                monitor = self._monitor(model, version)
                xs = np.concatenate([x for x, _ in parts])
                ps = np.concatenate([p for _, p in parts])
                for a in monitor.update(xs, ps):
                    alerts.append(
                        {
                            "source": "monitor",
                            "signal": a.rule,
                            "subject": f"model:{model}",
                            "model": model,
                            "version": version,
                            **a.to_dict(),
                        }
                    )
        alerts.extend(self._status)
        self._status.clear()
        return alerts, actions


def _serve(
    extraction: dict[str, Any] | None,
    reference: np.ndarray | None,
    monitor: MonitorSpec | None,
    inbox: Any,
    outbox: Any,
) -> None:
    import torch

    torch.set_num_threads(1)
    engine = _Engine(extraction, reference, monitor)
    while True:
        batch = inbox.get()
        if batch is None:
            return
        if isinstance(batch, tuple):  # ("prepare", [(model, version), ...]): fit monitors ahead of traffic
            for model, version in batch[1]:
                try:
                    engine.prepare(model, version)
                except Exception as exc:  # noqa: BLE001 - reported with the next results
                    error = {
                        "source": "watcher",
                        "signal": "monitor-error",
                        "severity": "high",
                        "subject": "gateway",
                    }
                    outbox.put(([{**error, "message": f"{type(exc).__name__}: {exc}"[:300]}], {}))
            continue
        try:
            outbox.put(engine.observe(batch))
        except Exception as exc:  # noqa: BLE001 - report, keep watching
            error = {
                "source": "watcher",
                "signal": "detector-error",
                "severity": "high",
                "subject": "gateway",
            }
            outbox.put(([{**error, "message": f"{type(exc).__name__}: {exc}"[:300]}], {}))


class Watcher:
    """Runs the detectors on batches of ``(key id, model, version, inputs, probabilities)``."""

    def __init__(
        self,
        extraction: DetectorConfig | None,
        reference: np.ndarray | None,
        *,
        monitor: MonitorSpec | None = None,
        in_process: bool,
    ) -> None:
        self.in_process = in_process
        self.inflight = 0
        self._ready: list[Result] = []
        config = extraction.model_dump() if extraction is not None else None
        if in_process:
            self._engine = _Engine(config, reference, monitor)
            return
        ctx = mp.get_context("spawn")  # never fork a process that holds torch and threads
        self._inbox: Any = ctx.Queue()
        self._outbox: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_serve,
            args=(config, reference, monitor, self._inbox, self._outbox),
            name="dlsec-gateway-detector",
            daemon=True,
        )
        self._proc.start()

    def prepare(self, models: list[tuple[str, int]]) -> None:
        """Fit the monitors of the served ``(model, version)`` pairs ahead of their traffic."""
        if not models:
            return
        if self.in_process:
            for model, version in models:
                self._engine.prepare(model, version)
            return
        self._inbox.put(("prepare", list(models)))

    def submit(self, batch: Batch) -> None:
        if not batch:
            return
        if self.in_process:
            try:
                self._ready.append(self._engine.observe(batch))
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                error = {
                    "source": "watcher",
                    "signal": "detector-error",
                    "severity": "high",
                    "subject": "gateway",
                }
                self._ready.append(([{**error, "message": f"{type(exc).__name__}: {exc}"[:300]}], {}))
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
