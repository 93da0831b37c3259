"""The assessment's generative section: provenance, watermark robustness, detection, a gallery.

A built-in generator (``dlsec assess --model zoo:zoo-gan --data builtin:digits``) runs a
generative campaign; the data are the *real* images that the synthetic-image detectors must
not flag. Each part is a resumable unit:

- **provenance**: ``samples`` images signed as :func:`dlsec.generative.signed_samples` signs them
  (what ``dlsec gen sample`` and the gateway serve), written to ``OUT/generative/samples/``
  and verified with c2pa-python's reader against the home's trust list; the manifest's weights
  digest must equal the generator's. Then three tampering cases on the first image, each with
  its expected verdict: one changed pixel (content tampered), the manifest stripped (missing),
  and the same pixels signed by a chain outside the trust list (untrusted signer).
- **watermarks**: each method of ``watermarks`` embeds a random ``message_bits``-bit message in
  each sample, and detection is scored under each edit of ``edits``
  (:func:`dlsec.generative.watermark_robustness`): bit accuracy and TPR at 1% FPR, PSNR.
- **detectors**: each synthetic-image detector scores ``detector_samples`` fresh outputs
  (latent seed ``seed + 2000``; the built-in detectors trained on seed 1000) against the real
  images: AUROC, and the TPR and FPR at the threshold the detector ships with.
- **gallery**: the first ``gallery`` samples with their provenance verdict, detector scores and
  the watermark's residual (amplified), as PNG data URIs.

Findings (OWASP ML09 Output Integrity Attack): outputs whose provenance does not verify, a
tampering case that verification misses, a watermark that an everyday edit or a removal attack
takes out (detection below ``min_tpr`` at 1% false positives), and outputs that no detector
flags at ``detector_min_tpr``. What cannot run (a watermark library that is missing, an image
too small for a method, a gradient attack on a method without gradients) is listed in
``not_run`` with its reason, and the verdict is then partial.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlsec.assess._finding import finding
from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.assess.campaign import Campaign
    from dlsec.assess.runner import Assessment, Progress
    from dlsec.core.data import Dataset

__all__ = ["GenerativeSection", "generator_name", "run_generative_assessment"]

OWASP = "ML09 Output Integrity Attack"
ATLAS_EVADE = "AML.T0015 Evade AI Model"
ATLAS_HARM = "AML.T0048 External Harms"
EVERYDAY = "everyday edit"


def _default_edits() -> list[str]:
    return [
        "jpeg-90",
        "jpeg-50",
        "resize-0.5",
        "crop-10",
        "noise-10",
        "blur-2",
        "pgd-4",
        "regenerate-vae",
    ]


class GenerativeSection(BaseModel):
    """Campaign settings of the generative section (runs when the model is a built-in generator).

    ``samples`` images (``size`` pixels square) are signed and verified and carry the
    watermarks; ``watermarks`` are methods of :data:`dlsec.generative.WATERMARK_METHODS`,
    ``edits`` names of :data:`dlsec.generative.WATERMARK_EDITS`; ``message_bits`` the random
    message each image carries (a multiple of 8); ``regenerator`` the VAE of the regeneration
    attack; ``min_tpr`` the detection rate at 1% false positives below which an edit counts as
    removing the watermark. ``detectors`` are built-in synthetic-image detectors, scored on
    ``detector_samples`` outputs; ``detector_min_tpr`` the share of outputs the best of them must
    flag. ``gallery`` images are shown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    samples: int = Field(16, ge=2, le=1000)
    size: int = Field(256, ge=32, le=1024)
    watermarks: list[str] = Field(default_factory=lambda: ["learned", "dwtdct"])
    edits: list[str] = Field(default_factory=_default_edits)
    message_bits: int = Field(32, ge=8, le=1024, multiple_of=8)
    regenerator: str = "zoo-vae"
    min_tpr: float = Field(0.5, gt=0, le=1)
    detectors: list[str] = Field(default_factory=lambda: ["spectrum-gan", "spectrum-vae"])
    detector_samples: int = Field(200, ge=10, le=10000)
    detector_min_tpr: float = Field(0.5, gt=0, le=1)
    gallery: int = Field(8, ge=0, le=32)

    @field_validator("watermarks")
    @classmethod
    def _watermarks(cls, value: list[str]) -> list[str]:
        from dlsec.generative import WATERMARK_METHODS

        return _known(value, WATERMARK_METHODS, "watermark")

    @field_validator("edits")
    @classmethod
    def _edits(cls, value: list[str]) -> list[str]:
        from dlsec.generative import WATERMARK_EDITS

        return _known(value, WATERMARK_EDITS, "edit")

    @field_validator("detectors")
    @classmethod
    def _detectors(cls, value: list[str]) -> list[str]:
        from dlsec.generative import SYNTHETIC_DETECTORS

        return _known(value, SYNTHETIC_DETECTORS, "detector")


def _known(value: list[str], choices: Iterable[str], what: str) -> list[str]:
    """``value`` without repeats, in order, or a one-line error naming the first unknown entry."""
    names = list(choices)
    unknown = [v for v in value if v not in names]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(names)}")
    return list(dict.fromkeys(value))


def generator_name(model_ref: str) -> str | None:
    """The built-in generator a ``--model`` names (``zoo:zoo-gan`` or ``zoo-gan``), else ``None``."""
    from dlsec.generative import GENERATORS

    name = model_ref.removeprefix("zoo:")
    return name if name in GENERATORS else None


# --------------------------------------------------------------------------- provenance


def _tamper_cases(signed: bytes, info: Any, work: Path) -> dict[str, tuple[bytes, type[Exception]]]:
    """Tampered copies of a signed PNG, each with the verdict verification must reach."""
    from dlsec.generative import (
        ContentTamperedError,
        ManifestMissingError,
        UntrustedSignerError,
        assemble_png,
        png_chunks,
        read_rgb,
        render_png,
        sign_image,
    )

    source = work / "signed.png"
    source.write_bytes(signed)
    pixels = read_rgb(source)
    manifest = [c for c in png_chunks(signed) if c[0] == b"caBX"]
    changed = pixels.copy()
    changed[changed.shape[0] // 2, changed.shape[1] // 2, 0] ^= 1
    fresh = png_chunks(render_png(changed))
    return {
        "pixel changed": (assemble_png([fresh[0], *manifest, *fresh[1:]]), ContentTamperedError),
        "manifest stripped": (
            assemble_png([c for c in png_chunks(signed) if c[0] != b"caBX"]),
            ManifestMissingError,
        ),
        # The same pixels signed by a valid chain made elsewhere (its own home and root).
        "foreign signer": (sign_image(render_png(pixels), info, home=work / "foreign"), UntrustedSignerError),
    }


def _provenance(name: str, cfg: GenerativeSection, seed: int, out: Path, home: Path | None) -> dict[str, Any]:
    from dlsec.fsutil import atomic_write_bytes
    from dlsec.generative import DIGITAL_SOURCE_TYPE, ProvenanceError, signed_samples, verify_provenance

    info, images = signed_samples(name, n=cfg.samples, seed=seed, size=cfg.size, home=home)
    folder = out / "generative" / "samples"
    rows = []
    for file_name, png in images:
        path = atomic_write_bytes(folder / file_name, png)
        row: dict[str, Any] = {"file": file_name}
        try:
            report = verify_provenance(path, home=home)
        except ProvenanceError as exc:
            row.update(valid=False, error=type(exc).__name__, reason=str(exc))
        else:
            gen = report.generator
            problems = []
            if gen.get("weights_sha256") != info.weights_sha256:
                problems.append("the manifest's weights digest differs from the generator's")
            if gen.get("name") != info.name:
                problems.append(f"the manifest names generator {gen.get('name')!r}")
            if report.digital_source_type != DIGITAL_SOURCE_TYPE:
                problems.append("no trainedAlgorithmicMedia source type")
            row.update(valid=not problems, signer=report.signer)
            if problems:
                row.update(error="ManifestContentMismatch", reason="; ".join(problems))
        rows.append(row)
    cases = []
    with tempfile.TemporaryDirectory(prefix="dlsec-tamper-") as tmp:
        work = Path(tmp)
        for case, (data, expected) in _tamper_cases(images[0][1], info, work).items():
            path = work / "case.png"
            path.write_bytes(data)
            try:
                verify_provenance(path, home=home)
            except ProvenanceError as exc:
                verdict = type(exc).__name__
                cases.append(
                    {"case": case, "detected": True, "verdict": verdict, "expected": expected.__name__}
                )
            else:
                cases.append(
                    {"case": case, "detected": False, "verdict": "valid", "expected": expected.__name__}
                )
    valid = sum(1 for r in rows if r["valid"])
    return {
        "generator": {"name": info.name, "version": info.version, "weights_sha256": info.weights_sha256},
        "samples": len(rows),
        "valid": valid,
        "folder": str(folder),
        "files": rows,
        "tampering": cases,
    }


# --------------------------------------------------------------------------- watermarks


def _residual_uri(original: np.ndarray, marked: np.ndarray) -> str:
    """The watermark's residual on the luminance, amplified x10 around grey, as a 64-pixel PNG."""
    import torch
    from torch.nn import functional as F

    from dlsec.assess.report import png_data_uri

    diff = (marked.astype(np.float32) - original.astype(np.float32)).mean(axis=2) / 255
    small = F.adaptive_avg_pool2d(torch.from_numpy(diff)[None, None], 64)[0].numpy()
    return png_data_uri(np.clip(0.5 + 10 * small, 0, 1), scale=1)


def _watermark(
    name: str,
    method_name: str,
    cfg: GenerativeSection,
    seed: int,
    home: Path | None,
) -> dict[str, Any]:
    from dlsec.generative import get_watermark, load_generator, to_rgb, watermark_robustness

    method = get_watermark(method_name, home=home)
    images = [to_rgb(im, cfg.size) for im in load_generator(name, home=home).sample(cfg.samples, seed=seed)]
    capacity = method.capacity(images[0].shape)
    if cfg.message_bits > capacity:
        raise UsageError(
            f"a {cfg.message_bits}-bit message exceeds the {method_name} watermark's capacity ({capacity} "
            "bits); lower generative.message_bits"
        )
    rng = np.random.default_rng(seed)
    messages = [rng.integers(0, 256, cfg.message_bits // 8, dtype=np.uint8).tobytes() for _ in images]
    result, marked = watermark_robustness(
        method, images, messages, list(cfg.edits), seed=seed, regenerator=cfg.regenerator, home=home
    )
    result["gallery"] = [_residual_uri(images[i], marked[i]) for i in range(min(cfg.gallery, len(images)))]
    return result


# --------------------------------------------------------------------------- detectors


def _real_images(data: Dataset) -> list[np.ndarray]:
    x = np.asarray(data.x, dtype=np.float32)
    if data.spec.kind != "image" or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UsageError(
            f"--data {data.name}: the generative section compares the generator's outputs with real "
            "images; give an image dataset (builtin:digits, an image folder or a .npz of images)"
        )
    x = np.clip(x, 0.0, 1.0)  # images are in [0, 1] (core's image loaders)
    if x.shape[1] == 1:
        return list(x[:, 0])
    return list(np.round(np.clip(x.transpose(0, 2, 3, 1), 0, 1) * 255).astype(np.uint8))


def _detector(
    name: str,
    det_name: str,
    real: list[np.ndarray],
    cfg: GenerativeSection,
    seed: int,
    home: Path | None,
) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from dlsec.generative import SYNTHETIC_DETECTORS, load_generator, load_synthetic_detector

    det = load_synthetic_detector(det_name, home=home)
    generator = load_generator(name, home=home)
    fake = det.score(list(generator.sample(cfg.detector_samples, seed=seed + 2000)))
    real_scores = det.score(real)
    y = np.r_[np.zeros(len(real_scores)), np.ones(len(fake))]
    shown = det.score(list(generator.sample(cfg.gallery, seed=seed))) if cfg.gallery else np.zeros(0)
    return {
        "detector": det_name,
        "trained_on": SYNTHETIC_DETECTORS[det_name].generator,
        "seen": SYNTHETIC_DETECTORS[det_name].generator == name,
        "threshold": float(det.threshold_),
        "auroc": float(roc_auc_score(y, np.r_[real_scores, fake])),
        "tpr": float(np.mean(fake > det.threshold_)),
        "fpr": float(np.mean(real_scores > det.threshold_)),
        "generated": int(len(fake)),
        "real": int(len(real_scores)),
        "gallery_scores": [float(s) for s in shown],
    }


# --------------------------------------------------------------------------- the run


def run_generative_assessment(
    generator: str,
    data: Dataset,
    campaign: Campaign,
    out: str | Path,
    *,
    model_ref: str | None = None,
    title: str | None = None,
    home: str | Path | None = None,
    progress: Progress | None = None,
) -> Assessment:
    """Run ``campaign``'s generative section against the built-in ``generator``; write the reports.

    Args:
        generator: a built-in generator's name (``zoo-gan``, ``zoo-vae``).
        data: real images, the detectors' negatives (the assessed split of ``builtin:digits``).
        campaign: what to run (its ``generative`` section, ``seed`` and ``gates``).
        out: output folder (resumable, as :func:`dlsec.assess.run_assessment`); the signed
            samples go to ``OUT/generative/samples``.
        model_ref: how the generator was named on the command line.
        home: the dlsec home (trained networks, the C2PA chain and trust list).
        progress: called as units finish.

    Example:
        >>> digits = load_dataset("builtin:digits")                                   # doctest: +SKIP
        >>> run_generative_assessment("zoo-gan", digits, Campaign(), "runs/gan")      # doctest: +SKIP
    """
    from dlsec.assess.gates import GateResult, build_gate
    from dlsec.assess.report import png_data_uri, reproducibility, write_all_reports
    from dlsec.assess.runner import Assessment, _Units
    from dlsec.generative import load_generator

    cfg = campaign.generative
    home_path = Path(home) if home is not None else None
    real = _real_images(data)
    if not real:
        raise UsageError(f"{data.name}: no real images to compare with")
    gen = load_generator(generator, home=home)
    out = Path(out)
    seed = campaign.seed
    fingerprint = f"{campaign.fingerprint()}:{gen.weights_sha256}:{data.sha256}:generative"
    units = _Units(out, fingerprint)
    plan = (1 + len(cfg.watermarks) + len(cfg.detectors)) if cfg.enabled else 0
    done = 0

    def step(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        nonlocal done
        value = units.run(key, compute)
        done += 1
        if progress is not None:
            progress(done, plan, {})
        return value

    report: dict[str, Any] = {
        "title": title or f"dlsec assessment: {model_ref or generator}",
        "model": {
            "ref": model_ref or generator,
            "kind": "generator",
            "access": "white-box",
            "name": gen.name,
            "version": gen.version,
            "sha256": gen.weights_sha256,
        },
        "data": {"ref": data.name, "sha256": data.sha256, "rows": len(real), "kind": "image"},
        "campaign": campaign.model_dump(mode="json"),
        "findings": [],
    }
    not_run: list[dict[str, str]] = []
    if not cfg.enabled:
        not_run.append({"check": "generative section", "reason": "generative.enabled is false"})
    else:
        from dlsec.generative import WATERMARK_EDITS

        section: dict[str, Any] = {
            "samples": cfg.samples,
            "size": cfg.size,
            "message_bits": cfg.message_bits,
            "edits": list(cfg.edits),
            "edit_labels": {e: WATERMARK_EDITS[e].label for e in cfg.edits},
            "min_tpr": cfg.min_tpr,
            "detector_min_tpr": cfg.detector_min_tpr,
        }
        section["provenance"] = step(
            "gen-provenance", lambda: _provenance(generator, cfg, seed, out, home_path)
        )
        marks: dict[str, Any] = {}
        for method in cfg.watermarks:

            def wm(method: str = method) -> dict[str, Any]:
                try:
                    return _watermark(generator, method, cfg, seed, home_path)
                except UsageError as exc:  # a missing library, an image too small: named, not run
                    return {"skipped": str(exc)}

            result = step(f"gen-watermark-{method}", wm)
            if "skipped" in result:
                not_run.append({"check": f"watermark {method}", "reason": result["skipped"]})
                continue
            for edit, reason in result["not_run"].items():
                not_run.append({"check": f"watermark {method} under {edit}", "reason": reason})
            marks[method] = result
        section["watermarks"] = marks
        section["detectors"] = [
            step(f"gen-detector-{d}", partial(_detector, generator, d, real, cfg, seed, home_path))
            for d in cfg.detectors
        ]
        shown = gen.sample(cfg.gallery, seed=seed) if cfg.gallery else np.zeros((0, 8, 8))
        section["gallery"] = _gallery(shown, section, png_data_uri)
        report["generative"] = section
        report["findings"] = generative_findings(section, cfg)
    report["not_run"] = not_run
    gate_results: list[GateResult] = [build_gate(spec).check(report) for spec in campaign.gates]
    report["gates"] = [g.to_dict() for g in gate_results]
    report["passed"] = all(g.passed for g in gate_results)
    report["complete"] = not not_run
    report["verdict"] = "fail" if not report["passed"] else ("pass" if report["complete"] else "partial")
    report["reproducibility"] = reproducibility(
        seed=seed,
        model_sha256=gen.weights_sha256,
        data_sha256=data.sha256,
        campaign_sha256=campaign.fingerprint(),
        units_reused=units.reused,
    )
    write_all_reports(out, report, gallery=[], gates=gate_results)
    return Assessment(report, gate_results)


def _gallery(samples: np.ndarray, section: dict[str, Any], uri: Callable[..., str]) -> list[dict[str, Any]]:
    files = section["provenance"]["files"]
    first = next(iter(section["watermarks"].items()), None)
    items = []
    for i, image in enumerate(samples):
        item: dict[str, Any] = {
            "index": i,
            "src": uri(image[None], scale=8),
            "provenance": "valid" if files[i]["valid"] else files[i].get("error", "invalid"),
            "detectors": [
                {
                    "detector": d["detector"],
                    "score": d["gallery_scores"][i],
                    "flagged": d["gallery_scores"][i] > d["threshold"],
                }
                for d in section["detectors"]
                if i < len(d["gallery_scores"])
            ],
        }
        if first is not None and i < len(first[1]["gallery"]):
            item["watermark"] = first[0]
            item["residual_src"] = first[1]["gallery"][i]
        items.append(item)
    return items


def generative_findings(section: dict[str, Any], cfg: GenerativeSection) -> list[dict[str, Any]]:
    """Findings of a generative section: provenance, tampering, removable watermarks, blind detectors."""
    findings: list[dict[str, Any]] = []
    prov = section["provenance"]
    bad = [f for f in prov["files"] if not f["valid"]]
    if bad:
        reasons = sorted({f.get("error", "invalid") for f in bad})
        findings.append(
            finding(
                "generative-provenance",
                "high",
                f"{len(bad)} of {prov['samples']} generated images carry no valid C2PA provenance",
                f"verification failed ({', '.join(reasons)}): {bad[0].get('reason', '')}; "
                "check the signing chain and the trust list (dlsec keys c2pa show)",
                {"invalid": [{k: f.get(k) for k in ("file", "error")} for f in bad[:10]]},
                owasp=OWASP,
                atlas=ATLAS_HARM,
            )
        )
    missed = [c for c in prov["tampering"] if not c["detected"]]
    if missed:
        findings.append(
            finding(
                "generative-tampering-undetected",
                "high",
                "Provenance verification accepts tampered images: " + ", ".join(c["case"] for c in missed),
                "a tampered copy of a signed output verified as valid; verification does not fail closed",
                {"cases": missed},
                owasp=OWASP,
                atlas=ATLAS_HARM,
            )
        )
    for method, result in section["watermarks"].items():
        removed = {e: r for e, r in result["edits"].items() if r["tpr_at_1pct_fpr"] < cfg.min_tpr}
        if not removed:
            continue
        everyday = [e for e, r in removed.items() if not r["removal"]]
        listing = ", ".join(
            f"{r['label']} (bit accuracy {r['bit_accuracy']:.2f}, detected {r['tpr_at_1pct_fpr']:.0%})"
            for r in removed.values()
        )
        findings.append(
            finding(
                f"generative-watermark-{method}",
                "high" if everyday else "medium",
                f"The {method} watermark is removed by "
                + (
                    f"everyday edits ({', '.join(removed[e]['label'] for e in everyday)})"
                    if everyday
                    else "a removal attack"
                ),
                f"detection at 1% false positives falls below {cfg.min_tpr:.0%} of the marked "
                f"images: {listing}",
                {
                    "method": method,
                    "edits": {
                        e: {k: r[k] for k in ("bit_accuracy", "tpr_at_1pct_fpr")} for e, r in removed.items()
                    },
                },
                owasp=OWASP,
                atlas=ATLAS_EVADE,
            )
        )
    dets = section["detectors"]
    if dets and max(d["tpr"] for d in dets) < cfg.detector_min_tpr:
        best = max(dets, key=lambda d: d["tpr"])
        findings.append(
            finding(
                "generative-detector-blind",
                "medium",
                "The synthetic-image detectors miss this generator's outputs "
                f"(best: {best['detector']} flags {best['tpr']:.0%})",
                "at each detector's shipped threshold (1% false positives on real images) fewer "
                f"than {cfg.detector_min_tpr:.0%} of the outputs are flagged; its outputs pass as real",
                {d["detector"]: {k: d[k] for k in ("auroc", "tpr", "fpr", "seen")} for d in dets},
                owasp=OWASP,
                atlas=ATLAS_EVADE,
            )
        )
    return findings
