"""``dlsec demo``: assess a zoo model, ship it, serve it to a client and an extraction attacker.

:func:`run_demo` is the whole scenario. It trains the zoo model on first use, assesses it with
the default white-box campaign on its test split, and, when the gates pass, ships it (signs it
with throwaway keys, registers it and promotes it under a policy that requires the passing
report, in a registry inside ``OUT/release``) and, for an image model, serves it
(:func:`gateway_demo`).

The gateway part: a gateway on loopback serves the demo's registry model with the extraction
detector fitted on natural data and a playbook that revokes a key caught extracting. A normal
client sends the test set; an attacker runs Knockoff Nets (adaptive, on a mixed transfer set)
through the gateway URL as a black-box model. The result says whether the client was ever
flagged, after how many queries the attacker was cut off, and the incident that did it.

The generative part (:func:`generative_demo`): zoo-gan draws a few digits, each watermarked with
the learned watermark and signed with a C2PA manifest (a throwaway chain under ``OUT/release``);
the demo verifies them with c2pa-python's reader, reads the watermark back after JPEG quality 50,
and scores the samples with the spectrum-gan synthetic-image detector. The three
networks train on first use (a couple of minutes) and are cached in the home like the zoo's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from dlsec.assess import Assessment
from dlsec.core.data import Dataset
from dlsec.errors import UsageError
from dlsec.respond.gateway import build_gateway
from dlsec.serve import GatewayConfig, create_app
from dlsec.serve.live import LiveServer
from dlsec.store import IncidentStore, KeyStore, Registry

if TYPE_CHECKING:
    import torch

__all__ = ["DemoResult", "Stage", "gateway_demo", "generative_demo", "run_demo"]

Progress = Callable[[int, int, dict[str, float]], None]
# Opens one stage of the demo by its description; the context gives the stage's progress
# callback ``(done, total, stats)`` (the CLI passes a Rich progress bar).
Stage = Callable[[str], AbstractContextManager[Progress]]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        assessment: the assessment (its report is in ``OUT``).
        release: when the gates passed, what :func:`dlsec.store.ship_model` returned, with the
            gateway scenario's result under ``gateway`` for an image model; else ``None``.
        generative: what :func:`generative_demo` found (when the gates passed), else ``None``.
    """

    assessment: Assessment
    release: dict[str, Any] | None
    generative: dict[str, Any] | None = None


def _quiet(_description: str) -> AbstractContextManager[Progress]:
    return nullcontext(lambda done, total, stats: None)


def run_demo(
    out: str | Path,
    *,
    model: str = "zoo:digits-cnn",
    examples: int = 200,
    home: str | Path | None = None,
    device: torch.device | str | None = None,
    stage: Stage | None = None,
) -> DemoResult:
    """Run dlsec end to end on a zoo model: assess, sign, register, promote and serve it.

    Args:
        out: where the reports (and the demo's registry, under ``release``) are written.
        model: a zoo model, ``zoo:NAME``.
        examples: test rows to assess.
        home: the dlsec home (the zoo's cache).
        device: where to train and attack.
        stage: called with each stage's description; the context it returns gives that
            stage's progress callback (default: no progress).

    Example:
        >>> result = run_demo("dlsec-demo", examples=40)    # doctest: +SKIP
        >>> result.assessment.passed, result.release["ref"]  # doctest: +SKIP
        (True, 'digits-cnn@1')
    """
    from dlsec.assess import default_campaign, run_assessment
    from dlsec.core.data import load_dataset
    from dlsec.store import ship_model
    from dlsec.zoo import load_zoo_model, zoo_card, zoo_path

    if not model.startswith("zoo:"):
        raise UsageError("the demo runs on a zoo model; pass --model zoo:NAME (see `dlsec zoo`)")
    if examples < 1:
        raise UsageError(f"--examples must be positive, got {examples}")
    stage = stage or _quiet
    out = Path(out)
    name = model.removeprefix("zoo:")
    with stage(f"training {model} (first use only)") as progress:
        card = zoo_card(name, home=home, device=device, progress=progress)
    loaded = load_zoo_model(name, home=home, device=device)
    model_file = zoo_path(name, home=home) / "model.safetensors"
    split = card.split
    _, test_set = load_dataset(card.dataset["name"]).split(test_size=split["test_size"], seed=split["seed"])
    plan = default_campaign(kind=loaded.spec.kind, access="white-box").model_copy(
        update={"examples": examples}
    )
    with stage("assessing") as progress:
        result = run_assessment(
            loaded,
            test_set,
            plan,
            out,
            model_ref=model,
            model_sha256=str(card.weights_sha256),
            title=f"dlsec demo: {model}",
            model_file=model_file,
            progress=progress,
        )
    if not result.passed:
        return DemoResult(result, None)
    # Ship the assessed model: sign it, register it, promote it under a policy that requires
    # the assessment to pass, and verify the audit log (a registry kept inside OUT/release).
    shipped = ship_model(model_file, out / "report.json", out / "release", name=name)
    if loaded.spec.kind == "image":
        # Serve it: a normal client and an extraction attacker through the gateway.
        with stage("serving: a client and an extraction attacker"):
            shipped["gateway"] = gateway_demo(
                out / "release", name, natural=test_set, reference=card.dataset["name"], seed=plan.seed
            )
    with stage("compliance evidence: model card, ML-BOM, six control maps"):
        shipped["comply"] = compliance_demo(out / "release", name, out / "comply")
    generated = generative_demo(out / "generative", home=home, keys_home=out / "release", stage=stage)
    return DemoResult(result, shipped, generated)


MESSAGE = b"dlse"  # 32 bits: the learned watermark's capacity
WATERMARK_P = 1e-3  # a watermark is "detected" when this many matching bits are that unlikely by chance


def generative_demo(
    out: str | Path,
    *,
    home: str | Path | None = None,
    keys_home: str | Path | None = None,
    n: int = 4,
    seed: int = 0,
    stage: Stage | None = None,
) -> dict[str, Any]:
    """Sign and watermark a few zoo-gan samples, verify them, and score them with spectrum-gan.

    Args:
        out: where the signed PNGs are written.
        home: the dlsec home holding the generator, watermark and detector caches.
        keys_home: the home whose ``keys/c2pa`` signs and trusts the samples (created if absent).
        n: samples drawn.
        seed: the generator's seed.
        stage: as for :func:`run_demo`.

    Returns:
        ``provenance`` (every sample verified with c2pa-python's reader: the signer, the weights
        digest the manifest names), ``watermark`` (bit accuracy after JPEG quality 50 per
        sample, the chance of as many matching bits on an unmarked image, and how many samples
        are detected at ``WATERMARK_P``) and ``detector`` (each sample's score, the threshold
        and how many are flagged).

    Raises:
        ProvenanceError: a sample just signed does not verify (never expected: fail loudly).
    """
    import io

    from PIL import Image
    from scipy import stats

    from dlsec.generative import (
        GeneratorInfo,
        bit_accuracy,
        get_watermark,
        load_generator,
        load_synthetic_detector,
        message_bits,
        read_rgb,
        render_png,
        sign_image,
        to_rgb,
        verify_provenance,
    )

    stage = stage or _quiet
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with stage(
        "generative: zoo-gan, learned watermark, spectrum-gan (first use trains them, ~2 min)"
    ) as progress:
        progress(0, 3, {})
        generator = load_generator("zoo-gan", home=home)
        progress(1, 3, {})
        marker = get_watermark("learned", home=home)
        progress(2, 3, {})
        detector = load_synthetic_detector("spectrum-gan", home=home)
        progress(3, 3, {})
    with stage("generative: signed, watermarked samples; JPEG 50; the detector") as progress:
        info = GeneratorInfo(generator.name, generator.version, generator.weights_sha256)
        images = generator.sample(n, seed=seed)
        paths: list[Path] = []
        for i, image in enumerate(images):
            name = f"{generator.name}-{seed}-{i:04d}.png"
            signed = sign_image(
                render_png(marker.embed(to_rgb(image, 256), MESSAGE)), info, title=name, home=keys_home
            )
            path = folder / name
            path.write_bytes(signed)
            paths.append(path)
            progress(i + 1, n + 2, {})
        verified = [verify_provenance(p, home=keys_home) for p in paths]  # raises unless intact, trusted
        progress(n + 1, n + 2, {})
        expected = message_bits(MESSAGE)
        accuracies = []
        for path in paths:
            buf = io.BytesIO()
            Image.fromarray(read_rgb(path)).save(buf, "JPEG", quality=50)
            jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            accuracies.append(bit_accuracy(marker.detect(jpeg, len(expected)), expected))
        # On an unmarked image each decoded bit matches by chance (Binomial(bits, 1/2)).
        matched = [round(a * len(expected)) for a in accuracies]
        chance = [float(stats.binom.sf(k - 1, len(expected), 0.5)) for k in matched]
        scores = detector.score([read_rgb(p) for p in paths])
        progress(n + 2, n + 2, {})
    return {
        "out": str(folder),
        "generator": {"name": info.name, "version": info.version, "weights_sha256": info.weights_sha256},
        "provenance": {
            "verified": len(verified),
            "signer": verified[0].signer,
            "manifest_weights_sha256": verified[0].generator.get("weights_sha256"),
            "digital_source_type": verified[0].digital_source_type,
        },
        "watermark": {
            "method": marker.name,
            "message": MESSAGE.decode(),
            "edit": "JPEG 50",
            "bit_accuracy": accuracies,
            "p_value": chance,
            "detected": sum(p < WATERMARK_P for p in chance),
            "n": len(paths),
        },
        "detector": {
            "name": "spectrum-gan",
            "scores": [float(s) for s in scores],
            "threshold": float(detector.threshold_),
            "flagged": int((scores > detector.threshold_).sum()),
            "n": len(paths),
        },
    }


def compliance_demo(registry_home: str | Path, model: str, out: str | Path) -> dict[str, Any]:
    """Map ``model@production`` in the registry under ``registry_home`` to every framework.

    The evidence is what the demo produced (the signed, scanned, assessed version, its audit
    log, the gateway's keys and playbook when it ran); the rest shows as gaps, as it should.
    """
    from dlsec.comply.evidence import FRAMEWORKS, build_compliance

    home = Path(registry_home)
    playbook = home / "respond.yaml"
    registry = Registry.open(home=home)
    try:
        run = build_compliance(
            f"{model}@production",
            frameworks=FRAMEWORKS,
            registry=registry,
            keys=home / "keys",
            playbooks=playbook if playbook.is_file() else None,
            intended_use="dlsec demo: a zoo model assessed, signed and served",
        )
    finally:
        registry.close()
    run.write(out)
    return {
        "out": str(out),
        "frameworks": {m.framework.id: m.counts for m in run.maps},
        "met": sum(m.counts["met"] for m in run.maps),
        "controls": sum(len(m.results) for m in run.maps),
        "gaps": run.gaps,
        "failing": run.failing,
    }


PLAYBOOK = """\
rules:
  - name: extraction
    when: {source: extraction}
    actions: [snapshot, revoke_key]
"""


def gateway_demo(
    registry_home: str | Path,
    model: str,
    *,
    natural: Dataset,
    reference: str = "builtin:digits",
    budget: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the scenario against ``model@production`` in the registry under ``registry_home``."""
    from dlsec.attacks.extraction import KnockoffNets, attacker_pool
    from dlsec.serve.client import connect

    home = Path(registry_home)
    registry = Registry.open(home=home)
    store = KeyStore(registry.db)
    client_key, client = store.create(role="client", models=[model], note="demo: a normal client")
    attacker_key, attacker = store.create(role="client", models=[model], note="demo: an extraction attacker")
    registry.close()
    playbook = home / "respond.yaml"
    playbook.write_text(PLAYBOOK)
    config = GatewayConfig(
        models=[model], extraction_reference=reference, playbook=str(playbook), refresh_seconds=0.05
    )
    gateway = build_gateway(config, home=home)
    answered = 0
    stopped = None
    with LiveServer(create_app(gateway)) as url:
        rows = natural.x[:300]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {client_key}"}) as http:
            codes = [
                http.post(
                    f"/v1/models/{model}/predict", json={"inputs": rows[i : i + 10].tolist()}
                ).status_code
                for i in range(0, len(rows), 10)
            ]
        gateway.drain()
        target = connect(f"{url}/v1/models/{model}", api_key=attacker_key, batch_size=25)
        pool = attacker_pool("knockoff", natural.x, target.spec, budget=budget, seed=seed)

        def count(x: np.ndarray, _answer: Any) -> None:
            nonlocal answered
            answered += len(x)
            time.sleep(0.05)  # an attacker paces its requests; the detector runs meanwhile

        try:
            KnockoffNets(budget=budget, strategy="adaptive", seed=seed)(target, pool, on_query=count)
        except UsageError as exc:
            stopped = str(exc)
        gateway.drain()
        alerts = gateway.alerts()
        incidents = IncidentStore(gateway.db).list()
    client_alerts = [a for a in alerts if a.get("key_id") == client.id]
    attacker_alerts = [a for a in alerts if a.get("key_id") == attacker.id]
    return {
        "gateway": url,
        "client": {"requests": len(codes), "ok": codes.count(200), "alerts": len(client_alerts)},
        "attacker": {
            "budget": budget,
            "answered": answered,
            "stopped": stopped,
            "first_alert": attacker_alerts[0] if attacker_alerts else None,
        },
        "incidents": [
            {"id": i.id, "rule": i.rule, "subject": i.subject, "actions": [a["action"] for a in i.actions]}
            for i in incidents
        ],
        "audit_ok": gateway.audit.verify().ok,
    }
