"""Incident response: playbooks from alerts to actions (the incident records are in :mod:`dlsec.store`).

A playbook (``respond.yaml``) is a list of rules. Each rule matches alerts (by source, signal or
monitor rule name, minimum severity, model) and lists actions:

* ``snapshot``: copy the evidence into the incident (the alert, recent queries of the model and
  of the key from the query log, the serving version's content hash);
* ``quarantine``: take the model's serving version out of service;
* ``rollback``: move the model's alias to the last good signed version before it;
* ``throttle_key``: cut the offending API key's rate (``rate:`` in the rule, default 1/minute);
* ``revoke_key``: revoke the offending API key;
* ``webhook``: POST the incident as JSON to ``url:``.

Alerts that match a rule while an incident for the same rule and subject is open join that
incident instead of opening another, and an action that already succeeded is not repeated:
handling the same alert twice changes nothing. Every step is in the audit log. ``dry_run``
answers what would be done without doing it.

Example ``respond.yaml``::

    rules:
      - name: extraction
        when: {source: extraction, min_severity: high}
        actions: [snapshot, revoke_key]
      - name: drift-or-attack
        when: {source: monitor, min_severity: high}
        actions: [snapshot, quarantine, rollback]
"""

from dlsec.respond.gateway import app_from_env, build_gateway
from dlsec.respond.playbook import (
    ACTIONS,
    Playbook,
    PlaybookRule,
    Responder,
    load_playbook,
)

__all__ = [
    "ACTIONS",
    "Playbook",
    "PlaybookRule",
    "Responder",
    "app_from_env",
    "build_gateway",
    "load_playbook",
]
