"""The quality checks tell a faithful explanation from one that is not about the model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dlsec.errors import UsageError
from dlsec.explain import (
    AttributionMethod,
    agreement,
    check_explanation,
    deletion_curve,
    explain,
    infidelity,
    insertion_curve,
    randomisation_check,
    rank_correlation,
    sensitivity,
)


def edge_detector(model, x, targets):
    """An "explanation" that looks only at the input: the Sobel gradient magnitude of the image."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).reshape(1, 1, 3, 3)
    gx = F.conv2d(x.cpu(), kx, padding=1)
    gy = F.conv2d(x.cpu(), kx.transpose(2, 3), padding=1)
    return (gx**2 + gy**2).sqrt()


@pytest.fixture(scope="module")
def test_images(digits):
    _, test = digits
    return torch.from_numpy(test.x[:32]), torch.from_numpy(test.y[:32])


def test_the_randomisation_check_flags_an_edge_detector_and_passes_ig(digits_cnn, test_images):
    x, _ = test_images
    x = x[:12]
    before = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    edges = randomisation_check(digits_cnn, x, edge_detector)
    assert edges.flagged and edges.final_correlation == pytest.approx(1.0)
    ig = randomisation_check(digits_cnn, x, "ig", n_steps=16)
    assert not ig.flagged and ig.final_correlation < 0.3
    # cascade: the output layer first, then one layer more at each step
    assert ig.layers == ["classifier.4", "classifier.1", "features.2", "features.0"]
    assert len(ig.correlation) == len(ig.abs_correlation) == 4
    full = randomisation_check(digits_cnn, x, "saliency", mode="full")
    assert full.layers == ["all"] and len(full.correlation) == 1
    assert not full.flagged
    # the model itself is not touched
    after = digits_cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_deletion_and_insertion_rank_ig_above_a_random_order(digits_cnn, test_images):
    x, _ = test_images
    e = explain(digits_cnn, x, method="ig", n_steps=16)
    shuffled = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    ig_del = deletion_curve(digits_cnn, x, e.attributions, e.targets)
    rnd_del = deletion_curve(digits_cnn, x, shuffled, e.targets)
    assert ig_del.mean_auc < rnd_del.mean_auc - 0.1
    ig_ins = insertion_curve(digits_cnn, x, e.attributions, e.targets)
    rnd_ins = insertion_curve(digits_cnn, x, shuffled, e.targets)
    assert ig_ins.mean_auc > rnd_ins.mean_auc + 0.1
    # the curves start at the input (deletion) or the baseline (insertion) and end at the other
    p = digits_cnn.probs(x).gather(1, e.targets[:, None])[:, 0]
    p0 = digits_cnn.probs(torch.zeros_like(x)).gather(1, e.targets[:, None])[:, 0]
    torch.testing.assert_close(ig_del.scores[:, 0], p, atol=1e-5, rtol=0)
    torch.testing.assert_close(ig_del.scores[:, -1], p0, atol=1e-5, rtol=0)
    torch.testing.assert_close(ig_ins.scores[:, 0], p0, atol=1e-5, rtol=0)
    assert ig_del.fractions[0] == 0.0 and ig_del.fractions[-1] == 1.0 and len(ig_del.fractions) == 21


def test_infidelity_and_sensitivity_know_a_linear_models_gradient(linear, rows):
    grad = explain(linear, rows, method="saliency", abs=False)
    assert float(infidelity(linear, grad).abs().max()) < 1e-6  # f(x) - f(x - I) = I . w exactly
    noise = dataclasses.replace(
        grad, attributions=torch.rand(rows.shape, generator=torch.Generator().manual_seed(3))
    )
    assert float(infidelity(linear, noise).mean()) > 1e-3
    assert float(sensitivity(linear, grad).max()) == pytest.approx(0.0, abs=1e-7)  # a constant gradient
    smooth = explain(linear, rows, method="ig")
    assert float(sensitivity(linear, smooth).max()) > 0.0


def test_agreement_of_methods(digits_cnn, test_images):
    x, _ = test_images
    ig = explain(digits_cnn, x, method="ig", n_steps=16)
    same = agreement(ig, ig)
    assert same.rank_correlation == pytest.approx(1.0) and same.top_k_intersection == 1.0 and same.k == 7
    dl = explain(digits_cnn, x, method="deeplift")
    close = agreement(ig, dl)
    noise = dataclasses.replace(
        ig, method="noise", attributions=torch.rand(x.shape, generator=torch.Generator())
    )
    far = agreement(ig, noise)
    assert close.rank_correlation > far.rank_correlation + 0.3
    assert close.top_k_intersection > far.top_k_intersection
    assert close.methods == ("ig", "deeplift")
    with pytest.raises(UsageError, match="same inputs"):
        agreement(ig, explain(digits_cnn, x[:4], method="ig"))


def test_rank_correlation_handles_ties_and_constant_rows():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor(
        [[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]
    )
    torch.testing.assert_close(
        rank_correlation(a, b), torch.tensor([1.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    )


def test_check_explanation_reports_each_check_and_names_what_it_skipped(
    linear, rows, digits_cnn, test_images
):
    x, _ = test_images
    steps = []
    report = check_explanation(
        digits_cnn, explain(digits_cnn, x[:8], method="ig", n_steps=16), progress=lambda *a: steps.append(a)
    )
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5]
    assert report.infidelity is not None and report.sensitivity is not None
    assert report.randomisation is not None and not report.randomisation.flagged
    assert report.warnings == [] and report.skipped == {}
    d = report.to_dict()
    assert d["deletion"]["auc"] < d["deletion_random"]["auc"]
    score = linear.as_score()
    blind = check_explanation(
        score, explain(score, rows, method="occlusion"), checks=["deletion", "randomisation"]
    )
    assert blind.skipped == {"randomisation": "needs the model's weights (a white-box model)"}
    assert blind.infidelity is None and blind.deletion is not None
    with pytest.raises(UsageError, match="unknown check"):
        check_explanation(linear, explain(linear, rows), checks=["speed"])


class EdgeMethod(AttributionMethod):
    """The edge detector as an (unregistered) method, so that explain() and the checks run it."""

    name = "edges"

    def attribute(self, ctx, x, targets):
        return edge_detector(ctx.model, x, targets)


def test_a_flagged_explanation_is_a_warning(digits_cnn, test_images):
    x, _ = test_images
    e = explain(digits_cnn, x[:6], method=EdgeMethod())
    report = check_explanation(digits_cnn, e, checks=["randomisation"])
    assert report.randomisation.flagged
    assert report.warnings == [
        "edges: the explanation barely changes when the model's weights are randomised "
        "(rank correlation 1.00): it does not explain the model"
    ]
    assert report.to_dict()["warnings"] == report.warnings


def test_gradcam_on_the_last_convolution(digits_cnn, test_images):
    x, _ = test_images
    e = explain(digits_cnn, x[:8], method="gradcam")
    assert e.params["layer"] == "features.2" and e.attributions.shape == (8, 1, 8, 8)
    assert float(e.attributions.min()) >= 0.0  # the ReLU keeps positive evidence
    first = explain(digits_cnn, x[:8], method="gradcam", layer="features.0")
    assert first.params["layer"] == "features.0"
    assert not torch.equal(first.attributions, e.attributions)
