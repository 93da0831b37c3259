"""Models the explanation tests share: a linear one with known weights, a small trained CNN."""

from __future__ import annotations

import pytest
import torch

from dlsec.core import InputSpec, WhiteBoxModel, load_dataset
from dlsec.core.arch import SmallCNN
from dlsec.core.loop import fit
from dlsec.core.trainconfig import TrainConfig

# logits = x @ W.T + b, 4 features, 3 classes; weights of both signs and sizes
WEIGHT = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-1.5, 3.0, 0.0, 1.0], [0.25, 0.5, -2.0, -0.75]])
BIAS = torch.tensor([0.1, -0.2, 0.3])
DIGITS_CNN = {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 8, "hidden": 32}


def linear_module() -> torch.nn.Linear:
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(WEIGHT)
        layer.bias.copy_(BIAS)
    return layer


@pytest.fixture
def linear() -> WhiteBoxModel:
    """A linear classifier on 4 features in [0, 1] with known weights and bias."""
    return WhiteBoxModel(linear_module(), InputSpec(shape=(4,), num_classes=3, kind="tabular"), device="cpu")


@pytest.fixture
def rows() -> torch.Tensor:
    return torch.rand(6, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def digits():
    return load_dataset("builtin:digits").split(test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def digits_cnn(digits) -> WhiteBoxModel:
    """A small CNN trained for 3 epochs on digits (about 90% test accuracy, a second of CPU)."""
    train, _ = digits
    torch.manual_seed(0)
    model = WhiteBoxModel(SmallCNN(**DIGITS_CNN), train.spec, device="cpu")
    fit(model, train, TrainConfig(epochs=3, lr=3e-3, seed=0))
    return model
