"""A check fires at its stated false-alarm rate as a whole: Holm across its detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.monitor import MonitorConfig, Window, check, holm_adjust, make_window


def test_holm_adjustment_by_hand() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> kept at 0.06)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([0.2]) == [0.2]
    assert holm_adjust([]) == []


def test_the_report_carries_raw_and_adjusted_p_values() -> None:
    rng = np.random.default_rng(1)
    ref = Window(x=rng.normal(size=(200, 2)))
    cur = Window(x=rng.normal(size=(200, 2)) + 3.0)
    cfg = MonitorConfig.model_validate(
        {"rules": [{"detector": "ks"}, {"detector": "mmd", "params": {"n_permutations": 50}}]}
    )
    report = check(cfg, ref, cur).to_dict()
    raw = [d["p_value"] for d in report["detectors"]]
    assert [d["p_adjusted"] for d in report["detectors"]] == pytest.approx(holm_adjust(raw))
    assert report["fired"] and report["alpha"] == 0.05 and report["correction"] == "holm"
    assert all(d["drift"] == (d["p_adjusted"] < 0.05) for d in report["detectors"])


def test_false_alarm_rate_of_a_whole_check_is_within_the_binomial_bound() -> None:
    """Four detectors on same-distribution splits: uncorrected, the check fires on ~18% of
    them; with Holm at 0.05 its false alarms stay within the binomial bound of 5%."""
    torch.manual_seed(0)
    spec = InputSpec(shape=(3,), num_classes=3, kind="tabular", lower=-10.0, upper=10.0)
    model = WhiteBoxModel(torch.nn.Linear(3, 3), spec, device="cpu")
    rules = [
        {"detector": "ks"},
        {"detector": "label"},
        {"detector": "confidence"},
        {"detector": "mmd", "params": {"n_permutations": 50}},
    ]
    n_splits = 200
    bound = stats.binom.ppf(0.999, n_splits, 0.05)  # more false alarms than this: not at 5%
    fired = {}
    for correction in ("none", "holm"):
        cfg = MonitorConfig.model_validate({"correction": correction, "rules": rules})
        rng = np.random.default_rng(0)
        count = 0
        for _ in range(n_splits):
            x = rng.normal(size=(200, 3)).astype(np.float32)
            ref, cur = make_window(x[:100], model=model), make_window(x[100:], model=model)
            count += check(cfg, ref, cur, model=model).fired
        fired[correction] = count
    assert fired["holm"] <= bound, fired
    assert fired["none"] > bound, fired  # the harness does catch a check that is not corrected
