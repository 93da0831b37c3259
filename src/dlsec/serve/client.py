"""A model behind a dlsec gateway, as a black-box model under test.

``connect("http://host:8000/v1/models/NAME", api_key=...)`` asks the gateway for the model's input
spec and returns a :class:`~dlsec.core.ScoreModel` when the key's output policy reveals
probabilities (``full`` or ``rounded-D``; rounded rows are renormalised), else a
:class:`~dlsec.core.DecisionModel`. Every attack, extraction attack and assessment then runs
against the live gateway, through its keys, limits and detectors. Errors from the gateway become
one-line :class:`~dlsec.errors.ModelLoadError` / :class:`~dlsec.errors.UsageError` messages.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import torch

from dlsec.core.loading import LoadOptions
from dlsec.core.model import DecisionModel, Model, ScoreModel
from dlsec.core.spec import InputSpec
from dlsec.errors import ModelLoadError, UsageError

if TYPE_CHECKING:
    from dlsec.text import ScoreTextModel

__all__ = ["connect", "connect_text", "load_gateway_ref"]

_URL = re.compile(r"^(https?://[^/]+)/v1/models/([A-Za-z0-9_.-]+)/?$")


def _message(r: httpx.Response) -> str:
    """The gateway's one-line error, or the start of whatever else answered."""
    try:
        return str(r.json().get("error", r.text))
    except (ValueError, AttributeError):
        return r.text[:200]


class _Remote:
    def __init__(self, base: str, name: str, api_key: str, timeout: float) -> None:
        self.url = f"{base}/v1/models/{name}/predict"
        self.client = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
        self.queries = 0

    def call(self, x: torch.Tensor) -> dict[str, Any]:
        try:
            r = self.client.post(self.url, json={"inputs": x.detach().cpu().double().tolist()})
        except httpx.HTTPError as exc:
            raise UsageError(f"{self.url}: the gateway did not answer ({exc})") from None
        if r.status_code != 200:
            raise UsageError(f"{self.url}: HTTP {r.status_code}: {_message(r)}")
        self.queries += len(x)
        body: dict[str, Any] = r.json()
        return body

    def probs(self, x: torch.Tensor) -> np.ndarray:
        p = np.asarray(self.call(x)["probabilities"], dtype=np.float64)
        p = np.clip(p, 0, None)
        sums = p.sum(1, keepdims=True)
        p = np.where(sums > 0, p / np.where(sums > 0, sums, 1), 1.0 / p.shape[1])
        return p.astype(np.float32)

    def labels(self, x: torch.Tensor) -> np.ndarray:
        return np.asarray(self.call(x)["predictions"], dtype=np.int64)


def connect(url: str, *, api_key: str | None = None, timeout: float = 30.0, batch_size: int = 256) -> Model:
    """A black-box model for a gateway URL ``http(s)://HOST:PORT/v1/models/NAME``.

    The API key comes from ``api_key`` or ``$DLSEC_API_KEY`` (never the command line).
    """
    m = _URL.match(url)
    if not m:
        raise ModelLoadError(f"{url}: a gateway model URL reads http(s)://HOST:PORT/v1/models/NAME")
    key = api_key or os.environ.get("DLSEC_API_KEY")
    if not key:
        raise ModelLoadError(f"{url}: set DLSEC_API_KEY to a gateway API key (`dlsec keys create`)")
    base, name = m.group(1), m.group(2)
    remote = _Remote(base, name, key, timeout)
    try:
        r = remote.client.get(f"{base}/v1/models/{name}")
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"{url}: the gateway did not answer ({exc})") from None
    if r.status_code != 200:
        raise ModelLoadError(f"{url}: HTTP {r.status_code}: {_message(r)}")
    info = r.json()
    if info.get("spec") is None:
        raise ModelLoadError(f"{url}: the model is not being served ({info.get('reason')})")
    if info["spec"].get("kind") == "text":
        raise ModelLoadError(
            f"{url}: a text model; use dlsec text attack --model {url} (dlsec.serve.connect_text)"
        )
    spec = InputSpec.from_dict(info["spec"])
    batch = min(batch_size, int(info.get("max_batch") or batch_size))
    if info.get("output") in ("full",) or str(info.get("output", "")).startswith("rounded"):
        return ScoreModel(remote.probs, spec, batch_size=batch)
    return DecisionModel(remote.labels, spec, batch_size=batch)


def load_gateway_ref(ref: str, options: LoadOptions) -> Model:
    """The ``http(s)://`` scheme of :func:`dlsec.core.load_model` (registered as an entry point)."""
    return connect(ref)


class _TextRemote:
    """Texts to a gateway's text model; the gateway's probabilities back (renormalised)."""

    def __init__(self, url: str, api_key: str, http: httpx.Client, max_wait: float) -> None:
        self.url = f"{url.rstrip('/')}/predict"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.http = http
        self.max_wait = max_wait
        self.queries = 0  # texts the gateway answered

    def __call__(self, texts: list[str]) -> np.ndarray:
        from dlsec.text import QueryRefusedError

        waited = 0.0
        while True:
            try:
                r = self.http.post(self.url, json={"inputs": texts}, headers=self.headers)
            except httpx.HTTPError as exc:
                raise UsageError(f"{self.url}: the gateway did not answer ({exc})") from None
            if r.status_code != 429:
                break
            reason = _reason(r)
            wait = float(r.headers.get("Retry-After", "1") or 1)
            if reason != "rate" or waited + wait > self.max_wait:
                raise QueryRefusedError(f"{self.url}: HTTP 429: {_message(r)}")
            time.sleep(wait)  # the key's rate limit: wait as told, within max_wait in all
            waited += wait
        if r.status_code != 200:
            raise UsageError(f"{self.url}: HTTP {r.status_code}: {_message(r)}")
        self.queries += len(texts)
        p = np.clip(np.asarray(r.json()["probabilities"], dtype=np.float64), 0, None)
        sums = p.sum(1, keepdims=True)
        return np.where(sums > 0, p / np.where(sums > 0, sums, 1), 1.0 / p.shape[1])


def _reason(r: httpx.Response) -> str:
    try:
        return str(r.json().get("reason", ""))
    except (ValueError, AttributeError):
        return ""


def connect_text(
    url: str,
    *,
    api_key: str | None = None,
    timeout: float = 30.0,
    batch_size: int = 64,
    max_wait: float = 60.0,
    http: httpx.Client | None = None,
) -> ScoreTextModel:
    """A score-based text model for a gateway URL ``http(s)://HOST:PORT/v1/models/NAME``.

    Every text attack runs against it as a black box: each text it sends is charged to the
    key's budget and rate, and logged by the gateway. A refusal for the key's rate is waited
    out (``Retry-After``, up to ``max_wait`` seconds in all); a spent budget raises
    :class:`dlsec.text.QueryRefusedError`, at which an attack stops and keeps what it found.
    The key comes from ``api_key`` or ``$DLSEC_API_KEY``; ``http`` is the HTTP client to use
    (e.g. FastAPI's ``TestClient``).

    Example:
        >>> model = connect_text("http://localhost:8000/v1/models/reviews")   # doctest: +SKIP
        >>> PWWS(max_change=0.2)(model, texts, labels).summary()               # doctest: +SKIP
    """
    from dlsec.text import ScoreTextModel

    m = _URL.match(url)
    if not m:
        raise ModelLoadError(f"{url}: a gateway model URL reads http(s)://HOST:PORT/v1/models/NAME")
    key = api_key or os.environ.get("DLSEC_API_KEY")
    if not key:
        raise ModelLoadError(f"{url}: set DLSEC_API_KEY to a gateway API key (`dlsec keys create`)")
    base, name = m.group(1), m.group(2)
    client = http if http is not None else httpx.Client(timeout=timeout)
    try:
        r = client.get(f"{base}/v1/models/{name}", headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"{url}: the gateway did not answer ({exc})") from None
    if r.status_code != 200:
        raise ModelLoadError(f"{url}: HTTP {r.status_code}: {_message(r)}")
    info = r.json()
    spec = info.get("spec")
    if spec is None:
        raise ModelLoadError(f"{url}: the model is not being served ({info.get('reason')})")
    if spec.get("kind") != "text":
        raise ModelLoadError(
            f"{url}: not a text model (its inputs are {spec.get('kind')}); use --model {url}"
        )
    output = str(info.get("output", ""))
    if output != "full" and not output.startswith("rounded"):
        raise ModelLoadError(
            f"{url}: the key's output policy ({output}) hides the probabilities text attacks need"
        )
    remote = _TextRemote(f"{base}/v1/models/{name}", key, client, max_wait)
    batch = min(batch_size, int(info.get("max_batch") or batch_size))
    return ScoreTextModel(remote, spec["class_names"], batch_size=batch)
