"""DP-SGD: per-example clipping against a batch-of-one reference, accounting, refusals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlsec.core import Dataset, InputSpec, load_dataset
from dlsec.errors import UsageError
from dlsec.train import DPSGD, TrainConfig, train
from dlsec.train._dp import _DPStep, bounds_normalisation, spent_epsilon


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.GroupNorm(1, 2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(2 * 6 * 6, 3),
    )


def _reference(module, x, y, *, clip, views, expected):
    """Sum of per-example gradients, each averaged over its views then clipped, over ``expected``."""
    params = [p for p in module.parameters()]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(y)):
        per_view = []
        for v in range(views):
            row = x[i * views + v : i * views + v + 1]
            loss = F.cross_entropy(module(row), y[i : i + 1])
            per_view.append(torch.autograd.grad(loss, params))
        grads = [torch.stack(g).mean(0) for g in zip(*per_view, strict=True)]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        clipped = [g * factor for g in grads]
        norms.append(float(torch.sqrt(sum((g**2).sum() for g in clipped))))
        total = [t + c for t, c in zip(total, clipped, strict=True)]
    return [t / expected for t in total], norms


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(
    ("mode", "views"), [("hooks", 1), ("ghost", 1), ("functorch", 1), ("ew", 1), ("hooks", 3)]
)
def test_clipped_update_matches_the_batch_of_one_reference(mode, views):
    gen = torch.Generator().manual_seed(1)
    n, clip, expected = 6, 0.05, 8
    x = torch.rand(n * views, 1, 8, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    reference_module = _net()
    update, norms = _reference(reference_module, x, y, clip=clip, views=views, expected=expected)
    assert max(norms) <= clip * (1 + 1e-5)
    assert min(norms) == pytest.approx(clip, rel=1e-4)  # the clip bites: the test can fail

    module = _net()
    before = [p.detach().clone() for p in module.parameters()]
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=expected,
        mode=mode,
        augmult=views,
    )
    try:
        step(step.gsm, x, y)
    finally:
        step.close()
    for old, new, want in zip(before, module.parameters(), update, strict=True):
        torch.testing.assert_close(old - new.detach(), want, atol=1e-6, rtol=1e-4)


def test_auto_mode_picks_what_was_measured_fastest():
    linear, mlp = nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    assert DPSGD(epsilon=1.0).resolve_mode(linear) == "hooks"
    assert DPSGD(epsilon=1.0).resolve_mode(mlp) == "ghost"
    assert DPSGD(epsilon=1.0).resolve_mode(_net()) == "ghost"
    assert DPSGD(epsilon=1.0, augmult=2).resolve_mode(_net()) == "hooks"  # needs the gradients
    assert DPSGD(epsilon=1.0, grad_sample_mode="ew").resolve_mode(_net()) == "ew"


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_noise_has_the_calibrated_scale():
    # 20,040 parameters: the sample std of the noise is within 0.5% (one standard error) of
    # sigma * C / expected batch, so a 5% tolerance fails for any miscalibration of 10% or more.
    module = nn.Linear(500, 40)
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        noise_multiplier=3.0,
        max_grad_norm=0.5,
        expected_batch_size=10,
        mode="hooks",
        generator=torch.Generator().manual_seed(0),
    )
    try:
        # An empty Poisson batch is still a step: noise alone, std sigma * C / expected.
        step(step.gsm, torch.empty(0, 500), torch.empty(0, dtype=torch.long))
    finally:
        step.close()
    values = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert values.abs().max() > 0
    assert float(values.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(values.std()) == pytest.approx(3.0 * 0.5 / 10, rel=0.05)
    # Exactly: the step (lr 1 from zero) is minus the seeded generator's N(0, sigma * C) draws,
    # parameter by parameter, over the expected batch. Any other scale or source fails here.
    gen = torch.Generator().manual_seed(0)
    draws = [torch.normal(0.0, 3.0 * 0.5, p.shape, generator=gen) for p in module.parameters()]
    assert torch.equal(values, torch.cat([-d.reshape(-1) / 10 for d in draws]))


def test_recorded_epsilon_is_the_accountants_and_within_budget():
    from opacus.accountants import PRVAccountant

    data = load_dataset("builtin:breast-cancer")
    recipe = DPSGD(epsilon=2.0, delta=1e-5)
    result = train(data, recipe=recipe, config=recipe.default_config(epochs=3, batch_size=64), device="cpu")
    privacy = result.privacy
    n = result.dataset["split"]["train_rows"]
    assert privacy["sample_rate"] == pytest.approx(64 / n)
    assert privacy["steps"] == privacy["planned_steps"] == 3 * round(n / 64)
    accountant = PRVAccountant()
    accountant.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert privacy["epsilon_spent"] == accountant.get_epsilon(delta=1e-5)
    assert 2.0 - 0.05 <= privacy["epsilon_spent"] <= 2.0  # calibrated: spends the budget, no more
    assert privacy["epsilon_rdp"] > privacy["epsilon_spent"]  # RDP overstates it
    assert result.metrics["epsilon_spent"] == privacy["epsilon_spent"]
    card = result.card()
    assert card["privacy"]["accountant"].startswith("prv") and card["recipe"] == "dp-sgd"
    assert card["input_spec"]["mean"] == [0.5] * 30  # from the bounds, not from the rows


def test_spent_epsilon_grows_with_steps():
    small = spent_epsilon([(1.0, 0.1, 10)], 1e-5)
    large = spent_epsilon([(1.0, 0.1, 100)], 1e-5)
    assert 0 < small < large
    assert spent_epsilon([], 1e-5) == 0.0


def test_bounds_normalisation_ignores_the_data():
    spec = InputSpec(
        shape=(3,), num_classes=2, kind="tabular", lower=(0.0, -1.0, 10.0), upper=(1.0, 1.0, 20.0)
    )
    out = bounds_normalisation(spec)
    assert out.mean == (0.5, 0.0, 15.0) and out.std == (0.5, 1.0, 5.0)
    image = bounds_normalisation(InputSpec(shape=(2, 4, 4), num_classes=3))
    assert image.mean == (0.5, 0.5) and image.std == (0.5, 0.5)


def _tiny_data(n=50):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    return Dataset(x, y, InputSpec(shape=(4,), num_classes=2, kind="tabular"), "tiny")


@pytest.mark.parametrize(
    ("kwargs", "config", "fragment"),
    [
        ({"epsilon": 1.0, "delta": 0.05}, {}, "below 1/n"),
        ({"epsilon": 1.0}, {"batch_size": 1000}, "exceeds"),
        ({"epsilon": 1.0}, {"early_stopping": 2}, "early-stop"),
        ({"epsilon": 1.0, "augmult": 2}, {}, "augmentation"),
    ],
)
def test_configurations_dp_cannot_honour_are_refused(kwargs, config, fragment):
    recipe = DPSGD(**kwargs)
    with pytest.raises(UsageError, match=fragment):
        train(
            _tiny_data(),
            recipe=recipe,
            config=recipe.default_config(**{"batch_size": 8, **config}),
            device="cpu",
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": -1.0},
        {"epsilon": 0.0},
        {"epsilon": float("nan")},
        {"epsilon": 1.0, "delta": 1.0},
        {"epsilon": 1.0, "max_grad_norm": 0.0},
        {"epsilon": 1.0, "augmult": 0},
        {"epsilon": 1.0, "grad_sample_mode": "fast"},
        {"epsilon": 1.0, "grad_sample_mode": "ghost", "augmult": 2},
    ],
)
def test_bad_hyperparameters_are_refused(kwargs):
    with pytest.raises(UsageError):
        DPSGD(**kwargs)


def test_batchnorm_is_refused_with_a_fix():
    recipe = DPSGD(epsilon=1.0)
    config = recipe.default_config(batch_size=8, epochs=1)
    with pytest.raises(UsageError, match="GroupNorm"):
        train(
            _tiny_data(), recipe=recipe, arch="tests.train.test_dp:batchnorm_net", config=config, device="cpu"
        )


def batchnorm_net(in_features: int = 4, num_classes: int = 2) -> nn.Module:
    """A model DP-SGD must refuse (used by the CLI test too)."""
    return nn.Sequential(nn.Linear(in_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes))


def test_dp_default_model_is_linear_and_sgd():
    recipe = DPSGD(epsilon=8.0)
    config = recipe.default_config(epochs=2, batch_size=16)
    assert config.optimizer == "sgd"
    result = train(_tiny_data(200), recipe=recipe, config=config, device="cpu")
    assert result.arch == "mlp" and result.arch_kwargs["hidden"] == []
    assert isinstance(TrainConfig(), TrainConfig)
