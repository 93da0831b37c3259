"""Assessment: red-team campaigns, robustness curves, certification, gates and reports."""

from dlsec.assess._engine import Engine, LocalEngine, RayEngine, ray_engine
from dlsec.assess.campaign import Campaign, CampaignError, default_campaign, load_campaign
from dlsec.assess.certify import RandomizedSmoothing, certified_accuracy, clopper_pearson_lower
from dlsec.assess.gates import (
    AllOf,
    AnyOf,
    Gate,
    GateResult,
    PromotionPolicy,
    Threshold,
    build_gate,
    load_promotion_policy,
)
from dlsec.assess.report import REPORT_SCHEMA, render_html, write_report
from dlsec.assess.runner import Assessment, run_assessment
from dlsec.assess.text import TextSection, run_text_assessment
from dlsec.core.corruptions import CORRUPTIONS, corrupt

__all__ = [
    "load_promotion_policy",
    "CORRUPTIONS",
    "REPORT_SCHEMA",
    "AllOf",
    "PromotionPolicy",
    "AnyOf",
    "Assessment",
    "Campaign",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "CampaignError",
    "Gate",
    "GateResult",
    "RandomizedSmoothing",
    "TextSection",
    "Threshold",
    "build_gate",
    "certified_accuracy",
    "clopper_pearson_lower",
    "corrupt",
    "default_campaign",
    "load_campaign",
    "ray_engine",
    "render_html",
    "run_assessment",
    "run_text_assessment",
    "write_report",
]
