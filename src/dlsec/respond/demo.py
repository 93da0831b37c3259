"""The gateway part of ``dlsec demo``: a normal client, an extraction attacker, a playbook.

A gateway on loopback serves the demo's registry model with the extraction detector fitted on
natural data and a playbook that revokes a key caught extracting. A normal client sends the test
set; an attacker runs Knockoff Nets (adaptive, on a mixed transfer set) through the gateway URL
as a black-box model. The result says whether the client was ever flagged, after how many
queries the attacker was cut off, and the incident that did it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from dlsec.core.data import Dataset
from dlsec.errors import UsageError
from dlsec.respond.gateway import build_gateway
from dlsec.serve import GatewayConfig, create_app
from dlsec.serve.live import LiveServer
from dlsec.store import IncidentStore, KeyStore, Registry

__all__ = ["gateway_demo"]

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
    from dlsec.attacks.extraction import KnockoffNets, mixed_pool, out_of_domain_pool
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
        pool = mixed_pool(natural.x, out_of_domain_pool(target.spec, 2000, seed=seed))

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
