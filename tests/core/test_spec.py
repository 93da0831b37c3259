import numpy as np
import pytest
import torch

from dlsec.core import InputSpec
from dlsec.errors import SpecError


def test_roundtrip_through_dict_keeps_every_field():
    spec = InputSpec(
        shape=(3, 4, 4),
        num_classes=3,
        lower=0.0,
        upper=1.0,
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.5, 0.5),
        class_names=("a", "b", "c"),
    )
    assert InputSpec.from_dict(spec.to_dict()) == spec


def test_per_feature_bounds_broadcast_to_example_shape():
    spec = InputSpec(shape=(3,), num_classes=2, lower=(0, -1, 2), upper=(1, 1, 5), kind="tabular")
    assert spec.lower_tensor().tolist() == [0.0, -1.0, 2.0]
    assert spec.upper_tensor().shape == (3,)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"shape": (), "num_classes": 2}, "shape"),
        ({"shape": (0, 3), "num_classes": 2}, "shape"),
        ({"shape": (4,), "num_classes": 1}, "num_classes"),
        ({"shape": (4,), "num_classes": 2, "lower": 1.0, "upper": 0.0}, "lower bound"),
        ({"shape": (4,), "num_classes": 2, "lower": (0, 0), "upper": 1.0}, "one per feature"),
        ({"shape": (4,), "num_classes": 2, "mean": (0.0,)}, "both mean and std"),
        ({"shape": (1, 2, 2), "num_classes": 2, "mean": (0.0,), "std": (0.0,)}, "std positive"),
        ({"shape": (3, 2, 2), "num_classes": 2, "mean": (0, 0), "std": (1, 1)}, "per channel"),
        ({"shape": (4,), "num_classes": 2, "kind": "audio"}, "kind"),
        ({"shape": (4,), "num_classes": 2, "class_names": ("a",)}, "class names"),
        ({"shape": (4,), "num_classes": 2, "lower": float("nan")}, "finite"),
    ],
)
def test_inconsistent_specs_are_refused(kwargs, fragment):
    with pytest.raises(SpecError, match=fragment):
        InputSpec(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(SpecError, match="unknown field"):
        InputSpec.from_dict({"shape": [2], "num_classes": 2, "evil": 1})


def test_check_batch_names_the_problem():
    spec = InputSpec(shape=(2,), num_classes=2, kind="tabular")
    spec.check_batch(np.array([[0.0, 1.0]]))
    with pytest.raises(SpecError, match="shape"):
        spec.check_batch(np.zeros((1, 3)))
    with pytest.raises(SpecError, match="NaN"):
        spec.check_batch(np.array([[np.nan, 0.0]]))
    with pytest.raises(SpecError, match="outside the input bounds"):
        spec.check_batch(torch.tensor([[0.0, 1.5]]))


def test_image_normalisation_is_per_channel():
    spec = InputSpec(shape=(2, 3, 3), num_classes=2, mean=(0.5, 0.25), std=(0.5, 0.25))
    mean, std = spec.normalisation()
    assert mean.shape == (2, 1, 1) and std.shape == (2, 1, 1)
