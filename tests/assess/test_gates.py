from __future__ import annotations

import pytest

from dlsec.assess.campaign import GateSpec
from dlsec.assess.gates import AllOf, AnyOf, Threshold, build_gate
from dlsec.errors import UsageError

REPORT = {
    "clean": {"accuracy": 0.97},
    "robustness": {"curves": {"linf": {"eps": [0.05, 0.1], "robust_accuracy": [0.8, 0.45]}}},
    "certification": {"radii": [0.0, 0.25], "certified_accuracy": [0.9, 0.6]},
    "corruptions": {
        "results": [
            {"corruption": "blur", "severity": 1, "accuracy": 0.9},
            {"corruption": "blur", "severity": 5, "accuracy": 0.5},
        ]
    },
    "findings": [{"severity": "high"}, {"severity": "low"}],
}


def gate(**kw):
    return Threshold(GateSpec(**kw))


@pytest.mark.parametrize(
    "kw, passed, value",
    [
        ({"metric": "clean_accuracy", "min": 0.95}, True, 0.97),
        ({"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.6}, False, 0.45),
        ({"metric": "robust_accuracy", "norm": "linf", "eps": 0.05, "min": 0.6}, True, 0.8),
        ({"metric": "certified_accuracy", "radius": 0.25, "min": 0.5}, True, 0.6),
        ({"metric": "corruption_accuracy", "corruption": "blur", "min": 0.8}, False, 0.7),
        ({"metric": "corruption_accuracy", "severity": 1, "min": 0.8}, True, 0.9),
        ({"metric": "findings", "severity": "high", "max": 0}, False, 1.0),
        ({"metric": "findings", "max": 5}, True, 2.0),
    ],
)
def test_thresholds(kw, passed, value):
    result = gate(**kw).check(REPORT)
    assert result.passed is passed and result.value == pytest.approx(value)


def test_missing_measurement_fails_closed():
    result = gate(metric="robust_accuracy", norm="l2", eps=0.5, min=0.0).check(REPORT)
    assert not result.passed and "not run" in result.reason
    assert not gate(metric="certified_accuracy", radius=0.5, min=0.0).check({"clean": {}}).passed


def test_composition_like_policies():
    ok = gate(metric="clean_accuracy", min=0.9)
    bad = gate(metric="robust_accuracy", norm="linf", eps=0.1, min=0.6)
    assert (ok & bad).check(REPORT).passed is False
    assert (ok | bad).check(REPORT).passed is True
    nested = build_gate(
        GateSpec(
            any_of=[
                GateSpec(all_of=[GateSpec(metric="clean_accuracy", min=0.99)]),
                GateSpec(metric="findings", severity="high", max=1),
            ]
        )
    )
    result = nested.check(REPORT)
    assert result.passed and len(result.children) == 2 and not result.children[0].passed
    with pytest.raises(UsageError):
        AllOf([])
    with pytest.raises(UsageError):
        AnyOf([])
