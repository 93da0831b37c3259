"""Known answers on a linear model, where every method's attribution has a closed form.

For logits ``f(x) = W x + b`` and target class ``c``, from a baseline ``x0``: Integrated
Gradients, DeepLIFT, GradientSHAP (baseline only), occlusion of one feature and Kernel SHAP
all equal ``W[c] * (x - x0)``; saliency is ``|W[c]|``; SmoothGrad of a constant gradient too.
"""

from __future__ import annotations

import pytest
import torch

from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.explain import METHODS, explain

from .conftest import BIAS, WEIGHT, linear_module


def times_input(x: torch.Tensor, targets: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    return WEIGHT[targets] * (x - x0)


# method, parameters, expected attributions, tolerance
CASES = [
    ("ig", {}, times_input, 1e-5),
    ("ig", {"n_steps": 2, "rule": "riemann_middle"}, times_input, 1e-5),  # a constant gradient: exact
    ("deeplift", {}, times_input, 1e-5),
    ("gradient-shap", {"n_random": 0}, times_input, 1e-5),
    ("occlusion", {"window": 1}, times_input, 1e-5),
    ("kernel-shap", {"samples": 400}, times_input, 2e-2),
    ("saliency", {}, lambda x, t, x0: WEIGHT[t].abs(), 1e-6),
    ("saliency", {"abs": False}, lambda x, t, x0: WEIGHT[t], 1e-6),
    ("smoothgrad", {"samples": 4}, lambda x, t, x0: WEIGHT[t].abs(), 1e-6),
]


@pytest.mark.parametrize(
    ("method", "params", "expected", "tol"),
    CASES,
    ids=[f"{c[0]}-{'-'.join(map(str, c[1].values()))}" for c in CASES],
)
def test_a_linear_model_gets_the_closed_form(linear, rows, method, params, expected, tol):
    e = explain(linear, rows, method=method, **params)
    targets = linear.predict(rows)
    assert torch.equal(e.targets, targets)  # the predicted class by default
    assert e.attributions.shape == rows.shape
    torch.testing.assert_close(e.attributions, expected(rows, targets, torch.zeros(4)), atol=tol, rtol=0)


def test_every_registered_method_has_a_known_answer_case():
    assert {c[0] for c in CASES} | {"gradcam"} == set(METHODS)  # gradcam: images only (test_images)


def test_integrated_gradients_from_zero_is_weights_times_input_and_complete(linear, rows):
    for target in range(3):
        e = explain(linear, rows, target=target, method="ig", baseline="zeros")
        torch.testing.assert_close(e.attributions, WEIGHT[target] * rows, atol=1e-6, rtol=0)
        # completeness: the attributions sum to f(x) - f(baseline) for the target logit
        gap = linear(rows)[:, target] - linear(torch.zeros(1, 4))[:, target]
        torch.testing.assert_close(e.attributions.sum(1), gap.detach(), atol=1e-5, rtol=0)


def test_the_default_baseline_is_the_specs_lower_bound():
    lower = (0.1, -1.0, 0.0, 0.5)
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular", lower=lower, upper=2.0)
    model = WhiteBoxModel(linear_module(), spec, device="cpu")
    x = torch.tensor([[1.0, 0.0, 1.5, 0.75], [0.2, 1.9, 0.0, 2.0]])
    e = explain(model, x, target=1, method="ig")
    assert e.baseline == "lower"
    torch.testing.assert_close(e.attributions, WEIGHT[1] * (x - torch.tensor(lower)), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        e.attributions.sum(1),
        (model(x)[:, 1] - model(torch.tensor([lower]))[:, 1]).detach(),
        atol=1e-5,
        rtol=0,
    )


def test_a_normalised_model_is_explained_in_input_space():
    # the wrapper folds (x - mean) / std in: the input-space weights are W / std
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular", mean=(0.5,) * 4, std=(0.25, 0.5, 1.0, 2.0))
    model = WhiteBoxModel(linear_module(), spec, device="cpu")
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    e = explain(model, x, target=0, method="saliency", abs=False)
    torch.testing.assert_close(
        e.attributions, (WEIGHT[0] / torch.tensor(spec.std)).expand(3, -1), atol=1e-6, rtol=0
    )


def test_a_score_model_is_explained_on_its_probabilities(linear, rows):
    score = linear.as_score()
    e = explain(score, rows, target=2, method="occlusion")
    assert e.output == "probability"
    p = torch.softmax(linear(rows), 1)[:, 2].detach()
    for i in range(4):
        occluded = rows.clone()
        occluded[:, i] = 0.0
        drop = p - torch.softmax(linear(occluded), 1)[:, 2].detach()
        torch.testing.assert_close(e.attributions[:, i], drop, atol=1e-6, rtol=0)


def test_targets_given_per_example_and_bias_is_untouched(linear, rows):
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    e = explain(linear, rows, target=targets, method="ig")
    torch.testing.assert_close(e.attributions, WEIGHT[targets] * rows, atol=1e-5, rtol=0)
    assert BIAS.abs().sum() > 0  # the bias is not attributed to any feature
    assert e.to_dict()["targets"] == targets.tolist()


def test_random_methods_are_seeded_and_leave_the_callers_rng_alone(linear, rows):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = explain(linear, rows, method="smoothgrad", abs=False, samples=3, noise=0.3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = explain(linear, rows, method="kernel-shap", samples=30, seed=5)
    c = explain(linear, rows, method="kernel-shap", samples=30, seed=5)
    assert torch.equal(b.attributions, c.attributions)
    assert a.seed == 5 and a.params == {"samples": 3, "noise": 0.3, "abs": False}


def test_ranking_names_features_by_mean_absolute_attribution(linear):
    x = torch.ones(2, 4) * 0.5
    e = explain(linear, x, target=1, method="ig")
    ranking = e.ranking(["a", "b", "c", "d"])
    assert [r.name for r in ranking] == ["b", "a", "d", "c"]  # |W[1]| = 1.5, 3, 0, 1
    assert [r.rank for r in ranking] == [1, 2, 3, 4]
    assert ranking[0].importance == pytest.approx(1.5) and ranking[1].mean_attribution == pytest.approx(-0.75)
    assert [r.name for r in e.ranking()][:1] == ["feature_1"]
