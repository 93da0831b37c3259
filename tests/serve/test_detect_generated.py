"""The synthetic-image detector at the gateway (dlsec serve --detect-generated): uploads scored and
audited, image inputs of predictions scored on the worker, a flagged image raising an alert.

A tiny detector (3 epochs on zoo-gan) stands in for the shipped ones; the assertions do not
depend on its quality: the images are picked by the detector's own offline scores, and the route
must give the same score and verdict for the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from dlsec.core.arch import build_architecture
from dlsec.core.io import save_safetensors_model
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError
from dlsec.generative import (
    SYNTHETIC_DETECTORS,
    SyntheticDetectorEntry,
    generator_path,
    load_generator,
    load_synthetic_detector,
    read_rgb,
    real_digits,
    render_png,
    to_rgb,
)
from dlsec.generative._cache import cache_folder
from dlsec.release import load_signing_keys, sign_model
from dlsec.serve import Gateway, GatewayConfig, create_app
from dlsec.store import Registry
from dlsec.store._apikeys import KeyStore
from tests.release.test_registry import PASS
from tests.serve.conftest import auth

TINY = "tiny-serve"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        SYNTHETIC_DETECTORS,
        TINY,
        SyntheticDetectorEntry(TINY, "1", "zoo-gan", n_generated=300, params={"epochs": 3}),
    )


def _copy_cached(home: Path) -> None:
    """zoo-gan and the tiny detector, trained once in the session's home, copied into this one."""
    load_synthetic_detector(TINY)
    for source, target in (
        (generator_path("zoo-gan"), generator_path("zoo-gan", home=home)),
        (cache_folder(TINY, None), cache_folder(TINY, home)),
    ):
        if not target.exists():
            shutil.copytree(source, target)


def _register_image_model(home: Path) -> None:
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 4, "hidden": 8}
    folder = home / "src" / "digits"
    folder.mkdir(parents=True)
    spec = InputSpec(shape=(1, 8, 8), num_classes=10, kind="image")
    save_safetensors_model(
        build_architecture("cnn", kwargs), spec, folder / "model.safetensors", arch="cnn", arch_kwargs=kwargs
    )
    sign_model(folder, load_signing_keys(home / "keys", passphrase=PASS))
    reg = Registry.open(home=home)
    reg.promote("digits", reg.add(folder, "digits").version)
    reg.close()


def _picked(home: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """The generated sample the detector is surest of, and the real digit it is surest is real."""
    det = load_synthetic_detector(TINY, home=home)
    fake = load_generator("zoo-gan", home=home).sample(40, seed=4242)
    real = real_digits("test")[:40]
    fake_scores, real_scores = det.score(list(fake)), det.score(list(real))
    assert fake_scores.max() > det.threshold_ > real_scores.min()
    return fake[int(fake_scores.argmax())], real[int(real_scores.argmin())], det


def _b64(image: np.ndarray) -> tuple[str, bytes]:
    png = render_png(to_rgb(image, 64))
    return base64.b64encode(png).decode(), png


def test_uploads_and_image_inputs_are_scored_audited_and_alerted(
    tiny: None, home: Path, tmp_path: Path
) -> None:
    _copy_cached(home)
    _register_image_model(home)
    fake, real, det = _picked(home)
    store = KeyStore(Registry.open(home=home).db)
    key, record = store.create(role="client", models=["digits"], budget=4)
    cfg = GatewayConfig(models=["digits"], detect_generated=TINY, refresh_seconds=0, detector_process=False)
    gateway = Gateway(cfg, home=home)
    with TestClient(create_app(gateway)) as c:
        fake_b64, fake_png = _b64(fake)
        real_b64, _ = _b64(real)
        flagged = c.post("/v1/detect/generated", json={"image_base64": fake_b64}, headers=auth(key))
        assert flagged.status_code == 200, flagged.text
        body = flagged.json()
        (tmp_path / "fake.png").write_bytes(fake_png)
        expected = float(det.score([read_rgb(tmp_path / "fake.png")])[0])
        assert body["generated"] is True and body["score"] == pytest.approx(expected, abs=1e-6)
        assert body["sha256"] == hashlib.sha256(fake_png).hexdigest() and body["detector"] == TINY
        passed = c.post("/v1/detect/generated", json={"image_base64": real_b64}, headers=auth(key)).json()
        assert passed["generated"] is False and passed["score"] <= passed["threshold"]
        # Two image inputs of a prediction: the generated one is flagged on the worker.
        r = c.post(
            "/v1/models/digits/predict",
            json={"inputs": [fake[None].tolist(), real[None].tolist()]},
            headers=auth(key),
        )
        assert r.status_code == 200, r.text
        # Budget 4: two uploads and two predictions used it up; bad input is refused before charging.
        assert (
            c.post("/v1/detect/generated", json={"image_base64": "%%%"}, headers=auth(key)).status_code == 422
        )
        gif = tmp_path / "x.gif"
        Image.new("RGB", (8, 8)).save(gif, "GIF")
        bad = c.post(
            "/v1/detect/generated",
            json={"image_base64": base64.b64encode(gif.read_bytes()).decode()},
            headers=auth(key),
        )
        assert bad.status_code == 422 and "unsupported image format" in bad.json()["error"]
        corrupt = base64.b64encode(fake_png[:60]).decode()
        assert (
            c.post("/v1/detect/generated", json={"image_base64": corrupt}, headers=auth(key)).status_code
            == 422
        )
        over = c.post("/v1/detect/generated", json={"image_base64": real_b64}, headers=auth(key))
        assert over.status_code == 429 and over.json()["reason"] == "budget"
        gateway.drain()
    alerts = [a for a in gateway.alerts() if a.get("source") == "synthetic-image"]
    uploads = [a for a in alerts if "upload_sha256" in a]
    inputs = [a for a in alerts if a.get("model") == "digits"]
    assert [a["upload_sha256"] for a in uploads] == [body["sha256"]]
    assert uploads[0]["key_id"] == record.id and uploads[0]["subject"] == f"apikey:{record.id}"
    assert len(inputs) == 1 and inputs[0]["flagged"] == 1 and inputs[0]["rows"] == 2
    scored = [e for e in gateway.audit.entries() if e.action == "gateway.detect"]
    assert [e.details["generated"] for e in scored] == [True, False]
    assert {e.actor for e in scored} == {f"apikey:{record.id}"}


def test_without_a_detector_the_route_is_off(home: Path, keys: dict[str, str]) -> None:
    cfg = GatewayConfig(models=["clf"], refresh_seconds=0, detector_process=False)
    with TestClient(create_app(Gateway(cfg, home=home))) as c:
        r = c.post("/v1/detect/generated", json={"image_base64": ""}, headers=auth(keys["client"]))
        assert r.status_code == 404 and r.json()["reason"] == "disabled"
        assert c.post("/v1/detect/generated", json={"image_base64": ""}).status_code == 401


def test_an_unknown_detector_is_refused_at_start(home: Path) -> None:
    with pytest.raises(UsageError, match="unknown synthetic-image detector 'nope'"):
        Gateway(GatewayConfig(models=["clf"], detect_generated="nope", detector_process=False), home=home)
