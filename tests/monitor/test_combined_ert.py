"""An online monitor keeps its stated expected run length as a whole, not per leaf."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.monitor import MonitorConfig, OnlineMonitor, build_detector, build_monitor, leaf_ert, make_window

RULES = [
    {"name": "inputs", "detector": "ks"},
    {"name": "predictions", "any_of": [{"detector": "label"}, {"detector": "confidence"}]},
]


def test_the_budget_is_split_across_leaves_by_hand() -> None:
    cfg = MonitorConfig.model_validate({"ert": 1000, "rules": RULES})
    assert sorted(leaf_ert(cfg).values()) == [3000.0, 3000.0, 3000.0]
    # a rule with its own ert shares it among its own leaves; the file's ert goes to the rest
    own = MonitorConfig.model_validate({"ert": 1000, "rules": [RULES[0], {**RULES[1], "ert": 500}]})
    budgets = leaf_ert(own)
    ks_leaf = own.rules[0]
    assert budgets[id(ks_leaf)] == 1000.0
    assert sorted(budgets[id(leaf)] for leaf in own.rules[1].leaves()) == [1000.0, 1000.0]
    # a nested rule's ert wins over its parent's
    nested = MonitorConfig.model_validate(
        {
            "rules": [
                {
                    "ert": 600,
                    "any_of": [{"detector": "ks"}, {"detector": "mmd"}, {"detector": "label", "ert": 50}],
                }
            ]
        }
    )
    assert [leaf_ert(nested)[id(leaf)] for leaf in nested.rules[0].leaves()] == [1200.0, 1200.0, 50.0]


def test_false_alerts_of_the_whole_monitor_stay_at_its_ert() -> None:
    """Three leaves (inputs, predicted labels, confidence), one check every 20 examples at ert
    200: the monitor as a whole may alarm falsely on 10% of checks. Calibrated per leaf at 200
    (the old rule) the three together alarm far more often; split, they stay within the bound."""
    window, ert, checks = 20, 200.0, 300
    cfg = MonitorConfig.model_validate({"window": window, "stride": window, "ert": ert, "rules": RULES})
    torch.manual_seed(0)
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular", lower=-10.0, upper=10.0)
    model = WhiteBoxModel(torch.nn.Linear(4, 3), spec, device="cpu")
    rng = np.random.default_rng(0)
    reference = make_window(rng.normal(size=(1200, 4)).astype(np.float32), model=model)
    monitor = build_monitor(cfg, model=model).fit(reference)
    assert monitor.ert_ == pytest.approx(ert)
    assert [leaf.monitor.alpha_window_ for leaf in monitor.leaves] == pytest.approx([window / (3 * ert)] * 3)
    per_leaf = [
        OnlineMonitor(build_detector(leaf, model=model), window=window, stride=window, ert=ert).fit(reference)
        for rule in cfg.rules
        for leaf in rule.leaves()
    ]
    x = np.random.default_rng(1).normal(size=(window * checks, 4)).astype(np.float32)
    split = unsplit = 0
    for start in range(0, len(x), window):
        batch = make_window(x[start : start + window], model=model)
        split += len(monitor.update(batch.x, preds=batch.probs))
        unsplit += sum(len(m.update(batch.x, preds=batch.probs)) for m in per_leaf)
    bound = stats.binom.ppf(0.999, checks, window / ert)  # more than this: not at the stated ert
    assert split <= bound, (split, unsplit, bound)
    assert unsplit > bound, (split, unsplit, bound)  # the harness catches a per-leaf budget
