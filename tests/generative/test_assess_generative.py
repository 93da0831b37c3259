"""The assessment's generative section (issue 19): provenance, watermark robustness, detectors, gallery.

Tiny recipes (a 2-epoch VAE as the generator and the regenerator, a 3-epoch detector, the
noise-free 16-bit learned watermark of test_learned.py) keep the default run short; what is
asserted holds for any recipe: every tampering case reaches its named verdict, the manifests
carry the generator's own digest, DWT-DCT does not survive JPEG 50 (its bits sit in
coefficients JPEG quantises away), a gradient attack on DWT-DCT is named as not run, and a
resumed run reuses every unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlsec.assess import Campaign
from dlsec.assess.generative import GenerativeSection, generator_name, run_generative_assessment
from dlsec.cli import main
from dlsec.core.data import load_dataset
from dlsec.errors import UsageError
from dlsec.generative import (
    GENERATORS,
    SYNTHETIC_DETECTORS,
    GeneratorEntry,
    LearnedWatermarkEntry,
    SyntheticDetectorEntry,
    _learned,
    load_generator,
    register_generator,
)

TINY_GEN = "test-vae-tiny"
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
SECTION: dict[str, Any] = {
    "samples": 4,
    "size": 256,
    "watermarks": ["learned", "dwtdct"],
    "edits": ["jpeg-50", "pgd-4", "regenerate-vae"],
    "message_bits": 16,
    "regenerator": TINY_GEN,
    "detectors": ["tiny"],
    "detector_samples": 40,
    "gallery": 2,
}


@pytest.fixture(scope="module")
def home(tiny_home: Path) -> Path:
    return tiny_home  # shared with test_learned.py: the tiny recipes train once


@pytest.fixture(scope="module")
def tiny() -> Any:
    """The tiny generator, detector and learned watermark, in place of the shipped ones."""
    if TINY_GEN not in GENERATORS:
        register_generator(GeneratorEntry(name=TINY_GEN, version="1", kind="vae", latent_dim=8, epochs=2))
    patch = pytest.MonkeyPatch()
    patch.setattr(_learned, "DEFAULT_ENTRY", TINY_WM)
    patch.setitem(
        SYNTHETIC_DETECTORS,
        "tiny",
        SyntheticDetectorEntry("tiny", "1", TINY_GEN, n_generated=300, params={"epochs": 3}),
    )
    yield
    patch.undo()


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("builtin:digits").split(test_size=0.25, seed=0)[1]


@pytest.fixture(scope="module")
def assessed(tiny: None, home: Path, digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("gen-assess") / "run"
    campaign = Campaign.model_validate({"generative": SECTION, "seed": 3})
    result = run_generative_assessment(
        TINY_GEN, digits, campaign, out, model_ref=f"zoo:{TINY_GEN}", title="<script>x</script>", home=home
    )
    return out, campaign, result


def test_names_resolve_to_generators() -> None:
    assert generator_name("zoo:zoo-gan") == "zoo-gan" and generator_name("zoo-vae") == "zoo-vae"
    assert generator_name("zoo:digits-cnn") is None and generator_name("model.safetensors") is None


def test_campaign_refuses_unknown_parts() -> None:
    with pytest.raises(ValueError, match="unknown edit 'sharpen'"):
        GenerativeSection(edits=["sharpen"])
    with pytest.raises(ValueError, match="unknown watermark 'lsb'"):
        GenerativeSection(watermarks=["lsb"])
    with pytest.raises(ValueError, match="multiple of 8"):
        GenerativeSection(message_bits=12)


def test_provenance_of_every_output_and_each_tampering_case(assessed: Any, home: Path) -> None:
    out, _, result = assessed
    prov = result.report["generative"]["provenance"]
    digest = load_generator(TINY_GEN, home=home).weights_sha256
    assert prov["generator"]["weights_sha256"] == digest == result.report["model"]["sha256"]
    assert prov["valid"] == prov["samples"] == 4
    assert all(f["valid"] for f in prov["files"])
    assert len(list((out / "generative" / "samples").glob("*.png"))) == 4
    verdicts = {c["case"]: (c["detected"], c["verdict"], c["expected"]) for c in prov["tampering"]}
    assert verdicts == {
        "pixel changed": (True, "ContentTamperedError", "ContentTamperedError"),
        "manifest stripped": (True, "ManifestMissingError", "ManifestMissingError"),
        "foreign signer": (True, "UntrustedSignerError", "UntrustedSignerError"),
    }
    assert not any(f["code"].startswith("generative-provenance") for f in result.report["findings"])


def test_watermark_table_and_findings(assessed: Any) -> None:
    _, _, result = assessed
    marks = result.report["generative"]["watermarks"]
    assert marks["learned"]["clean_bit_accuracy"] == 1.0 and marks["dwtdct"]["clean_bit_accuracy"] == 1.0
    assert marks["learned"]["psnr_db"] > 30 and marks["dwtdct"]["psnr_db"] > 30
    assert set(marks["learned"]["edits"]) == {"jpeg-50", "pgd-4", "regenerate-vae"}
    dwt_jpeg = marks["dwtdct"]["edits"]["jpeg-50"]
    assert dwt_jpeg["bit_accuracy"] < 0.75 and dwt_jpeg["tpr_at_1pct_fpr"] < 0.5
    # DWT-DCT has no gradient: the PGD removal attack is named as not run, never passed.
    assert "pgd-4" not in marks["dwtdct"]["edits"]
    assert {"check": "watermark dwtdct under pgd-4", "reason": marks["dwtdct"]["not_run"]["pgd-4"]} in (
        result.report["not_run"]
    )
    assert result.report["verdict"] == "partial" and result.report["complete"] is False
    finding = next(f for f in result.report["findings"] if f["code"] == "generative-watermark-dwtdct")
    assert finding["severity"] == "high" and "JPEG 50" in finding["title"]
    assert finding["owasp"].startswith("ML09") and finding["atlas"].startswith("AML.T0015")


def test_detector_scores_on_outputs(assessed: Any) -> None:
    _, _, result = assessed
    (det,) = result.report["generative"]["detectors"]
    assert det["detector"] == "tiny" and det["seen"] is True and det["generated"] == 40
    assert det["real"] == result.report["data"]["rows"] == 450
    assert det["auroc"] > 0.8 and det["fpr"] < 0.1
    assert len(det["gallery_scores"]) == 2


def test_reports_escape_and_carry_the_section(assessed: Any) -> None:
    out, _, result = assessed
    page = (out / "report.html").read_text()
    assert 'id="generative"' in page and "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert page.count('src="data:image/png;base64,') >= 4  # two outputs, two residuals
    assert "watermark dwtdct under pgd-4" in page
    saved = json.loads((out / "report.json").read_text())
    assert saved["generative"]["gallery"][0]["provenance"] == "valid"
    sarif = json.loads((out / "report.sarif").read_text())
    assert "dlsec/generative-watermark-dwtdct" in {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert 'skipped message="' in (out / "junit.xml").read_text()


def test_a_resumed_run_reuses_every_unit(assessed: Any, home: Path, digits: Any) -> None:
    out, campaign, first = assessed
    again = run_generative_assessment(TINY_GEN, digits, campaign, out, model_ref=f"zoo:{TINY_GEN}", home=home)
    assert again.report["reproducibility"]["units_reused"] == 4  # provenance, two watermarks, one detector
    assert again.report["generative"]["watermarks"] == first.report["generative"]["watermarks"]


def test_untrusted_signer_is_a_provenance_finding(tiny: None, digits: Any, tmp_path: Path) -> None:
    """A home whose trust list lost the signer's root: every output fails, and the report says so."""
    home = tmp_path / "home"
    section = {**SECTION, "watermarks": [], "detectors": [], "samples": 2, "gallery": 1}
    campaign = Campaign.model_validate({"generative": section})
    run_generative_assessment(TINY_GEN, digits, campaign, tmp_path / "first", home=home)
    for anchor in (home / "keys" / "c2pa" / "trust").glob("*.pem"):
        anchor.unlink()
    result = run_generative_assessment(TINY_GEN, digits, campaign, tmp_path / "second", home=home)
    prov = result.report["generative"]["provenance"]
    assert prov["valid"] == 0 and {f["error"] for f in prov["files"]} == {"UntrustedSignerError"}
    finding = next(f for f in result.report["findings"] if f["code"] == "generative-provenance")
    assert finding["severity"] == "high" and "2 of 2" in finding["title"]


def test_tabular_data_is_refused_before_any_training(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="give an image dataset"):
        run_generative_assessment("zoo-gan", load_dataset("builtin:breast-cancer"), Campaign(), tmp_path)


def test_cli_assess_on_a_generator(
    assessed: Any, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, campaign, _ = assessed
    spec = campaign.model_dump(mode="json")
    spec["gates"] = [{"name": "no high findings", "metric": "findings", "severity": "high", "max": 0}]
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ["--home", str(home), "assess", "--model", f"zoo:{TINY_GEN}", "--data", "builtin:digits"]
    code = main([*args, "--campaign", str(path), "--out", str(tmp_path / "cli"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 1 and payload["verdict"] == "fail" and payload["clean_accuracy"] is None
    assert payload["generative"]["provenance_valid"] == 4
    assert payload["generative"]["watermarks"]["learned"]["jpeg-50"] >= 0.0
    code = main([*args, "--campaign", str(path), "--out", str(tmp_path / "cli2"), "--access", "score"])
    assert code == 2 and "does not apply to a generator" in capsys.readouterr().err
    bad = ["--home", str(home), "assess", "--model", "zoo:zoo-gan", "--data", "builtin:breast-cancer"]
    assert main([*bad, "--out", str(tmp_path / "cli3")]) == 2
    err = capsys.readouterr().err
    assert "give an image dataset" in err and "Traceback" not in err
