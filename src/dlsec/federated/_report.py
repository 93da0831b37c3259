"""The simulation report: ``report.json`` and a self-contained ``report.html`` with inline SVG curves."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlsec.federated._inversion import InversionStudy
from dlsec.federated._simulate import SimulationResult
from dlsec.fsutil import atomic_write_text

__all__ = ["render_html", "render_inversion_html", "write_inversion_report", "write_report"]

_W, _H, _PAD = 560, 220, 36
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _chart(title: str, series: Sequence[tuple[str, Sequence[float | None]]], *, top: float = 1.0) -> str:
    """A line chart of values in [0, top] against the round, as an inline SVG."""
    n = max((len(values) for _, values in series), default=1)
    top = top if top > 0 else 1.0

    def xy(i: int, v: float) -> str:
        x = _PAD + (_W - 2 * _PAD) * (i / max(1, n - 1))
        y = _H - _PAD - (_H - 2 * _PAD) * min(max(v / top, 0.0), 1.0)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{_PAD}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<text x="4" y="{_PAD + 4}" font-size="10">{top:g}</text>',
        f'<text x="4" y="{_H - _PAD}" font-size="10">0</text>',
        f'<text x="{_W - _PAD - 40}" y="{_H - 8}" font-size="10">round {n - 1}</text>',
    ]
    for k, (label, values) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        points = " ".join(xy(i, v) for i, v in enumerate(values) if v is not None)
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{_W - _PAD - 150}" y="{_PAD + 14 * k}" font-size="11" fill="{colour}">'
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: SimulationResult) -> str:
    """The report page: configuration, accuracy and backdoor curves, exclusion quality, distances."""
    c = result.config
    rounds = result.rounds
    trained = [r for r in rounds if r.round > 0]
    benign_d = [
        _mean([d for cid, d in r.distances.items() if cid not in r.malicious]) if r.round else None
        for r in rounds
    ]
    bad_d = [
        _mean([d for cid, d in r.distances.items() if cid in r.malicious]) if r.round else None
        for r in rounds
    ]
    top = max([v for v in benign_d + bad_d if v is not None], default=1.0)
    charts = [
        _chart(
            "Global accuracy and backdoor success",
            [
                ("accuracy", [r.accuracy for r in rounds]),
                ("backdoor success", [r.backdoor_success for r in rounds]),
            ],
        ),
        _chart(
            "Excluded clients against the malicious set",
            [("precision", [r.precision for r in rounds]), ("recall", [r.recall for r in rounds])],
        ),
        _chart("Mean distance from the aggregate", [("benign", benign_d), ("malicious", bad_d)], top=top),
    ]
    rows = "".join(
        f"<tr><td>{r.round}</td><td>{r.accuracy:.3f}</td><td>{r.backdoor_success:.3f}</td>"
        f"<td>{len(r.malicious)}</td><td>{len(r.excluded)}</td><td>{_fmt(r.precision)}</td>"
        f"<td>{_fmt(r.recall)}</td></tr>"
        for r in rounds
    )
    settings = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in vars(c).items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>dlsec fl simulate</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}svg{display:block;margin:1em 0}</style>"
        "</head><body>"
        f"<h1>Federated simulation: {html.escape(c.attack)} against {html.escape(c.defense)}</h1>"
        f"<p>{c.num_clients} clients, {c.malicious_fraction:g} malicious, {len(trained)} rounds on "
        f"{html.escape(c.dataset)} ({html.escape(c.partition)}), engine {html.escape(c.engine)}. "
        f"Final accuracy <b>{result.final_accuracy:.3f}</b>, backdoor success "
        f"<b>{result.final_backdoor_success:.3f}</b>.</p>"
        + _privacy_html(result)
        + "".join(charts)
        + "<h2>Rounds</h2><table><tr><th>round</th><th>accuracy</th><th>backdoor</th><th>malicious</th>"
        "<th>excluded</th><th>precision</th><th>recall</th></tr>"
        + rows
        + "</table><h2>Configuration</h2><table>"
        + settings
        + "</table></body></html>"
    )


def _privacy_html(result: SimulationResult) -> str:
    p = result.privacy
    if p is None:
        return ""
    eps = ", ".join(f"{r.round}: {r.epsilon:.3g}" for r in result.rounds if r.epsilon is not None)
    return (
        f"<p>Client-level DP ({html.escape(str(p['mechanism']))}): noise multiplier "
        f"{float(p['noise_multiplier']):.4g}, sampling rate {float(p['sample_rate']):.4g}, "
        f"epsilon <b>{float(p['epsilon']):.4g}</b> at delta {float(p['delta']):.3g} "
        f"({html.escape(str(p['accountant']))}). Epsilon per round: {html.escape(eps)}.</p>"
    )


def write_report(result: SimulationResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out`` (atomically); return both paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(folder / "report.json", json.dumps(result.to_dict(), indent=2) + "\n")
    html_path = atomic_write_text(folder / "report.html", render_html(result))
    return json_path, html_path


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _png_data_uri(image: np.ndarray, scale: int = 8) -> str:
    """A grey or RGB image in [0, 1], ``(C, H, W)``, as a nearest-neighbour upscaled PNG data URI."""
    from PIL import Image

    arr = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    arr = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else np.moveaxis(arr, 0, -1) if arr.ndim == 3 else arr
    pixels = (arr * 255).round().astype(np.uint8)
    size = (pixels.shape[1] * scale, pixels.shape[0] * scale)
    img = Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_inversion_html(study: InversionStudy) -> str:
    """The gradient-inversion gallery: each true input beside its reconstruction, with scores."""
    summary = study.summary()
    lo, hi = float(study.truths.min()), float(study.truths.max())
    span = hi - lo if hi > lo else 1.0
    cells = "".join(
        "<figure>"
        f"<img src='{_png_data_uri((t - lo) / span)}' alt='true {int(y)}'>"
        f"<img src='{_png_data_uri((r - lo) / span)}' alt='reconstruction'>"
        f"<figcaption>label {int(y)} (attack: {int(g)}); PSNR {p:.1f} dB, SSIM {s:.2f}; "
        f"{'recognised' if ok else 'not recognised'}</figcaption></figure>"
        for t, r, y, g, p, s, ok in zip(
            study.truths,
            study.reconstructions,
            study.labels,
            study.recovered_labels,
            study.psnr,
            study.ssim,
            study.recognised,
            strict=True,
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>dlsec fl invert</title>"
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:.5em;"
        "width:12em;font-size:.8em}img{image-rendering:pixelated;margin-right:4px}</style></head><body>"
        f"<h1>Gradient inversion ({html.escape(study.method)}) of single-example updates</h1>"
        f"<p>{len(study.labels)} examples. Recognised by the independent classifier: "
        f"<b>{summary['recognition_rate']:.0%}</b>; label recovered: {summary['label_accuracy']:.0%}; "
        f"mean PSNR {summary['mean_psnr']:.1f} dB; mean SSIM {summary['mean_ssim']:.2f}. "
        "Left of each pair the client's input, right what the server reconstructed.</p>"
        + cells
        + "</body></html>"
    )


def write_inversion_report(study: InversionStudy, out: str | Path) -> tuple[Path, Path]:
    """Write ``inversion.json`` and ``inversion.html`` (the gallery) into ``out``, atomically."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "method": study.method,
        **study.summary(),
        "examples": [
            {"label": int(y), "recovered_label": int(g), "psnr": p, "ssim": s, "recognised": ok}
            for y, g, p, s, ok in zip(
                study.labels, study.recovered_labels, study.psnr, study.ssim, study.recognised, strict=True
            )
        ],
    }
    json_path = atomic_write_text(folder / "inversion.json", json.dumps(payload, indent=2) + "\n")
    html_path = atomic_write_text(folder / "inversion.html", render_inversion_html(study))
    return json_path, html_path
