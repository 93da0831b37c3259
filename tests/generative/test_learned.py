"""zoo-vae, the learned watermark and the synthetic-image detector (issue 19, second slice).

Training here uses tiny recipes (a few hundred steps, a couple of epochs) so the default run
stays short on one CPU thread; the shipped recipes run in benchmarks/generative.py. The tiny
watermark carries 16 bits, enough for every property tested (exact round trip, capacity,
seeding), and it trains without the noise layer; robustness under edits is the benchmark's job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlsec.cli import main
from dlsec.errors import NotFittedError, UsageError
from dlsec.generative import (
    GENERATORS,
    SYNTHETIC_DETECTORS,
    Generator,
    GeneratorEntry,
    LearnedWatermark,
    LearnedWatermarkEntry,
    SpectrumDetector,
    SyntheticDetectorEntry,
    WatermarkCapacityError,
    _learned,
    bit_accuracy,
    generator_path,
    get_watermark,
    load_generator,
    load_learned_watermark,
    message_bits,
    read_rgb,
    register_generator,
    render_png,
    to_rgb,
    train_generator,
)

# No noise layer and twice the strength (34 dB): the tiny recipe learns an exact channel in a few
# hundred steps. Its decoder never saw a crop, so detection does not search crops either.
TINY_WM = LearnedWatermarkEntry(
    name="learned-watermark-tiny",
    bits=16,
    rms=0.02,
    steps=400,
    batch_size=16,
    lr=5e-3,
    noise=False,
    sync=False,
)
TINY_VAE = "test-vae-tiny"


@pytest.fixture(scope="module")
def home(tiny_home: Path) -> Path:
    return tiny_home  # shared with test_assess_generative.py: the tiny recipes train once


@pytest.fixture(scope="module")
def wm(home: Path) -> LearnedWatermark:
    return load_learned_watermark(home=home, entry=TINY_WM)


@pytest.fixture(scope="module")
def tiny_vae() -> GeneratorEntry:
    if TINY_VAE not in GENERATORS:
        register_generator(GeneratorEntry(name=TINY_VAE, version="1", kind="vae", latent_dim=8, epochs=2))
    return GENERATORS[TINY_VAE]


def _digits(n: int, offset: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images[offset : offset + n] / 16.0, dtype=np.float32)


# --------------------------------------------------------------------------- zoo-vae


def test_vae_is_registered_beside_the_gan() -> None:
    assert GENERATORS["zoo-vae"].kind == "vae" and GENERATORS["zoo-gan"].kind == "gan"
    with pytest.raises(UsageError, match="unknown kind"):
        register_generator(GeneratorEntry(name="test-bad-kind", version="1", kind="flow"))


def test_vae_training_is_seeded(tiny_vae: GeneratorEntry) -> None:
    first, second = train_generator(tiny_vae).state_dict(), train_generator(tiny_vae).state_dict()
    other = train_generator(dataclasses.replace(tiny_vae, seed=1)).state_dict()
    assert first.keys() == second.keys() and "encoder.0.weight" in first
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_same_seed_gives_the_same_weights_digest(tiny_vae: GeneratorEntry, tmp_path: Path) -> None:
    a = load_generator(TINY_VAE, home=tmp_path / "a")
    b = load_generator(TINY_VAE, home=tmp_path / "b")
    assert a.weights_sha256 == b.weights_sha256
    weights = generator_path(TINY_VAE, home=tmp_path / "a") / "model.safetensors"
    assert a.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    images = a.sample(4, seed=0)
    assert images.shape == (4, 8, 8) and images.min() >= 0.0 and images.max() <= 1.0
    assert np.array_equal(images, b.sample(4, seed=0))
    recon = a.reconstruct(_digits(4))
    assert recon.shape == (4, 8, 8)


def test_gan_has_no_encoder() -> None:
    gen = Generator(
        name="zoo-gan", version="1", weights_sha256="0" * 64, latent_dim=4, module=torch.nn.Identity()
    )
    with pytest.raises(UsageError, match="no encoder"):
        gen.reconstruct(_digits(1))


# --------------------------------------------------------------------------- learned watermark


def test_learned_round_trip_is_exact(wm: LearnedWatermark) -> None:
    for i, message in enumerate([b"dl", b"\x00\xff", b"\xa5"]):
        image = to_rgb(_digits(1, offset=i)[0], 64)
        marked = wm.embed(image, message)
        assert marked.dtype == np.uint8 and marked.shape == image.shape
        assert np.array_equal(wm.detect(marked, len(message) * 8), message_bits(message))
        # Grey stays grey, and the strength is what the recipe fixes: RMS 0.02 is 34 dB, less
        # clipping (a brighter PSNR), never more.
        assert np.array_equal(marked[..., 0], marked[..., 2])
        mse = np.mean((marked.astype(float) - image.astype(float)) ** 2)
        assert 33.5 < 10 * np.log10(255**2 / mse) < 45


def test_learned_reads_any_size_through_a_png(wm: LearnedWatermark) -> None:
    import io

    image = to_rgb(_digits(1, offset=9)[0], 256)
    marked = wm.embed(image, b"ok")
    back = np.asarray(Image.open(io.BytesIO(render_png(marked))).convert("RGB"))
    assert bit_accuracy(wm.detect(back, 16), message_bits(b"ok")) == 1.0
    unmarked = wm.detect(image, 16)
    assert bit_accuracy(unmarked, message_bits(b"ok")) < 1.0


def test_learned_capacity_is_explicit(wm: LearnedWatermark) -> None:
    image = to_rgb(_digits(1)[0], 32)
    assert wm.capacity(image.shape) == 16
    wm.embed(image, b"xy")  # exactly the capacity
    with pytest.raises(WatermarkCapacityError, match="exceeds the learned watermark's capacity"):
        wm.embed(image, b"xyz")
    with pytest.raises(WatermarkCapacityError):
        wm.detect(image, 17)
    with pytest.raises(UsageError, match="too small"):
        wm.embed(np.zeros((16, 16, 3), np.uint8), b"x")
    with pytest.raises(UsageError, match="empty"):
        wm.embed(image, b"")


def test_crop_search_frames(wm: LearnedWatermark) -> None:
    rgb = torch.from_numpy(to_rgb(_digits(1, offset=4)[0], 64).astype(np.float32) / 255)
    assert wm.candidates(rgb).shape == (1, 1, 32, 32)
    searching = dataclasses.replace(wm, sync=True)
    frames = searching.candidates(rgb)
    assert frames.shape == (66, 1, 32, 32)  # the image itself, 4x4 and 7x7 offsets of 95% and 90% crops
    assert torch.equal(frames[0], wm.candidates(rgb)[0])
    # The first 90% frame (after the image and the 16 frames of 95%) puts the image in the top
    # left 29x29 pixels and repeats its edge below and to the right.
    first = frames[17, 0]
    assert torch.equal(first[-1], first[-3]) and torch.equal(first[:, -1], first[:, -3])
    assert not torch.equal(frames[17], frames[18])
    assert searching.logits(rgb).shape == (66, 16)


def test_learned_training_is_seeded() -> None:
    entry = dataclasses.replace(TINY_WM, steps=3)
    first = _learned.train_learned_watermark(entry).state_dict()
    second = _learned.train_learned_watermark(entry).state_dict()
    other = _learned.train_learned_watermark(dataclasses.replace(entry, seed=1)).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_learned_watermark_is_cached_with_its_digest(wm: LearnedWatermark, home: Path) -> None:
    folder = home / "cache" / "generative" / TINY_WM.name
    card = json.loads((folder / "card.json").read_text())
    assert card["weights_sha256"] == wm.weights_sha256
    assert wm.weights_sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert load_learned_watermark(home=home, entry=TINY_WM).weights_sha256 == wm.weights_sha256


def test_jpeg_approximation_is_close_to_quantisation_and_differentiable() -> None:
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    y = _learned.jpeg_approx(x, 50)
    assert y.shape == x.shape
    assert 0.0 < float((y - x).detach().abs().mean()) < 0.1  # changes the image, but not beyond recognition
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_unknown_method_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown watermark method"):
        get_watermark("lsb")


# --------------------------------------------------------------------------- synthetic-image detector


def test_detector_separates_real_from_generated(tiny_vae: GeneratorEntry, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    fake = load_generator(TINY_VAE, home=tmp_path).sample(400, seed=5)
    real = _digits(600)
    det = SpectrumDetector(epochs=4, seed=0).fit(real[:400], fake[:300])
    real_scores, fake_scores = det.score(list(real[400:])), det.score(list(fake[300:]))
    y = np.r_[np.zeros(len(real_scores)), np.ones(len(fake_scores))]
    assert roc_auc_score(y, np.r_[real_scores, fake_scores]) > 0.9
    assert det.predict(list(fake[300:])).mean() > 0.5
    # RGB files at 256x256 read as the 8x8 image they show.
    assert np.allclose(det.score([to_rgb(fake[300], 256)]), det.score([fake[300]]), atol=1e-4)


def test_detector_must_be_fitted() -> None:
    with pytest.raises(NotFittedError):
        SpectrumDetector().score([_digits(1)[0]])
    with pytest.raises(UsageError, match="too few"):
        SpectrumDetector().fit(_digits(10), _digits(10))


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def tiny_cli(monkeypatch: pytest.MonkeyPatch, tiny_vae: GeneratorEntry, wm: LearnedWatermark) -> None:
    """The CLI's default learned watermark and a detector entry, swapped for tiny recipes."""
    monkeypatch.setattr(_learned, "DEFAULT_ENTRY", TINY_WM)
    monkeypatch.setitem(
        SYNTHETIC_DETECTORS,
        "tiny",
        SyntheticDetectorEntry("tiny", "1", TINY_VAE, n_generated=300, params={"epochs": 3}),
    )


def test_cli_learned_watermark(
    tiny_cli: None, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(render_png(to_rgb(_digits(1, offset=3)[0], 64)))
    marked = tmp_path / "marked.png"
    wm = ["--home", str(home), "gen", "watermark"]
    assert main([*wm, "embed", str(source), "-m", "ok", "--method", "learned", "-o", str(marked)]) == 0
    capsys.readouterr()
    assert main([*wm, "detect", str(marked), "--method", "learned", "--expect", "ok", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == "ok" and payload["bit_accuracy"] == 1.0 and payload["method"] == "learned"
    too_long = tmp_path / "big.png"
    assert main([*wm, "embed", str(source), "-m", "oks", "--method", "learned", "-o", str(too_long)]) == 2
    assert "exceeds the learned watermark's capacity" in capsys.readouterr().err
    assert not too_long.exists()
    assert main([*wm, "embed", str(source), "-m", "ok", "--method", "lsb", "-o", str(too_long)]) == 2
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(source.read_bytes()[:60])
    assert main([*wm, "detect", str(corrupt), "--method", "learned", "--bits", "16"]) == 2
    assert "corrupt image" in capsys.readouterr().err


def test_cli_sample_with_zoo_vae_and_learned_watermark(
    tiny_cli: None, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--home", str(home), "gen"]
    out = tmp_path / "vae"
    args = ["sample", "--model", TINY_VAE, "--n", "2", "--size", "64", "--out", str(out)]
    assert main([*base, *args, "--watermark", "ok", "--watermark-method", "learned", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert main([*base, "verify", files[0]["path"]]) == 0
    marked = read_rgb(files[0]["path"])
    wm = load_learned_watermark(home=home, entry=TINY_WM)
    assert np.array_equal(wm.detect(marked, 16), message_bits(b"ok"))


def test_cli_detect_exit_codes(
    tiny_cli: None, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    real_dir.mkdir()
    for i, image in enumerate(_digits(3, offset=1500)):
        (real_dir / f"{i}.png").write_bytes(render_png(to_rgb(image, 64)))
    fake_dir.mkdir()
    for i, image in enumerate(load_generator(TINY_VAE, home=home).sample(3, seed=77)):
        (fake_dir / f"{i}.png").write_bytes(render_png(to_rgb(image, 64)))
    base = ["--home", str(home), "gen", "detect", "--detector", "tiny"]
    assert main([*base, str(fake_dir), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["flagged"] >= 2 and len(payload["files"]) == 3
    code = main([*base, str(real_dir), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == (1 if payload["flagged"] else 0) and payload["flagged"] <= 1
    gif = tmp_path / "x.gif"
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    assert main([*base, str(gif), str(fake_dir / "0.png")]) == 2  # bad input wins over a finding
    assert "unsupported format" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "missing.png")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, str(empty)]) == 2
    assert main(["--home", str(home), "gen", "detect", "--detector", "nope", str(real_dir)]) == 2


@pytest.mark.slow
def test_shipped_learned_watermark_survives_jpeg_50(tmp_path: Path) -> None:
    """The shipped recipe (trained here, minutes of CPU) meets the issue's target after JPEG 50 (bit
    accuracy 0.95) on real digits; it measured 0.97 both clean and after JPEG 50 (not exact: the
    sharp strokes of real digits clip the residual more than the generators' softer ones)."""
    import io

    wm = load_learned_watermark(home=tmp_path)
    rng = np.random.default_rng(0)
    clean, jpeg = [], []
    for i in range(20):
        image = to_rgb(_digits(1, offset=100 + i)[0], 256)
        message = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        marked = wm.embed(image, message)
        clean.append(bit_accuracy(wm.detect(marked, 32), message_bits(message)))
        buf = io.BytesIO()
        Image.fromarray(marked).save(buf, "JPEG", quality=50)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        jpeg.append(bit_accuracy(wm.detect(back, 32), message_bits(message)))
    assert np.mean(clean) >= 0.95 and np.mean(jpeg) >= 0.95
