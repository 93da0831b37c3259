"""Shared fixtures: the digits target, its splits, and query streams recorded from real attacks."""

from __future__ import annotations

import numpy as np
import pytest

from dlsec.attacks.extraction import JacobianAugmentation, out_of_domain_pool
from dlsec.core import Dataset, WhiteBoxModel, load_dataset
from dlsec.zoo import load_zoo_model


@pytest.fixture(scope="session")
def target() -> WhiteBoxModel:
    return load_zoo_model("digits-cnn")


@pytest.fixture(scope="session")
def splits() -> tuple[Dataset, Dataset]:
    return load_dataset("builtin:digits").split(test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def ood_pool(target: WhiteBoxModel):
    return out_of_domain_pool(target.spec, 1000, seed=1)


@pytest.fixture(scope="session")
def jbda_stream(target: WhiteBoxModel, splits: tuple[Dataset, Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """The queries (and answers) of a JBDA run with a small seed set, in the order sent."""
    log: list[tuple[np.ndarray, np.ndarray]] = []
    attack = JacobianAugmentation(budget=400, seeds=20, epochs=5, min_steps=60, seed=0)
    attack(target, splits[0].x, on_query=lambda x, answer: log.append((x, answer)))
    return np.concatenate([x for x, _ in log]), np.concatenate([a for _, a in log])
