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

__all__ = ["DemoResult", "Stage", "gateway_demo", "run_demo"]

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
    """

    assessment: Assessment
    release: dict[str, Any] | None


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
    return DemoResult(result, shipped)


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
