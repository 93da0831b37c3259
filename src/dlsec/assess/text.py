"""The assessment's text section: word- and character-level attacks and SAFER certificates.

A text model (a :class:`dlsec.text.TextClassifier`) on a text corpus runs a text campaign: each
attack of ``text.attacks`` (PWWS, TextFooler, DeepWordBug; HotFlip when the model is white-box)
at each budget of ``text.max_change`` (the fraction of a text's words it may change) is one
resumable unit, as are the clean predictions and the chunks of SAFER certificates (Ye et al.
2020: randomised smoothing over word substitutions, certified accuracy per radius in words).
The report has the same files as any assessment (``report.json``, ``report.html``,
``junit.xml``, ``report.sarif``) with a ``text`` section: attack success by method, words
changed, median queries, examples with their changed words, certified accuracy per radius; the
worst case over the attacks at each budget is what ``robust_accuracy`` gates read
(``max_change`` instead of ``norm`` and ``eps``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlsec.assess._finding import certification_finding, finding
from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.assess.campaign import Campaign
    from dlsec.assess.runner import Assessment, Progress
    from dlsec.text import TextClassifier, TextDataset

__all__ = ["SaferSection", "TextSection", "run_text_assessment"]

TEXT_DEFAULT_ATTACKS = ["pwws", "textfooler", "deepwordbug", "hotflip"]
SHOWN = 8  # examples per attack shown in the report
CHUNK = 25  # texts per SAFER unit


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SaferSection(_Strict):
    """SAFER settings: samples, confidence, texts certified and the radii (words) reported."""

    enabled: bool = True
    n0: int = Field(50, ge=1)
    n: int = Field(500, ge=10)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    examples: int = Field(50, ge=1)
    radii: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    same_pos: bool = True
    max_candidates: int = Field(50, ge=1)

    @field_validator("radii")
    @classmethod
    def _radii(cls, value: list[int]) -> list[int]:
        if not value or any(r < 0 for r in value):
            raise ValueError("radii are non-negative word counts; give at least one")
        return sorted(set(value))


class TextSection(_Strict):
    """Campaign settings of the text section (runs when the model and data are text).

    ``attacks`` are text attacks (``dlsec text attack``); ``max_change`` the budgets, each the
    most words changed as a fraction of a text's words; ``examples`` the texts attacked (the
    first of the assessed split); ``query_budget`` the most model queries per text;
    ``wordnet`` a WordNet database folder (default: the system's); ``safer`` the certificates.
    """

    enabled: bool = True
    attacks: list[str] = Field(default_factory=lambda: list(TEXT_DEFAULT_ATTACKS))
    attack_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_change: list[float] = Field(default_factory=lambda: [0.1, 0.2])
    examples: int = Field(100, ge=1)
    query_budget: int | None = Field(2000, ge=1)
    keep_stopwords: bool = True
    wordnet: str | None = None
    safer: SaferSection = Field(default_factory=SaferSection)

    @field_validator("max_change")
    @classmethod
    def _budgets(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < b <= 1 for b in value):
            raise ValueError("max_change budgets are fractions of the words, in (0, 1]; give at least one")
        return sorted(set(value))

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: list[str]) -> list[str]:
        from dlsec.text import TEXT_ATTACKS

        unknown = [a for a in value if a.lower() not in TEXT_ATTACKS]
        if unknown:
            raise ValueError(
                f"unknown text attack {unknown[0]!r}; choose from {', '.join(sorted(TEXT_ATTACKS))}"
            )
        return [a.lower() for a in value]


def _segments(text: str, adversarial: str, changed: list[int]) -> list[dict[str, str]]:
    """The adversarial text as pieces, each changed word with the word it replaced (for highlights)."""
    from dlsec.text.words import Words

    orig, adv = Words.of(text), Words.of(adversarial)
    if len(orig.pieces) != len(adv.pieces):  # a deletion joined pieces: fall back to the whole text
        return [{"text": adversarial}]
    changed_slots = {adv.slots[k]: orig.pieces[adv.slots[k]] for k in changed if k < len(adv.slots)}
    out: list[dict[str, str]] = []
    for i, piece in enumerate(adv.pieces):
        if i in changed_slots:
            out.append({"text": piece, "was": changed_slots[i]})
        elif out and "was" not in out[-1]:
            out[-1] = {"text": out[-1]["text"] + piece}
        else:
            out.append({"text": piece})
    return out


def _attack_unit(
    model: TextClassifier,
    name: str,
    budget: float,
    texts: tuple[str, ...],
    y: np.ndarray,
    cfg: TextSection,
    seed: int,
) -> dict[str, Any]:
    from dlsec.text import WordNet, get_text_attack

    params: dict[str, Any] = {
        "max_change": budget,
        "query_budget": cfg.query_budget,
        "keep_stopwords": cfg.keep_stopwords,
        "seed": seed,
        **cfg.attack_params.get(name, {}),
    }
    if cfg.wordnet is not None and name != "deepwordbug":
        params.setdefault("wordnet", WordNet.load(cfg.wordnet))
    result = get_text_attack(name, **params)(model, texts, y)
    won = [i for i in range(len(y)) if result.success[i] and result.clean_correct[i]]
    shown = []
    for e_i in won[:SHOWN]:
        shown.append(
            {
                "index": e_i,
                "text": result.texts[e_i],
                "adversarial": result.adv_texts[e_i],
                "marked": result.marked[e_i],
                "segments": _segments(result.texts[e_i], result.adv_texts[e_i], list(result.changed[e_i])),
                "label": int(result.y[e_i]),
                "adv_pred": int(result.adv_pred[e_i]),
                "words_changed": len(result.changed[e_i]),
                "queries": int(result.queries[e_i]),
            }
        )
    return {
        "summary": _jsonable(result.summary()),
        "success": result.success.astype(bool).tolist(),
        "examples": shown,
    }


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    """NaN (no success, nothing to take a median of) becomes ``None`` in the JSON report."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def _restricted(model: TextClassifier, access: str) -> TextClassifier:
    """The model as the campaign's attacker sees it (a score-only view hides the gradients)."""
    from dlsec.core.model import Access
    from dlsec.text import ScoreTextModel

    if access == "white-box" or model.access < Access.WHITE_BOX:
        return model
    return ScoreTextModel(model.probs, model.class_names)


def _why_not(name: str, model: TextClassifier, access: str) -> str | None:
    from dlsec.text import TEXT_ATTACKS

    needed = TEXT_ATTACKS[name].access
    if access == "decision":
        return "text attacks need the model's scores; the campaign's access is decision-only"
    if model.access < needed:
        return f"needs {needed.label} access; the campaign's model offers {model.access.label}"
    return None


def _clean(model: TextClassifier, texts: tuple[str, ...], y: np.ndarray) -> dict[str, Any]:
    pred = model.predict(texts)
    k = model.num_classes
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    rows = matrix.sum(1)
    per_class = [float(matrix[i, i] / rows[i]) if rows[i] else 0.0 for i in range(k)]
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "predictions": pred.tolist(),
    }


def run_text_assessment(
    model: TextClassifier,
    data: TextDataset,
    campaign: Campaign,
    out: str | Path,
    *,
    model_ref: str,
    model_sha256: str,
    title: str | None = None,
    model_folder: str | Path | None = None,
    progress: Progress | None = None,
) -> Assessment:
    """Run ``campaign``'s text section against ``model`` on ``data`` and write the reports into ``out``.

    Args:
        model: the text classifier under test (a score-only view when the campaign's access is
            not white-box).
        data: labelled texts (the first ``campaign.text.examples`` are attacked).
        campaign: what to run (its ``text`` section, ``threat_model.access``, ``seed``, ``gates``).
        out: output folder (resumable, as :func:`dlsec.assess.run_assessment`).
        model_ref / model_sha256: how the model was named and the hash of its weights.
        model_folder: the model's folder, checked for remote-code hooks and pickles into the report.
        progress: called as units finish.
    """
    from dlsec.assess.gates import GateResult, build_gate
    from dlsec.assess.report import reproducibility, write_all_reports
    from dlsec.assess.runner import Assessment, _Units
    from dlsec.text import SAFER, TextClassifier, WordNet

    if not isinstance(model, TextClassifier):
        raise UsageError("the text section needs a text model; this model takes images or tables")
    cfg = campaign.text
    access = campaign.threat_model.access
    target = _restricted(model, access)
    n = min(cfg.examples, len(data))
    if n == 0:
        raise UsageError(f"{data.name}: no texts to assess")
    if data.num_classes > model.num_classes:
        raise UsageError(f"{data.name} has {data.num_classes} classes, the model {model.num_classes}")
    texts, y = tuple(data.texts[:n]), np.asarray(data.y[:n], dtype=np.int64)
    out = Path(out)
    fingerprint = f"{campaign.fingerprint()}:{model_sha256}:{data.sha256}:{n}:text"
    units = _Units(out, fingerprint)
    seed = campaign.seed
    runnable = [a for a in cfg.attacks if _why_not(a, target, access) is None] if cfg.enabled else []
    safer_on = cfg.enabled and cfg.safer.enabled
    m = min(n, cfg.safer.examples)
    plan = 1 + len(runnable) * len(cfg.max_change) + (len(range(0, m, CHUNK)) if safer_on else 0)
    done = 0

    def step(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        nonlocal done
        value = units.run(key, compute)
        done += 1
        if progress is not None:
            progress(done, plan, {})
        return value

    clean = step("clean", lambda: _clean(target, texts, y))
    names = list(model.class_names)
    report: dict[str, Any] = {
        "title": title or f"dlsec assessment: {model_ref}",
        "model": {"ref": model_ref, "access": target.access.label, "sha256": model_sha256},
        "data": {"ref": data.name, "sha256": data.sha256, "rows": n, "kind": "text"},
        "campaign": campaign.model_dump(mode="json"),
        "clean": {**{k: v for k, v in clean.items() if k != "predictions"}, "class_names": names},
        "findings": [],
    }

    section: dict[str, Any] = {
        "examples": n,
        "max_change": list(cfg.max_change),
        "query_budget": cfg.query_budget,
    }
    per_attack: dict[str, Any] = {}
    worst: list[float] = []
    shown: list[dict[str, Any]] = []
    truncated = 0
    for budget in cfg.max_change:
        fooled = np.zeros(n, dtype=bool)
        for name in runnable:

            def compute(name: str = name, budget: float = budget) -> dict[str, Any]:
                return _attack_unit(target, name, budget, texts, y, cfg, seed)

            unit = step(f"text-{name}-{budget:g}", compute)
            fooled |= np.asarray(unit["success"], dtype=bool)
            s = unit["summary"]
            row = per_attack.setdefault(
                name,
                {k: [] for k in ("robust_accuracy", "success_rate", "median_queries", "mean_words_changed")}
                | {"budget_exhausted": [], "max_change": []},
            )
            row["max_change"].append(budget)
            for k in (
                "robust_accuracy",
                "success_rate",
                "median_queries",
                "mean_words_changed",
                "budget_exhausted",
            ):
                row[k].append(s.get(k))
            for key in ("embedding_filter", "similarity"):
                if key in s:
                    row[key] = s[key]
            truncated = max(truncated, int(s.get("truncated") or 0))
            shown += [{**e, "attack": name, "max_change": budget} for e in unit["examples"]]
        if runnable:
            worst.append(float((~fooled).mean()))
    if runnable:
        section["curve"] = {"max_change": list(cfg.max_change), "robust_accuracy": worst, "attacks": runnable}
    section["attacks"] = per_attack
    section["shown"] = [
        {**e, "label_name": names[e["label"]], "adv_pred_name": names[e["adv_pred"]]} for e in shown
    ]
    section["truncated"] = truncated

    if safer_on:
        wordnet = WordNet.load(cfg.wordnet) if cfg.wordnet is not None else None
        preds: list[int] = []
        radius: list[int] = []
        every: list[bool] = []
        for start in range(0, m, CHUNK):

            def run_safer(start: int = start) -> dict[str, Any]:
                safer = SAFER(
                    n0=cfg.safer.n0,
                    n=cfg.safer.n,
                    alpha=cfg.safer.alpha,
                    keep_stopwords=cfg.keep_stopwords,
                    same_pos=cfg.safer.same_pos,
                    max_candidates=cfg.safer.max_candidates,
                    wordnet=wordnet,
                    seed=seed + start,
                )
                cert = safer.certify(target, texts[start : min(start + CHUNK, m)])
                return {
                    "prediction": cert.prediction.tolist(),
                    "radius": cert.radius.tolist(),
                    "all_words": cert.all_words.tolist(),
                    "p_lower": cert.p_lower.tolist(),
                }

            chunk = step(f"safer-{start}", run_safer)
            preds += chunk["prediction"]
            radius += chunk["radius"]
            every += chunk["all_words"]
        p, r, a = np.asarray(preds), np.asarray(radius), np.asarray(every, dtype=bool)
        correct = p == y[:m]
        section["safer"] = {
            "method": "SAFER (Ye et al. 2020), randomised smoothing over word substitutions",
            "n0": cfg.safer.n0,
            "n": cfg.safer.n,
            "alpha": cfg.safer.alpha,
            "examples": m,
            "radii": list(cfg.safer.radii),
            "certified_accuracy": [float((correct & ((r >= k) | a)).mean()) for k in cfg.safer.radii],
            "abstain_rate": float((p == -1).mean()),
            "median_radius": float(np.median(np.where(a, np.maximum(r, max(cfg.safer.radii)), r))),
        }
    report["text"] = section

    if model_folder is not None:
        from dlsec.text import check_model_folder

        problems = check_model_folder(model_folder)
        report["model_folder"] = {"path": str(model_folder), "safe": not problems, "findings": problems}
        if problems:
            report["findings"].append(
                finding(
                    "model-folder",
                    "high",
                    "The model folder holds remote-code hooks or pickled files",
                    "; ".join(problems[:3]),
                    {"findings": problems},
                    owasp="ML06 AI Supply Chain Attacks",
                    atlas="AML.T0010 AI Supply Chain Compromise",
                )
            )
    report["findings"] = _findings(report) + report["findings"]
    report["not_run"] = _not_run(campaign, target, access, model_folder)

    gate_results: list[GateResult] = [build_gate(spec).check(report) for spec in campaign.gates]
    report["gates"] = [g.to_dict() for g in gate_results]
    report["passed"] = all(g.passed for g in gate_results)
    report["complete"] = not report["not_run"]
    report["verdict"] = "fail" if not report["passed"] else ("pass" if report["complete"] else "partial")
    report["reproducibility"] = reproducibility(
        seed=seed,
        model_sha256=model_sha256,
        data_sha256=data.sha256,
        campaign_sha256=campaign.fingerprint(),
        units_reused=units.reused,
    )
    write_all_reports(out, report, gallery=[], gates=gate_results)
    return Assessment(report, gate_results)


def _not_run(
    campaign: Campaign, target: TextClassifier, access: str, model_folder: str | Path | None
) -> list[dict[str, str]]:
    cfg = campaign.text
    out: list[dict[str, str]] = []
    if not cfg.enabled:
        return [{"check": "text attacks", "reason": "text.enabled is false"}]
    for name in cfg.attacks:
        why = _why_not(name, target, access)
        if why is not None:
            out.append({"check": f"text attack {name}", "reason": why})
    if model_folder is None:
        out.append({"check": "model-folder check", "reason": "no model folder (an in-memory model)"})
    return out


def _findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    clean = report["clean"]["accuracy"]
    section = report.get("text") or {}
    curve = section.get("curve")
    if curve:
        i = len(curve["max_change"]) - 1
        budget, acc = curve["max_change"][i], curve["robust_accuracy"][i]
        if acc < clean - 0.05:
            best = max(
                section["attacks"].items(),
                key=lambda kv: kv[1]["success_rate"][i] if kv[1]["success_rate"][i] is not None else -1.0,
            )[0]
            findings.append(
                finding(
                    "text-evasion",
                    "high" if acc < 0.5 else "medium",
                    f"Text evasion: changing at most {budget:.0%} of the words lowers accuracy "
                    f"from {clean:.1%} to {acc:.1%}",
                    f"worst case over {', '.join(curve['attacks'])} (strongest: {best}); consider "
                    "adversarial augmentation (dlsec text train --augment pwws) and re-assess",
                    {"max_change": budget, "robust_accuracy": acc, "clean_accuracy": clean},
                    owasp="ML01 Input Manipulation Attack",
                    atlas="AML.T0043 Craft Adversarial Data",
                )
            )
    if section.get("truncated"):
        findings.append(
            finding(
                "text-truncated",
                "info",
                f"{section['truncated']} text(s) were longer than the model's maximum and truncated",
                "words past the maximum length do not reach the model; attacks there are free",
                {"truncated": section["truncated"]},
                owasp="ML01 Input Manipulation Attack",
                atlas="AML.T0043 Craft Adversarial Data",
            )
        )
    low = certification_finding(
        "text-certification",
        section.get("safer"),
        subject=lambda r: f"SAFER certified accuracy at {r} substituted word(s)",
        method=lambda c: f"randomised smoothing over synonym substitutions, {c['examples']} texts",
        atlas="AML.T0043 Craft Adversarial Data",
    )
    if low is not None:
        findings.append(low)
    return findings
