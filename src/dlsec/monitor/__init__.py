"""Production monitoring: drift and adversarial-input detectors, online monitors and alert rules.

Detectors follow scikit-learn (``fit(reference) -> self``, then ``score(window)`` returning a
:class:`DetectorResult`); per-example detectors add ``score_samples``/``predict`` with a threshold
calibrated at a target false-positive rate. :class:`OnlineMonitor` runs one over a sliding
window at a stated expected run length between false alarms; ``monitor.yaml`` composes them
into alert rules with severities. :class:`ExtractionDetector` watches each API client's queries
for model extraction (PRADA, volume, coverage and distribution signals).

Example:
    >>> import numpy as np
    >>> from dlsec.monitor import MMDDrift
    >>> rng = np.random.default_rng(0)
    >>> MMDDrift().fit(rng.normal(size=(200, 4))).score(rng.normal(1, 1, size=(60, 4))).drift
    True
"""

from dlsec.monitor._base import (
    DETECTORS,
    ENTRY_POINT_GROUP,
    CannotRun,
    Detector,
    DetectorResult,
    ExampleDetector,
    Window,
    detector_class,
    get_detector,
    known_detectors,
    register_detector,
)
from dlsec.monitor._features import embedding_fn, model_probs
from dlsec.monitor.adversarial import (
    AttributionDetector,
    ExternalExampleDetector,
    FeatureSqueezing,
    Mahalanobis,
)
from dlsec.monitor.config import (
    CheckReport,
    Monitor,
    MonitorConfig,
    MonitorConfigError,
    RuleSpec,
    build_detector,
    build_monitor,
    check,
    default_monitor_config,
    holm_adjust,
    leaf_ert,
    load_monitor_config,
    make_window,
)
from dlsec.monitor.drift import ClassifierDrift, KSDrift, MMDDrift
from dlsec.monitor.extraction import ExtractionAlert, ExtractionDetector
from dlsec.monitor.online import Alert, OnlineMonitor
from dlsec.monitor.prediction import (
    ConfidenceDrift,
    LabelDrift,
    PerformanceDrift,
    PSIDrift,
    expected_calibration_error,
    population_stability_index,
)
from dlsec.monitor.shifts import SHIFTS, shift_dataset

__all__ = [
    "AttributionDetector",
    "DETECTORS",
    "ENTRY_POINT_GROUP",
    "SHIFTS",
    "Alert",
    "CannotRun",
    "CheckReport",
    "ClassifierDrift",
    "ConfidenceDrift",
    "Detector",
    "ExtractionAlert",
    "ExtractionDetector",
    "DetectorResult",
    "ExampleDetector",
    "ExternalExampleDetector",
    "FeatureSqueezing",
    "KSDrift",
    "LabelDrift",
    "MMDDrift",
    "Mahalanobis",
    "Monitor",
    "MonitorConfig",
    "MonitorConfigError",
    "OnlineMonitor",
    "PSIDrift",
    "PerformanceDrift",
    "RuleSpec",
    "Window",
    "build_detector",
    "build_monitor",
    "check",
    "holm_adjust",
    "leaf_ert",
    "default_monitor_config",
    "detector_class",
    "embedding_fn",
    "expected_calibration_error",
    "get_detector",
    "known_detectors",
    "load_monitor_config",
    "make_window",
    "model_probs",
    "population_stability_index",
    "register_detector",
    "shift_dataset",
]
