"""A check names every detector that could not run, with the reason, and says partial."""

from __future__ import annotations

import numpy as np
import pytest

from dlsec.monitor import MonitorConfig, Window, check, default_monitor_config, holm_adjust


def test_weighted_holm_by_hand() -> None:
    # p / w: 0.005, 0.04, 0.03 -> order a, c, b; W = 4, then 2, then 1
    # a: 0.01 * 4 / 2 = 0.02; c: 0.03 * 2 / 1 = 0.06; b: 0.04 * 1 / 1 = 0.04 -> kept at 0.06
    assert holm_adjust([0.01, 0.04, 0.03], [2, 1, 1]) == pytest.approx([0.02, 0.06, 0.06])
    assert holm_adjust([0.01, 0.04, 0.03], [1, 1, 1]) == pytest.approx(holm_adjust([0.01, 0.04, 0.03]))
    with pytest.raises(Exception, match="positive weight"):
        holm_adjust([0.1, 0.2], [1, 0])


def test_weights_set_each_detectors_share_of_alpha() -> None:
    rng = np.random.default_rng(0)
    ref, cur = Window(x=rng.normal(size=(200, 2))), Window(x=rng.normal(size=(100, 2)))
    cfg = MonitorConfig.model_validate(
        {"rules": [{"detector": "ks", "weight": 3}, {"detector": "mmd", "params": {"n_permutations": 50}}]}
    )
    shares = [d["alpha_share"] for d in check(cfg, ref, cur).results]
    assert shares == pytest.approx([0.0375, 0.0125])
    with pytest.raises(ValueError, match="weight belongs to a rule with a detector"):
        MonitorConfig.model_validate({"rules": [{"weight": 2, "any_of": [{"detector": "ks"}]}]})


def test_without_a_model_the_model_detectors_are_listed_and_the_verdict_is_partial() -> None:
    rng = np.random.default_rng(1)
    ref, cur = Window(x=rng.normal(size=(200, 4))), Window(x=rng.normal(size=(100, 4)))
    report = check(default_monitor_config(), ref, cur).to_dict()
    assert [d["name"] for d in report["detectors"]] == ["ks", "mmd", "classifier"]
    skipped = {item["check"]: item for item in report["not_run"]}
    assert set(skipped) == {
        "mmd (embeddings)",
        "label",
        "confidence",
        "performance",
        "squeezing",
        "mahalanobis",
    }
    assert all("pass --model" in item["reason"] for item in skipped.values())
    assert report["verdict"] == "partial" and report["complete"] is False and not report["fired"]
    by_rule = {r["name"]: r for r in report["rules"]}
    assert by_rule["prediction drift"]["not_run"] == ["label", "confidence"]
    assert by_rule["input drift"]["not_run"] == []


def test_a_missing_label_is_a_reason_and_a_shift_still_fails() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=300)
    ref = Window(x=rng.normal(size=(300, 2)), probs=probs, y=probs.argmax(1))
    cur = Window(x=rng.normal(3.0, 1.0, size=(100, 2)), probs=probs[:100])
    cfg = MonitorConfig.model_validate({"rules": [{"detector": "ks"}, {"detector": "performance"}]})
    report = check(cfg, ref, cur)
    assert [item["check"] for item in report.not_run] == ["performance"]
    assert "labels" in report.not_run[0]["reason"]
    assert report.verdict == "fail"  # a rule fired: partial coverage does not soften a finding


def test_the_online_monitor_leaves_out_what_cannot_run_and_says_so() -> None:
    from dlsec.monitor import CannotRun, build_monitor

    rng = np.random.default_rng(3)
    cfg = MonitorConfig.model_validate(
        {
            "window": 50,
            "stride": 50,
            "ert": 500,
            "n_simulations": 400,
            "rules": [{"detector": "ks"}, {"detector": "label"}],
        }
    )
    monitor = build_monitor(cfg).fit(Window(x=rng.normal(size=(300, 2))))
    assert [leaf.spec.detector for leaf in monitor.leaves] == ["ks"]
    [skipped] = monitor.not_run
    assert skipped["check"] == "label" and "pass --model" in skipped["reason"]
    assert monitor.complete is False
    # the leaf that runs keeps its own share of the budget: two leaves, so 2 x the file's ert
    assert monitor.leaves[0].monitor.ert == pytest.approx(2 * cfg.ert)
    only_label = MonitorConfig.model_validate({"window": 50, "rules": [{"detector": "label"}]})
    with pytest.raises(CannotRun, match="no detector of the monitor config can run"):
        build_monitor(only_label).fit(Window(x=rng.normal(size=(300, 2))))


def test_the_check_as_sarif_names_what_did_not_run_and_validates() -> None:
    import json
    from pathlib import Path

    import jsonschema

    rng = np.random.default_rng(4)
    ref, cur = Window(x=rng.normal(size=(200, 4))), Window(x=rng.normal(1.5, 1.0, size=(100, 4)))
    report = check(default_monitor_config(), ref, cur)
    log = report.sarif("current.npz")
    schema = Path(__file__).parent.parent / "schemas" / "sarif-schema-2.1.0.json"
    jsonschema.Draft4Validator(json.loads(schema.read_text())).validate(log)
    [run] = log["runs"]
    [invocation] = run["invocations"]
    assert invocation["properties"]["verdict"] == "fail" and invocation["properties"]["complete"] is False
    notes = invocation["toolExecutionNotifications"]
    assert len(notes) == len(report.not_run) == 6
    assert all(n["message"]["text"].startswith("not run: ") for n in notes)
    fired = [r for r in run["results"] if r["ruleId"] == "dlsec/monitor-rule-fired"]
    assert [r["properties"]["rule"] for r in fired] == [r["name"] for r in report.rules if r["fired"]]
    drift = [r["properties"]["detector"] for r in run["results"] if r["ruleId"] == "dlsec/monitor-drift"]
    assert drift == [d["name"] for d in report.results if d["drift"]] and drift
