"""Shared fixtures: the digits split, a BadNets-poisoned training set and the model trained on it."""

from __future__ import annotations

import pytest

from dlsec.attacks.backdoor import BadNets
from dlsec.attacks.poisoning import PoisonResult, train_victim
from dlsec.core import Dataset, WhiteBoxModel, load_dataset


@pytest.fixture(scope="session")
def digits_split() -> tuple[Dataset, Dataset]:
    return load_dataset("builtin:digits").split(test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def badnets(digits_split: tuple[Dataset, Dataset]) -> PoisonResult:
    return BadNets(rate=0.1, target=0, seed=0).poison(digits_split[0])


@pytest.fixture(scope="session")
def badnets_model(badnets: PoisonResult) -> WhiteBoxModel:
    return train_victim(badnets.data, epochs=30, seed=0, device="cpu")
