"""DP-SGD: per-example clipping against a batch-of-one reference, accounting, refusals."""

import warnings

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


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    """A linear layer with all weights zero: its gradients are the data's, its noise stands out."""
    module = nn.Linear(n_in, n_out)
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    return module


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_noise_has_the_calibrated_scale():
    # 20,040 parameters: the sample std of the noise is within 0.5% (one standard error) of
    # sigma * C / expected batch, so a 5% tolerance fails for any miscalibration of 10% or more.
    module = _zero_linear(500, 40)
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


# ---------------------------------------------------------------------------------------------
# Known answers for what decides the noise scale and the reported epsilon (mutation testing).


def _exact(exc_info) -> str:
    return str(exc_info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": -1.0}, "epsilon must be a positive number, got -1.0"),
        ({"epsilon": True}, "epsilon must be a positive number, got True"),
        ({"epsilon": float("inf")}, "epsilon must be a positive number, got inf"),
        ({"epsilon": "1"}, "epsilon must be a positive number, got '1'"),
        ({"epsilon": 1.0, "delta": 0.0}, "delta must be in (0, 1), got 0.0"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta must be in (0, 1), got 1.0"),
        ({"epsilon": 1.0, "delta": 1}, "delta must be in (0, 1), got 1"),
        ({"epsilon": 1.0, "max_grad_norm": -0.5}, "max_grad_norm must be a positive number, got -0.5"),
        (
            {"epsilon": 1.0, "grad_sample_mode": "fast"},
            "grad_sample_mode must be one of auto, hooks, ew, functorch, ghost, got 'fast'",
        ),
        (
            {"epsilon": 1.0, "grad_sample_mode": "ghost", "augmult": 2},
            "augmult > 1 needs per-example gradients: use grad_sample_mode 'hooks' or 'auto'",
        ),
    ],
)
def test_hyperparameter_refusals_say_exactly_why(kwargs, message):
    with pytest.raises(UsageError) as exc:
        DPSGD(**kwargs)
    assert _exact(exc) == message


def test_hyperparameters_at_the_edges_are_accepted_and_kept():
    recipe = DPSGD(epsilon=1, delta=0.999, max_grad_norm=2, augmult=3, grad_sample_mode="hooks")
    assert recipe.get_params() == {
        "epsilon": 1,
        "delta": 0.999,
        "max_grad_norm": 2,
        "augmult": 3,
        "grad_sample_mode": "hooks",
    }
    ghost = DPSGD(epsilon=0.5, grad_sample_mode="ghost")  # ghost with one view is fine
    assert ghost.grad_sample_mode == "ghost" and ghost.augmult == 1
    assert (ghost.delta, ghost.max_grad_norm) == (1e-5, 1.0)


class _Model:
    """What ``check`` reads of a model: its module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


@pytest.mark.parametrize(
    ("delta", "n", "config", "message"),
    [
        (
            0.02,
            50,
            {},
            "delta 0.02 must be below 1/n = 0.02 for the 50 training rows (a delta of 1/n allows "
            "publishing a row outright); use e.g. --delta 0.001",
        ),
        (
            1e-3,
            1500,
            {},
            "delta 0.001 must be below 1/n = 0.000667 for the 1500 training rows (a delta of 1/n "
            "allows publishing a row outright); use e.g. --delta 1e-05",
        ),
        (
            1e-5,
            50,
            {"batch_size": 51},
            "batch size 51 exceeds the 50 training rows; the sampling rate batch_size / n must be at most 1",
        ),
        (
            1e-5,
            50,
            {"batch_size": 8, "early_stopping": 1},
            "dp-sgd does not early-stop: selecting on held-out rows is outside the DP guarantee",
        ),
    ],
)
def test_check_refusals_say_exactly_why(delta, n, config, message):
    recipe = DPSGD(epsilon=1.0, delta=delta)
    with pytest.raises(UsageError) as exc:
        recipe.check(_Model(nn.Linear(4, 2)), n, TrainConfig(**config))
    assert _exact(exc) == message


def test_check_accepts_the_largest_batch_and_a_delta_just_below_one_over_n():
    recipe = DPSGD(epsilon=1.0, delta=0.0199)
    recipe.check(_Model(nn.Linear(4, 2)), 50, TrainConfig(batch_size=50))
    views = DPSGD(epsilon=1.0, augmult=2)
    with pytest.raises(UsageError) as exc:
        views.check(_Model(nn.Linear(4, 2)), 50, TrainConfig(batch_size=8))
    assert _exact(exc) == "augmult averages gradients over augmented views: turn augmentation on (--augment)"
    views.check(_Model(nn.Linear(4, 2)), 50, TrainConfig(batch_size=8, augment=True))


class _LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 4)
        self.head = nn.Linear(4, 2)


def test_unsupported_modules_are_refused_with_their_names():
    recipe = DPSGD(epsilon=1.0)
    config = TrainConfig(batch_size=8)
    net = nn.Sequential(
        nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    )
    with pytest.raises(UsageError) as exc:
        recipe.check(_Model(net), 50, config)
    assert _exact(exc) == (
        "dp-sgd cannot train BatchNorm layers (0, 2, 3): they mix the examples of a batch, so "
        "per-example gradients do not exist; use GroupNorm or LayerNorm, or no normalisation"
    )
    with pytest.raises(UsageError) as exc:
        recipe.check(_Model(nn.BatchNorm2d(3)), 50, config)
    assert "BatchNorm layers ((root))" in _exact(exc)
    with pytest.raises(UsageError) as exc:
        recipe.check(_Model(_LSTMNet()), 50, config)
    opacus_says = (
        "We do not support nn.LSTM because its implementation uses special modules. We have "
        "written a DPLSTM class that is a drop-in replacement which is compatible with our Grad "
        "Sample hooks. Please run the recommended replacement!"
    )
    assert len(opacus_says) > 200  # cut to its first 200 characters
    assert _exact(exc) == "dp-sgd cannot train this model: " + opacus_says[:200]


@pytest.mark.parametrize(
    ("n", "batch_size", "epochs", "plan"),
    [
        (1000, 256, 30, (256 / 1000, 4, 120)),  # 3.9 steps an epoch round to 4
        (1000, 300, 2, (0.3, 3, 6)),  # 3.33 round to 3
        (10, 8, 5, (0.8, 1, 5)),
        (10, 30, 5, (3.0, 1, 5)),  # round(1/3) is 0: at least one step an epoch
    ],
)
def test_plan_is_rate_steps_per_epoch_and_total(n, batch_size, epochs, plan):
    assert DPSGD(epsilon=1.0).plan(n, TrainConfig(batch_size=batch_size, epochs=epochs)) == plan


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_noise_multiplier_is_opacus_prv_calibration_for_the_planned_run():
    from opacus.accountants.utils import get_noise_multiplier

    config = TrainConfig(batch_size=100, epochs=3)
    got = DPSGD(epsilon=2.0, delta=1e-4).noise_multiplier(1000, config)
    want = get_noise_multiplier(
        target_epsilon=2.0, target_delta=1e-4, sample_rate=0.1, steps=30, accountant="prv"
    )
    assert got == want and isinstance(got, float)
    # The PRV accountant's epsilon for that sigma is the budget, within Opacus' search tolerance.
    assert 2.0 - 0.01 <= spent_epsilon([(got, 0.1, 30)], 1e-4) <= 2.0


def test_an_unreachable_epsilon_is_a_usage_error(monkeypatch):
    import opacus.accountants.utils as opacus_utils

    def too_low(**kwargs):
        raise ValueError("The privacy budget is too low.")

    monkeypatch.setattr(opacus_utils, "get_noise_multiplier", too_low)
    with pytest.raises(UsageError) as exc:
        DPSGD(epsilon=0.25).noise_multiplier(1000, TrainConfig(batch_size=100, epochs=1))
    assert _exact(exc) == "cannot reach epsilon 0.25: The privacy budget is too low."
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_spent_epsilon_is_the_named_accountants():
    from opacus.accountants import PRVAccountant, RDPAccountant

    history = [(1.1, 0.05, 40), (0.9, 0.1, 10)]
    prv, rdp = PRVAccountant(), RDPAccountant()
    prv.history = list(history)
    rdp.history = list(history)
    assert spent_epsilon([list(e) for e in history], 1e-5) == prv.get_epsilon(delta=1e-5)
    assert spent_epsilon(history, 1e-5, "rdp") == rdp.get_epsilon(delta=1e-5)
    assert spent_epsilon([], 1e-5, "rdp") == 0.0


def test_quiet_hides_only_opacus_noise():
    from dlsec.train._dp import _quiet

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with _quiet():
            warnings.warn("Full backward hook is firing when gradients are computed", stacklevel=1)
            warnings.warn("Optimal order is the largest alpha. Please consider", stacklevel=1)
            warnings.warn("something else", stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]


def test_bounds_normalisation_per_channel_takes_the_channels_extremes():
    spec = InputSpec(
        shape=(2, 1, 2), num_classes=2, kind="image", lower=(0.0, -2.0, 1.0, 3.0), upper=(4.0, 2.0, 5.0, 9.0)
    )
    out = bounds_normalisation(spec)
    # channel 0: lower min(0, -2) = -2, upper max(4, 2) = 4; channel 1: 1 and 9.
    assert out.mean == (1.0, 5.0) and out.std == (3.0, 4.0)
    assert out.lower == spec.lower and out.upper == spec.upper and out.shape == spec.shape


def _state(recipe, n=40, batch_size=10, epochs=2, seed=7, module=None, label_smoothing=0.0):
    from dlsec.core.loop import make_optimizer
    from dlsec.core.model import WhiteBoxModel
    from dlsec.core.recipe import TrainState
    from dlsec.core.seeding import torch_generator

    torch.manual_seed(0)
    module = module if module is not None else nn.Linear(4, 2)
    spec = InputSpec(shape=(4,), num_classes=2, kind="tabular")
    model = WhiteBoxModel(module, bounds_normalisation(spec), device="cpu")
    config = recipe.default_config(
        batch_size=batch_size, epochs=epochs, seed=seed, label_smoothing=label_smoothing
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 4, generator=gen)
    y = (x[:, 0] > 0.5).long()
    params = [p for p in module.parameters()]
    return TrainState(
        model=model,
        module=module,
        optimizer=make_optimizer(config, params),
        config=config,
        x=x,
        y=y,
        gen=torch_generator(seed),
    )


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_run_stepped_by_hand_uses_and_records_the_calibrated_noise():
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

    recipe = DPSGD(epsilon=3.0, delta=1e-3, max_grad_norm=0.7)
    state = _state(recipe, label_smoothing=0.1)
    original = state.module
    recipe.prepare(state)
    try:
        sigma = get_noise_multiplier(
            target_epsilon=3.0, target_delta=1e-3, sample_rate=0.25, steps=8, accountant="prv"
        )
        extra = state.extra
        assert (extra["sigma"], extra["rate"], extra["per_epoch"], extra["planned_steps"]) == (
            sigma,
            0.25,
            4,
            8,
        )
        opt = state.optimizer
        assert isinstance(opt, DPOptimizer) and opt is extra["dp_step"].optimizer
        assert (opt.noise_multiplier, opt.max_grad_norm, opt.expected_batch_size) == (sigma, 0.7, 10)
        assert opt.generator is extra["noise_gen"]
        assert state.module is extra["dp_step"].gsm and state.module is not original
        assert extra["dp_step"].mode == "hooks"  # a linear model
        assert (extra["dp_step"].label_smoothing, extra["dp_step"].augmult) == (0.1, 1)
        # The noise generator is seeded with the first draw of the run's generator (seed 7).
        first = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(7)))
        assert torch.equal(extra["noise_gen"].get_state(), torch.Generator().manual_seed(first).get_state())
        assert extra["accountant"].history == []

        # Poisson sampling: the masks are rand(n) < q from the run's generator, one per step.
        replay = torch.Generator()
        replay.set_state(state.gen.get_state())
        batches = list(recipe.batches(state))
        want = [(torch.rand(40, generator=replay) < 0.25).nonzero().reshape(-1) for _ in range(4)]
        assert len(batches) == 4
        for got, expected in zip(batches, want, strict=True):
            assert torch.equal(got, expected)

        for idx in batches[:3]:
            recipe.train_step(state, state.x[idx], state.y[idx])
        assert extra["accountant"].history == [(sigma, 0.25, 3)]
        tensors, values = recipe.state_dict(state)
        assert values == {"accountant_history": [[sigma, 0.25, 3]]}
        assert torch.equal(tensors["noise_gen"], extra["noise_gen"].get_state())

        summary = recipe.summary(state)
        rdp = RDPAccountant()
        rdp.history = [(sigma, 0.25, 3)]
        assert summary == {
            "privacy": {
                "mechanism": "dp-sgd (Poisson sampling, per-example clipping, Gaussian noise)",
                "epsilon_spent": spent_epsilon([(sigma, 0.25, 3)], 1e-3),
                "epsilon_target": 3.0,
                "delta": 1e-3,
                "accountant": "prv (Opacus PRVAccountant, Gopi et al. 2021)",
                "epsilon_rdp": rdp.get_epsilon(delta=1e-3),
                "noise_multiplier": sigma,
                "max_grad_norm": 0.7,
                "sample_rate": 0.25,
                "expected_batch_size": 10,
                "steps": 3,
                "planned_steps": 8,
                "training_rows": 40,
                "augmult": 1,
                "grad_sample_mode": "hooks",
                "normalisation": "from the input bounds (data-independent)",
                "noise_rng": "seeded torch generator (reproducible; not a cryptographic RNG)",
            }
        }
        assert 0 < summary["privacy"]["epsilon_spent"] < 3.0

        # Restoring a checkpoint's values gives back the history and the noise generator's state.
        extra["noise_gen"].manual_seed(123)
        extra["accountant"].history = []
        recipe.load_state_dict(state, tensors, values)
        assert extra["accountant"].history == [(sigma, 0.25, 3)]
        assert torch.equal(extra["noise_gen"].get_state(), tensors["noise_gen"])
    finally:
        recipe.cleanup(state)
    assert not original._forward_hooks and not original._backward_hooks
    assert not any(hasattr(p, "grad_sample") for p in original.parameters())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_resumed_history_adds_its_steps_to_the_count():
    recipe = DPSGD(epsilon=3.0, delta=1e-3)
    state = _state(recipe)
    recipe.prepare(state)
    try:
        sigma = state.extra["sigma"]
        recipe.load_state_dict(
            state,
            {"noise_gen": state.extra["noise_gen"].get_state()},
            {"accountant_history": [[sigma, 0.25, 2], [sigma, 0.5, 3]]},
        )
        summary = recipe.summary(state)["privacy"]
        assert summary["steps"] == 5
        assert summary["epsilon_spent"] == spent_epsilon([(sigma, 0.25, 2), (sigma, 0.5, 3)], 1e-3)
    finally:
        recipe.cleanup(state)


def test_cleanup_before_prepare_does_nothing():
    recipe = DPSGD(epsilon=1.0)
    state = _state(recipe)
    recipe.cleanup(state)
    assert state.extra == {}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_augmult_views_are_averaged_and_counted_once(monkeypatch):
    recipe = DPSGD(epsilon=3.0, delta=1e-3, augmult=3)
    state = _state(recipe)
    recipe.prepare(state)
    seen = {}

    def step(forward, x, y):
        seen["x"], seen["y"] = x, y
        return 1.5, 2

    try:
        assert state.extra["dp_step"].augmult == 3
        monkeypatch.setitem(state.extra, "dp_step", step)
        x = torch.arange(8.0).reshape(2, 4)
        assert recipe.train_step(state, x, torch.tensor([0, 1])) == (1.5, 2)
        # Augmentation is off in this config: the views are copies, each example's adjacent.
        assert torch.equal(seen["x"], x.repeat_interleave(3, dim=0))
        assert state.extra["accountant"].history == [(state.extra["sigma"], 0.25, 1)]
    finally:
        monkeypatch.undo()
        recipe.cleanup(state)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_step_returns_the_summed_loss_and_correct_count():
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    with torch.no_grad():
        logits = module(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.2, reduction="sum")
        correct = int((logits.argmax(1) == y).sum())
    for mode in ("hooks", "ghost"):
        torch.manual_seed(0)
        module = nn.Linear(3, 2)
        step = _DPStep(
            module,
            torch.optim.SGD(module.parameters(), lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            expected_batch_size=3,
            mode=mode,
            label_smoothing=0.2,
        )
        try:
            total, right = step(step.gsm, x, y)
        finally:
            step.close()
        assert total == pytest.approx(float(loss), rel=1e-6) and right == correct


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_views_average_loss_and_count_correct_examples_once():
    torch.manual_seed(0)
    module = nn.Linear(2, 2)
    with torch.no_grad():
        module.weight.copy_(torch.eye(2))
        module.bias.zero_()
    # Two examples, two views each: example 0's views both right, example 1's one right.
    x = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    ys = torch.tensor([0, 0, 1, 1])
    want = float(F.cross_entropy(x, ys, reduction="sum")) / 2
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=2,
        mode="hooks",
        augmult=2,
    )
    try:
        total, right = step(step.gsm, x, y)
    finally:
        step.close()
    assert total == pytest.approx(want, rel=1e-6) and right == 3 // 2


def test_dp_step_refuses_ghost_with_views():
    module = nn.Linear(2, 2)
    with pytest.raises(UsageError) as exc:
        _DPStep(
            module,
            torch.optim.SGD(module.parameters(), lr=1.0),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=2,
            mode="ghost",
            augmult=2,
        )
    assert _exact(exc) == "grad_sample_mode 'ghost' gives gradient norms only; augmult > 1 needs hooks"


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("mode", ["ghost", "functorch", "ew"])
def test_an_empty_batch_is_noise_alone_in_every_mode(mode):
    module = _zero_linear(30, 20)
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        noise_multiplier=2.0,
        max_grad_norm=0.5,
        expected_batch_size=4,
        mode=mode,
        generator=torch.Generator().manual_seed(3),
    )
    try:
        assert step(step.gsm, torch.empty(0, 30), torch.empty(0, dtype=torch.long)) == (0.0, 0)
    finally:
        step.close()
    gen = torch.Generator().manual_seed(3)
    draws = [torch.normal(0.0, 2.0 * 0.5, p.shape, generator=gen) for p in module.parameters()]
    for p, d in zip(module.parameters(), draws, strict=True):
        assert torch.equal(p.detach(), -d / 4)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_the_unsafe_recipe_adds_no_noise_and_says_so(caplog):
    import logging

    from dlsec.train._dp import UnsafeNoNoiseDPSGD

    recipe = UnsafeNoNoiseDPSGD(epsilon=2.0, delta=1e-3)
    state = _state(recipe)
    with caplog.at_level(logging.WARNING, logger="dlsec.train._dp"):
        recipe.prepare(state)
    try:
        assert state.extra["dp_step"].optimizer.noise_multiplier == 0.0
        assert state.extra["sigma"] > 0  # still claimed and accounted
    finally:
        recipe.cleanup(state)
    messages = [r.getMessage() for r in caplog.records]
    assert "UnsafeNoNoiseDPSGD: training WITHOUT noise while claiming epsilon 2" in messages
    assert (
        "dp-sgd: the noise comes from a seeded torch generator (reproducible, not a cryptographic RNG)"
        in messages
    )


def test_auto_mode_counts_only_layers_with_parameters():
    one = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Tanh())
    assert DPSGD(epsilon=1.0).resolve_mode(one) == "hooks"
    assert DPSGD(epsilon=1.0, augmult=2).resolve_mode(nn.Linear(4, 2)) == "hooks"
    assert DPSGD(epsilon=1.0, grad_sample_mode="functorch").resolve_mode(nn.Linear(4, 2)) == "functorch"


def test_opacus_warnings_are_hidden_during_training_only():
    recipe = DPSGD(epsilon=3.0, delta=1e-3)
    state = _state(recipe)
    quiet = {"Full backward hook is firing", "Optimal order is the largest alpha"}

    def hidden():
        return [f[1].pattern for f in warnings.filters if f[0] == "ignore" and f[1] is not None]

    with warnings.catch_warnings():
        before = hidden()
        assert not quiet & set(before)
        recipe.prepare(state)
        try:
            assert quiet <= set(hidden())
        finally:
            recipe.cleanup(state)
        # Closed with the run (imports in between may add filters of their own, not these).
        assert not quiet & set(hidden())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_the_noise_generator_lives_on_the_models_device(monkeypatch):
    # On a GPU, Opacus draws the noise on the parameters' device: a CPU generator would fail
    # there. Checked here through the device asked for (CPU tests cannot see the difference).
    import dlsec.train._dp as dp

    asked = []
    real = dp.torch_generator

    missing = object()

    def spy(seed, device=missing):
        asked.append(device)
        return real(seed) if device is missing else real(seed, device=device)

    monkeypatch.setattr(dp, "torch_generator", spy)
    recipe = DPSGD(epsilon=3.0, delta=1e-3)
    state = _state(recipe)
    recipe.prepare(state)
    recipe.cleanup(state)
    assert asked == [state.model.device] and isinstance(asked[0], torch.device)
