"""Generators, C2PA provenance and the DWT-DCT watermark (issue 19, first slice).

One signed sample is made once per module under its own home; each tampering case is its own
test, and each asserts the specific verdict, not just a failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlsec.cli import main
from dlsec.errors import DataError, SecurityFinding, UsageError
from dlsec.generative import (
    DIGITAL_SOURCE_TYPE,
    GENERATORS,
    ContentTamperedError,
    GeneratorInfo,
    ManifestMissingError,
    UntrustedSignerError,
    WatermarkCapacityError,
    assemble_png,
    bit_accuracy,
    detect_watermark,
    embed_watermark,
    generator_path,
    load_generator,
    message_bits,
    new_c2pa_chain,
    png_chunks,
    read_rgb,
    render_png,
    sign_image,
    to_rgb,
    train_generator,
    verify_provenance,
    watermark_capacity,
    write_samples,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gen-home")


@pytest.fixture(scope="module")
def signed(home: Path) -> Path:
    """One signed, watermarked sample of zoo-gan (trains the generator once for this module)."""
    files = write_samples("zoo-gan", home / "out", n=2, seed=3, watermark=b"dlsec", home=home)
    return files[0].path


# --------------------------------------------------------------------------- the generator


def test_gan_training_is_seeded() -> None:
    entry = dataclasses.replace(GENERATORS["zoo-gan"], epochs=1)
    first, second = train_generator(entry).state_dict(), train_generator(entry).state_dict()
    other = train_generator(dataclasses.replace(entry, seed=1)).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_generator_is_cached_with_its_digest(home: Path, signed: Path) -> None:
    gen = load_generator("zoo-gan", home=home)
    weights = generator_path("zoo-gan", home=home) / "model.safetensors"
    assert gen.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    card = json.loads((weights.parent / "card.json").read_text())
    assert card["weights_sha256"] == gen.weights_sha256
    images = gen.sample(8, seed=0)
    assert images.shape == (8, 8, 8) and images.min() >= 0.0 and images.max() <= 1.0
    assert np.array_equal(images, gen.sample(8, seed=0))
    # Samples look like the digits (mean ink near the data's 0.31), not noise or blank pages.
    assert 0.15 < float(gen.sample(256, seed=1).mean()) < 0.45


def test_tampered_cache_is_retrained(home: Path, signed: Path) -> None:
    weights = generator_path("zoo-gan", home=home) / "model.safetensors"
    digest = load_generator("zoo-gan", home=home).weights_sha256
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert load_generator("zoo-gan", home=home).weights_sha256 == digest  # retrained, same seed


# --------------------------------------------------------------------------- provenance


def test_sign_verify_round_trip_reads_back_what_was_written(home: Path, signed: Path) -> None:
    report = verify_provenance(signed, home=home)
    gen = load_generator("zoo-gan", home=home)
    assert report.state == "Trusted"
    assert report.generator["name"] == "zoo-gan" and report.generator["version"] == gen.version
    assert report.generator["weights_sha256"] == gen.weights_sha256
    assert (
        report.generator["weights_sha256"]
        == hashlib.sha256(
            (generator_path("zoo-gan", home=home) / "model.safetensors").read_bytes()
        ).hexdigest()
    )
    assert report.generator["created"].endswith("+00:00")
    assert report.digital_source_type == DIGITAL_SOURCE_TYPE
    assert report.claim_generator.startswith("dlsec")


def test_signing_keys_are_private_and_their_root_trusted(home: Path, signed: Path) -> None:
    folder = home / "keys" / "c2pa"
    assert (folder / "signer.key.pem").stat().st_mode & 0o077 == 0
    assert len(list((folder / "trust").glob("*.pem"))) == 1


def test_one_changed_pixel_is_tampering(home: Path, signed: Path, tmp_path: Path) -> None:
    png = signed.read_bytes()
    manifest = [c for c in png_chunks(png) if c[0] == b"caBX"]
    assert len(manifest) == 1
    pixels = read_rgb(signed)
    pixels[10, 10, 0] ^= 1
    fresh = png_chunks(render_png(pixels))
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(assemble_png([fresh[0], *manifest, *fresh[1:]]))  # the manifest kept, after IHDR
    assert np.array_equal(read_rgb(tampered), pixels)
    with pytest.raises(ContentTamperedError, match="content changed"):
        verify_provenance(tampered, home=home)


def test_stripped_manifest_is_a_finding(home: Path, signed: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped.png"
    stripped.write_bytes(assemble_png([c for c in png_chunks(signed.read_bytes()) if c[0] != b"caBX"]))
    assert np.array_equal(read_rgb(stripped), read_rgb(signed))
    with pytest.raises(ManifestMissingError, match="no C2PA manifest"):
        verify_provenance(stripped, home=home)


def test_unknown_signer_is_untrusted(home: Path, signed: Path, tmp_path: Path) -> None:
    # A valid chain made elsewhere: its own home, its own root, not in this home's trust list.
    other_home = tmp_path / "other"
    info = GeneratorInfo("zoo-gan", "1", weights_sha256="0" * 64)
    forged = tmp_path / "forged.png"
    forged.write_bytes(sign_image(render_png(read_rgb(signed)), info, home=other_home))
    verify_provenance(forged, home=other_home)  # valid where its root is trusted
    with pytest.raises(UntrustedSignerError, match="not in dlsec's C2PA trust list"):
        verify_provenance(forged, home=home)


def test_extra_trust_anchor_is_accepted(home: Path, signed: Path, tmp_path: Path) -> None:
    other_home = tmp_path / "other"
    info = GeneratorInfo("zoo-gan", "1", weights_sha256="0" * 64)
    forged = tmp_path / "forged.png"
    forged.write_bytes(sign_image(render_png(read_rgb(signed)), info, home=other_home))
    anchors = sorted((other_home / "keys" / "c2pa" / "trust").glob("*.pem"))
    assert verify_provenance(forged, home=home, trust=anchors).state == "Trusted"


def test_empty_trust_list_trusts_no_one(signed: Path, tmp_path: Path) -> None:
    with pytest.raises(UntrustedSignerError):
        verify_provenance(signed, home=tmp_path / "empty")


def test_new_chain_never_reuses_a_root() -> None:
    root_a, chain_a, _ = new_c2pa_chain()
    root_b, _, _ = new_c2pa_chain()
    assert root_a != root_b and root_a not in chain_a  # the root is an anchor, not embedded


def test_corrupt_and_unsupported_files_are_bad_input(home: Path, signed: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(signed.read_bytes()[:200])
    with pytest.raises(DataError):
        verify_provenance(corrupt, home=home)
    gif = tmp_path / "x.gif"
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    with pytest.raises(DataError, match="unsupported format"):
        verify_provenance(gif, home=home)
    assert not issubclass(DataError, SecurityFinding)


# --------------------------------------------------------------------------- watermark


def _digit_rgb() -> np.ndarray:
    from sklearn.datasets import load_digits

    return to_rgb(load_digits().images[7] / 16.0, 256)


def test_watermark_round_trip_is_exact() -> None:
    message = b"dlsec wm"
    marked = embed_watermark(_digit_rgb(), message)
    assert bit_accuracy(detect_watermark(marked, len(message) * 8), message_bits(message)) == 1.0
    # Through a PNG file too, and imperceptible (PSNR above 38 dB).
    back = np.asarray(Image.open(io.BytesIO(render_png(marked))).convert("RGB"))
    assert np.array_equal(detect_watermark(back, 64), message_bits(message))
    mse = np.mean((marked.astype(float) - _digit_rgb().astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 38


def test_signed_sample_carries_its_watermark(signed: Path) -> None:
    assert np.array_equal(detect_watermark(read_rgb(signed), 40), message_bits(b"dlsec"))


def test_watermark_longer_than_capacity_is_refused() -> None:
    image = _digit_rgb()
    assert watermark_capacity(image.shape) == 1024
    embed_watermark(image, b"x" * 128)  # exactly the capacity
    with pytest.raises(WatermarkCapacityError, match="exceeds the capacity"):
        embed_watermark(image, b"x" * 129)


def test_watermark_needs_256_pixels() -> None:
    with pytest.raises(UsageError, match="too small"):
        embed_watermark(np.zeros((64, 64, 3), np.uint8), b"x")


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes(home: Path, signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--home", str(home), "gen"]
    out = tmp_path / "samples"
    assert main([*base, "sample", "--n", "2", "--out", str(out), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 2
    assert main([*base, "verify", *(f["path"] for f in files)]) == 0
    stripped = tmp_path / "stripped.png"
    stripped.write_bytes(
        assemble_png([c for c in png_chunks(Path(files[0]["path"]).read_bytes()) if c[0] != b"caBX"])
    )
    capsys.readouterr()
    assert main([*base, "verify", files[1]["path"], str(stripped)]) == 1
    assert "no C2PA manifest" in capsys.readouterr().err
    assert main(["--home", str(tmp_path / "elsewhere"), "gen", "verify", str(signed)]) == 1
    assert "trust list" in capsys.readouterr().err
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert main([*base, "verify", str(garbage), str(stripped)]) == 2
    assert main([*base, "verify", str(tmp_path / "missing.png")]) == 2


def test_cli_watermark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(render_png(_digit_rgb()))
    marked = tmp_path / "marked.png"
    wm = ["gen", "watermark"]
    assert main([*wm, "embed", str(source), "-m", "dlsec", "-o", str(marked)]) == 0
    capsys.readouterr()
    assert main([*wm, "detect", str(marked), "--expect", "dlsec", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == "dlsec" and payload["bit_accuracy"] == 1.0
    assert main([*wm, "detect", str(source), "--expect", "dlsec"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main([*wm, "embed", str(source), "-m", "x" * 129, "-o", str(tmp_path / "big.png")]) == 2
    assert "exceeds the capacity" in capsys.readouterr().err
    assert not (tmp_path / "big.png").exists()
    assert main([*wm, "detect", str(marked)]) == 2
