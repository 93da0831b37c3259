"""The assessment's explain section: clean vs adversarial attributions, what the attacks moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.assess import run_assessment
from dlsec.assess.campaign import Campaign
from dlsec.assess.explain import (
    AdversarialGallery,
    ExplainSection,
    _blocks,
    _changed_most,
    run_explain,
)
from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.core.spec import InputSpec
from dlsec.explain import topk_intersection


def _direct(key: str, compute):  # the runner's step without its cache
    return compute()


def test_topk_overlap_by_hand():
    a = np.array([[0.5, 0.3, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]])
    b = np.array([[0.1, 0.3, 0.5, 0.1], [0.4, 0.3, 0.2, 0.1]])
    # row 0: top-2 {0, 1} vs {2, 1} share one unit; row 1: identical
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    assert topk_intersection(a, b, 2).tolist() == [0.5, 1.0]
    assert topk_intersection(a, b, 10).tolist() == [1.0, 1.0]  # k clipped to the number of units


def test_image_blocks_cover_every_pixel_once():
    blocks = _blocks((8, 8), 4)
    assert len(blocks) == 16 and blocks[0][0] == "rows 0-1, cols 0-1"
    assert blocks[0][1].tolist() == [0, 1, 8, 9]
    assert sorted(np.concatenate([idx for _, idx in blocks]).tolist()) == list(range(64))
    assert len(_blocks((5, 3), 4)) == 12  # never more blocks than rows or columns


def test_changed_most_shares_by_hand():
    clean = np.array([[0.5, 0.5, 0.0]])
    adv = np.array([[0.1, 0.5, 0.4]])  # shift: 0.4 on f0, 0 on f1, 0.4 on f2
    pert = np.array([[0.0, 0.0, 2.0]])  # the attack moved only f2
    groups = [("f0", np.array([0])), ("f1", np.array([1])), ("f2", np.array([2]))]
    rows = _changed_most(clean, adv, pert, groups, top_k=2)
    assert [r["name"] for r in rows] == ["f2", "f0"]  # equal shift: the larger perturbation first
    assert rows[0] == {"name": "f2", "perturbation_share": 1.0, "attribution_shift_share": 0.5}
    assert rows[1]["perturbation_share"] == 0.0 and rows[1]["attribution_shift_share"] == 0.5


def test_on_a_linear_model_the_attack_moves_the_only_feature_that_decides():
    # logit difference 2*x0; x1 and x2 carry no weight, so IG gives them nothing
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([-0.5, 0.5]))
    spec = InputSpec(shape=(3,), num_classes=2, kind="tabular", feature_names=("income", "age", "zip"))
    model = WhiteBoxModel(layer, spec, device="cpu")
    x = np.array([[0.8, 0.2, 0.3], [0.3, 0.6, 0.1], [0.6, 0.5, 0.5]], dtype=np.float32)
    y = np.array([0, 1, 0])
    x_adv = x.copy()
    x_adv[[0, 2], 0] = 0.4  # fools rows 0 and 2 by moving income only; row 1 untouched
    gallery = AdversarialGallery("fgsm", "linf", 0.4, x_adv, np.array([1, 1, 1]))
    section = run_explain(
        model,
        x,
        y,
        np.array([0, 1, 0]),
        gallery,
        ExplainSection(top_k=3),
        step=_direct,
        seed=0,
        feature_names=spec.feature_names,
    )
    assert section["method"] == "ig" and section["unit"] == "feature" and section["fooled"] == 2
    assert [e["fooled"] for e in section["per_example"]] == [True, False, True]
    top = section["changed_most"][0]
    assert top["name"] == "income" and top["perturbation_share"] == 1.0
    # every attribution sits on income, clean and adversarial: nothing shifts between features
    assert section["topk_overlap_mean"] == 1.0
    assert np.allclose(np.asarray(section["maps"]["clean"])[:, 1:], 0.0)


def _digits(n: int = 16) -> Dataset:
    from dlsec.core.data import load_dataset

    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    return test.subset(np.arange(n))


def _campaign(access: str, explain: dict | None = None) -> Campaign:
    return Campaign.model_validate(
        {
            "threat_model": {"access": access, "norms": {"linf": [0.1]}},
            "attacks": ["fgsm"] if access == "white-box" else ["hsj"] if access == "decision" else ["square"],
            "attack_params": {"hsj": {"max_queries": 40}, "square": {"n_queries": 20}},
            "examples": 16,
            "masking_checks": False,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            **({"explain": explain} if explain is not None else {}),
        }
    )


def test_the_report_shows_heat_maps_and_the_regions_an_image_attack_changed(tmp_path: Path):
    from dlsec.core import load_model

    model = load_model("zoo:digits-cnn", device="cpu")
    result = run_assessment(
        model, _digits(), _campaign("white-box"), tmp_path / "a", model_ref="zoo:digits-cnn", model_sha256="x"
    )
    section = result.report["explain"]
    assert section["unit"] == "region" and len(section["maps"]["clean"]) == 8
    assert all(abs(sum(m) - 1.0) < 1e-6 for m in section["maps"]["adversarial"])
    assert section["changed_most"] and section["changed_most"][0]["name"].startswith("rows ")
    html = (tmp_path / "a" / "report.html").read_text()
    assert 'id="explain"' in html and "attribution of adversarial 0" in html
    fragility = section["fragility"]
    assert fragility["prediction_kept"] == 1.0 and fragility["eps"] == 0.1
    # the attack moves the explanation further than random noise of the same size
    assert fragility["topk_intersection_mean"] < fragility["random_noise_topk_intersection_mean"]
    assert 'id="explain-fragility"' in html
    assert not any(item["check"].startswith("explain") for item in result.report["not_run"])


@pytest.mark.parametrize(("access", "reason"), [("decision", "decision-only")])
def test_a_model_without_scores_names_the_section_as_not_run(tmp_path: Path, access: str, reason: str):
    from dlsec.core import load_model

    model = load_model("zoo:digits-cnn", device="cpu")
    result = run_assessment(
        model, _digits(8), _campaign(access), tmp_path / access, model_ref="m", model_sha256="x"
    )
    checks = {item["check"]: item["reason"] for item in result.report["not_run"]}
    assert reason in checks["explain"] and result.report["verdict"] == "partial"
    off = run_assessment(
        model,
        _digits(8),
        _campaign(access, {"enabled": False}),
        tmp_path / "off",
        model_ref="m",
        model_sha256="x",
    )
    assert "explain" not in off.report and "explain" not in {i["check"] for i in off.report["not_run"]}


def test_the_explanation_attack_cannot_move_a_linear_models_saliency_but_moves_a_cnns():
    from dlsec.core import load_dataset, load_model
    from dlsec.errors import UsageError
    from dlsec.explain import attack_explanation

    layer = torch.nn.Linear(4, 2)
    spec = InputSpec(shape=(4,), num_classes=2, kind="tabular")
    linear = WhiteBoxModel(layer, spec, device="cpu")
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    fixed = attack_explanation(linear, x, eps=0.3, steps=5, k=2)
    # a linear model's saliency is |w| everywhere: no input moves it
    assert fixed.topk_intersection.tolist() == [1.0] * 6 and bool(fixed.prediction_kept.all())
    assert float((fixed.x_adv - x).abs().max()) <= 0.3 + 1e-6

    cnn = load_model("zoo:digits-cnn", device="cpu")
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    xs = torch.from_numpy(test.x[:8])
    moved = attack_explanation(cnn, xs, eps=0.2, steps=10)
    assert bool(moved.prediction_kept.all()) and torch.equal(cnn.predict(moved.x_adv), cnn.predict(xs))
    assert float((moved.x_adv - xs).abs().max()) <= 0.2 + 1e-6
    assert moved.topk_intersection.mean() < 0.8
    with pytest.raises(UsageError, match="eps > 0"):
        attack_explanation(cnn, xs, eps=0.0)
