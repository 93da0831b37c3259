"""The backdoor section of an assessment: a Neural Cleanse scan, STRIP, an optional data audit.

Disabled by default (a campaign turns it on with ``backdoor: {enabled: true}``): the scan
reverse-engineers one trigger per class, which takes longer than the rest of a small
assessment. With a white-box model, the scan runs on the assessed (clean) rows; when it finds a
backdoor, STRIP (fitted on those rows) is scored on the rows stamped with the reconstructed
trigger, to say whether run-time detection would catch it. ``training_data`` (a dataset
reference) adds a training-set audit. Findings carry OWASP ML10 Model Poisoning / MITRE ATLAS
AML.T0018 Manipulate AI Model (the model) and OWASP ML02 Data Poisoning / AML.T0020 Poison
Training Data (the training set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dlsec.core.data import Dataset
from dlsec.core.model import Model, WhiteBoxModel

__all__ = ["ATLAS_DATA", "ATLAS_MODEL", "OWASP_DATA", "OWASP_MODEL", "Backdoor", "run_backdoor"]

OWASP_MODEL = "ML10 Model Poisoning"
ATLAS_MODEL = "AML.T0018 Manipulate AI Model"
OWASP_DATA = "ML02 Data Poisoning Attack"
ATLAS_DATA = "AML.T0020 Poison Training Data"

_EVIDENCE = ("target", "anomaly_index", "mask_l1", "trigger_success")
Step = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


class Backdoor(BaseModel):
    """Campaign settings of the backdoor section (off by default).

    ``steps``, ``examples`` and ``threshold`` configure the Neural Cleanse scan (optimisation
    steps per class, clean rows used, anomaly index that means a backdoor); ``strip_fpr`` is
    the false positive rate STRIP's threshold is set at; ``training_data`` names a dataset to
    audit (``builtin:NAME`` or a file), ``audit_epochs`` the epochs of the audit's models.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    steps: int = Field(300, ge=10)
    examples: int = Field(128, ge=8)
    threshold: float = Field(2.0, gt=0)
    strip_fpr: float = Field(0.05, gt=0, lt=1)
    training_data: str | None = None
    audit_epochs: int = Field(30, ge=1)


def run_backdoor(
    model: Model, data: Dataset, config: Backdoor, *, step: Step, seed: int, runner: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the section; returns its ``report.json`` part and its findings (``runner``: an
    engine's ``starmap``, which trains the training-set audit's folds side by side)."""
    from dlsec.defend import STRIP, DataAuditor, NeuralCleanse

    section: dict[str, Any] = {}
    findings: list[dict[str, Any]] = []
    scannable = isinstance(model, WhiteBoxModel) and model.spec.kind == "image" and len(model.spec.shape) == 3
    if not scannable:
        section["scan"] = {"skipped": "the trigger scan needs a white-box image model"}
    else:
        assert isinstance(model, WhiteBoxModel)
        wb = model

        def compute_scan() -> dict[str, Any]:
            scanner = NeuralCleanse(
                steps=config.steps, max_examples=config.examples, threshold=config.threshold, seed=seed
            )
            report = scanner.scan(wb, data)
            out = report.to_dict()
            if report.backdoor and report.target is not None:
                mask, pattern = report.masks[report.target], report.patterns[report.target]
                x = data.x[: config.examples]
                stamped = ((1 - mask) * x + mask * pattern).astype(np.float32)
                strip = STRIP(model=wb, fpr=config.strip_fpr, seed=seed).fit(x)
                out["strip"] = {
                    "fpr": config.strip_fpr,
                    "threshold": strip.threshold_,
                    "detected": float(strip.predict(stamped).mean()),
                }
                from dlsec.defend.localise import localise_scan

                region = localise_scan(wb, x, report)
                if region is not None:
                    out["localisation"] = region.to_dict()
            return out

        scan = step("backdoor-scan", compute_scan)
        section["scan"] = scan
        if scan["backdoor"]:
            target = scan["target"]
            strip_note = ""
            if "strip" in scan:
                strip_note = (
                    f"; STRIP flags {scan['strip']['detected']:.0%} of inputs carrying the reconstructed "
                    f"trigger at {scan['strip']['fpr']:.0%} false positives"
                )
            where = ""
            loc = scan.get("localisation") or {}
            if loc.get("bbox"):
                r0, r1, c0, c1 = loc["bbox"]
                where = (
                    f"; the decision comes from rows {r0}-{r1}, columns {c0}-{c1} (occlusion; IoU with "
                    f"the reconstructed mask {loc['reference_iou']:.2f})"
                )
            findings.append(
                {
                    "code": "backdoor",
                    "severity": "high",
                    "title": f"Backdoor suspected: class {target} is reached by an abnormally small trigger",
                    "detail": f"Neural Cleanse anomaly index {scan['anomaly_index'][target]:.2f} "
                    f"(threshold {scan['threshold']:g}), mask L1 {scan['mask_l1'][target]:.2f}"
                    f"{strip_note}{where}; "
                    "audit the training data (dlsec data audit) and retrain without the flagged rows",
                    "evidence": {
                        k: scan[k] for k in ("target", "anomaly_index", "mask_l1", "trigger_success")
                    },
                    "owasp": OWASP_MODEL,
                    "atlas": ATLAS_MODEL,
                }
            )
    if config.training_data:
        from dlsec.core.data import load_dataset, with_spec

        ref = config.training_data

        def compute_audit() -> dict[str, Any]:
            train = with_spec(load_dataset(ref), model.spec)
            result = DataAuditor(epochs=config.audit_epochs, seed=seed, runner=runner).audit(train)
            return {"data": ref, **result.to_dict(with_scores=False)}

        audit = step("backdoor-audit", compute_audit)
        section["audit"] = audit
        if audit["flagged_count"]:
            target_txt = (
                f"; suspected backdoor target class {audit['suspected_target']}"
                if audit["suspected_target"] is not None
                else ""
            )
            findings.append(
                {
                    "code": "data-poisoning",
                    "severity": "high" if audit["suspected_target"] is not None else "medium",
                    "title": f"Training-set audit flags {audit['flagged_count']} of {audit['rows']} rows",
                    "detail": f"{ref}{target_txt}; remove them (dlsec data audit --write-clean) and retrain",
                    "evidence": {
                        "flagged_count": audit["flagged_count"],
                        "suspected_target": audit["suspected_target"],
                    },
                    "owasp": OWASP_DATA,
                    "atlas": ATLAS_DATA,
                }
            )
    return section, findings
