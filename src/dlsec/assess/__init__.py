"""Assessment: reports now; campaigns, robustness curves, certification and gates build on it."""

from dlsec.assess.report import REPORT_SCHEMA, render_html, write_report

__all__ = ["REPORT_SCHEMA", "render_html", "write_report"]
