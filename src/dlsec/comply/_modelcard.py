"""The model card (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019), built from facts.

Its nine sections are filled from what dlsec holds: the training card (``model.json``), the
assessment report, the registry record, the PII scan and the fairness report. A section dlsec
has no facts for says so ("not stated") and is listed in ``missing``; nothing is invented.
"""

from __future__ import annotations

from typing import Any

from dlsec.comply._evidence import Evidence

__all__ = ["MODEL_CARD_SCHEMA", "SECTIONS", "build_model_card"]

MODEL_CARD_SCHEMA = "dlsec.model-card-report/1"
SECTIONS = (
    "model_details",
    "intended_use",
    "factors",
    "metrics",
    "evaluation_data",
    "training_data",
    "quantitative_analyses",
    "ethical_considerations",
    "caveats_and_recommendations",
)


def _details(ev: Evidence) -> dict[str, Any]:
    card, record = ev.card, ev.record or {}
    out: dict[str, Any] = {"reference": ev.model}
    if record:
        out.update(
            registry_version=record.get("ref"),
            status=record.get("status"),
            registered_at=record.get("created_at"),
            registered_by=record.get("created_by"),
            root_digest=record.get("root_digest"),
            signed=record.get("signed"),
            signer=record.get("signer"),
            parent=(record.get("lineage") or {}).get("parent"),
        )
    if card is not None:
        out.update(
            name=card.get("name"),
            architecture=card.get("architecture"),
            architecture_arguments=card.get("arch_kwargs"),
            recipe=card.get("recipe"),
            recipe_parameters=card.get("recipe_params"),
            training_configuration=card.get("train_config"),
            weights_sha256=(card.get("weights") or {}).get("sha256"),
            software=card.get("versions"),
            input=(card.get("input_spec") or {}).get("kind"),
            classes=(card.get("input_spec") or {}).get("class_names"),
        )
    return {k: v for k, v in out.items() if v is not None}


def _factors(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ev.card is not None:
        out["input_kind"] = (ev.card.get("input_spec") or {}).get("kind")
    if ev.fairness is not None:
        out["protected_attribute"] = ev.fairness.get("protected")
        out["groups"] = sorted(ev.fairness.get("groups") or {})
    return {k: v for k, v in out.items() if v is not None}


def _metrics(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ev.card is not None and ev.card.get("metrics"):
        out["training_card"] = dict(ev.card["metrics"])
    report = ev.report or {}
    if report.get("clean"):
        out["clean_accuracy"] = report["clean"].get("accuracy")
    curves = (report.get("robustness") or {}).get("curves") or {}
    if isinstance(curves, dict) and curves:
        out["robust_accuracy"] = {
            norm: dict(zip(map(str, c.get("eps", [])), c.get("robust_accuracy", []), strict=False))
            for norm, c in curves.items()
        }
        out["attacks"] = sorted({a for c in curves.values() for a in c.get("attacks", [])})
    if ev.fairness is not None:
        keys = ("demographic_parity_difference", "equalized_odds_difference", "accuracy_gap", "robust_gap")
        out["fairness"] = {k: ev.fairness.get(k) for k in keys if ev.fairness.get(k) is not None}
    return out


def _eval_data(ev: Evidence) -> dict[str, Any]:
    data = (ev.report or {}).get("data")
    if data:
        return {k: data.get(k) for k in ("ref", "sha256", "rows", "kind") if data.get(k) is not None}
    if ev.card is not None and ev.card.split:
        split = ev.card.split
        return {"held_out_split": {k: split.get(k) for k in ("test_size", "seed", "test_rows")}}
    return {}


def _train_data(ev: Evidence) -> dict[str, Any]:
    if ev.card is None:
        return {}
    data = ev.card.dataset
    out = {
        "name": data.get("name"),
        "sha256": data.get("sha256"),
        "rows": data.get("rows"),
        "training_rows": ev.card.split.get("train_rows"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _quantitative(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    clean = (ev.report or {}).get("clean") or {}
    if clean.get("per_class_accuracy") is not None:
        names = clean.get("class_names") or [str(i) for i in range(len(clean["per_class_accuracy"]))]
        out["per_class_accuracy"] = dict(zip(map(str, names), clean["per_class_accuracy"], strict=False))
    if ev.fairness is not None and ev.fairness.get("groups"):
        out["by_group"] = ev.fairness["groups"]
    return out


def _ethics(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pii = ev.of("pii-scan")
    if pii:
        out["personal_data"] = pii[0].summary
    dp = ev.of("dp")
    out["differential_privacy"] = dp[0].summary if dp else "not trained with differential privacy"
    privacy = (ev.report or {}).get("privacy")
    if privacy:
        out["privacy_audit"] = "run (see the assessment report)"
    fair = ev.of("fairness")
    if fair:
        out["fairness"] = fair[0].summary
    return out


def _caveats(ev: Evidence) -> list[str]:
    out = []
    for f in (ev.report or {}).get("findings") or []:
        if f.get("severity") in ("high", "medium"):
            out.append(f"{f.get('title')}. {f.get('detail', '')}".strip())
    for n in (ev.report or {}).get("not_run") or []:
        out.append(f"Not run in the assessment: {n.get('check')}: {n.get('reason')}")
    for n in ev.not_run:
        out.append(f"No evidence of {n['kind']}: {n['reason']}")
    return out


def build_model_card(ev: Evidence, *, intended_use: str | None = None) -> dict[str, Any]:
    """The model card of the model ``ev`` was gathered for, as a JSON-ready dict."""
    sections: dict[str, Any] = {
        "model_details": _details(ev),
        "intended_use": {"stated": intended_use} if intended_use else {},
        "factors": _factors(ev),
        "metrics": _metrics(ev),
        "evaluation_data": _eval_data(ev),
        "training_data": _train_data(ev),
        "quantitative_analyses": _quantitative(ev),
        "ethical_considerations": _ethics(ev),
        "caveats_and_recommendations": _caveats(ev),
    }
    return {
        "schema": MODEL_CARD_SCHEMA,
        "reference": "Mitchell et al. 2019, Model Cards for Model Reporting",
        **sections,
        "missing": [s for s in SECTIONS if not sections[s]],
    }
