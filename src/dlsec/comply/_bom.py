"""The ML bill of materials: a CycloneDX 1.6 document built with ``cyclonedx-python-lib``.

It lists the model (``machine-learning-model``, its files with SHA-256 hashes, its signature as
an attestation reference with the signers' key fingerprints), the training and evaluation data
(``data`` components with their hashes), and the Python packages it was trained and runs with
(``pkg:pypi`` URLs). The library has no model-card type yet, so the CycloneDX ``modelCard`` of the
model (parameters, datasets, measured metrics, considerations) is added to its JSON, and the whole
document is then validated against the CycloneDX 1.6 JSON schema that the library ships. A BOM
that does not validate is never written.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from dlsec.comply._evidence import Evidence
from dlsec.errors import Error

__all__ = ["build_bom"]

# The packages a dlsec model needs to load and run, beside those its training card names.
_RUNTIME = ("torch", "numpy", "safetensors")


class BomInvalidError(Error):
    """The BOM does not validate against the CycloneDX schema (a bug in dlsec)."""


def _model_files(ev: Evidence) -> dict[str, str]:
    record = ev.record or {}
    if record.get("files"):
        return dict(record["files"])
    if ev.files is not None:
        return dict(ev.files)
    from dlsec.fsutil import sha256_file

    path = Path(str(ev.model))
    if path.is_file():
        return {path.name: sha256_file(path)}
    if path.is_dir():
        return {
            str(p.relative_to(path)): sha256_file(p)
            for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.endswith(".sig")
        }
    return {}


def _packages(ev: Evidence) -> dict[str, str]:
    versions: dict[str, Any] = dict(ev.card.get("versions") or {}) if ev.card is not None else {}
    out: dict[str, str] = {}
    for name in ("dlsec", *_RUNTIME, "opacus"):
        version = versions.get(name)
        if version is None and name in _RUNTIME + ("dlsec",):
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        if version is not None:
            out[name] = str(version)
    return out


def _model_card(ev: Evidence, data_refs: list[str]) -> dict[str, Any]:
    card = ev.card
    params: dict[str, Any] = {
        "approach": {"type": "supervised"},
        "task": "classification",
    }
    if card is not None and card.get("architecture"):
        params["architectureFamily"] = str(card["architecture"])
        params["modelArchitecture"] = json.dumps(card.get("arch_kwargs") or {}, sort_keys=True)
    if data_refs:
        params["datasets"] = [{"ref": r} for r in data_refs]
    kind = ((card.get("input_spec") or {}).get("kind") if card is not None else None) or "tensor"
    params["inputs"] = [{"format": str(kind)}]
    params["outputs"] = [{"format": "class scores"}]
    metrics: list[dict[str, Any]] = []
    report = ev.report or {}
    if (report.get("clean") or {}).get("accuracy") is not None:
        metrics.append({"type": "accuracy", "value": f"{report['clean']['accuracy']:.4f}", "slice": "clean"})
    for norm, curve in ((report.get("robustness") or {}).get("curves") or {}).items():
        for eps, acc in zip(curve.get("eps", []), curve.get("robust_accuracy", []), strict=False):
            metrics.append({"type": "robust accuracy", "value": f"{acc:.4f}", "slice": f"{norm} eps={eps}"})
    out: dict[str, Any] = {"modelParameters": params}
    if metrics:
        out["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations = [
        {"name": item.summary, "mitigationStrategy": f"evidence: {item.kind} ({item.state})"}
        for kind in ("pii-scan", "dp", "fairness")
        for item in ev.of(kind)
    ]
    if considerations:
        out["considerations"] = {"ethicalConsiderations": considerations}
    return out


def build_bom(ev: Evidence) -> str:
    """The CycloneDX 1.6 JSON of the model ``ev`` was gathered for, validated against the schema.

    Raises:
        BomInvalidError: the document does not validate (never written).
    """
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    import dlsec

    record = ev.record or {}
    card_name = ev.card.get("name") if ev.card is not None else None
    name = str(record.get("model") or card_name or Path(str(ev.model)).stem or "model")
    version = str(record.get("version") or "unregistered")
    files = [
        Component(
            name=fname,
            type=ComponentType.FILE,
            bom_ref=f"file:{fname}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)],
        )
        for fname, digest in sorted(_model_files(ev).items())
    ]
    properties = [
        Property(
            name="dlsec:signed", value=str(bool(ev.of("signature")) and ev.state("signature") == "ok").lower()
        )
    ]
    refs = []
    for item in ev.of("signature"):
        properties.append(Property(name="dlsec:signature", value=f"{item.state}: {item.summary}"))
        if record.get("root_digest"):
            properties.append(Property(name="dlsec:root-digest", value=str(record["root_digest"])))
        sig = Path(item.source)
        if sig.is_file():
            from dlsec.fsutil import sha256_file

            refs.append(
                ExternalReference(
                    type=ExternalReferenceType.ATTESTATION,
                    url=XsUri(sig.name),
                    comment="DSSE signature bundle (ECDSA P-256 + ML-DSA-65) over the files' manifest",
                    hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256_file(sig))],
                )
            )
    for item in ev.of("scan"):
        properties.append(Property(name="dlsec:scan", value=f"{item.state}: {item.summary}"))
    model = Component(
        name=name,
        version=version,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=f"model:{name}@{version}",
        components=files,
        properties=properties,
        external_references=refs,
    )
    data: list[Component] = []
    if ev.card is not None and ev.card.data_sha256:
        data.append(
            Component(
                name=str(ev.card.dataset.get("name") or "training-data"),
                type=ComponentType.DATA,
                bom_ref="data:training",
                description="training data (the rows of the training split)",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=ev.card.data_sha256)],
            )
        )
    eval_data = (ev.report or {}).get("data") or {}
    if eval_data.get("sha256"):
        data.append(
            Component(
                name=str(eval_data.get("ref") or "evaluation-data"),
                type=ComponentType.DATA,
                bom_ref="data:evaluation",
                description="evaluation data of the assessment",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=str(eval_data["sha256"]))],
            )
        )
    libs = [
        Component(
            name=pkg,
            version=ver,
            type=ComponentType.LIBRARY,
            bom_ref=f"pkg:pypi/{pkg}@{ver}",
            purl=PackageURL(type="pypi", name=pkg, version=ver),
        )
        for pkg, ver in sorted(_packages(ev).items())
    ]
    bom = Bom()
    bom.metadata.component = model
    bom.metadata.properties.add(Property(name="dlsec:version", value=dlsec.__version__))
    for c in data + libs:
        bom.components.add(c)
    bom.register_dependency(model, data + libs)
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(ev, [c.bom_ref.value or "" for c in data])
    text = json.dumps(doc, indent=2, sort_keys=False)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors is not None:
        raise BomInvalidError(f"the ML-BOM does not validate against CycloneDX 1.6: {errors}")
    return text + "\n"
