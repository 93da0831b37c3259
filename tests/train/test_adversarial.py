"""Adversarial training: robustness under an attack it did not train on, TRADES, the fast-AT guard."""

import numpy as np
import pytest
import torch

from dlsec.attacks import APGD, PGD
from dlsec.core import Dataset, InputSpec, WhiteBoxModel, load_dataset
from dlsec.core.seeding import torch_generator
from dlsec.errors import UsageError
from dlsec.train import PGDAT, TRADES, FastAT, Standard, TrainConfig, fit, get_recipe, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("builtin:digits")


def _apgd_accuracy(result, digits, eps):
    _, test = digits.split(test_size=0.25, seed=0)
    x, y = torch.from_numpy(test.x[:200]), torch.from_numpy(test.y[:200])
    return APGD(eps=eps, steps=50, seed=3)(result.model, x, y).robust_accuracy


def test_pgd_training_is_more_robust_than_standard_under_an_attack_it_did_not_train_on(digits):
    # PGD-AT trains against PGD; it is scored by APGD-CE (step-size schedule, momentum).
    eps, arch = 0.2, {"width": 16, "hidden": 64}
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=0)
    standard = train(digits, recipe=Standard(), arch_kwargs=arch, config=config, device="cpu")
    robust = train(
        digits, recipe=PGDAT(eps=eps, steps=7), arch_kwargs=arch, config=config, device="cpu", robust_n=0
    )
    assert robust.robustness is None  # robust_n=0 skips the card's AutoAttack
    standard_acc = _apgd_accuracy(standard, digits, eps)
    robust_acc = _apgd_accuracy(robust, digits, eps)
    print(f"APGD-CE accuracy: standard {standard_acc:.3f}, pgd-at {robust_acc:.3f}")
    assert robust_acc > standard_acc + 0.25, (standard_acc, robust_acc)
    assert robust.metrics["clean_accuracy"] > 0.85


def _blobs(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(0.5 + (2 * y[:, None] - 1) * 0.25 + rng.normal(0, 0.05, (n, 4)), 0, 1).astype(np.float32)
    return Dataset(x, y.astype(np.int64), InputSpec(shape=(4,), num_classes=2, kind="tabular"), "blobs")


@pytest.mark.parametrize(
    "recipe", [PGDAT(eps=0.05, steps=3), TRADES(eps=0.05, steps=3, beta=1.0), FastAT(eps=0.05, guard_n=32)]
)
def test_adversarial_recipes_record_autoattack_robustness(recipe):
    result = train(_blobs(), recipe=recipe, config=TrainConfig(epochs=2, lr=0.01), device="cpu", robust_n=16)
    card = result.card()
    assert card["recipe"] == recipe.name and card["recipe_params"]["eps"] == 0.05
    robustness = card["robustness"]
    assert robustness["attack"] == "autoattack (standard)" and robustness["n"] == 16
    assert robustness["eps"] == 0.05 and robustness["norm"] == "linf"
    assert card["metrics"]["robust_accuracy"] == robustness["robust_accuracy"]
    assert 0.0 <= robustness["robust_accuracy"] <= robustness["clean_accuracy"]


def test_trades_inner_attack_stays_in_budget_and_raises_the_divergence():
    torch.manual_seed(0)
    model = WhiteBoxModel(
        torch.nn.Linear(4, 3), InputSpec(shape=(4,), num_classes=3, kind="tabular"), device="cpu"
    )
    x = torch.rand(32, 4)
    y = torch.zeros(32, dtype=torch.long)
    inner = TRADES(eps=0.1, steps=5, step_size=0.03).attack(seed=0)
    assert isinstance(inner, PGD)  # dlsec's PGD on the KL loss, not a loop of its own
    adv = inner(model, x, y).x_adv
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(model(adv), 1), p, reduction="sum")
    assert float(kl) > 1e-4


def _zhang_trades_inner(model, x, *, eps, steps, step_size, seed):
    """The inner loop of Zhang et al.'s ``trades.py`` (L-inf), from dlsec's seeded start (which
    is clipped to the box)."""
    with torch.no_grad():
        p_clean = torch.softmax(model(x), dim=1)
    x_adv = torch.clamp(x + 0.001 * torch.randn(x.shape, generator=torch_generator(seed)), 0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss_kl = torch.nn.functional.kl_div(torch.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss_kl, x_adv)
        x_adv = x_adv.detach() + step_size * torch.sign(grad)
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    return x_adv


def test_trades_inner_attack_is_the_papers_loop(digits):
    # An untrained model misclassifies most rows from the start: an attack that stopped at the
    # first misclassified iterate (as PGD does) would not match the loop, which takes every step.
    torch.manual_seed(0)
    model = WhiteBoxModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), digits.spec, device="cpu"
    )
    x = torch.from_numpy(digits.x[:64])
    y = torch.from_numpy(digits.y[:64])
    ours = TRADES(eps=0.1, steps=10, step_size=0.025).attack(seed=3)(model, x, y).x_adv
    theirs = _zhang_trades_inner(model, x, eps=0.1, steps=10, step_size=0.025, seed=3)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_fast_at_guard_rolls_back_when_pgd_accuracy_collapses(monkeypatch):
    readings = iter([0.5, 0.6, 0.1, 0.7])
    monkeypatch.setattr(FastAT, "_guard_accuracy", lambda self, state: next(readings))
    data = _blobs()
    torch.manual_seed(0)
    model = WhiteBoxModel(torch.nn.Linear(4, 2), data.spec, device="cpu")
    snapshots = {}

    def remember(epoch, epochs, stats):
        snapshots[epoch] = {k: v.clone() for k, v in model.module.state_dict().items()}

    history = fit(model, data, TrainConfig(epochs=4, lr=0.05), recipe=FastAT(eps=0.05), progress=remember)
    assert len(history) == 3  # stopped after the collapse at epoch 3
    assert [h["guard_pgd_accuracy"] for h in history] == [0.5, 0.6, 0.1]
    assert not torch.equal(snapshots[2]["weight"], snapshots[1]["weight"])
    for key, value in model.module.state_dict().items():
        torch.testing.assert_close(value, snapshots[2][key])  # rolled back to epoch 2's weights


def test_fast_at_card_records_the_guard():
    result = train(_blobs(), recipe=FastAT(eps=0.05, guard_n=32), config=TrainConfig(epochs=2), robust_n=0)
    guard = result.card()["training"]["overfitting_guard"]
    assert guard["rows"] == 32 and guard["collapse"] is None and guard["best_epoch"] in (1, 2)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pgd-at", {"eps": -0.1}),
        ("pgd-at", {"eps": 0.1, "norm": "l1"}),
        ("pgd-at", {"eps": 0.1, "steps": 0}),
        ("trades", {"eps": 0.1, "beta": -1.0}),
        ("fast-at", {"eps": 0.1, "guard_drop": 0.0}),
        ("fast-at", {"eps": 0.1, "alpha": 0.0}),
    ],
)
def test_bad_adversarial_hyperparameters_are_refused(name, params):
    with pytest.raises(UsageError):
        get_recipe(name, **params)
