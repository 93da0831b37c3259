from __future__ import annotations

import pytest
import torch

from dlsec.core import load_dataset, load_model


@pytest.fixture(scope="session")
def digits_cnn():
    return load_model("zoo:digits-cnn", device="cpu")


@pytest.fixture(scope="session")
def digits_batch():
    """The first 64 rows of the digits test split (the zoo model's held-out data)."""
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    return torch.from_numpy(test.x[:64]), torch.from_numpy(test.y[:64])
