"""Model inversion and attribute inference on models whose answers are known."""

import numpy as np
import pytest
import torch

from dlsec.attacks.privacy import AttributeInference, MIFace, score_inversion
from dlsec.core import Dataset, InputSpec, WhiteBoxModel
from dlsec.errors import UsageError


@pytest.mark.parametrize("objective", ["log", "paper"])
def test_mi_face_finds_each_class_corner_of_a_linear_model(linear_model, objective):
    # Logit difference x0 - x1: class 0 is most likely at (1, 0), class 1 at (0, 1).
    recon = MIFace(steps=2000, lr=0.5, gamma=1e-4, objective=objective)(linear_model)
    np.testing.assert_allclose(recon, [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    rows = Dataset(
        np.array([[0.9, 0.1], [0.8, 0.0], [0.1, 0.9], [0.0, 0.7]], dtype=np.float32),
        np.array([0, 0, 1, 1]),
        linear_model.spec,
        "rows",
    )
    scored = score_inversion(recon, [0, 1], target=linear_model, evaluator=linear_model, data=rows)
    assert scored.recognition_rate == 1.0 and scored.closer_to_own_class == 1.0
    np.testing.assert_allclose(scored.nearest_own, [np.hypot(0.1, 0.1), np.hypot(0.1, 0.1)], rtol=1e-5)
    with pytest.raises(UsageError, match="white-box"):
        MIFace()(linear_model.as_score())


def test_attribute_inference_beats_the_baseline_only_where_the_model_memorised():
    rng = np.random.default_rng(0)
    n, spec = 600, InputSpec(shape=(4,), num_classes=2, kind="tabular", feature_names=("s", "a", "b", "c"))
    x = rng.random((n, 4), dtype=np.float32)
    # In the population the label is independent of the sensitive feature s...
    y = rng.integers(0, 2, n)
    # ...but the model "memorised" its members: for them the label equals [s > 0.5], and the model
    # outputs exactly that rule. No data-only attacker can recover s; the model gives it away.
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-20.0, 0, 0, 0], [20.0, 0, 0, 0]]))
        layer.bias.copy_(torch.tensor([10.0, -10.0]))
    model = WhiteBoxModel(layer, spec, device="cpu")
    members_y = (x[:200, 0] > 0.5).astype(np.int64)
    members = Dataset(x[:200], members_y, spec, "members")
    aux = Dataset(x[200:400], y[200:400], spec, "aux")
    outside = Dataset(x[400:], y[400:], spec, "outside")
    result = AttributeInference(feature="s")(model, members=members, non_members=outside, auxiliary=aux)
    assert result.members["model"] > 0.97
    assert result.members["baseline"] < 0.65 and result.members["prior"] < 0.65
    assert result.advantage > 0.3
    assert result.non_members["model"] < 0.65  # nothing memorised about them
    with pytest.raises(UsageError, match="no feature named"):
        AttributeInference(feature="zz")(model, members=members, non_members=outside, auxiliary=aux)
