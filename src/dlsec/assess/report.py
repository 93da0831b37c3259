"""Assessment reports: ``report.json`` (versioned schema), a self-contained ``report.html``,
``junit.xml`` (one test case per gate) and ``report.sarif`` (SARIF 2.1.0, one result per finding).

The HTML file opens offline: styles are inline, charts are inline SVG and gallery images are
PNG data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dlsec.fsutil import atomic_write_text

__all__ = [
    "REPORT_SCHEMA",
    "junit_xml",
    "png_data_uri",
    "render_html",
    "reproducibility",
    "sarif",
    "write_all_reports",
    "write_report",
]

REPORT_SCHEMA = "dlsec.report/1"
_COLOURS = ["#b42318", "#3b6ea5", "#067647", "#b54708", "#6941c6", "#475467", "#c11574", "#0e9384"]


def reproducibility(**extra: Any) -> dict[str, Any]:
    """Versions of dlsec, torch, NumPy and Python, plus the given seeds and hashes."""
    import platform

    import torch

    import dlsec

    return {
        "dlsec": dlsec.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def png_data_uri(image: np.ndarray, *, scale: int = 8) -> str:
    """A ``data:image/png`` URI of one example in input space ``(C, H, W)`` with values in [0, 1]."""
    from PIL import Image

    arr = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    img = Image.fromarray((arr * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{_esc(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    )


def bar_chart(
    values: list[float | None], labels: list[str], *, label: str, width: int = 560, height: int = 200
) -> str:
    """An inline SVG bar chart of values in [0, 1]."""
    n = max(len(values), 1)
    pad_left, pad_bottom = 36, 24
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - 8
    bw = plot_w / n
    parts = [_svg_open(width, height, label)]
    for tick in (0.0, 0.5, 1.0):
        yy = 8 + plot_h * (1 - tick)
        parts.append(f'<line x1="{pad_left}" x2="{width - 8}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{pad_left - 4}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{tick:.1f}</text>'
        )
    for i, (v, name) in enumerate(zip(values, labels, strict=True)):
        x0 = pad_left + i * bw
        if v is not None:
            h = plot_h * float(v)
            parts.append(
                f'<rect x="{x0 + bw * 0.15:.1f}" y="{8 + plot_h - h:.1f}" width="{bw * 0.7:.1f}" '
                f'height="{h:.1f}" fill="#3b6ea5"><title>{_esc(name)}: {v:.3f}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + bw / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="11">'
            f"{_esc(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: dict[str, tuple[list[float], list[float]]],
    *,
    x_label: str,
    y_label: str,
    label: str,
    width: int = 600,
    height: int = 260,
) -> str:
    """An inline SVG chart of one or more lines with points and a legend; y in [0, 1]."""
    pad_l, pad_b, pad_t, pad_r = 44, 38, 10, 150
    plot_w, plot_h = width - pad_l - pad_r, height - pad_b - pad_t
    xs_all = [v for xs, _ in series.values() for v in xs]
    x_min, x_max = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    span = (x_max - x_min) or 1.0

    def px(v: float) -> float:
        return pad_l + plot_w * ((v - x_min) / span)

    def py(v: float) -> float:
        return pad_t + plot_h * (1 - v)

    parts = [_svg_open(width, height, label)]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            'stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{pad_l - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.2f}</text>'
        )
    for v in sorted(set(xs_all)):
        parts.append(
            f'<text x="{px(v):.1f}" y="{height - pad_b + 16}" text-anchor="middle" font-size="10">'
            f"{v:.3g}</text>"
        )
    parts.append(
        f'<text x="{pad_l + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="12">'
        f"{_esc(x_label)}</text>"
    )
    parts.append(
        f'<text x="12" y="{pad_t + plot_h / 2:.1f}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 12 {pad_t + plot_h / 2:.1f})">{_esc(y_label)}</text>'
    )
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, ys, strict=True))
        parts.append(
            f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        for a, b in zip(xs, ys, strict=True):
            parts.append(
                f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{colour}">'
                f"<title>{_esc(name)} at {a:.4g}: {b:.3f}</title></circle>"
            )
        ly = pad_t + 14 + 16 * i
        parts.append(f'<rect x="{pad_l + plot_w + 12}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{pad_l + plot_w + 26}" y="{ly + 1}" font-size="11">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _charts(report: dict[str, Any]) -> dict[str, str]:
    if "clean" not in report:  # a generator: no classifier to chart
        return {}
    clean = report["clean"]
    names = clean.get("class_names") or [str(i) for i in range(len(clean["confusion_matrix"]))]
    charts = {"per_class": bar_chart(clean["per_class_accuracy"], names, label="accuracy per class")}
    for norm, curve in report.get("robustness", {}).get("curves", {}).items():
        series = {
            attack: ([0.0, *curve["eps"]], [clean["accuracy"], *accs])
            for attack, accs in curve["per_attack"].items()
        }
        series["worst case"] = ([0.0, *curve["eps"]], [clean["accuracy"], *curve["robust_accuracy"]])
        charts[f"robustness_{norm}"] = line_chart(
            series,
            x_label=f"budget ({norm} eps)",
            y_label="robust accuracy",
            label=f"robust accuracy against {norm} budget",
        )
    rows = report.get("corruptions", {}).get("results", [])
    if rows:
        series = {}
        for name in dict.fromkeys(r["corruption"] for r in rows):
            pts = sorted((r["severity"], r["accuracy"]) for r in rows if r["corruption"] == name)
            series[name] = ([0.0] + [float(s) for s, _ in pts], [clean["accuracy"]] + [a for _, a in pts])
        charts["corruptions"] = line_chart(
            series, x_label="severity", y_label="accuracy", label="accuracy under corruptions"
        )
    text = report.get("text") or {}
    if text.get("curve"):
        zero = [clean["accuracy"]]
        series = {
            attack: ([0.0, *row["max_change"]], zero + list(row["robust_accuracy"]))
            for attack, row in text["attacks"].items()
        }
        series["worst case"] = (
            [0.0, *text["curve"]["max_change"]],
            zero + list(text["curve"]["robust_accuracy"]),
        )
        charts["text_robustness"] = line_chart(
            series,
            x_label="budget (fraction of words changed)",
            y_label="robust accuracy",
            label="robust accuracy against the fraction of words changed",
        )
    if text.get("safer"):
        safer = text["safer"]
        charts["text_safer"] = line_chart(
            {"certified": ([float(r) for r in safer["radii"]], safer["certified_accuracy"])},
            x_label="words substituted",
            y_label="certified accuracy",
            label="SAFER certified accuracy against words substituted",
        )
    cert = report.get("certification")
    if cert:
        charts["certification"] = line_chart(
            {"certified": (cert["radii"], cert["certified_accuracy"])},
            x_label="L2 radius",
            y_label="certified accuracy",
            label="certified accuracy against radius",
        )
    return charts


def render_html(report: dict[str, Any], *, gallery: list[dict[str, Any]] | None = None) -> str:
    """Render the report as one self-contained HTML page."""
    import jinja2

    template_text = resources.files("dlsec.assess").joinpath("templates/report.html").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    clean = report.get("clean") or {"confusion_matrix": []}
    names = clean.get("class_names") or [str(i) for i in range(len(clean["confusion_matrix"]))]
    matrix = np.asarray(clean["confusion_matrix"], dtype=float)
    shades = (matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)).tolist() if matrix.ndim == 2 else []
    from markupsafe import Markup as markup  # jinja2's own dependency

    charts = {k: markup(v) for k, v in _charts(report).items()}
    return env.from_string(template_text).render(
        report=report,
        r=_Lookup(report),
        class_names=names,
        charts=charts,
        shades=shades,
        gallery=gallery or [],
        report_json=json.dumps(report, indent=2),
    )


class _Lookup:
    """Optional access to report sections from the template (missing sections are ``None``)."""

    def __init__(self, report: dict[str, Any]) -> None:
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return self._report.get(name)


def junit_xml(report: dict[str, Any], gates: list[Any]) -> str:
    """JUnit XML with one test case per gate; a failed gate is a ``<failure>`` saying why."""
    failures = sum(1 for g in gates if not g.passed)
    not_run = report.get("not_run", [])
    tests = len(gates) + len(not_run)
    suites = ET.Element("testsuites", name="dlsec assess", tests=str(tests), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"dlsec gates: {report['model']['ref']}",
        tests=str(tests),
        failures=str(failures),
        errors="0",
        skipped=str(len(not_run)),
        timestamp=report.get("reproducibility", {}).get("created_at", ""),
    )
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname="dlsec.gates", name=gate.name)
        if not gate.passed:
            failure = ET.SubElement(case, "failure", message=gate.reason, type="GateFailed")
            detail = [f"{gate.name}: {gate.reason}"] + [
                f"  {c.name}: {'pass' if c.passed else 'FAIL'} ({c.reason})" for c in gate.children
            ]
            failure.text = "\n".join(detail)
        else:
            ET.SubElement(case, "system-out").text = f"{gate.name}: {gate.reason}"
    for item in not_run:  # what the campaign asked for and could not run: skipped, never passed
        case = ET.SubElement(suite, "testcase", classname="dlsec.checks", name=item["check"])
        ET.SubElement(case, "skipped", message=item["reason"])
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


_LEVEL = {"high": "error", "medium": "warning", "low": "note", "info": "note"}


def sarif(report: dict[str, Any]) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one result per finding (rules tagged with OWASP ML and ATLAS IDs) and one
    error result per failed gate."""
    import dlsec

    rules: dict[str, dict[str, Any]] = {}
    results = []
    uri = report["model"]["ref"]
    for f in report.get("findings", []):
        rule_id = f"dlsec/{f['code']}"
        rules.setdefault(
            rule_id,
            {
                "id": rule_id,
                "name": f["code"].replace("-", " ").title().replace(" ", ""),
                "shortDescription": {"text": f["title"]},
                "fullDescription": {"text": f.get("detail", f["title"])},
                "properties": {
                    "tags": [f.get("owasp", ""), f.get("atlas", "")],
                    "security-severity": {"high": "8.0", "medium": "5.0", "low": "3.0", "info": "1.0"}[
                        f.get("severity", "info")
                    ],
                },
            },
        )
        results.append(
            {
                "ruleId": rule_id,
                "level": _LEVEL.get(f.get("severity", "info"), "note"),
                "message": {"text": f"{f['title']}. {f.get('detail', '')}".strip()},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                "properties": {
                    "severity": f.get("severity"),
                    "owasp": f.get("owasp"),
                    "atlas": f.get("atlas"),
                },
            }
        )
    failed = [g for g in report.get("gates", []) if not g["passed"]]
    if failed:
        rules["dlsec/gate-failed"] = {
            "id": "dlsec/gate-failed",
            "name": "GateFailed",
            "shortDescription": {"text": "An assessment gate failed"},
            "fullDescription": {"text": "A threshold set in the campaign was not met."},
            "properties": {"tags": ["ML01 Input Manipulation Attack"], "security-severity": "8.0"},
        }
    for g in failed:
        results.append(
            {
                "ruleId": "dlsec/gate-failed",
                "level": "error",
                "message": {"text": f"Gate '{g['name']}' failed: {g['reason']}"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                "properties": {"gate": g["name"], "value": g["value"]},
            }
        )
    # What did not run is a tool-execution notification: the run is partial, and says so.
    notifications = [
        {"level": "warning", "message": {"text": f"not run: {item['check']}: {item['reason']}"}}
        for item in report.get("not_run", [])
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {"name": "dlsec", "version": dlsec.__version__, "rules": list(rules.values())}
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                        "properties": {"verdict": report.get("verdict"), "complete": report.get("complete")},
                    }
                ],
                "results": results,
            }
        ],
    }


def write_report(
    out_dir: str | Path, report: dict[str, Any], *, gallery: list[dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    report = {"schema": REPORT_SCHEMA, **report}
    html_text = render_html(report, gallery=gallery)
    return {
        "json": atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n"),
        "html": atomic_write_text(out / "report.html", html_text),
    }


def write_all_reports(
    out_dir: str | Path,
    report: dict[str, Any],
    *,
    gallery: list[dict[str, Any]],
    gates: list[Any],
) -> dict[str, Path]:
    """Write the JSON and HTML reports, ``junit.xml`` and ``report.sarif``."""
    out = Path(out_dir)
    paths = write_report(out, report, gallery=gallery)
    paths["junit"] = atomic_write_text(out / "junit.xml", junit_xml(report, gates))
    paths["sarif"] = atomic_write_text(out / "report.sarif", json.dumps(sarif(report), indent=2) + "\n")
    return paths
