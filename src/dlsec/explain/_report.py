"""Several methods on one batch, with their checks, and the files that show them.

:func:`explain_batch` is what ``dlsec explain`` runs; :meth:`ExplainRun.write` writes PNG heat
maps (images) or ranked CSV files (tabular), ``attributions.npz``, a self-contained
``index.html`` and ``explain.json``. Every file is written to a temporary name, then renamed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlsec.core.model import Model, WhiteBoxModel
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError
from dlsec.explain._explanation import (
    Baseline,
    Explanation,
    as_inputs,
    check_method,
    explain,
    resolve_baseline,
    resolve_targets,
)
from dlsec.explain._methods import AttributionMethod, get_method
from dlsec.explain._quality import CHECKS, Agreement, QualityReport, agreement, check_explanation
from dlsec.fsutil import atomic_write_bytes, atomic_write_text, atomic_write_with

__all__ = ["ExplainRun", "explain_batch"]

Progress = Callable[[int, int, dict[str, float]], None]
_HEAT_SIDE = 96  # heat maps are scaled up (nearest neighbour) to at least this many pixels a side
_CHART_FEATURES = 15


@dataclass(frozen=True)
class ExplainRun:
    """Explanations of one batch by several methods, with their quality checks.

    Attributes:
        explanations: method name -> explanation.
        quality: method name -> its quality report (empty when checks were off).
        agreements: one per pair of methods.
        predictions: the model's predicted class per example.
        labels: the true labels, when known.
        spec: the model's input spec (bounds, names).
        seed: the seed of every random draw.
    """

    explanations: dict[str, Explanation]
    quality: dict[str, QualityReport]
    agreements: list[Agreement]
    predictions: torch.Tensor
    labels: torch.Tensor | None
    spec: InputSpec
    seed: int

    @property
    def warnings(self) -> list[str]:
        return [w for q in self.quality.values() for w in q.warnings]

    def feature_names(self) -> list[str]:
        n = self.spec.num_features
        names = self.spec.feature_names
        return list(names) if names is not None and len(names) == n else [f"feature_{i}" for i in range(n)]

    def class_name(self, c: int) -> str:
        names = self.spec.class_names
        return str(names[c]) if names is not None and c < len(names) else str(c)

    def to_dict(self) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        for name, e in self.explanations.items():
            entry = e.to_dict()
            if name in self.quality:
                entry["quality"] = self.quality[name].to_dict()
            if self.spec.kind == "tabular":
                entry["ranking"] = [r.to_dict() for r in e.ranking(self.feature_names())]
            methods[name] = entry
        return {
            "kind": self.spec.kind,
            "n": int(self.predictions.shape[0]),
            "seed": self.seed,
            "predictions": self.predictions.tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
            "methods": methods,
            "agreement": [a.to_dict() for a in self.agreements],
            "warnings": self.warnings,
        }

    # ------------------------------------------------------------------ files

    def write(self, out: str | Path, *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the run's files into the folder ``out``; returns ``explain.json``'s content.

        Args:
            out: the folder (created if missing); files of the same names are replaced.
            meta: what to record at the top of ``explain.json`` and the page (model, data).
        """
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {folder} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, Any] = {}
        images = _is_image(self.spec)
        pictures: dict[tuple[int, str], bytes] = {}
        if images:
            for name, e in self.explanations.items():
                for i in range(len(e)):
                    png = _heatmap_png(e.inputs[i], e.attributions[i], self.spec)
                    pictures[(i, name)] = png
                    path = folder / "heatmaps" / f"{i:03d}_{_safe(name)}.png"
                    atomic_write_bytes(path, png)
            files["heatmaps"] = "heatmaps/"
        else:
            for name, e in self.explanations.items():
                path = folder / f"ranking_{_safe(name)}.csv"
                _write_ranking(path, e, self.feature_names())
                files.setdefault("rankings", []).append(path.name)
        _write_npz(folder / "attributions.npz", self)
        files["attributions"] = "attributions.npz"
        files["html"] = "index.html"
        payload = {**(meta or {}), **self.to_dict(), "files": files}
        atomic_write_text(folder / "index.html", _page(self, payload, pictures))
        atomic_write_text(folder / "explain.json", json.dumps(payload, indent=2, allow_nan=True) + "\n")
        return payload


def explain_batch(
    model: Model,
    x: torch.Tensor | np.ndarray,
    *,
    methods: Sequence[str | AttributionMethod] | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    target: int | Sequence[int] | torch.Tensor | None = None,
    params: dict[str, Any] | None = None,
    baseline: Baseline = "lower",
    checks: Sequence[str] = CHECKS,
    seed: int = 0,
    progress: Progress | None = None,
) -> ExplainRun:
    """Explain ``x`` with each method, check each explanation, and compare the methods.

    Everything that can be refused (a method, a parameter, a layer, the access level, a
    target, the baseline) is checked before the first attribution is computed.

    Args:
        model: a white-box or score-based model.
        x: the batch.
        methods: method names (or configured methods), explained in this order; default
            ``ig`` for a white-box model, ``occlusion`` for a score-based one.
        labels: the true labels (recorded beside the predictions).
        target: the class explained (default: the predicted one), as in :func:`explain`.
        params: method parameters; each goes to every method that takes it (``layer`` to
            ``gradcam``); a parameter that none takes is an error.
        baseline: as in :func:`explain`.
        checks: the quality checks to run on each explanation (empty: none).
        seed: seed of every random draw.
        progress: called with ``(done, total, {})`` as the work advances.
    """
    if methods is None:
        methods = ["ig"] if isinstance(model, WhiteBoxModel) else ["occlusion"]
    if not methods:
        raise UsageError("name at least one explanation method")
    params = dict(params or {})
    built = _build_methods(methods, params)
    for m in built:
        check_method(model, m)
    names = [m.name for m in built]
    if len(set(names)) != len(names):
        raise UsageError(f"a method is named twice: {', '.join(names)}")
    xb = as_inputs(model, x)
    targets = resolve_targets(model, xb, target)
    resolve_baseline(model, xb, baseline)
    predictions = model.predict(xb).cpu()
    total = len(built) * (1 + len(checks)) + 1
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total, {})

    explanations: dict[str, Explanation] = {}
    quality: dict[str, QualityReport] = {}
    for method in built:
        e = explain(model, xb, targets, method, baseline=baseline, seed=seed)
        explanations[method.name] = e
        tick()
        if checks:
            quality[method.name] = check_explanation(
                model, e, checks=checks, seed=seed, progress=lambda done, total, stats: tick()
            )
    agreements = [agreement(a, b) for a, b in itertools.combinations(explanations.values(), 2)]
    tick()
    return ExplainRun(
        explanations=explanations,
        quality=quality,
        agreements=agreements,
        predictions=predictions,
        labels=None if labels is None else torch.as_tensor(labels).reshape(-1).long().cpu(),
        spec=model.spec,
        seed=seed,
    )


def _build_methods(
    methods: Sequence[str | AttributionMethod], params: dict[str, Any]
) -> list[AttributionMethod]:
    taken: set[str] = set()
    built: list[AttributionMethod] = []
    for m in methods:
        if isinstance(m, AttributionMethod):
            built.append(m)
            continue
        probe = get_method(m)  # an unknown name fails here
        mine = {k: v for k, v in params.items() if k in probe.param_names()}
        taken |= set(mine)
        built.append(get_method(m, **mine))
    unused = sorted(set(params) - taken)
    if unused:
        raise UsageError(
            f"no chosen method takes the parameter {', '.join(unused)} "
            f"(methods: {', '.join(str(getattr(m, 'name', m)) for m in methods)})"
        )
    return built


# --------------------------------------------------------------------------- rendering


def _is_image(spec: InputSpec) -> bool:
    return spec.kind == "image" and len(spec.shape) == 3 and spec.shape[0] in (1, 3)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _heatmap_png(x: torch.Tensor, attr: torch.Tensor, spec: InputSpec) -> bytes:
    """``[input | attribution | overlay]`` as a PNG: red supports the target, blue opposes it."""
    from PIL import Image

    lo = spec.lower_tensor(dtype=torch.float64).expand(spec.shape)
    hi = spec.upper_tensor(dtype=torch.float64).expand(spec.shape)
    img = ((x.double() - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    rgb = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    base = rgb.permute(1, 2, 0).numpy()
    a = attr.double().sum(0)
    scale = float(a.abs().max()) or 1.0
    v = (a / scale).numpy()
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    heat = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1).clip(0, 1)
    gray = base.mean(-1, keepdims=True)
    overlay = 0.45 * gray + 0.55 * heat
    h, w = base.shape[:2]
    zoom = max(1, -(-_HEAT_SIDE // max(h, w)))
    gap = np.ones((h, 1, 3))
    strip = np.concatenate([base, gap, heat, gap, overlay], axis=1)
    picture = Image.fromarray((strip * 255).round().astype(np.uint8), mode="RGB")
    picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _cell(value: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _write_ranking(path: Path, e: Explanation, names: list[str]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["rank", "feature", "importance", "mean_attribution"])
            for r in e.ranking(names):
                out.writerow([r.rank, _cell(r.name), f"{r.importance:.6g}", f"{r.mean_attribution:.6g}"])

    atomic_write_with(path, write)


def _write_npz(path: Path, run: ExplainRun) -> None:
    arrays: dict[str, np.ndarray] = {}
    first = next(iter(run.explanations.values()))
    arrays["inputs"] = first.inputs.numpy()
    arrays["predictions"] = run.predictions.numpy()
    for name, e in run.explanations.items():
        arrays[f"targets_{name}"] = e.targets.numpy()
        arrays[f"attributions_{name}"] = e.attributions.numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write_with(path, write)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _page(run: ExplainRun, payload: dict[str, Any], pictures: dict[tuple[int, str], bytes]) -> str:
    e = html.escape
    names = list(run.explanations)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>dlsec explain</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}"
        ".warn{color:#a40000}img{image-rendering:pixelated}"
        "</style></head><body>",
        "<h1>dlsec explain</h1>",
    ]
    facts: list[tuple[str, Any]] = [(k, payload[k]) for k in ("model", "data", "split") if k in payload]
    facts += [("examples", run.predictions.shape[0]), ("seed", run.seed)]
    parts.append("<p>" + " &middot; ".join(f"{e(str(k))}: <b>{e(str(v))}</b>" for k, v in facts) + "</p>")
    for w in run.warnings:
        parts.append(f"<p class='warn'>&#9888; {e(w)}</p>")
    if run.quality:
        parts.append(
            "<h2>Quality checks</h2><table><tr><th class='l'>method</th><th>infidelity</th>"
            "<th>sensitivity</th><th>deletion AUC (random)</th><th>insertion AUC (random)</th>"
            "<th>randomisation &rho;</th><th class='l'>skipped</th></tr>"
        )
        for name, q in run.quality.items():
            rnd = q.randomisation
            rho = _fmt(rnd.final_correlation if rnd else None) + (" &#9888;" if rnd and rnd.flagged else "")
            skipped = "; ".join(f"{k}: {v}" for k, v in q.skipped.items())
            parts.append(
                f"<tr><td class='l'>{e(name)}</td><td>{_fmt(q.infidelity)}</td><td>{_fmt(q.sensitivity)}</td>"
                f"<td>{_pair(q.deletion, q.deletion_random)}</td>"
                f"<td>{_pair(q.insertion, q.insertion_random)}</td>"
                f"<td>{rho}</td><td class='l'>{e(skipped)}</td></tr>"
            )
        parts.append(
            "</table><p>Lower infidelity, sensitivity and deletion AUC are better, higher insertion AUC; "
            "&rho; is the rank correlation with the explanation of the model with randomised weights "
            "(high: the explanation ignores what the model learned).</p>"
        )
    if run.agreements:
        parts.append(
            "<h2>Agreement between methods</h2><table><tr><th class='l'>methods</th>"
            "<th>rank correlation</th><th>top-k intersection</th><th>k</th></tr>"
        )
        for a in run.agreements:
            parts.append(
                f"<tr><td class='l'>{e(' / '.join(a.methods))}</td><td>{_fmt(a.rank_correlation)}</td>"
                f"<td>{_fmt(a.top_k_intersection)}</td><td>{a.k}</td></tr>"
            )
        parts.append("</table>")
    if pictures:
        parts.append(
            "<h2>Heat maps</h2><p>Each: input, attributions (red supports the explained class, blue opposes "
            "it), overlay.</p><table><tr><th>#</th><th class='l'>label / predicted / explained</th>"
            + "".join(f"<th>{e(n)}</th>" for n in names)
            + "</tr>"
        )
        first = run.explanations[names[0]]
        for i in range(len(first)):
            label = "?" if run.labels is None else run.class_name(int(run.labels[i]))
            classes = (
                f"{e(label)} / {e(run.class_name(int(run.predictions[i])))} / "
                f"{e(run.class_name(int(first.targets[i])))}"
            )
            cells = "".join(
                f"<td><img alt='{e(n)} {i}' src='data:image/png;base64,"
                f"{base64.b64encode(pictures[(i, n)]).decode('ascii')}'></td>"
                for n in names
            )
            parts.append(f"<tr><td>{i}</td><td class='l'>{classes}</td>{cells}</tr>")
        parts.append("</table>")
    else:
        features = run.feature_names()
        for name, ex in run.explanations.items():
            ranking = ex.ranking(features)
            parts.append(f"<h2>{e(name)}: features by mean |attribution|</h2>")
            parts.append(_bar_chart(ranking[:_CHART_FEATURES]))
            parts.append(
                "<table><tr><th>rank</th><th class='l'>feature</th><th>importance</th>"
                "<th>mean attribution</th></tr>"
            )
            for r in ranking:
                parts.append(
                    f"<tr><td>{r.rank}</td><td class='l'>{e(r.name)}</td><td>{r.importance:.4g}</td>"
                    f"<td>{r.mean_attribution:.4g}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _pair(curve: Any, random: Any) -> str:
    if curve is None:
        return "-"
    return f"{curve.mean_auc:.3f} ({random.mean_auc:.3f})" if random is not None else f"{curve.mean_auc:.3f}"


def _bar_chart(ranking: list[Any]) -> str:
    """An inline SVG bar chart of the top features (red: positive mean attribution, blue: negative)."""
    if not ranking:
        return ""
    top = max(r.importance for r in ranking) or 1.0
    row, label_w, bar_w = 18, 260, 320
    rows = []
    for i, r in enumerate(ranking):
        width = bar_w * r.importance / top
        colour = "#c0392b" if r.mean_attribution >= 0 else "#2e6da4"
        y = i * row
        rows.append(
            f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end' font-size='12'>"
            f"{html.escape(r.name)}</text>"
            f"<rect x='{label_w}' y='{y + 3}' width='{width:.1f}' height='{row - 6}' fill='{colour}'/>"
            f"<text x='{label_w + width + 4:.1f}' y='{y + 13}' font-size='11'>{r.importance:.3g}</text>"
        )
    height = row * len(ranking)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 60}' height='{height}' "
        f"role='img' aria-label='feature importance'>{''.join(rows)}</svg>"
    )
