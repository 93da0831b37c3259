"""Explanations of a model's decisions, on Captum, and checks that the explanations can be trusted.

* :func:`explain` attributes each example's target output to its inputs with a Captum method
  (``saliency``, ``ig``, ``smoothgrad``, ``deeplift``, ``gradient-shap``, ``gradcam``, and the
  gradient-free ``occlusion`` and ``kernel-shap`` for score-based models).
* :func:`check_explanation` reports Captum's infidelity and sensitivity, deletion and insertion
  curves, and the model-randomisation sanity check; :func:`agreement` compares two methods.
* :func:`explain_batch` runs several methods with their checks, and :meth:`ExplainRun.write`
  writes heat maps, rankings, an HTML page and ``explain.json`` (what ``dlsec explain`` does).

New methods register with :func:`register_method`; a method stays a Captum attribution, and
dlsec adds the checks around it.

Example:
    >>> from dlsec.explain import explain, check_explanation
    >>> e = explain(model, x, method="ig")                     # doctest: +SKIP
    >>> check_explanation(model, e).warnings                   # doctest: +SKIP
    []
"""

from dlsec.explain._explanation import Explanation, RankedFeature, explain
from dlsec.explain._fragility import FragilityResult, attack_explanation, topk_intersection
from dlsec.explain._methods import METHODS, AttributionContext, AttributionMethod, get_method, register_method
from dlsec.explain._quality import (
    CHECKS,
    Agreement,
    Curve,
    QualityReport,
    RandomisationResult,
    agreement,
    check_explanation,
    deletion_curve,
    infidelity,
    insertion_curve,
    randomisation_check,
    rank_correlation,
    sensitivity,
)
from dlsec.explain._report import ExplainRun, explain_batch

__all__ = [
    "CHECKS",
    "METHODS",
    "Agreement",
    "AttributionContext",
    "AttributionMethod",
    "Curve",
    "ExplainRun",
    "Explanation",
    "FragilityResult",
    "QualityReport",
    "RandomisationResult",
    "RankedFeature",
    "agreement",
    "attack_explanation",
    "check_explanation",
    "deletion_curve",
    "explain",
    "explain_batch",
    "get_method",
    "infidelity",
    "insertion_curve",
    "randomisation_check",
    "rank_correlation",
    "register_method",
    "sensitivity",
    "topk_intersection",
]
