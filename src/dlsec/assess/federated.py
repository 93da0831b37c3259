"""The federated-learning section of an assessment: attacks by malicious clients against defences.

Disabled by default (``federated: {enabled: true, ...}`` turns it on). It trains the assessed
model's architecture from scratch by federated learning on the assessed data, split among
``clients`` clients of which a ``malicious`` fraction attack, once per attack and defence
(:mod:`dlsec.federated`, the local engine by default: the same client and aggregation code as
Flower's simulation, in process), and once per defence with no attack as its baseline. Each
cell is a resumable unit. The architecture is the one the model file's metadata names (or
``arch``/``arch_args``); without one the section is reported as not run, with the reason.

A cell where the attack *wins*: the final accuracy at least ``accuracy_drop`` below the
defence's own no-attack baseline, or the backdoor success at least ``backdoor_success`` and at
least ``accuracy_drop`` above that baseline's (the trigger is stamped on the test rows of
any kind of data; on some, a model with no backdoor already sends them to the target). An
attack that wins against every defence in the campaign is a finding (OWASP ML02 Data
Poisoning / MITRE ATLAS AML.T0020 Poison Training Data) naming the defence that holds best.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlsec.core.data import Dataset

__all__ = ["ATLAS", "OWASP", "FederatedSection", "federated_findings", "run_federated", "unit_keys"]

OWASP = "ML02 Data Poisoning Attack"
ATLAS = "AML.T0020 Poison Training Data"

Step = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


class FederatedSection(BaseModel):
    """Campaign settings of the federated section (off by default).

    ``clients``, ``malicious`` (the fraction), ``rounds``, ``partition`` (``iid`` or
    ``dirichlet``) and ``alpha`` shape every simulation; ``attacks`` and ``defenses`` are
    registered names of :data:`dlsec.federated.ATTACKS` and :data:`~dlsec.federated.AGGREGATORS`;
    ``engine`` is ``local`` or ``flower``; ``arch``/``arch_args`` override the model file's
    architecture. ``accuracy_drop`` and ``backdoor_success`` say when an attack wins a cell.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    clients: int = Field(10, ge=2)
    malicious: float = Field(0.2, ge=0, lt=1)
    attacks: list[str] = Field(default_factory=lambda: ["alie", "backdoor"])
    defenses: list[str] = Field(default_factory=lambda: ["fedavg", "median", "krum"])
    rounds: int = Field(5, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0)
    engine: Literal["local", "flower"] = "local"
    local_epochs: int = Field(2, ge=1)
    lr: float = Field(0.5, gt=0)
    arch: str | None = None
    arch_args: dict[str, Any] = Field(default_factory=dict)
    accuracy_drop: float = Field(0.1, gt=0, le=1)
    backdoor_success: float = Field(0.5, gt=0, le=1)

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: list[str]) -> list[str]:
        from dlsec.federated import ATTACKS

        if not value:
            raise ValueError("give at least one attack")
        unknown = [a for a in value if a not in ATTACKS]
        if unknown:
            raise ValueError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
        return list(dict.fromkeys(a for a in value if a != "none")) or ["none"]

    @field_validator("defenses")
    @classmethod
    def _defenses(cls, value: list[str]) -> list[str]:
        from dlsec.federated import AGGREGATORS

        if not value:
            raise ValueError("give at least one defence")
        unknown = [d for d in value if d not in AGGREGATORS]
        if unknown:
            raise ValueError(f"unknown defence {unknown[0]!r}; choose from {', '.join(AGGREGATORS)}")
        return list(dict.fromkeys(value))


def _cells(config: FederatedSection) -> list[tuple[str, str]]:
    """(attack, defence) in run order: each defence's no-attack baseline, then the matrix."""
    attacks = ["none", *(a for a in config.attacks if a != "none")]
    return [(a, d) for a in attacks for d in config.defenses]


def unit_keys(config: FederatedSection) -> list[str]:
    """The section's unit keys, in the order they run."""
    return [f"fl-{a}-{d}" for a, d in _cells(config)]


def find_architecture(
    config: FederatedSection, model_file: str | Path | None
) -> tuple[str, dict[str, Any]] | str:
    """The architecture to train (``(arch, kwargs)``), or why there is none."""
    from dlsec.core.io import read_dlsec_metadata

    if config.arch is not None:
        return config.arch, dict(config.arch_args)
    if model_file is None:
        return "no model file to read the architecture from; set federated.arch"
    path = Path(model_file)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return f"{path.name}: only a dlsec .safetensors file names its architecture; set federated.arch"
    meta = read_dlsec_metadata(path)
    arch = meta.get("arch")
    if not arch:
        return f"{path.name}: no architecture in the file's metadata; set federated.arch"
    return str(arch), dict(meta.get("arch_kwargs") or {})


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def run_federated(
    data: Dataset,
    config: FederatedSection,
    *,
    step: Step,
    seed: int,
    model_file: str | Path | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the section; returns its ``report.json`` part and its findings.

    A section that cannot run (no architecture, too few rows, a configuration the
    defence refuses) is returned as ``{"skipped": reason}`` with no findings.
    """
    from dlsec.errors import Error
    from dlsec.federated import FLConfig, simulate

    found = find_architecture(config, model_file)
    if isinstance(found, str):
        return {"skipped": found}, []
    arch, arch_kwargs = found
    train_rows = len(data) - int(round(len(data) * 0.25))
    root = max(1, min(100, train_rows // 10))

    def cell(attack: str, defense: str) -> dict[str, Any]:
        fl = FLConfig(
            dataset=data.name,
            num_clients=config.clients,
            malicious_fraction=config.malicious if attack != "none" else 0.0,
            attack=attack,
            defense=defense,
            rounds=config.rounds,
            partition=config.partition,
            alpha=config.alpha,
            seed=seed,
            local_epochs=config.local_epochs,
            lr=config.lr,
            root_size=root,
            engine=config.engine,
            arch=arch,
            arch_kwargs=arch_kwargs,
        )
        result = simulate(fl, data=data)
        trained = [r for r in result.rounds if r.round > 0]
        return {
            "attack": attack,
            "defense": defense,
            "accuracy": result.final_accuracy,
            "backdoor_success": result.final_backdoor_success,
            "precision": _mean([r.precision for r in trained]),
            "recall": _mean([r.recall for r in trained]),
            "accuracy_curve": [r.accuracy for r in result.rounds],
        }

    cells: list[dict[str, Any]] = []
    try:
        for attack, defense in _cells(config):
            cells.append(step(f"fl-{attack}-{defense}", partial(cell, attack, defense)))
    except Error as exc:
        return {"skipped": f"federated simulation refused its configuration: {exc}"}, []
    baseline = {c["defense"]: c["accuracy"] for c in cells if c["attack"] == "none"}
    base_backdoor = {c["defense"]: c["backdoor_success"] for c in cells if c["attack"] == "none"}
    for c in cells:
        drop = baseline[c["defense"]] - c["accuracy"]
        gain = c["backdoor_success"] - base_backdoor[c["defense"]]
        c["accuracy_drop"] = drop
        c["backdoor_gain"] = gain
        c["attack_wins"] = c["attack"] != "none" and (
            drop >= config.accuracy_drop
            or (c["backdoor_success"] >= config.backdoor_success and gain >= config.accuracy_drop)
        )
    section: dict[str, Any] = {
        "arch": arch,
        "clients": config.clients,
        "malicious": config.malicious,
        "rounds": config.rounds,
        "partition": config.partition,
        "alpha": config.alpha,
        "engine": config.engine,
        "attacks": [a for a in config.attacks if a != "none"],
        "defenses": list(config.defenses),
        "baseline": {d: {"accuracy": baseline[d], "backdoor_success": base_backdoor[d]} for d in baseline},
        "cells": cells,
    }
    return section, federated_findings(section)


def federated_findings(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One finding per attack that wins against every defence, naming the one that holds best
    (the smallest harm: the larger of the accuracy drop and the backdoor success)."""
    findings = []
    for attack in section.get("attacks", []):
        row = [c for c in section["cells"] if c["attack"] == attack]
        if not row or not all(c["attack_wins"] for c in row):
            continue
        best = min(row, key=lambda c: max(c["accuracy_drop"], c["backdoor_success"]))
        listing = ", ".join(
            f"{c['defense']}: accuracy {c['accuracy']:.1%} (drop {c['accuracy_drop']:+.1%}), "
            f"backdoor {c['backdoor_success']:.1%}"
            for c in row
        )
        findings.append(
            {
                "code": f"federated-{attack}",
                "severity": "high",
                "title": f"Federated learning: the {attack} attack by {section['malicious']:.0%} of "
                f"{section['clients']} clients wins against every defence tried",
                "detail": f"{listing}. Holds best: {best['defense']} (accuracy {best['accuracy']:.1%}, "
                f"backdoor success {best['backdoor_success']:.1%}); none is enough at this fraction",
                "evidence": {
                    "attack": attack,
                    "best_defense": best["defense"],
                    "cells": [
                        {k: c[k] for k in ("defense", "accuracy", "accuracy_drop", "backdoor_success")}
                        for c in row
                    ],
                },
                "owasp": OWASP,
                "atlas": ATLAS,
            }
        )
    return findings
