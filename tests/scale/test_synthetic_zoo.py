"""The generated CIFAR-shaped dataset and the zoo's models of real size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.core import load_dataset
from dlsec.core.synthetic import SYNTHETIC_CIFAR_SIZE, synthetic_cifar
from dlsec.errors import DataError, ModelLoadError
from dlsec.zoo import ZOO, ZooEntry, load_zoo_model, register_zoo, zoo_card, zoo_path


def test_builtin_synthetic_cifar_is_seeded_balanced_and_bounded() -> None:
    data = load_dataset("builtin:synthetic-cifar")
    again = load_dataset("builtin:synthetic-cifar")
    assert data.x.shape == (SYNTHETIC_CIFAR_SIZE, 3, 32, 32) and data.x.dtype == np.float32
    assert data.sha256 == again.sha256
    assert np.bincount(data.y, minlength=10).tolist() == [SYNTHETIC_CIFAR_SIZE // 10] * 10
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    assert synthetic_cifar(n=50, seed=1).sha256 != synthetic_cifar(n=50, seed=0).sha256


def test_classes_differ_more_than_examples_within_a_class() -> None:
    # Learnable: each class mean is closer to its own examples than to other classes' means.
    data = synthetic_cifar(n=500, seed=0)
    flat = data.x.reshape(len(data), -1)
    means = np.stack([flat[data.y == c].mean(0) for c in range(10)])
    nearest = ((flat[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == data.y).mean() > 0.9


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 10, "noise": -1.0}])
def test_bad_sizes_raise_data_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(DataError):
        synthetic_cifar(**kwargs)  # type: ignore[arg-type]


def test_the_zoo_names_both_models_of_real_size() -> None:
    assert ZOO["cifar-resnet18"].arch == "resnet18" and ZOO["cifar-vit-tiny"].arch == "vit-tiny"
    for name in ("cifar-resnet18", "cifar-vit-tiny"):
        assert ZOO[name].dataset == "builtin:synthetic-cifar" and ZOO[name].epochs == 1


@pytest.fixture
def tiny_entry() -> Iterator[ZooEntry]:
    """A ResNet-18 of width 4 on the same data: the real entry's code path at a test's cost."""
    entry = register_zoo(
        ZooEntry(
            name="test-cifar-resnet18-tiny",
            dataset="builtin:synthetic-cifar",
            arch="resnet18",
            arch_kwargs={"in_channels": 3, "num_classes": 10, "width": 4},
            epochs=1,
            batch_size=64,
            seed=3,
        )
    )
    yield entry
    ZOO.pop(entry.name)


@pytest.mark.slow
def test_zoo_training_is_seeded_and_loads_as_safetensors(tiny_entry: ZooEntry, tmp_path: Path) -> None:
    first = zoo_card(tiny_entry.name, home=tmp_path / "a", device="cpu")
    second = zoo_card(tiny_entry.name, home=tmp_path / "b", device="cpu")
    assert first.weights_sha256 == second.weights_sha256  # same seed, same weights, bit for bit
    model = load_zoo_model(tiny_entry.name, home=tmp_path / "a", device="cpu")
    assert model.spec.shape == (3, 32, 32) and model.spec.num_classes == 10
    test = load_dataset("builtin:synthetic-cifar").split(test_size=0.25, seed=0)[1]
    logits = model.logits(torch.from_numpy(test.x[:8]))
    assert logits.shape == (8, 10) and bool(torch.isfinite(logits).all())
    # A tampered cache is retrained, not loaded: the retrained weights are the seeded ones again.
    weights = zoo_path(tiny_entry.name, home=tmp_path / "b") / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert zoo_card(tiny_entry.name, home=tmp_path / "b", device="cpu").weights_sha256 == first.weights_sha256


def test_unknown_zoo_name_is_a_one_line_error() -> None:
    with pytest.raises(ModelLoadError, match="unknown zoo model"):
        load_zoo_model("cifar-resnet19")
