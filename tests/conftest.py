"""Shared fixtures. Every test runs with DLSEC_HOME in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dlsec.core import InputSpec, WhiteBoxModel

# The test models are tiny: one thread is as fast, and it cannot oversubscribe a shared machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _dlsec_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for the whole run, so the zoo trains once; tests needing their own pass home=."""
    home = tmp_path_factory.mktemp("dlsec-home")
    old = os.environ.get("DLSEC_HOME")
    os.environ["DLSEC_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("DLSEC_HOME", None)
    else:
        os.environ["DLSEC_HOME"] = old


@pytest.fixture
def linear_model() -> WhiteBoxModel:
    """A 2-feature, 2-class linear classifier with known weights: logit difference x0 - x1."""
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        layer.bias.zero_()
    spec = InputSpec(shape=(2,), num_classes=2, kind="tabular")
    return WhiteBoxModel(layer, spec, device="cpu")
