"""The gateway's state: served models, keys, limits, the watcher, the background worker, alerts.

Request path for a prediction (:meth:`Gateway.predict`, after the routes have checked the key):
model scope (403), a block from the extraction detector (403), rate limit and budget (429 with
``Retry-After``), input validation against the model's spec (422), prediction, the key's output
policy. Everything else (the query log, the extraction detector, alerts into the audit log) runs
on a background worker fed through a bounded queue, so it never slows or drops a prediction; if
the queue is full the event is counted as dropped.

Models are served by alias (``production`` by default). The gateway re-reads aliases, version
statuses and keys whenever the audit log has grown (checked at most every ``refresh_seconds``), so
promote, quarantine, rollback and key revocation take effect without a restart; a new version is
loaded only after its signature and scan verify.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dlsec.core.model import Model
from dlsec.errors import Error, SpecError, UsageError
from dlsec.monitor.extraction import DetectorConfig
from dlsec.serve._middleware import ApiError, Metrics
from dlsec.serve._text import is_text, load_served, served_spec, text_probs, to_texts, truncated_rows
from dlsec.serve._watch import MonitorSpec, Watcher
from dlsec.serve.limits import LimitStore
from dlsec.store import (
    ApiKey,
    AuditLog,
    Database,
    KeyStore,
    OutputPolicy,
    QueryLog,
    Registry,
    authenticate,
    parse_rate,
)

if TYPE_CHECKING:
    from dlsec.text import TextClassifier

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger("dlsec.serve")


class GatewayConfig(BaseModel):
    """Gateway settings (``dlsec serve --config gateway.yaml`` or options)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="registry model names to serve")
    alias: str = "production"
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(4 << 20, ge=1024)
    refresh_seconds: float = Field(0.2, ge=0)
    log_inputs: bool = False
    queue_size: int = Field(10_000, ge=1)
    extraction: DetectorConfig | None = Field(default_factory=DetectorConfig)
    extraction_reference: str | None = Field(
        None, description="natural inputs (a dataset reference) that enable the distribution signal"
    )
    throttle_rate: str = "1/second"
    monitor: str | None = Field(None, description="monitor.yaml: drift and attack rules over the traffic")
    monitor_reference: str | None = Field(
        None, description="reference data the monitors are fitted on (a dataset reference)"
    )
    playbook: str | None = Field(None, description="respond.yaml: what to do when an alert fires")
    webhook: str | None = Field(None, description="POST every alert as JSON to this URL")
    detector_process: bool = Field(
        True, description="run the extraction detector in its own process (off the request path's GIL)"
    )
    inline_inference: bool = Field(
        True, description="predict on the event loop (small models); false: in a thread pool (large models)"
    )
    redis_url: str | None = None
    max_text_chars: int = Field(20_000, ge=1, description="longest text a text model's request may hold")
    generators: list[str] = Field(
        default_factory=list,
        description="built-in generators to serve (zoo-gan, zoo-vae): every image C2PA-signed",
    )
    max_images: int = Field(16, ge=1, le=256, description="images per generate request at most")
    detect_generated: str | None = Field(
        None,
        description="a synthetic-image detector (spectrum-gan, spectrum-vae) that scores every image input "
        "and every image sent to /v1/detect/generated; a flagged one raises an alert",
    )


@dataclass
class _Served:
    name: str
    version: int | None = None
    model: Model | TextClassifier | None = None
    status: str = "unavailable"
    reason: str = "not loaded yet"
    root_digest: str | None = None


@dataclass
class _Event:
    key_id: str
    model: str
    version: int
    x: np.ndarray
    probs: np.ndarray
    output: list[Any]
    latency_ms: float
    ts: float = field(default_factory=time.time)  # formatted when the log is written
    texts: list[str] | None = None  # a text model's inputs (``x`` is then empty)


class Gateway:
    """The gateway's state: models, keys, limits, detector, background worker."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        home: str | Path | None = None,
        registry_url: str | None = None,
        limits: LimitStore | None = None,
        alert_hooks: list[Callable[[dict[str, Any]], None]] | None = None,
        run_playbook: bool = True,
    ) -> None:
        self.config = config
        self.home = home
        if config.generators:
            from dlsec.generative import GENERATORS

            unknown = [g for g in config.generators if g not in GENERATORS]
            if unknown:
                raise UsageError(
                    f"unknown generator {unknown[0]!r}; built-in: {', '.join(sorted(GENERATORS))}"
                )
        self.synthetic: Any = None
        if config.detect_generated is not None:
            from dlsec.generative import SYNTHETIC_DETECTORS, load_synthetic_detector

            if config.detect_generated not in SYNTHETIC_DETECTORS:
                raise UsageError(
                    f"unknown synthetic-image detector {config.detect_generated!r}; built-in: "
                    + ", ".join(sorted(SYNTHETIC_DETECTORS))
                )
            self.synthetic = load_synthetic_detector(config.detect_generated, home=home)
        self.registry = Registry.open(registry_url, home=home)
        self.db: Database = self.registry.db
        self.audit: AuditLog = self.registry.audit
        self.keystore = KeyStore(self.db)
        self.query_log = QueryLog(self.db)
        if limits is None:
            from dlsec.serve.limits import open_limits

            limits = open_limits(config.redis_url)
        self.limits = limits
        self.throttle = parse_rate(config.throttle_rate)
        self.metrics = Metrics()
        self.watcher: Watcher | None = None
        monitor = self._monitor_spec(home, registry_url)
        if config.extraction is not None or monitor is not None:
            reference = None
            if config.extraction is not None and config.extraction_reference:
                from dlsec.core.data import load_dataset

                data = load_dataset(config.extraction_reference)
                if data.name.startswith("builtin:"):  # natural data the model trained on, not the test rows
                    data = data.split(test_size=0.25, seed=0)[0]
                reference = data.x
            self.watcher = Watcher(
                config.extraction, reference, monitor=monitor, in_process=not config.detector_process
            )
        if config.playbook is not None and run_playbook:
            raise UsageError(
                "a gateway with a playbook is built by dlsec.respond.build_gateway (the responder "
                "subscribes to the gateway's alerts); Gateway alone would not run it"
            )
        self._actions: dict[str, str] = {}
        self.alert_hooks = list(alert_hooks or [])
        self._state_hooks: set[int] = set()
        self._lock = threading.RLock()
        self._generate_lock = threading.Lock()
        self._served = {name: _Served(name) for name in config.models}
        self._keys: dict[str, ApiKey] = {}
        self._generation = -2
        self._checked = 0.0
        # The request path appends to a deque (no lock, no thread wake-up); the worker collects
        # what is there a few dozen times a second.
        self._events: deque[_Event] = deque()
        self._alerts: deque[dict[str, Any]] = deque()  # raised on the request path, published by the worker
        self._busy = False
        self._worker = threading.Thread(target=self._work, name="dlsec-gateway-worker", daemon=True)
        self._stopped = threading.Event()
        self._force_flush = threading.Event()
        self._prepared: set[tuple[str, int]] = set()
        self.refresh(force=True)  # loads the served versions, and has their monitors fitted
        self._worker.start()

    def subscribe(self, hook: Callable[[dict[str, Any]], Any], *, changes_state: bool = False) -> None:
        """Call ``hook(alert)`` on every alert, on the background worker, after the audit entry.

        ``changes_state``: the hook may change the registry or keys (a playbook quarantining a
        version, revoking a key), so the gateway re-reads them right after it runs.
        """
        self.alert_hooks.append(hook)
        if changes_state:
            self._state_hooks.add(id(hook))

    def _prepare_monitors(self) -> None:
        """Have the watcher fit the monitors of the versions now served (once per version)."""
        if self.watcher is None or self.config.monitor is None:
            return
        with self._lock:
            served = {
                (s.name, s.version)
                for s in self._served.values()
                if s.model is not None and s.version and not is_text(s.model)
            }
        fresh = sorted(served - self._prepared)
        if fresh:
            self._prepared |= set(fresh)
            self.watcher.prepare([(name, int(version)) for name, version in fresh])

    def _monitor_spec(self, home: str | Path | None, registry_url: str | None) -> MonitorSpec | None:
        cfg = self.config
        if cfg.monitor is None:
            return None
        if cfg.monitor_reference is None:
            raise UsageError("monitoring needs reference data: set monitor_reference (e.g. builtin:digits)")
        from dlsec.core.home import home_dir
        from dlsec.monitor import load_monitor_config

        rules = load_monitor_config(cfg.monitor)  # errors name the line and field, before serving
        return MonitorSpec(
            rules.model_dump(mode="json"), cfg.monitor_reference, str(home_dir(home)), registry_url
        )

    # -- registry state ---------------------------------------------------------------------

    def refresh_due(self) -> bool:
        """Whether :meth:`refresh` would look at the audit log now (``refresh_seconds`` have passed)."""
        return time.monotonic() - self._checked >= self.config.refresh_seconds

    def refresh(self, *, force: bool = False) -> None:
        """Re-read aliases, statuses and keys if the audit log grew (every state change is logged)."""
        t = time.monotonic()
        if not force and t - self._checked < self.config.refresh_seconds:
            return
        generation = self.registry.audit.last_index()
        self._checked = t
        if generation == self._generation and not force:
            return
        with self._lock:
            self._keys = {k.id: k for k in self.keystore.all()}
            for slot in self._served.values():
                self._resolve(slot)
            self._generation = generation
        self._prepare_monitors()

    def _resolve(self, slot: _Served) -> None:
        serving = self.registry.serving(slot.name, self.config.alias)
        if serving is None:
            slot.model, slot.version, slot.status = None, None, "unavailable"
            slot.reason = f"no version is {self.config.alias}"
            return
        version, status, root_digest = serving
        if status != "registered":
            slot.model, slot.version, slot.status = None, version, "unavailable"
            slot.reason = f"version {version} is {status}"
            return
        if slot.model is not None and slot.version == version and slot.root_digest == root_digest:
            return
        try:
            model = load_served(self.registry, slot.name, version)
        except Error as exc:
            slot.model, slot.version, slot.status = None, version, "unavailable"
            slot.reason = f"version {version} refused: {exc}"
            log.warning("%s@%s not served: %s", slot.name, version, exc)
            return
        slot.model, slot.version, slot.status, slot.reason = model, version, "serving", ""
        slot.root_digest = root_digest

    def served(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": s.name,
                    "alias": self.config.alias,
                    "version": s.version,
                    "status": s.status,
                    "reason": s.reason or None,
                    "spec": served_spec(s.model) if s.model is not None else None,
                }
                for s in self._served.values()
            ]

    def quarantine(self, name: str, *, reason: str | None, rollback: bool, actor: str) -> dict[str, Any]:
        """Quarantine the version of ``name`` served here and, with ``rollback``, serve the one before.

        A failed rollback is logged and answered as ``now_serving: None``; the quarantine stands.
        """
        self.refresh(force=True)
        with self._lock:
            slot = self._served.get(name)
        if slot is None or slot.version is None:
            raise ApiError(404, f"model {name!r} has no version serving here", reason="unknown-model")
        version = slot.version
        alias = self.config.alias
        done = self.registry.quarantine_and_rollback(
            name, version, aliases=[alias] if rollback else (), reason=reason, actor=actor
        )
        for exc in done.failures.values():
            log.warning("rollback of %s failed: %s", name, exc)
        self.refresh(force=True)
        return {"model": name, "quarantined": version, "now_serving": done.rolled_back.get(alias)}

    # -- request path -----------------------------------------------------------------------

    def key(self, presented: str | None) -> ApiKey | None:
        """The key record ``presented`` (a secret) proves, or None (unknown, malformed or revoked)."""
        with self._lock:
            return authenticate(self._keys, presented)

    def predict(self, name: str, key: ApiKey, inputs: list[Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        if not key.may_use(name):
            raise ApiError(403, f"this key may not use model {name!r}", reason="scope")
        with self._lock:
            slot = self._served.get(name)
        if slot is None:
            raise ApiError(404, f"model {name!r} is not served here", reason="unknown-model")
        action = self._actions.get(key.id, "allow")
        if action == "block":
            raise ApiError(
                403, "this key is blocked: its queries look like model extraction", reason="blocked"
            )
        if len(inputs) > self.config.max_batch:
            raise ApiError(
                422, f"batch of {len(inputs)} inputs; at most {self.config.max_batch}", reason="batch"
            )
        if not inputs:
            raise ApiError(422, "inputs is empty; send at least one input", reason="invalid")
        rate = self.throttle if action == "throttle" and self.throttle is not None else key.rate
        if action == "throttle" and key.rate is not None and self.throttle is not None:
            rate = min(key.rate, self.throttle, key=lambda r: r.count / r.period)
        with self._lock:
            model, version = slot.model, slot.version
            unavailable = slot.reason
        if model is None or version is None:
            raise ApiError(503, f"model {name!r} is unavailable: {unavailable}", reason="unavailable")
        texts = None if isinstance(model, Model) else to_texts(inputs, self.config.max_text_chars)
        x = _to_array(inputs, model) if isinstance(model, Model) else np.zeros((len(inputs), 0), np.float32)
        decision = self.limits.take(key.id, len(x), rate, key.budget, key.used)
        if not decision.allowed:
            what = "rate limit exceeded" if decision.reason == "rate" else "prediction budget exhausted"
            raise ApiError(
                429, what, reason=decision.reason, headers={"Retry-After": str(decision.retry_after)}
            )
        with torch.inference_mode():
            probs = _probabilities(model, x) if isinstance(model, Model) else text_probs(model, texts or [])
        output = _apply_policy(probs, key.output)
        latency = (time.perf_counter() - t0) * 1000
        self._enqueue(_Event(key.id, name, version, x, probs, output, latency, texts=texts))
        body: dict[str, Any] = {"model": name, "version": version, "predictions": probs.argmax(1).tolist()}
        if texts is not None:
            body["truncated"] = truncated_rows(model, texts)
        if key.output.kind != "label":
            body["output"] = str(key.output)
            body["probabilities"] = output
        return body

    def generate(self, name: str, key: ApiKey, n: int, seed: int | None, size: int) -> dict[str, Any]:
        """``n`` images from the served generator ``name``, each a PNG with a signed C2PA manifest
        (generator name, version, the SHA-256 of its weights), charged to the key's rate and budget
        like predictions (one per image) and recorded in the audit log with each image's SHA-256."""
        import base64
        import hashlib
        import secrets

        from dlsec.generative import signed_samples

        if name not in self.config.generators:
            raise ApiError(404, f"generator {name!r} is not served here", reason="unknown-model")
        if not key.may_use(name):
            raise ApiError(403, f"this key may not use generator {name!r}", reason="scope")
        if not 1 <= n <= self.config.max_images:
            raise ApiError(422, f"n must be from 1 to {self.config.max_images}, got {n}", reason="invalid")
        if self._actions.get(key.id, "allow") == "block":
            raise ApiError(403, "this key is blocked", reason="blocked")
        decision = self.limits.take(key.id, n, key.rate, key.budget, key.used)
        if not decision.allowed:
            what = "rate limit exceeded" if decision.reason == "rate" else "prediction budget exhausted"
            raise ApiError(
                429, what, reason=decision.reason, headers={"Retry-After": str(decision.retry_after)}
            )
        seed = secrets.randbelow(2**31) if seed is None else seed
        try:
            with self._generate_lock:  # one generator call at a time: its weights are shared
                info, images = signed_samples(name, n=n, seed=seed, size=size, home=self.home)
        except UsageError as exc:
            raise ApiError(422, str(exc).splitlines()[0], reason="invalid") from None
        out = [
            {
                "name": file,
                "sha256": hashlib.sha256(png).hexdigest(),
                "png_base64": base64.b64encode(png).decode(),
            }
            for file, png in images
        ]
        detail = {
            "generator": info.name,
            "version": info.version,
            "weights_sha256": info.weights_sha256,
            "seed": seed,
            "images": [i["sha256"] for i in out],
        }
        self.audit.append("gateway.generate", f"generator:{name}", detail, actor=f"apikey:{key.id}")
        return {**{k: v for k, v in detail.items() if k != "images"}, "images": out}

    def detect_generated(self, key: ApiKey, data: bytes) -> dict[str, Any]:
        """Score one uploaded image (PNG or JPEG bytes) with the synthetic-image detector.

        Charged to the key's rate and budget like one prediction; every score goes to the audit log
        with the image's SHA-256, and a flagged image raises an alert (source ``synthetic-image``).
        """
        if self.synthetic is None:
            raise ApiError(
                404,
                "no synthetic-image detector here (dlsec serve --detect-generated NAME)",
                reason="disabled",
            )
        if self._actions.get(key.id, "allow") == "block":
            raise ApiError(403, "this key is blocked", reason="blocked")
        rgb = _decode_image(data)
        decision = self.limits.take(key.id, 1, key.rate, key.budget, key.used)
        if not decision.allowed:
            what = "rate limit exceeded" if decision.reason == "rate" else "prediction budget exhausted"
            raise ApiError(
                429, what, reason=decision.reason, headers={"Retry-After": str(decision.retry_after)}
            )
        score = float(self.synthetic.score([rgb])[0])
        threshold = float(self.synthetic.threshold_)
        digest = hashlib.sha256(data).hexdigest()
        result = {
            "detector": self.config.detect_generated,
            "score": score,
            "threshold": threshold,
            "generated": score > threshold,
            "sha256": digest,
        }
        self.audit.append("gateway.detect", f"image:{digest}", result, actor=f"apikey:{key.id}")
        if result["generated"]:
            self._alerts.append(
                {
                    "source": "synthetic-image",
                    "signal": str(self.config.detect_generated),
                    "severity": "medium",
                    "subject": f"apikey:{key.id}",
                    "key_id": key.id,
                    "upload_sha256": digest,
                    "score": score,
                    "threshold": threshold,
                }
            )
        return result

    def _score_synthetic(self, events: list[_Event]) -> None:
        """Score the image inputs of predictions; a batch with flagged rows raises one alert."""
        for e in events:
            images = _image_rows(e.x)
            if images is None:
                continue
            try:
                scores = np.asarray(self.synthetic.score(images))
            except Exception:  # noqa: BLE001 - detection must never stop the worker
                log.exception("synthetic-image detection failed")
                continue
            flagged = scores > self.synthetic.threshold_
            if flagged.any():
                self.raise_alert(
                    {
                        "source": "synthetic-image",
                        "signal": str(self.config.detect_generated),
                        "severity": "medium",
                        "subject": f"model:{e.model}",
                        "key_id": e.key_id,
                        "model": e.model,
                        "version": e.version,
                        "flagged": int(flagged.sum()),
                        "rows": len(scores),
                        "max_score": float(scores.max()),
                        "threshold": float(self.synthetic.threshold_),
                    }
                )

    def _enqueue(self, event: _Event) -> None:
        if len(self._events) >= self.config.queue_size:
            self.metrics.dropped.inc()
            return
        self._events.append(event)

    # -- background work --------------------------------------------------------------------

    TICK = 0.02

    def _work(self) -> None:
        pending: list[_Event] = []
        last_flush = time.monotonic()
        while True:
            stopping = self._stopped.is_set()
            self._busy = True
            batch: list[_Event] = []
            while self._events:
                batch.append(self._events.popleft())
            if batch and self.watcher is not None:
                numeric = [(e.key_id, e.model, e.version, e.x, e.probs) for e in batch if e.texts is None]
                if numeric:
                    self.watcher.submit(numeric)
            if batch and self.synthetic is not None:
                self._score_synthetic(batch)
            while self._alerts:
                self.raise_alert(self._alerts.popleft())
            pending += batch
            if self.watcher is not None:
                for alerts, actions in self.watcher.results(wait=1.0 if stopping else 0.0):
                    self._actions.update(actions)
                    for alert in alerts:
                        self.raise_alert(alert)
            forced = self._force_flush.is_set()
            if pending and (len(pending) >= 256 or time.monotonic() - last_flush > 0.5 or stopping or forced):
                self._flush(pending)
                pending = []
                last_flush = time.monotonic()
            if forced:
                self._force_flush.clear()
            self._busy = False
            if stopping:
                return
            time.sleep(self.TICK)

    def raise_alert(self, alert: dict[str, Any]) -> None:
        """Record an alert (audit log, metrics, webhook), then publish it to the subscribed hooks.

        Runs on the background worker; a failing step is logged and never stops the others.
        """
        source, signal = str(alert.get("source", "gateway")), str(alert.get("signal", "alert"))
        subject = str(alert.get("subject") or "gateway")
        self.metrics.alerts.labels(source=source, signal=signal).inc()
        try:
            self.audit.append("gateway.alert", subject, alert, actor="dlsec-gateway")
        except Exception:  # noqa: BLE001 - the alert must still reach the hooks
            log.exception("could not write an alert to the audit log")
        if self.config.webhook:
            import httpx

            try:
                httpx.post(self.config.webhook, json=alert, timeout=5.0)
            except httpx.HTTPError as exc:
                log.warning("alert webhook %s failed: %s", self.config.webhook, exc)
        changed = False
        for hook in self.alert_hooks:
            try:
                hook(alert)
            except Exception:  # noqa: BLE001 - hooks are user code (a playbook): logged, serving goes on
                log.exception("alert hook failed")
            changed = changed or id(hook) in self._state_hooks
        if changed:
            self.refresh(force=True)

    def _flush(self, events: list[_Event]) -> None:
        rows = [
            {
                "ts": datetime.fromtimestamp(e.ts, UTC).isoformat(timespec="microseconds"),
                "key_id": e.key_id,
                "model": e.model,
                "version": e.version,
                "rows": len(e.x),
                "input_sha256": hashlib.sha256(
                    np.ascontiguousarray(e.x).tobytes() if e.texts is None else json.dumps(e.texts).encode()
                ).hexdigest(),
                "output": json.dumps(e.output),
                "latency_ms": e.latency_ms,
                "inputs": json.dumps(e.x.tolist() if e.texts is None else e.texts)
                if self.config.log_inputs
                else None,
            }
            for e in events
        ]
        try:
            self.query_log.append(rows)
            self.keystore.save_usage(self.limits.usage())
        except Exception:  # noqa: BLE001 - logging must never take the gateway down
            log.exception("could not write the query log")

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event so far is detected on and logged (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        watcher = self.watcher
        while time.monotonic() < deadline and (
            self._events or self._alerts or self._busy or (watcher is not None and watcher.inflight)
        ):
            time.sleep(0.01)
        time.sleep(2 * self.TICK)
        self._force_flush.set()
        while self._force_flush.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._stopped.set()
        self._worker.join(timeout=30)
        if self.watcher is not None:
            self.watcher.close()
        self.registry.close()

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {"index": e.index, "ts": e.ts, "subject": e.subject, **e.details}
            for e in self.registry.audit.recent("gateway.alert", limit=limit)
        ]


def _image_rows(x: np.ndarray) -> list[np.ndarray] | None:
    """A batch (N, C, H, W) of grey or RGB images in [0, 1] as the detector's inputs; else None."""
    if x.ndim != 4 or x.shape[1] not in (1, 3) or min(x.shape[2:]) < 8:
        return None
    if x.shape[1] == 1:
        return list(np.clip(x[:, 0], 0, 1))
    return list(np.round(np.clip(x.transpose(0, 2, 3, 1), 0, 1) * 255).astype(np.uint8))


def _decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes as an RGB uint8 array; anything else is a 422 naming the problem."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
        raise ApiError(422, "unsupported image format (send a PNG or JPEG)", reason="invalid")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > 4096 * 4096:
                raise ApiError(422, "image too large (at most 4096x4096 pixels)", reason="invalid")
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ApiError(422, "corrupt image (it does not decode)", reason="invalid") from None


def _to_array(inputs: list[Any], model: Model) -> np.ndarray:
    try:
        x = np.asarray(inputs, dtype=np.float32)
    except (ValueError, TypeError):
        raise ApiError(422, "inputs must be nested lists of numbers of one shape", reason="invalid") from None
    if any(isinstance(v, bool) for v in _leaves(inputs, 4)):
        raise ApiError(422, "inputs must be numbers, not booleans", reason="invalid")
    try:
        model.spec.check_batch(x)
    except SpecError as exc:
        raise ApiError(422, str(exc), reason="invalid") from None
    return x


def _leaves(value: Any, limit: int) -> list[Any]:
    """A few leaf values (the first of each nesting level), to catch booleans cheaply."""
    out = []
    while isinstance(value, list) and value and limit:
        value = value[0]
        limit -= 1
    out.append(value)
    return out


def _probabilities(model: Model, x: np.ndarray) -> np.ndarray:
    probs = getattr(model, "probs", None)
    if probs is None:
        raise ApiError(503, "the served model gives no scores", reason="unavailable")
    result: np.ndarray = probs(torch.from_numpy(x)).detach().cpu().double().numpy()
    return result


def _apply_policy(probs: np.ndarray, policy: OutputPolicy) -> list[Any]:
    if policy.kind == "full":
        return probs.tolist()
    if policy.kind == "rounded":
        return np.round(probs, policy.digits or 2).tolist()
    if policy.kind == "top":
        k = min(policy.k or 1, probs.shape[1])
        order = np.argsort(-probs, axis=1)[:, :k]
        return [{str(int(c)): float(p[c]) for c in row} for p, row in zip(probs, order, strict=True)]
    return []
