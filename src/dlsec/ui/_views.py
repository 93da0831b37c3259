"""What the pages show, computed from the store: recorded reports, comparisons, lineage, timelines.

Nothing here renders HTML: each function returns plain data (numbers and coordinates for the
inline SVG charts) and the templates draw it, escaped by Jinja.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlsec.errors import RegistryError, UsageError
from dlsec.store import Incident, Registry, VersionRecord, parse_ref

__all__ = [
    "Chart",
    "Graph",
    "compare_reports",
    "lineage_graph",
    "load_report",
    "timeline",
]


def load_report(registry: Registry, record: VersionRecord) -> dict[str, Any] | None:
    """The assessment report recorded with ``record`` (None when none was), its hash checked
    by the registry (a missing or altered report is an error)."""
    return registry.report(record)


# -- charts ---------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    css: str
    points: list[tuple[float, float, float, float]]  # (x value, y value, x px, y px)

    @property
    def polyline(self) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for _, _, px, py in self.points)


@dataclass
class Chart:
    """A line chart of accuracies (y in [0, 1]) against budgets, laid out for an inline SVG."""

    title: str
    x_label: str
    width: int = 560
    height: int = 240
    left: int = 44
    right: int = 12
    top: int = 10
    bottom: int = 40
    series: list[Series] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


def _chart(title: str, x_label: str, lines: dict[str, tuple[str, list[tuple[float, float]]]]) -> Chart:
    chart = Chart(title=title, x_label=x_label)
    xs = sorted({x for _, pts in lines.values() for x, _ in pts}) or [0.0, 1.0]
    lo, hi = xs[0], xs[-1]
    span = (hi - lo) or 1.0
    plot_w = chart.width - chart.left - chart.right
    plot_h = chart.height - chart.top - chart.bottom

    def px(v: float) -> float:
        return chart.left + plot_w * (v - lo) / span

    def py(v: float) -> float:
        return chart.top + plot_h * (1.0 - min(max(v, 0.0), 1.0))

    chart.x_ticks = [(px(x), f"{x:.3g}") for x in xs]
    chart.y_ticks = [(py(t), f"{t:.2f}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for name, (css, pts) in lines.items():
        chart.series.append(Series(name, css, [(x, y, px(x), py(y)) for x, y in pts]))
    return chart


@dataclass
class Comparison:
    """Robust accuracy per budget of two versions, side by side, one table and chart per norm."""

    clean: tuple[float | None, float | None]
    norms: list[dict[str, Any]]
    missing: list[str]


def _curves(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if report is None:
        return {}
    curves = (report.get("robustness") or {}).get("curves") or {}
    return {str(k): v for k, v in curves.items() if isinstance(v, dict)}


def _clean(report: dict[str, Any] | None) -> float | None:
    if report is None:
        return None
    value = (report.get("clean") or {}).get("accuracy")
    return float(value) if isinstance(value, int | float) else None


def compare_reports(
    a: VersionRecord, report_a: dict[str, Any] | None, b: VersionRecord, report_b: dict[str, Any] | None
) -> Comparison:
    """Robust accuracy (the worst case over the campaign's attacks) at each budget, A beside B."""
    missing = [r.ref for r, rep in ((a, report_a), (b, report_b)) if rep is None]
    curves_a, curves_b = _curves(report_a), _curves(report_b)
    clean_a, clean_b = _clean(report_a), _clean(report_b)
    norms = []
    for norm in sorted(set(curves_a) | set(curves_b)):
        per: dict[str, dict[float, float]] = {}
        for tag, curve, clean in (("a", curves_a.get(norm), clean_a), ("b", curves_b.get(norm), clean_b)):
            points: dict[float, float] = {}
            if curve is not None:
                points = {
                    float(e): float(acc)
                    for e, acc in zip(curve.get("eps", []), curve.get("robust_accuracy", []), strict=False)
                }
                if clean is not None:
                    points.setdefault(0.0, clean)
            per[tag] = points
        budgets = sorted(set(per["a"]) | set(per["b"]))
        rows = []
        for eps in budgets:
            va, vb = per["a"].get(eps), per["b"].get(eps)
            rows.append(
                {
                    "eps": eps,
                    "a": va,
                    "b": vb,
                    "delta": vb - va if va is not None and vb is not None else None,
                }
            )
        chart = _chart(
            f"robust accuracy against the {norm} budget",
            f"budget ({norm} eps; 0 is clean accuracy)",
            {
                a.ref: ("series-a", sorted(per["a"].items())),
                b.ref: ("series-b", sorted(per["b"].items())),
            },
        )
        norms.append({"norm": norm, "rows": rows, "chart": chart})
    return Comparison((clean_a, clean_b), norms, missing)


# -- lineage --------------------------------------------------------------------------------


@dataclass
class Node:
    x: float
    y: float
    w: float
    h: float
    kind: str
    label: str
    detail: str
    href: str | None = None


@dataclass
class Graph:
    width: int
    height: int
    nodes: list[Node]
    edges: list[tuple[float, float, float, float]]
    ancestors: list[str]


def _short(value: Any, n: int = 26) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _version_ref(ref: str | None, model: str) -> int | None:
    """The version number a recorded parent reference names, when it names one of ``model`` by number."""
    if not ref:
        return None
    try:
        name, selector = parse_ref(ref)
    except UsageError:  # a malformed recorded reference is shown, never followed
        return None
    return int(selector) if name == model and selector is not None and selector.isdigit() else None


def lineage_graph(registry: Registry, record: VersionRecord, base: str) -> Graph:
    """Inputs of ``record`` (data, training configuration, parent, report) on the left, the
    version in the middle, versions that name it as their parent on the right."""
    lineage = record.lineage
    inputs: list[tuple[str, str, str, str | None]] = []
    data = lineage.get("data_sha256")
    inputs.append(("data", "training data", f"sha256 {_short(data, 20)}" if data else "not recorded", None))
    config = lineage.get("training_config")
    recipe = config.get("recipe") if isinstance(config, dict) else None
    inputs.append(
        (
            "config",
            "training config",
            f"recipe {_short(recipe, 18)}" if recipe else ("recorded" if config else "not recorded"),
            None,
        )
    )
    parent = lineage.get("parent")
    parent_version = _version_ref(parent, record.model)
    inputs.append(
        (
            "parent",
            "parent",
            _short(parent) if parent else "none",
            f"{base}/models/{record.model}/{parent_version}" if parent_version is not None else None,
        )
    )
    report = lineage.get("report_sha256")
    passed = lineage.get("gates_passed")
    verdict = "" if passed is None else ("gates passed" if passed else "gates failed")
    inputs.append(
        (
            "report",
            "assessment report",
            f"{report[:12]} {verdict}".strip() if report else "none recorded",
            f"{base}/models/{record.model}/{record.version}/report" if report else None,
        )
    )
    children = []
    for row in registry.versions(record.model):
        if row["version"] == record.version:
            continue
        child = registry.get(f"{record.model}@{row['version']}")
        if _version_ref(child.lineage.get("parent"), record.model) == record.version:
            children.append(child)
    box_w, box_h, gap = 190.0, 46.0, 16.0
    rows = max(len(inputs), len(children), 1)
    height = int(rows * (box_h + gap) + gap)
    width = int(3 * box_w + 2 * 80 + 20)
    nodes: list[Node] = []
    edges: list[tuple[float, float, float, float]] = []
    mid_x, mid_y = 10 + box_w + 80, (height - box_h) / 2
    centre = Node(mid_x, mid_y, box_w, box_h, "version", record.ref, record.status, None)
    for i, (kind, label, detail, href) in enumerate(inputs):
        y = gap + i * (box_h + gap)
        nodes.append(Node(10, y, box_w, box_h, kind, label, detail, href))
        edges.append((10 + box_w, y + box_h / 2, mid_x, mid_y + box_h / 2))
    for i, child in enumerate(children[:rows]):
        x = mid_x + box_w + 80
        y = gap + i * (box_h + gap)
        nodes.append(
            Node(
                x,
                y,
                box_w,
                box_h,
                "child",
                child.ref,
                f"child, {child.status}",
                f"{base}/models/{child.model}/{child.version}",
            )
        )
        edges.append((mid_x + box_w, mid_y + box_h / 2, x, y + box_h / 2))
    nodes.append(centre)
    ancestors: list[str] = []
    seen = {record.version}
    current = parent_version
    while current is not None and current not in seen and len(ancestors) < 50:
        seen.add(current)
        ancestors.append(f"{record.model}@{current}")
        try:
            current = _version_ref(
                registry.get(f"{record.model}@{current}").lineage.get("parent"), record.model
            )
        except RegistryError:
            break
    return Graph(width, height, nodes, edges, ancestors)


# -- incidents ------------------------------------------------------------------------------


def timeline(incident: Incident) -> list[dict[str, Any]]:
    """The incident's events in time order: opened, each alert, each action, resolved."""
    events: list[dict[str, Any]] = [
        {
            "at": incident.opened_at,
            "kind": "opened",
            "text": f"opened by rule {incident.rule} ({incident.severity})",
        }
    ]
    for alert in incident.alerts:
        what = alert.get("signal") or alert.get("rule") or alert.get("source") or "alert"
        events.append(
            {
                "at": str(alert.get("ts") or alert.get("at") or incident.opened_at),
                "kind": "alert",
                "text": f"alert: {what}" + (f" on {alert['subject']}" if alert.get("subject") else ""),
            }
        )
    for action in incident.actions:
        events.append(
            {
                "at": str(action.get("at", "")),
                "kind": f"action {action.get('status', '')}".strip(),
                "text": f"{action.get('action')}: {action.get('detail', '')}",
            }
        )
    if incident.resolved_at:
        events.append(
            {
                "at": incident.resolved_at,
                "kind": "resolved",
                "text": f"resolved by {incident.resolved_by}"
                + (f": {incident.resolution}" if incident.resolution else ""),
            }
        )
    return sorted(events, key=lambda e: e["at"])
