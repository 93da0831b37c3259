"""Run a campaign: every measurement is a unit whose result is saved as it finishes.

Units (clean accuracy, one attack at one budget, a minimal-perturbation run, a corruption at a
severity, a chunk of certificates, the masking checks) are written atomically to
``OUT/.dlsec-units/`` as they finish. Running the same command again resumes: finished units
are read back, not recomputed, as long as the campaign, model and data are the same (else the
stale units are discarded).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlsec.assess._engine import Engine, LocalEngine, Shared, UnitTask
from dlsec.assess._finding import certification_finding, finding
from dlsec.assess.campaign import Campaign
from dlsec.assess.certify import Certificate, RandomizedSmoothing, certified_accuracy
from dlsec.assess.explain import AdversarialGallery
from dlsec.assess.gates import GateResult, build_gate
from dlsec.attacks import ATTACKS, check_gradient_masking, get_attack
from dlsec.attacks.evasion.diagnostics import forward_is_random
from dlsec.attacks.evasion.wrappers import EOT
from dlsec.core.corruptions import corrupt, corruptions_for
from dlsec.core.data import Dataset
from dlsec.core.evaluation import evaluate
from dlsec.core.model import Access, Model, WhiteBoxModel, restrict_access
from dlsec.errors import UsageError
from dlsec.fsutil import atomic_write_text, atomic_write_with

__all__ = ["Assessment", "run_assessment"]

Progress = Callable[[int, int, dict[str, float]], None]
UNITS = ".dlsec-units"
GALLERY_N = 8


@dataclass(frozen=True)
class Assessment:
    """A finished assessment: the report and the gate verdicts."""

    report: dict[str, Any]
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


class _Units:
    """Finished units under ``OUT/.dlsec-units``, tied to one campaign/model/data fingerprint."""

    def __init__(self, out: Path, fingerprint: str) -> None:
        self.dir = out / UNITS
        meta = self.dir / "fingerprint.json"
        if self.dir.exists():
            try:
                same = json.loads(meta.read_text()).get("fingerprint") == fingerprint
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps({"fingerprint": fingerprint}))
        self.reused = 0

    def get(self, key: str) -> dict[str, Any] | None:
        """A finished unit's result, or ``None`` (a damaged file is dropped and recomputed)."""
        path = self.dir / f"{key}.json"
        if path.is_file():
            try:
                value: dict[str, Any] = json.loads(path.read_text())
                self.reused += 1
                return value
            except json.JSONDecodeError:
                path.unlink()
        return None

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Save a finished unit (atomically); arrays under ``_arrays`` go to ``KEY.npy`` files."""
        for name, array in value.pop("_arrays", {}).items():
            self.save_array(name, array)
        atomic_write_text(self.dir / f"{key}.json", json.dumps(value))
        return value

    def run(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        found = self.get(key)
        return found if found is not None else self.put(key, compute())

    def save_array(self, key: str, array: np.ndarray) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)

        atomic_write_with(self.dir / f"{key}.npy", write)

    def load_array(self, key: str) -> np.ndarray | None:
        path = self.dir / f"{key}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None


def _shards(n: int, size: int | None) -> list[tuple[int, int]]:
    """The evaluation set's row ranges, ``size`` rows each (one range when ``size`` is unset)."""
    if not size or size >= n:
        return [(0, n)]
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _evasion_unit(
    attack: Any,
    target: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    lo: int,
    hi: int,
    gallery_key: str | None,
    shard: bool = False,
) -> dict[str, Any]:
    """One attack at one budget on rows ``lo:hi`` (a top-level function: it runs on Ray workers too)."""
    result = attack(target, x[lo:hi], y[lo:hi])
    rates = result.robust
    value: dict[str, Any] = {
        "robust": rates.tolist() if result.passes > 1 else rates.bool().tolist(),
        "summary": result.summary(),
        "adv_pred": result.adv_pred[:GALLERY_N].tolist(),
    }
    if shard:  # per example, so that shards merge into the summary of one run over all rows
        value["success"] = result.success.tolist()
        value["clean_correct"] = result.clean_correct.tolist()
        value["norms"] = result.norms.tolist()
        value["clean_rate"] = None if result.clean_rate is None else result.clean_rate.tolist()
    if gallery_key is not None:
        value["_arrays"] = {gallery_key: result.x_adv[:GALLERY_N].numpy()}
    return value


def _merge_shards(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One unit's result from its shards' (in row order): the per-example lists concatenated and
    the summary recomputed over all rows, as one run over them reports it."""
    first = parts[0]["summary"]
    robust = [v for p in parts for v in p["robust"]]
    success = np.array([v for p in parts for v in p["success"]], dtype=bool)
    correct = np.array([v for p in parts for v in p["clean_correct"]], dtype=bool)
    norms = np.array([v for p in parts for v in p["norms"]], dtype=float)[success & correct]
    clean = (
        [v for p in parts for v in p["clean_rate"]]
        if all(p["clean_rate"] is not None for p in parts)
        else correct.astype(float).tolist()
    )
    n = len(robust)
    queries = sum(int(p["summary"]["queries"]) for p in parts)
    skipped: dict[str, Any] = {}
    for p in parts:
        skipped.update(p["summary"].get("skipped") or {})
    summary = {
        **first,
        "n": n,
        "clean_accuracy": float(np.mean(clean)) if n else float("nan"),
        "robust_accuracy": float(np.mean(np.asarray(robust, dtype=float))) if n else float("nan"),
        "success_rate": float(success[correct].mean()) if correct.any() else float("nan"),
        "queries": queries,
        "queries_per_example": queries / max(n, 1),
        "perturbation_norms": {
            "mean": float(norms.mean()) if len(norms) else None,
            "median": float(np.sort(norms)[(len(norms) - 1) // 2]) if len(norms) else None,  # torch's median
            "max": float(norms.max()) if len(norms) else None,
        },
        "shards": len(parts),
    }
    if skipped:
        summary["skipped"] = skipped
    return {"robust": robust, "summary": summary, "adv_pred": parts[0]["adv_pred"]}


def _why_not(name: str, access: Access, norm: str) -> str | None:
    """Why the campaign's attack ``name`` cannot run at ``access`` on ``norm`` (``None``: it can)."""
    if name not in ATTACKS:
        raise UsageError(f"campaign: unknown attack {name!r}; see `dlsec attack --list`")
    cls = ATTACKS[name]
    if cls.access > access:
        return f"needs {cls.access.label} access; the campaign's model offers {access.label}"
    if norm not in cls.norms:
        return f"{name} has no {norm} version"
    return None


def _attacks_for(campaign: Campaign, access: Access, norm: str) -> list[str]:
    return [name for name in campaign.attacks or [] if _why_not(name, access, norm) is None]


def run_assessment(
    model: Model,
    data: Dataset,
    campaign: Campaign,
    out: str | Path,
    *,
    model_ref: str,
    model_sha256: str,
    title: str | None = None,
    model_file: str | Path | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> Assessment:
    """Run ``campaign`` against ``model`` on ``data`` and write the reports into ``out``.

    Args:
        model: the model under test (downgraded to the campaign's access level).
        data: labelled examples (the first ``campaign.examples`` rows are used).
        campaign: what to run.
        out: output folder (``report.json``, ``report.html``, ``junit.xml``, ``report.sarif``).
        model_ref: how the model was named (for the report).
        model_sha256: SHA-256 of the model's weights (reproducibility, resume fingerprint).
        title: report title.
        model_file: the model's file, scanned (``dlsec scan``) into the report when given.
        progress: called as units finish.
        engine: where the evasion units run (default: here, one after the other; a
            :class:`RayEngine` runs them as Ray tasks with the same results).

    Returns:
        The report and the gate results (an empty gate list passes).
    """
    from dlsec.assess.report import reproducibility, write_all_reports

    out = Path(out)
    target = restrict_access(model, campaign.threat_model.access)
    access = target.access
    n = min(campaign.examples, len(data))
    x_np, y_np = data.x[:n], data.y[:n]
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    fingerprint = f"{campaign.fingerprint()}:{model_sha256}:{data.sha256}:{n}"
    units = _Units(out, fingerprint)
    seed = campaign.seed
    plan = _plan(campaign, target, access, n)
    done = 0

    def step_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(plan), {})

    def step(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        value = units.run(key, compute)
        step_done()
        return value

    def run_clean() -> dict[str, Any]:
        result = evaluate(target, data.subset(np.arange(n)))
        return {**result.to_dict(), "predictions": result.predictions.tolist()}

    clean = step("clean", run_clean)
    names = list(target.spec.class_names or [str(i) for i in range(target.spec.num_classes)])
    report: dict[str, Any] = {
        "title": title or f"dlsec assessment: {model_ref}",
        "model": {"ref": model_ref, "access": access.label, "sha256": model_sha256},
        "data": {"ref": data.name, "sha256": data.sha256, "rows": n, "kind": target.spec.kind},
        "campaign": campaign.model_dump(mode="json"),
        "clean": {**{k: v for k, v in clean.items() if k != "predictions"}, "class_names": names},
        "findings": [],
    }

    # Robust accuracy against the budget, per norm, worst case over the attacks. On a model
    # whose forward pass is random, each attack runs under EOT (the strongest method that
    # applies; AutoAttack chooses its rand version itself) and is scored by the expectation.
    randomised = isinstance(target, WhiteBoxModel) and forward_is_random(target, x[: min(n, 32)])
    eot = campaign.eot_samples if randomised else 0
    curves: dict[str, Any] = {}
    skipped_parts: dict[str, str] = {}  # parts of an attack that could not run (AutoAttack's DLR)
    # Every (norm, budget, attack, shard) is a unit; those not cached run on the engine (here or
    # as Ray tasks) and are saved as they arrive; then the curves are assembled in campaign order.
    shards = _shards(n, campaign.shard_size)
    shared_target, shared_x, shared_y = Shared(target), Shared(x), Shared(y)
    evasion: dict[str, dict[str, Any]] = {}
    tasks: list[UnitTask] = []
    for norm, budgets in campaign.threat_model.norms.items():
        for eps in budgets:
            for name in _attacks_for(campaign, access, norm):
                key = f"evasion-{norm}-{eps:g}-{name}"
                found = units.get(key)
                if found is not None:
                    evasion[key] = found
                    step_done()
                    continue
                attack = get_attack(
                    name, eps=eps, norm=norm, seed=seed, **campaign.attack_params.get(name, {})
                )
                if eot and name != "autoattack":
                    attack = EOT(attack, samples=eot)
                for i, (lo, hi) in enumerate(shards):
                    skey = key if len(shards) == 1 else f"{key}-shard{i}"
                    cached = units.get(skey) if len(shards) > 1 else None
                    if cached is not None:
                        evasion[skey] = cached
                        step_done()
                    else:
                        gallery_key = key if i == 0 else None
                        args = (
                            attack,
                            shared_target,
                            shared_x,
                            shared_y,
                            lo,
                            hi,
                            gallery_key,
                            len(shards) > 1,
                        )
                        tasks.append(UnitTask(skey, _evasion_unit, args))
    for key, value in (engine or LocalEngine()).run(tasks):
        evasion[key] = units.put(key, value)
        step_done()
    for norm, budgets in campaign.threat_model.norms.items():
        attacks = _attacks_for(campaign, access, norm)
        if not attacks:
            continue
        per_attack: dict[str, list[float]] = {a: [] for a in attacks}
        versions: dict[str, str] = {}
        scoring: dict[str, str] = {}
        worst = []
        for eps in budgets:
            # Per example, the fraction of passes that still get it right (0 or 1 but for
            # attacks scored by expectation on a randomised model); the worst case is the minimum.
            robust = np.ones(n, dtype=float)
            for name in attacks:
                key = f"evasion-{norm}-{eps:g}-{name}"
                if key not in evasion:  # sharded: merged once, then cached like any unit
                    evasion[key] = units.put(
                        key, _merge_shards([evasion[f"{key}-shard{i}"] for i in range(len(shards))])
                    )
                unit = evasion[key]
                rate = np.asarray(unit["robust"], dtype=float)
                per_attack[name].append(float(rate.mean()))
                robust = np.minimum(robust, rate)
                summary = unit["summary"]
                if "version" in summary:
                    versions[name] = summary["version"]
                if "scoring" in summary:
                    scoring[name] = summary["scoring"]
                for part, why in (summary.get("skipped") or {}).items():
                    skipped_parts[f"{name} {part} ({norm})"] = str(why)
            worst.append(float(robust.mean()))
        curves[norm] = {
            "eps": list(budgets),
            "robust_accuracy": worst,
            "per_attack": per_attack,
            "attacks": attacks,
            **({"versions": versions} if versions else {}),
            **({"scoring": scoring} if scoring else {}),
        }
    report["robustness"] = {"curves": curves}
    if randomised:
        report["robustness"]["randomised_forward"] = {"eot_samples": campaign.eot_samples}
    if skipped_parts:
        report["robustness"]["skipped"] = skipped_parts

    # Minimal perturbations (white-box only).
    if campaign.minimal and access == Access.WHITE_BOX:
        minimal = {}
        m = min(n, 100)
        for name in campaign.minimal:
            for norm in ("l2", "linf"):
                if name not in ATTACKS or norm not in ATTACKS[name].norms:
                    continue
                key = f"minimal-{name}-{norm}"

                def run_min(name: str = name, norm: str = norm) -> dict[str, Any]:
                    params = campaign.attack_params.get(name, {})
                    result = get_attack(name, norm=norm, seed=seed, **params)(target, x[:m], y[:m])
                    fooled = (result.success & result.clean_correct).numpy()
                    norms = result.norms.numpy()[fooled]
                    q = np.quantile(norms, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist() if len(norms) else None
                    return {
                        "attack": name,
                        "norm": norm,
                        "n": int(result.clean_correct.sum()),
                        "fooled": int(fooled.sum()),
                        "quantiles": q,
                        "norms": norms.tolist(),
                    }

                minimal[f"{name}-{norm}"] = step(key, run_min)
        report["robustness"]["minimal"] = minimal

    # Gradient-masking checks.
    if campaign.masking_checks and isinstance(target, WhiteBoxModel):
        norm0, budgets0 = next(iter(campaign.threat_model.norms.items()))
        eps0 = budgets0[len(budgets0) // 2]

        def run_masking() -> dict[str, Any]:
            return check_gradient_masking(target, x[:64], y[:64], eps=eps0, norm=norm0, seed=seed).to_dict()

        masking = step("masking", run_masking)
        report["robustness"]["gradient_masking"] = masking
        report["findings"] += masking["findings"]

    # Corruptions.
    if campaign.corruptions.enabled:
        names_c = campaign.corruptions.names or corruptions_for(target.spec)
        rows = []
        for cname in names_c:
            for severity in campaign.corruptions.severities:

                def run_corruption(cname: str = cname, severity: int = severity) -> dict[str, Any]:
                    xc = corrupt(x_np, target.spec, cname, severity, seed=seed)
                    acc = float((target.predict(torch.from_numpy(xc)).numpy() == y_np).mean())
                    return {"corruption": cname, "severity": severity, "accuracy": acc}

                rows.append(step(f"corruption-{cname}-{severity}", run_corruption))
        report["corruptions"] = {"results": rows}

    # Certified robustness.
    cert_cfg = campaign.certification
    if cert_cfg.enabled:
        m = min(n, cert_cfg.examples)
        preds: list[int] = []
        radii: list[float] = []
        for start in range(0, m, 25):

            def run_cert(start: int = start) -> dict[str, Any]:
                chunk = slice(start, min(start + 25, m))
                cert = RandomizedSmoothing(
                    sigma=cert_cfg.sigma,
                    n0=cert_cfg.n0,
                    n=cert_cfg.n,
                    alpha=cert_cfg.alpha,
                    seed=seed + start,
                ).certify(target, x[chunk])
                return {"prediction": cert.prediction.tolist(), "radius": cert.radius.tolist()}

            chunk_result = step(f"certify-{start}", run_cert)
            preds += chunk_result["prediction"]
            radii += chunk_result["radius"]
        cert_all = Certificate(np.array(preds), np.array(radii), np.zeros(len(preds)))
        report["certification"] = {
            "sigma": cert_cfg.sigma,
            "n0": cert_cfg.n0,
            "n": cert_cfg.n,
            "alpha": cert_cfg.alpha,
            "examples": m,
            "radii": list(cert_cfg.radii),
            "certified_accuracy": certified_accuracy(cert_all, y_np[:m], list(cert_cfg.radii)),
            "abstain_rate": float((cert_all.prediction == -1).mean()),
            "median_radius": float(np.median(cert_all.radius)),
        }

    # Privacy: membership inference, model inversion, attribute inference (off by default).
    if campaign.privacy.enabled:
        from dlsec.assess.privacy import run_privacy

        report["privacy"], privacy_findings = run_privacy(
            target,
            data,
            campaign.privacy,
            step=step,
            seed=seed,
            model_file=model_file,
            units_dir=units.dir,
            runner=engine.starmap if engine is not None else None,
        )
        report["findings"] += privacy_findings

    # Extraction: clones trained through the model's predictions within a budget (off by default).
    if campaign.extraction.enabled:
        from dlsec.assess.extraction import run_extraction

        report["extraction"], extraction_findings = run_extraction(
            target, data, campaign.extraction, step=step, seed=seed
        )
        report["findings"] += extraction_findings

    # Backdoors: Neural Cleanse scan, STRIP, optional training-set audit (off by default).
    if campaign.backdoor.enabled:
        from dlsec.assess.backdoor import run_backdoor

        report["backdoor"], backdoor_findings = run_backdoor(
            target,
            data,
            campaign.backdoor,
            step=step,
            seed=seed,
            runner=engine.starmap if engine is not None else None,
        )
        report["findings"] += backdoor_findings

    # Federated learning: attacks by malicious clients against defences (off by default).
    if campaign.federated.enabled:
        from dlsec.assess.federated import run_federated

        report["federated"], federated_findings = run_federated(
            data, campaign.federated, step=step, seed=seed, model_file=model_file
        )
        report["findings"] += federated_findings

    # Explanations: clean vs adversarial attributions of the gallery's rows (on by default).
    gallery_adv = _gallery_adversarial(report, units)
    if campaign.explain.enabled:
        from dlsec.assess.explain import run_explain

        report["explain"] = run_explain(
            target,
            x_np,
            y_np,
            np.asarray(clean["predictions"]),
            gallery_adv,
            campaign.explain,
            step=step,
            seed=seed,
            feature_names=target.spec.feature_names,
        )

    if model_file is not None:
        from dlsec.scan import scan_file

        scan = scan_file(model_file)
        report["model_file"] = scan.to_dict()
        if scan.verdict != "safe":
            report["findings"].insert(
                0,
                finding(
                    "model-file",
                    "high",
                    f"The model file is {scan.verdict} ({scan.format})",
                    "; ".join(f.reason for f in scan.findings[:3]) or (scan.error or ""),
                    scan.to_dict(),
                    owasp="ML06 AI Supply Chain Attacks",
                    atlas="AML.T0010 AI Supply Chain Compromise",
                ),
            )
    report["findings"] = _findings(report) + report["findings"]
    report["not_run"] = _not_run(campaign, target, report, model_file)

    # Gates.
    gate_results: list[GateResult] = []
    if campaign.gates:
        gate_results = [build_gate(spec).check(report) for spec in campaign.gates]
    report["gates"] = [g.to_dict() for g in gate_results]
    report["passed"] = all(g.passed for g in gate_results)
    report["complete"] = not report["not_run"]
    # A pass is only a pass when every check asked for ran; otherwise the verdict says so.
    report["verdict"] = "fail" if not report["passed"] else ("pass" if report["complete"] else "partial")
    report["reproducibility"] = reproducibility(
        seed=seed,
        model_sha256=model_sha256,
        data_sha256=data.sha256,
        campaign_sha256=campaign.fingerprint(),
        units_reused=units.reused,
    )

    gallery = _gallery(report, gallery_adv, x_np, y_np, np.asarray(clean["predictions"]), names, target)
    write_all_reports(out, report, gallery=gallery, gates=gate_results)
    return Assessment(report, gate_results)


def _not_run(
    campaign: Campaign, target: Model, report: dict[str, Any], model_file: str | Path | None
) -> list[dict[str, str]]:
    """Every check the campaign asked for that did not run, with the reason (never silent)."""
    access = target.access
    out: list[dict[str, str]] = []
    for norm in campaign.threat_model.norms:
        for name in campaign.attacks or []:
            why = _why_not(name, access, norm)
            if why is not None:
                out.append({"check": f"evasion {name} ({norm})", "reason": why})
    if campaign.minimal and access != Access.WHITE_BOX:
        for name in campaign.minimal:
            out.append({"check": f"minimal perturbation {name}", "reason": "needs white-box access"})
    if campaign.masking_checks and not isinstance(target, WhiteBoxModel):
        out.append({"check": "gradient-masking checks", "reason": "need a white-box model"})
    for part, why in (report.get("robustness") or {}).get("skipped", {}).items():
        out.append({"check": f"evasion {part}", "reason": why})
    randomised = (report.get("robustness") or {}).get("randomised_forward")
    if randomised is not None and not randomised.get("eot_samples"):
        out.append(
            {
                "check": "evasion under EOT",
                "reason": "the model's forward pass is random and eot_samples is 0: robust accuracy "
                "is over single passes, kinder than the expectation",
            }
        )
    privacy = report.get("privacy") or {}
    for name, why in (privacy.get("membership") or {}).get("skipped", {}).items():
        out.append({"check": f"membership inference {name}", "reason": why})
    if campaign.privacy.enabled and campaign.privacy.inversion and "inversion" not in privacy:
        out.append({"check": "model inversion", "reason": "needs a white-box image model"})
    scan = (report.get("backdoor") or {}).get("scan") or {}
    if isinstance(scan, dict) and "skipped" in scan:
        out.append({"check": "backdoor trigger scan", "reason": str(scan["skipped"])})
    federated = report.get("federated") or {}
    if "skipped" in federated:
        out.append({"check": "federated learning", "reason": str(federated["skipped"])})
    explained = report.get("explain") or {}
    for part, key in (("explain", "skipped"), ("explain (adversarial attributions)", "skipped_adversarial")):
        if key in explained:
            out.append({"check": part, "reason": str(explained[key])})
    if model_file is None:
        out.append({"check": "model-file scan", "reason": "no model file (an in-memory or remote model)"})
    return out


def _plan(campaign: Campaign, target: Model, access: Access, n: int) -> list[str]:
    """The unit keys in the order they run (for progress totals; a sharded attack counts per shard)."""
    keys = ["clean"]
    count = len(_shards(n, campaign.shard_size))
    for norm, budgets in campaign.threat_model.norms.items():
        for eps in budgets:
            for a in _attacks_for(campaign, access, norm):
                key = f"evasion-{norm}-{eps:g}-{a}"
                keys += [key] if count == 1 else [f"{key}-shard{i}" for i in range(count)]
    if campaign.minimal and access == Access.WHITE_BOX:
        keys += [
            f"minimal-{a}-{nm}"
            for a in campaign.minimal
            for nm in ("l2", "linf")
            if a in ATTACKS and nm in ATTACKS[a].norms
        ]
    if campaign.masking_checks and isinstance(target, WhiteBoxModel):
        keys.append("masking")
    if campaign.corruptions.enabled:
        names = campaign.corruptions.names or corruptions_for(target.spec)
        keys += [f"corruption-{c}-{s}" for c in names for s in campaign.corruptions.severities]
    if campaign.certification.enabled:
        m = min(campaign.examples, campaign.certification.examples)
        keys += [f"certify-{s}" for s in range(0, m, 25)]
    if campaign.privacy.enabled:
        from dlsec.assess.privacy import unit_keys

        keys += unit_keys(campaign.privacy, target)
    if campaign.extraction.enabled:
        from dlsec.assess.extraction import unit_keys as extraction_keys

        keys += extraction_keys(campaign.extraction)
    if campaign.federated.enabled:
        from dlsec.assess.federated import unit_keys as federated_keys

        keys += federated_keys(campaign.federated)
    if campaign.explain.enabled and access != Access.DECISION:
        keys.append("explain")
    return keys


def _findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    findings = []
    clean = report["clean"]["accuracy"]
    for norm, curve in report.get("robustness", {}).get("curves", {}).items():
        mid = len(curve["eps"]) // 2
        eps, acc = curve["eps"][mid], curve["robust_accuracy"][mid]
        if acc < clean - 0.05:
            findings.append(
                finding(
                    f"evasion-{norm}",
                    "high" if acc < 0.5 else "medium",
                    f"Evasion: {norm} eps={eps:g} lowers accuracy from {clean:.1%} to {acc:.1%}",
                    f"worst case over {', '.join(curve['attacks'])}; consider adversarial training "
                    "(dlsec train --recipe pgd-at) and re-assess",
                    {"norm": norm, "eps": eps, "robust_accuracy": acc, "clean_accuracy": clean},
                    owasp="ML01 Input Manipulation Attack",
                    atlas="AML.T0015 Evade AI Model",
                )
            )
    rows = report.get("corruptions", {}).get("results", [])
    if rows:
        top = max(r["severity"] for r in rows)
        hurt = [r for r in rows if r["severity"] == top and r["accuracy"] < clean - 0.2]
        if hurt:
            listing = ", ".join(f"{r['corruption']} {r['accuracy']:.1%}" for r in hurt)
            findings.append(
                finding(
                    "corruption",
                    "low",
                    f"Corruptions at severity {top} drop accuracy by more than 20 points",
                    f"{listing} (clean {clean:.1%}); natural corruptions an attacker can "
                    "also induce: consider augmentation",
                    {"results": hurt},
                    owasp="ML01 Input Manipulation Attack",
                    atlas="AML.T0043 Craft Adversarial Data",
                )
            )
    low = certification_finding(
        "certification",
        report.get("certification"),
        subject=lambda r: f"Certified accuracy at L2 radius {r:g}",
        method=lambda c: f"randomised smoothing, sigma {c['sigma']:g}, {c['examples']} examples",
        atlas="AML.T0015 Evade AI Model",
    )
    if low is not None:
        findings.append(low)
    return findings


def _gallery_adversarial(report: dict[str, Any], units: _Units) -> AdversarialGallery | None:
    """The adversarial rows the gallery shows: the first norm's middle budget, its first kept attack."""
    from dlsec.assess.explain import AdversarialGallery

    for norm, curve in report.get("robustness", {}).get("curves", {}).items():
        mid = curve["eps"][len(curve["eps"]) // 2]
        for name in curve["attacks"]:
            key = f"evasion-{norm}-{mid:g}-{name}"
            arr = units.load_array(key)
            if arr is not None:
                unit = json.loads((units.dir / f"{key}.json").read_text())
                return AdversarialGallery(name, norm, float(mid), arr, np.asarray(unit["adv_pred"]))
    return None


def _gallery(
    report: dict[str, Any],
    adversarial: AdversarialGallery | None,
    x: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    names: list[str],
    model: Model,
) -> list[dict[str, Any]]:
    from dlsec.assess.explain import heat_map
    from dlsec.assess.report import png_data_uri

    if model.spec.kind != "image" or len(model.spec.shape) != 3:
        return []
    adv = adversarial.x_adv if adversarial is not None else None
    adv_pred = adversarial.adv_pred if adversarial is not None else None
    maps = (report.get("explain") or {}).get("maps") or {}
    hw = (model.spec.shape[1], model.spec.shape[2])
    scale = max(1, 64 // max(model.spec.shape[1:]))
    items = []
    for i in range(min(GALLERY_N, len(y))):
        item = {
            "index": i,
            "label": names[y[i]],
            "prediction": names[pred[i]],
            "src": png_data_uri(x[i], scale=scale),
            "width": model.spec.shape[2] * scale,
            "height": model.spec.shape[1] * scale,
        }
        if adv is not None and adv_pred is not None:
            item.update(adv_src=png_data_uri(adv[i], scale=scale), adv_prediction=names[adv_pred[i]])
        for which in ("clean", "adversarial"):
            if i < len(maps.get(which, [])):
                item[f"{which}_map_src"] = png_data_uri(heat_map(maps[which][i], hw), scale=scale)
        items.append(item)
    return items
