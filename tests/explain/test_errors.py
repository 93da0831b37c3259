"""Bad requests are refused before any work, with one line that says what to do."""

from __future__ import annotations

import pytest
import torch

from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.errors import SpecError, UsageError
from dlsec.explain import AttributionMethod, explain, explain_batch, get_method, register_method


@pytest.mark.parametrize("method", ["saliency", "ig", "smoothgrad", "deeplift", "gradient-shap", "gradcam"])
def test_a_gradient_method_on_a_score_model_is_refused(linear, rows, method):
    with pytest.raises(
        UsageError, match=rf"^method {method} needs gradients \(white-box\); use occlusion or kernel-shap$"
    ):
        explain(linear.as_score(), rows, method=method)


def test_a_decision_model_has_nothing_to_explain(linear, rows):
    with pytest.raises(UsageError, match="labels only"):
        explain(linear.as_decision(), rows, method="occlusion")


@pytest.mark.parametrize("target", [3, -1, [0, 1, 2, 3, 0, 1]])
def test_a_target_out_of_range_is_refused(linear, rows, target):
    with pytest.raises(UsageError, match=r"target class -?\d is out of range: the model has classes 0\.\.2"):
        explain(linear, rows, target=target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lime"}, "unknown explanation method 'lime'; choose one of: deeplift, gradcam"),
        ({"method": "ig", "steps": 5}, "method ig has no parameter steps; its parameters: n_steps, rule"),
        ({"method": "ig", "n_steps": 0}, "n_steps must be a positive integer"),
        ({"method": "ig", "baseline": "mean"}, "baseline must be 'lower', 'zeros'"),
        ({"method": "ig", "baseline": torch.zeros(2, 2)}, "a baseline tensor must have shape"),
        ({"method": "ig", "baseline": 5.0}, "baseline: values lie outside the input bounds"),
        ({"method": "ig", "target": [0, 1]}, "got 2 targets for 6 examples"),
        ({"method": "ig", "target": True}, "target must be a class index"),
        ({"method": "ig", "target": object()}, "target must be a class index or one per example"),
    ],
)
def test_bad_arguments_name_the_problem(linear, rows, kwargs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        explain(linear, rows, **kwargs)


def test_inputs_outside_the_bounds_are_refused(linear):
    with pytest.raises(SpecError, match="outside the input bounds"):
        explain(linear, torch.full((2, 4), 3.0))
    with pytest.raises(SpecError, match="expected a batch of shape"):
        explain(linear, torch.zeros(2, 5))
    with pytest.raises(SpecError, match="NaN"):
        explain(linear, torch.tensor([[0.5, float("nan"), 0.5, 0.5]]))
    with pytest.raises(UsageError, match="the batch is empty"):
        explain(linear, torch.zeros(0, 4))


def test_gradcam_names_the_layers_when_the_layer_is_unknown(digits_cnn):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UsageError) as info:
        explain(digits_cnn, x, method="gradcam", layer="conv9")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("the model has no layer 'conv9'; its layers: features, features.0, features.1")
    assert "classifier.4" in text


def test_gradcam_needs_images_and_a_map_shaped_layer(linear, rows, digits_cnn):
    with pytest.raises(UsageError, match="gradcam explains images"):
        explain(linear, rows, method="gradcam")
    with pytest.raises(UsageError, match="name a convolutional layer"):
        explain(digits_cnn, torch.zeros(2, 1, 8, 8), method="gradcam", layer="classifier.4")
    no_conv = WhiteBoxModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
        InputSpec(shape=(1, 8, 8), num_classes=10),
        device="cpu",
    )
    with pytest.raises(
        UsageError, match=r"gradcam needs a convolutional layer and the model has none; .*layers: 0, 1"
    ):
        explain(no_conv, torch.zeros(1, 1, 8, 8), method="gradcam")


def test_explain_batch_checks_everything_before_working(linear, rows):
    calls = []
    with pytest.raises(UsageError, match="no chosen method takes the parameter layer"):
        explain_batch(
            linear, rows, methods=["ig"], params={"layer": "x"}, progress=lambda *a: calls.append(a)
        )
    with pytest.raises(UsageError, match="needs gradients"):
        explain_batch(
            linear.as_score(), rows, methods=["occlusion", "ig"], progress=lambda *a: calls.append(a)
        )
    with pytest.raises(UsageError, match="out of range"):
        explain_batch(linear, rows, methods=["ig"], target=7, progress=lambda *a: calls.append(a))
    assert calls == []


def test_a_duplicate_method_name_is_refused():
    with pytest.raises(UsageError, match="attribution method 'ig' is already registered"):

        @register_method("ig")
        class Another(AttributionMethod):
            def attribute(self, ctx, x, targets):  # pragma: no cover
                return x

    assert type(get_method("ig")).__name__ == "IntegratedGradients"
