"""Assessment reports: ``report.json`` (versioned schema) and a self-contained ``report.html``.

The HTML file opens offline: styles are inline, charts are inline SVG and gallery images are
PNG data URIs. Later sections (robustness curves, certification, privacy) add to the same
report dict.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dlsec.core.fsutil import atomic_write_text

__all__ = ["REPORT_SCHEMA", "write_report", "render_html", "png_data_uri", "reproducibility"]

REPORT_SCHEMA = "dlsec.report/1"


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

    arr = np.asarray(image, dtype=np.float32)
    arr = np.clip(arr, 0.0, 1.0)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    pixels = (arr * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bar_chart(values: list[float | None], labels: list[str], *, width: int = 560, height: int = 200) -> str:
    """An inline SVG bar chart of values in [0, 1]."""
    n = max(len(values), 1)
    pad_left, pad_bottom = 36, 24
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - 8
    bw = plot_w / n
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0.0, 0.5, 1.0):
        y = 8 + plot_h * (1 - tick)
        parts.append(f'<line x1="{pad_left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{pad_left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick:.1f}</text>'
        )
    for i, (v, label) in enumerate(zip(values, labels, strict=True)):
        x = pad_left + i * bw
        if v is not None:
            h = plot_h * float(v)
            parts.append(
                f'<rect x="{x + bw * 0.15:.1f}" y="{8 + plot_h - h:.1f}" width="{bw * 0.7:.1f}" '
                f'height="{h:.1f}" fill="#3b6ea5"><title>{_esc(label)}: {v:.3f}</title></rect>'
            )
        parts.append(
            f'<text x="{x + bw / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="11">'
            f"{_esc(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _line_chart(
    xs: list[float], ys: list[float], *, x_label: str, y_label: str, width: int = 560, height: int = 240
) -> str:
    """An inline SVG line chart with points, y in [0, 1]."""
    pad_l, pad_b, pad_t, pad_r = 44, 36, 10, 14
    plot_w, plot_h = width - pad_l - pad_r, height - pad_b - pad_t
    x_max = max(xs) if xs and max(xs) > 0 else 1.0

    def px(v: float) -> float:
        return pad_l + plot_w * (v / x_max)

    def py(v: float) -> float:
        return pad_t + plot_h * (1 - v)

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{pad_l - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.2f}</text>'
        )
    for v in xs:
        parts.append(
            f'<text x="{px(v):.1f}" y="{height - pad_b + 16}" text-anchor="middle" '
            f'font-size="11">{v:.3g}</text>'
        )
    parts.append(
        f'<text x="{pad_l + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="12">'
        f"{_esc(x_label)}</text>"
    )
    parts.append(
        f'<text x="12" y="{pad_t + plot_h / 2:.1f}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 12 {pad_t + plot_h / 2:.1f})">{_esc(y_label)}</text>'
    )
    points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, ys, strict=True))
    parts.append(f'<polyline fill="none" stroke="#b42318" stroke-width="2" points="{points}"/>')
    for a, b in zip(xs, ys, strict=True):
        parts.append(
            f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3.5" fill="#b42318">'
            f"<title>eps {a:.4g}: {b:.3f}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _esc(text: str) -> str:
    import html

    return html.escape(str(text), quote=True)


def render_html(report: dict[str, Any], *, gallery: list[dict[str, Any]] | None = None) -> str:
    """Render the report as one self-contained HTML page."""
    import jinja2

    template_text = resources.files("dlsec.assess").joinpath("templates/report.html").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    clean = report["clean"]
    names = clean.get("class_names") or [str(i) for i in range(len(clean["confusion_matrix"]))]
    chart = _bar_chart(clean["per_class_accuracy"], names)
    matrix = np.asarray(clean["confusion_matrix"], dtype=float)
    row_sums = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    shades = (matrix / row_sums).tolist()
    curve_chart = ""
    evasion = report.get("evasion")
    if evasion:
        curve = evasion["curve"]
        curve_chart = _line_chart(
            [0.0, *curve["eps"]],
            [clean["accuracy"], *curve["robust_accuracy"]],
            x_label=f"budget ({curve['norm']} eps)",
            y_label="robust accuracy",
        )
    markup = jinja2.utils.markupsafe.Markup
    return env.from_string(template_text).render(
        report=report,
        class_names=names,
        per_class_chart=markup(chart),
        curve_chart=markup(curve_chart),
        shades=shades,
        gallery=gallery or [],
        evasion=evasion,
        report_json=json.dumps(report, indent=2),
    )


def write_report(
    out_dir: str | Path, report: dict[str, Any], *, gallery: list[dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    report = {"schema": REPORT_SCHEMA, **report}
    html_text = render_html(report, gallery=gallery)
    json_path = atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    html_path = atomic_write_text(out / "report.html", html_text)
    return {"json": json_path, "html": html_path}
