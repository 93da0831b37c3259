"""The federated section of `dlsec assess`: attack x defence cells as units, findings, not_run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dlsec.assess import run_assessment
from dlsec.assess.campaign import Campaign
from dlsec.assess.federated import federated_findings, unit_keys
from dlsec.core import load_dataset, load_model


def _campaign(**federated: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "attacks": [],
            "minimal": None,
            "masking_checks": False,
            "examples": 20,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            "explain": {"enabled": False},
            "federated": {
                "enabled": True,
                "clients": 4,
                "malicious": 0.25,
                "attacks": ["gaussian"],
                "defenses": ["fedavg", "median"],
                "rounds": 2,
                "local_epochs": 10,
                **federated,
            },
        }
    )


def _run(tmp_path: Path, campaign: Campaign, model_file: Path | None) -> dict[str, Any]:
    model = load_model("zoo:breast-cancer-mlp", device="cpu")
    data = load_dataset("builtin:breast-cancer")
    return run_assessment(
        model,
        data,
        campaign,
        tmp_path,
        model_ref="zoo:breast-cancer-mlp",
        model_sha256="x",
        model_file=model_file,
    ).report


def test_the_section_runs_each_cell_as_a_unit_and_reports_the_matrix(tmp_path: Path) -> None:
    from dlsec.zoo import model_file

    campaign = _campaign()
    report = _run(tmp_path, campaign, model_file("zoo:breast-cancer-mlp"))
    section = report["federated"]
    assert section["arch"] == "mlp"
    cells = {(c["attack"], c["defense"]): c for c in section["cells"]}
    assert set(cells) == {
        ("none", "fedavg"),
        ("none", "median"),
        ("gaussian", "fedavg"),
        ("gaussian", "median"),
    }
    assert all(0.0 <= c["accuracy"] <= 1.0 and 0.0 <= c["backdoor_success"] <= 1.0 for c in cells.values())
    assert cells[("none", "fedavg")]["accuracy"] > 0.85  # the architecture learns the data federatedly
    # one client's Gaussian noise ruins the mean, not the median: no attack wins everywhere
    assert cells[("gaussian", "fedavg")]["attack_wins"]
    assert cells[("gaussian", "fedavg")]["accuracy_drop"] >= 0.1
    assert not cells[("gaussian", "median")]["attack_wins"]
    # the median excludes no client as a whole: recall 0 of the malicious one, no precision
    assert cells[("gaussian", "median")]["recall"] == 0.0
    assert cells[("gaussian", "median")]["precision"] is None
    assert not [f for f in report["findings"] if f["code"].startswith("federated")]
    for key in unit_keys(campaign.federated):
        assert (tmp_path / ".dlsec-units" / f"{key}.json").is_file()
    assert not [n for n in report["not_run"] if n["check"] == "federated learning"]
    html = (tmp_path / "report.html").read_text()
    assert 'id="federated"' in html and "attack wins" in html and "holds" in html
    assert json.loads((tmp_path / "report.json").read_text())["federated"]["cells"] == section["cells"]
    # a rerun reads every cell back
    again = _run(tmp_path, campaign, model_file("zoo:breast-cancer-mlp"))
    assert again["federated"]["cells"] == section["cells"]
    assert again["reproducibility"]["units_reused"] >= len(unit_keys(campaign.federated))


def test_an_attack_that_beats_every_defence_is_a_finding(tmp_path: Path) -> None:
    from dlsec.zoo import model_file

    report = _run(tmp_path, _campaign(defenses=["fedavg"]), model_file("zoo:breast-cancer-mlp"))
    (finding,) = [f for f in report["findings"] if f["code"].startswith("federated")]
    assert finding["code"] == "federated-gaussian" and finding["severity"] == "high"
    assert finding["owasp"].startswith("ML02") and finding["atlas"].startswith("AML.T0020")
    assert finding["evidence"]["best_defense"] == "fedavg"
    assert "Holds best: fedavg" in finding["detail"]


def test_findings_name_the_defence_that_holds_best() -> None:
    def cell(defense: str, drop: float, backdoor: float) -> dict[str, Any]:
        return {
            "attack": "alie",
            "defense": defense,
            "accuracy": 0.9 - drop,
            "accuracy_drop": drop,
            "backdoor_success": backdoor,
            "attack_wins": True,
        }

    cells = [cell("median", 0.4, 0.1), cell("krum", 0.15, 0.2), cell("fedavg", 0.5, 0.0)]
    section: dict[str, Any] = {"attacks": ["alie"], "clients": 10, "malicious": 0.2, "cells": cells}
    (finding,) = federated_findings(section)
    assert finding["evidence"]["best_defense"] == "krum"
    assert "Holds best: krum" in finding["detail"]
    cells[1]["attack_wins"] = False
    assert federated_findings(section) == []


def test_without_an_architecture_the_section_is_not_run(tmp_path: Path) -> None:
    report = _run(tmp_path, _campaign(attacks=["label-flip"], defenses=["fedavg"]), None)
    assert report["federated"] == {
        "skipped": "no model file to read the architecture from; set federated.arch"
    }
    (item,) = [n for n in report["not_run"] if n["check"] == "federated learning"]
    assert "set federated.arch" in item["reason"]
    assert not [f for f in report["findings"] if f["code"].startswith("federated")]
    assert "not run: no model file" in (tmp_path / "report.html").read_text()


def test_the_campaign_section_is_strict() -> None:
    with pytest.raises(ValidationError, match="unknown attack"):
        _campaign(attacks=["teleport"])
    with pytest.raises(ValidationError, match="unknown defence"):
        _campaign(defenses=["wishful"])
    with pytest.raises(ValidationError, match="extra"):
        _campaign(colour="blue")
    with pytest.raises(ValidationError):
        _campaign(malicious=1.5)
    assert Campaign().federated.enabled is False
    assert unit_keys(_campaign().federated) == [
        "fl-none-fedavg",
        "fl-none-median",
        "fl-gaussian-fedavg",
        "fl-gaussian-median",
    ]
