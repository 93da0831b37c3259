import numpy as np
import pytest
import torch

from dlsec.core import Dataset, InputSpec, WhiteBoxModel, evaluate, load_dataset
from dlsec.errors import UsageError
from dlsec.train import TrainConfig, fit, fit_normalisation, train


def _blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(0.5 + (2 * y[:, None] - 1) * 0.2 + rng.normal(0, 0.05, (n, 2)), 0, 1).astype(np.float32)
    return Dataset(x, y.astype(np.int64), InputSpec(shape=(2,), num_classes=2, kind="tabular"), "blobs")


def test_fit_learns_a_separable_problem_and_restores_flags():
    data = _blobs()
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    module.eval()
    model = WhiteBoxModel(module, fit_normalisation(data), device="cpu")
    history = fit(model, data, TrainConfig(epochs=15, lr=0.05, seed=1))
    assert history[-1]["loss"] < history[0]["loss"]
    assert evaluate(model, data).accuracy == 1.0
    assert not module.training


def test_fit_does_not_disturb_the_global_rng():
    data = _blobs()
    model = WhiteBoxModel(torch.nn.Linear(2, 2), data.spec, device="cpu")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, data, TrainConfig(epochs=1))
    torch.testing.assert_close(torch.rand(3), expected)


def test_normalisation_matches_hand_computed_statistics():
    data = _blobs()
    spec = fit_normalisation(data)
    np.testing.assert_allclose(spec.mean, data.x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(spec.std, data.x.std(axis=0), rtol=1e-4)
    img = load_dataset("builtin:digits")
    ispec = fit_normalisation(img)
    assert len(ispec.mean) == 1
    assert ispec.mean[0] == pytest.approx(float(img.x.mean()), rel=1e-6)


def test_train_is_deterministic_and_records_everything():
    data = load_dataset("builtin:breast-cancer")
    a = train(data, config=TrainConfig(epochs=3, seed=5), device="cpu")
    b = train(data, config=TrainConfig(epochs=3, seed=5), device="cpu")
    for va, vb in zip(
        a.model.module.state_dict().values(), b.model.module.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb)
    card = a.card()
    assert card["seed"] == 5 and card["dataset"]["sha256"] == data.sha256
    assert card["dataset"]["split"]["test_rows"] == 143
    assert 0.0 <= card["metrics"]["clean_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"label_smoothing": 1.0}, {"weight_decay": -1.0}],
)
def test_bad_hyperparameters_are_refused(kwargs):
    with pytest.raises(UsageError):
        TrainConfig(**kwargs)


def test_architecture_with_wrong_output_is_refused():
    with pytest.raises(UsageError, match="logits"):
        train(_blobs(), arch="mlp", arch_kwargs={"in_features": 2, "num_classes": 5}, device="cpu")
