"""DP-SGD known answers that run in seconds: a linear model whose per-example gradients are
written out by hand (softmax minus the smoothed one-hot, times the normalised input), clipped,
summed, noised from the replayed generator and averaged over the expected batch.

The calibration (Opacus' ``get_noise_multiplier``, 4 s under PRV) is replaced by a recorder that
returns a fixed multiplier, so a prepared run costs a fraction of a second: these are the tests
mutation testing runs against the step, the set-up and the records
(``benchmarks/mutation.py --only dp --tests tests/train/test_dp_known.py``). That the
calibration itself is Opacus' PRV answer for the planned run is checked in ``test_dp.py``.
"""

import logging
import warnings

import numpy as np
import opacus.accountants
import opacus.accountants.utils
import opacus.grad_sample
import opacus.optimizers
import opacus.validators
import pytest
import torch
from torch import nn

from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel
from dlsec.core.recipe import TrainState
from dlsec.core.seeding import torch_generator
from dlsec.core.spec import InputSpec
from dlsec.errors import UsageError
from dlsec.train import DPSGD
from dlsec.train._dp import UnsafeNoNoiseDPSGD, _DPStep, bounds_normalisation

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

SIGMA = 1.25  # the multiplier the recorded calibration hands back
W0 = [[0.5, -1.0, 0.25, 0.0], [-0.5, 0.75, 1.0, -0.25]]
B0 = [0.1, -0.2]


@pytest.fixture
def calibration(monkeypatch):
    """Opacus' calibration replaced by a recorder of its arguments that returns ``SIGMA``."""
    calls = []

    def record(**kwargs):
        calls.append(kwargs)
        return SIGMA

    monkeypatch.setattr(opacus.accountants.utils, "get_noise_multiplier", record)
    return calls


def _linear() -> nn.Linear:
    module = nn.Linear(4, 2)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(W0))
        module.bias.copy_(torch.tensor(B0))
    return module


def _state(recipe, *, n=40, batch_size=10, epochs=2, seed=7, lr=0.5, label_smoothing=0.0, augment=False):
    module = _linear()
    spec = InputSpec(shape=(4,), num_classes=2, kind="tabular")  # bounds [0, 1]: x -> 2x - 1
    model = WhiteBoxModel(module, bounds_normalisation(spec), device="cpu")
    config = recipe.default_config(
        batch_size=batch_size, epochs=epochs, seed=seed, label_smoothing=label_smoothing, augment=augment
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 4, generator=gen)
    y = (x[:, 0] > 0.5).long()
    return TrainState(
        model=model,
        module=module,
        optimizer=torch.optim.SGD(module.parameters(), lr=lr),
        config=config,
        x=x,
        y=y,
        gen=torch_generator(seed),
    )


def _by_hand(w, b, x, y, *, views=1, clip, smoothing=0.0):
    """Per-example gradients of the mean cross-entropy's terms, views averaged, then clipped.

    Returns the clipped sums (weight, bias), each example's norm before clipping, the summed
    loss (views averaged) and the correct views. ``x`` is already normalised.
    """
    w, b, x = (np.asarray(a, dtype=np.float64) for a in (w, b, x))
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ys = np.repeat(np.asarray(y), views)
    q = np.full_like(p, smoothing / 2)
    q[np.arange(len(ys)), ys] += 1 - smoothing
    d = p - q
    g_w = (d[:, :, None] * x[:, None, :]).reshape(len(y), views, 2, 4).mean(1)
    g_b = d.reshape(len(y), views, 2).mean(1)
    norms = np.sqrt((g_w**2).sum((1, 2)) + (g_b**2).sum(1))
    factor = np.minimum(1.0, clip / (norms + 1e-6))
    loss = float(-(q * np.log(p)).sum()) / views
    correct = int((z.argmax(1) == ys).sum())
    return (g_w * factor[:, None, None]).sum(0), (g_b * factor[:, None]).sum(0), norms, loss, correct


def _noise(gen_state, std):
    """The noise Opacus draws for the weight then the bias, replayed from a generator's state."""
    g = torch.Generator()
    g.set_state(gen_state)
    return [torch.normal(0.0, std, shape, generator=g) for shape in ((2, 4), (2,))]


def test_default_arch_and_input_spec_are_a_linear_model_on_bounds():
    spec = InputSpec(shape=(3,), num_classes=4, kind="tabular", lower=(0.0, -1.0, 2.0), upper=(2.0, 1.0, 6.0))
    assert DPSGD(epsilon=1.0).default_arch(spec) == (
        "mlp",
        {"in_features": 3, "num_classes": 4, "hidden": []},
    )
    data = Dataset(np.array([[1.0, 0.0, 3.0]] * 2, np.float32), np.zeros(2, np.int64), spec, "known")
    out = DPSGD(epsilon=1.0).input_spec(data)
    assert out.mean == (1.0, 0.0, 4.0) and out.std == (1.0, 1.0, 2.0)


def test_a_prepared_run_clips_noises_and_records_by_hand(calibration):
    recipe = DPSGD(epsilon=3.0, delta=1e-3, max_grad_norm=0.7)
    state = _state(recipe, label_smoothing=0.1)
    original = state.module
    plain = state.optimizer
    with warnings.catch_warnings():
        before = list(warnings.filters)
        recipe.prepare(state)
        try:
            hidden = {(f[0], f[1].pattern) for f in warnings.filters[:2]}  # put first
            assert hidden == {
                ("ignore", "Full backward hook is firing"),
                ("ignore", "Optimal order is the largest alpha"),
            }
            assert calibration == [
                {
                    "target_epsilon": 3.0,
                    "target_delta": 1e-3,
                    "sample_rate": 0.25,
                    "steps": 8,
                    "accountant": "prv",
                }
            ]
            extra = state.extra
            step = extra["dp_step"]
            assert (extra["sigma"], extra["rate"], extra["per_epoch"], extra["planned_steps"]) == (
                SIGMA,
                0.25,
                4,
                8,
            )
            assert isinstance(extra["accountant"], opacus.accountants.PRVAccountant)
            assert extra["accountant"].history == []
            assert isinstance(state.optimizer, opacus.optimizers.DPOptimizer)
            assert state.optimizer is step.optimizer and state.optimizer.original_optimizer is plain
            assert state.module is step.gsm and isinstance(step.gsm, opacus.grad_sample.GradSampleModule)
            assert (step.mode, step.augmult, step.label_smoothing) == ("hooks", 1, 0.1)
            opt = state.optimizer
            assert (opt.noise_multiplier, opt.max_grad_norm, opt.expected_batch_size) == (SIGMA, 0.7, 10)
            assert opt.generator is extra["noise_gen"]
            first = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(7)))
            assert torch.equal(
                extra["noise_gen"].get_state(), torch.Generator().manual_seed(first).get_state()
            )

            # Poisson sampling replayed: rand(40) < 0.25 from the run's generator, four times.
            replay = torch.Generator()
            replay.set_state(state.gen.get_state())
            batches = list(recipe.batches(state))
            assert len(batches) == 4
            for got in batches:
                want = (torch.rand(40, generator=replay) < 0.25).nonzero().reshape(-1)
                assert torch.equal(got, want) and got.dtype == torch.int64

            for k, idx in enumerate(batches[:2]):
                x, y = state.x[idx], state.y[idx]
                w, b = original.weight.detach().clone(), original.bias.detach().clone()
                noise = _noise(extra["noise_gen"].get_state(), SIGMA * 0.7)
                g_w, g_b, norms, loss, correct = _by_hand(w, b, 2 * x - 1, y, clip=0.7, smoothing=0.1)
                if k == 0:
                    assert len(y) == 8 and min(norms) < 0.7 < max(norms)  # some clipped, some not
                total, right = recipe.train_step(state, x, y)
                assert total == pytest.approx(loss, rel=1e-5) and right == correct
                want_w = w - 0.5 * (torch.tensor(g_w, dtype=torch.float32) + noise[0]) / 10
                want_b = b - 0.5 * (torch.tensor(g_b, dtype=torch.float32) + noise[1]) / 10
                torch.testing.assert_close(original.weight.detach(), want_w, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(original.bias.detach(), want_b, atol=1e-6, rtol=1e-5)
                assert extra["accountant"].history == [(SIGMA, 0.25, k + 1)]

            tensors, values = recipe.state_dict(state)
            assert values == {"accountant_history": [[SIGMA, 0.25, 2]]}
            assert list(tensors) == ["noise_gen"]
            assert torch.equal(tensors["noise_gen"], extra["noise_gen"].get_state())

            # A checkpoint restored: two runs' histories, the generator's state put back.
            saved = extra["noise_gen"].get_state()
            extra["noise_gen"].manual_seed(123)
            recipe.load_state_dict(
                state, {"noise_gen": saved}, {"accountant_history": [[SIGMA, 0.25, 2], [2.0, 0.5, 3]]}
            )
            assert extra["accountant"].history == [(SIGMA, 0.25, 2), (2.0, 0.5, 3)]
            assert all(type(entry) is tuple for entry in extra["accountant"].history)
            assert torch.equal(extra["noise_gen"].get_state(), saved)
        finally:
            recipe.cleanup(state)
        assert warnings.filters == before  # the filters leave with the run
    assert not original._forward_hooks and not original._backward_hooks
    assert not original._forward_pre_hooks
    assert not any(hasattr(p, "grad_sample") for p in original.parameters())


def test_the_summary_is_the_accountants_word_for_word(calibration):
    recipe = DPSGD(epsilon=3.0, delta=1e-3, max_grad_norm=0.7)
    state = _state(recipe)
    recipe.prepare(state)
    try:
        # A resumed run: two histories, five steps (the figures are the accountants', built here).
        recipe.load_state_dict(
            state,
            {"noise_gen": state.extra["noise_gen"].get_state()},
            {"accountant_history": [[SIGMA, 0.25, 2], [2.0, 0.5, 3]]},
        )
        history = [(SIGMA, 0.25, 2), (2.0, 0.5, 3)]
        prv, rdp = opacus.accountants.PRVAccountant(), opacus.accountants.RDPAccountant()
        prv.history = rdp.history = history
        assert recipe.summary(state) == {
            "privacy": {
                "mechanism": "dp-sgd (Poisson sampling, per-example clipping, Gaussian noise)",
                "epsilon_spent": prv.get_epsilon(delta=1e-3),
                "epsilon_target": 3.0,
                "delta": 1e-3,
                "accountant": "prv (Opacus PRVAccountant, Gopi et al. 2021)",
                "epsilon_rdp": rdp.get_epsilon(delta=1e-3),
                "noise_multiplier": SIGMA,
                "max_grad_norm": 0.7,
                "sample_rate": 0.25,
                "expected_batch_size": 10,
                "steps": 5,
                "planned_steps": 8,
                "training_rows": 40,
                "augmult": 1,
                "grad_sample_mode": "hooks",
                "normalisation": "from the input bounds (data-independent)",
                "noise_rng": "seeded torch generator (reproducible; not a cryptographic RNG)",
            }
        }
    finally:
        recipe.cleanup(state)


@pytest.mark.parametrize(
    ("augmult", "shift", "counts"),
    # (views right, examples counted): 5 of 18 views right count 1 example (a remainder dropped).
    [(2, [0.1, -0.2], (3, 1)), (3, [0.0, 0.1, -0.2], (5, 1))],
)
def test_augmented_views_are_averaged_before_clipping(calibration, augmult, shift, counts):
    recipe = DPSGD(epsilon=3.0, delta=1e-3, max_grad_norm=1.5, augmult=augmult)
    state = _state(recipe, augment=True)
    offsets = torch.tensor(shift)
    state.augment = lambda v: v + offsets.repeat(len(v) // augmult)[:, None]  # views told apart
    original = state.module
    recipe.prepare(state)
    try:
        step = state.extra["dp_step"]
        assert (step.mode, step.augmult) == ("hooks", augmult)
        x, y = state.x[:6], state.y[:6]
        views = x.repeat_interleave(augmult, dim=0) + offsets.repeat(6)[:, None]
        w, b = original.weight.detach().clone(), original.bias.detach().clone()
        noise = _noise(state.extra["noise_gen"].get_state(), SIGMA * 1.5)
        g_w, g_b, norms, loss, correct = _by_hand(w, b, 2 * views - 1, y, views=augmult, clip=1.5)
        assert min(norms) < 1.5 < max(norms)
        total, right = recipe.train_step(state, x, y)
        assert total == pytest.approx(loss, rel=1e-5) and right == correct // augmult
        assert type(total) is float and type(right) is int and (correct, right) == counts
        want_w = w - 0.5 * (torch.tensor(g_w, dtype=torch.float32) + noise[0]) / 10
        want_b = b - 0.5 * (torch.tensor(g_b, dtype=torch.float32) + noise[1]) / 10
        torch.testing.assert_close(original.weight.detach(), want_w, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(original.bias.detach(), want_b, atol=1e-6, rtol=1e-5)
        assert state.extra["accountant"].history == [(SIGMA, 0.25, 1)]
    finally:
        recipe.cleanup(state)


def test_the_unsafe_recipe_steps_on_the_clipped_sum_alone(calibration, caplog):
    recipe = UnsafeNoNoiseDPSGD(epsilon=2.0, delta=1e-3, max_grad_norm=0.7)
    state = _state(recipe)
    original = state.module
    with caplog.at_level(logging.WARNING, logger="dlsec.train._dp"):
        recipe.prepare(state)
    try:
        assert state.extra["sigma"] == SIGMA and state.optimizer.noise_multiplier == 0.0
        x, y = state.x[:6], state.y[:6]
        w, b = original.weight.detach().clone(), original.bias.detach().clone()
        g_w, g_b, *_ = _by_hand(w, b, 2 * x - 1, y, clip=0.7)
        recipe.train_step(state, x, y)
        want_w = w - 0.5 * torch.tensor(g_w, dtype=torch.float32) / 10
        torch.testing.assert_close(original.weight.detach(), want_w, atol=1e-6, rtol=1e-5)
        assert state.extra["accountant"].history == [(SIGMA, 0.25, 1)]
    finally:
        recipe.cleanup(state)
    assert [r.getMessage() for r in caplog.records] == [
        "dp-sgd: the noise comes from a seeded torch generator (reproducible, not a cryptographic RNG)",
        "UnsafeNoNoiseDPSGD: training WITHOUT noise while claiming epsilon 2",
    ]


def test_the_noise_generator_is_asked_for_on_the_models_device(calibration, monkeypatch):
    import dlsec.train._dp as dp

    asked = []
    real = dp.torch_generator

    def spy(seed, *args, **kwargs):
        asked.append((args, kwargs))
        return real(seed, *args, **kwargs)

    monkeypatch.setattr(dp, "torch_generator", spy)
    recipe = DPSGD(epsilon=3.0, delta=1e-3)
    state = _state(recipe)
    recipe.prepare(state)
    recipe.cleanup(state)
    assert asked == [((), {"device": state.model.device})]


@pytest.mark.parametrize("mode", ["hooks", "ew", "functorch", "ghost"])
def test_one_step_of_a_linear_model_by_hand_in_every_mode(mode):
    x = torch.tensor([[0.9, 0.1, 0.4, 0.6], [0.2, 0.8, 0.5, 0.3], [1.0, 1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    module = _linear()
    gen = torch.Generator().manual_seed(11)
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=2.0),
        noise_multiplier=0.5,
        max_grad_norm=0.4,
        expected_batch_size=5,
        mode=mode,
        generator=gen,
        label_smoothing=0.2,
    )
    noise = _noise(gen.get_state(), 0.5 * 0.4)
    g_w, g_b, norms, loss, correct = _by_hand(W0, B0, x, y, clip=0.4, smoothing=0.2)
    assert min(norms) < 0.4 < max(norms)
    try:
        total, right = step(step.gsm, x, y)
    finally:
        step.close()
    assert total == pytest.approx(loss, rel=1e-5) and right == correct
    assert type(total) is float and type(right) is int
    want_w = torch.tensor(W0) - 2.0 * (torch.tensor(g_w, dtype=torch.float32) + noise[0]) / 5
    want_b = torch.tensor(B0) - 2.0 * (torch.tensor(g_b, dtype=torch.float32) + noise[1]) / 5
    torch.testing.assert_close(module.weight.detach(), want_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(module.bias.detach(), want_b, atol=1e-6, rtol=1e-5)
    assert not module._forward_hooks and not module._backward_hooks
    assert not any(hasattr(p, "grad_sample") for p in module.parameters())


def test_poisson_sampling_takes_rows_strictly_below_the_rate():
    from types import SimpleNamespace

    # The rate is the first row's own draw: ``rand < q`` leaves that row out (``<=`` would not).
    q = float(torch.rand(6, generator=torch.Generator().manual_seed(5))[0])
    state = SimpleNamespace(
        n=6, gen=torch.Generator().manual_seed(5), x=torch.empty(0), extra={"rate": q, "per_epoch": 3}
    )
    replay = torch.Generator().manual_seed(5)
    got = list(DPSGD(epsilon=1.0).batches(state))
    want = [(torch.rand(6, generator=replay) < q).nonzero().reshape(-1) for _ in range(3)]
    assert len(got) == 3 and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert 0 not in got[0].tolist() and len(got[0]) > 0
    # The indices live on the data's device (shape and device only on the meta device).
    state.gen, state.x = torch.Generator().manual_seed(5), torch.empty(0, device="meta")
    assert all(idx.device.type == "meta" for idx in DPSGD(epsilon=1.0).batches(state))


def test_bounds_normalisation_of_a_two_dimensional_table_is_per_feature():
    spec = InputSpec(
        shape=(2, 2), num_classes=2, kind="tabular", lower=(0.0, 1.0, 2.0, 3.0), upper=(1.0, 3.0, 5.0, 7.0)
    )
    out = bounds_normalisation(spec)
    assert out.mean == (0.5, 2.0, 3.5, 5.0) and out.std == (0.5, 1.0, 1.5, 2.0)


@pytest.mark.parametrize("augmult", [0, 1.5, True])
def test_a_bad_augmult_is_refused_by_name(augmult):
    with pytest.raises(UsageError) as exc:
        DPSGD(epsilon=1.0, augmult=augmult)
    assert str(exc.value) == f"augmult must be a positive integer, got {augmult!r}"


@pytest.mark.parametrize(
    ("mode", "gsm", "optimizer", "functorch"),
    [
        ("hooks", opacus.grad_sample.GradSampleModule, opacus.optimizers.DPOptimizer, False),
        ("functorch", opacus.grad_sample.GradSampleModule, opacus.optimizers.DPOptimizer, True),
        ("ew", opacus.grad_sample.GradSampleModuleExpandedWeights, opacus.optimizers.DPOptimizer, None),
        (
            "ghost",
            opacus.grad_sample.GradSampleModuleFastGradientClipping,
            opacus.optimizers.DPOptimizerFastGradientClipping,
            False,
        ),
    ],
)
def test_each_mode_wraps_the_model_in_its_own_opacus_engine(mode, gsm, optimizer, functorch):
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    module = _linear()
    step = _DPStep(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        noise_multiplier=0.5,
        max_grad_norm=0.4,
        expected_batch_size=5,
        mode=mode,
        label_smoothing=0.2,
    )
    try:
        assert type(step.gsm) is gsm and type(step.optimizer) is optimizer
        assert getattr(step.gsm, "force_functorch", None) is functorch  # the mode asked for is used
        if mode == "ghost":
            assert type(step.criterion) is DPLossFastGradientClipping
            assert step.criterion.loss_reduction == "mean"
            assert step.criterion.criterion.label_smoothing == 0.2
            assert step.gsm.max_grad_norm == 0.4
        else:
            assert step.criterion is None
    finally:
        step.close()
