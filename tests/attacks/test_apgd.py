"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T): known answers, protocol, and strength side by side."""

from __future__ import annotations

import math

import pytest
import torch

from dlsec.attacks import PGD, get_attack
from dlsec.attacks.evasion.apgd import APGD, APGDDLR, APGDT
from dlsec.attacks.evasion.base import Oracle
from dlsec.attacks.evasion.wrappers import TopTargets
from dlsec.core import InputSpec, WhiteBoxModel, load_dataset
from dlsec.core.seeding import torch_generator
from dlsec.errors import UsageError

EPS = 0.1  # L-inf budget on the 8x8 digits


@pytest.fixture(scope="module")
def digits200():
    """200 rows of the digits test split (the zoo model's held-out data)."""
    _, test = load_dataset("builtin:digits").split()
    return torch.from_numpy(test.x[:200]), torch.from_numpy(test.y[:200])


@pytest.fixture(scope="module")
def apgd_ce_result(digits_cnn, digits200):
    x, y = digits200
    return APGD(eps=EPS, norm="linf", seed=0)(digits_cnn, x, y)


def _worst_case_margin(x, y, eps, norm):
    """Margin of the true class at the optimum of the linear model (x0 - x1) under the budget."""
    sign = torch.where(y == 0, 1.0, -1.0)  # +1: class 0 wants x0 > x1
    if norm == "linf":
        direction = torch.stack([-sign, sign], dim=1)
        worst = torch.clamp(x + eps * direction, 0, 1)
        return (worst[:, 0] - worst[:, 1]) * sign
    return (x[:, 0] - x[:, 1]) * sign - eps * math.sqrt(2)  # L2, points far from the box faces


# ------------------------------------------------------------------ registry and parameters
def test_registered_names_and_losses():
    assert isinstance(get_attack("apgd-ce", eps=0.1), APGD)
    assert get_attack("apgd-ce", eps=0.1).loss == "ce"
    dlr = get_attack("apgd-dlr", eps=0.1)
    assert isinstance(dlr, APGDDLR) and dlr.loss == "dlr"
    t = get_attack("apgd-t", eps=0.1)
    params = t.get_params()
    assert isinstance(t, APGDT) and t.n_target_classes == 9
    assert params["steps"] == 100 and params["restarts"] == 1
    assert "loss" not in params  # APGD-T's loss is fixed
    changed = t.replace(n_target_classes=3, steps=7)
    assert changed.n_target_classes == 3 and changed.get_params()["steps"] == 7
    assert repr(changed).startswith("APGDT(eps=0.1, steps=7,")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "restarts": 0}, "restarts"),
        ({"eps": 0.1, "loss": "hinge"}, "loss"),
        ({"eps": 0.1, "rho": 1.5}, "rho"),
        ({"eps": 0.1, "norm": "l1"}, "norms"),
        ({"eps": None}, "budget"),
    ],
)
def test_bad_hyperparameters_raise(params, match):
    with pytest.raises(UsageError, match=match):
        APGD(**params)


def test_bad_target_count_raises():
    with pytest.raises(UsageError, match="n_target_classes"):
        APGDT(eps=0.1, n_target_classes=0)


# ------------------------------------------------------------------ known answers on a linear model
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_reaches_the_linear_optimum(linear_model, norm):
    g = torch.Generator().manual_seed(3)
    # L-inf: anywhere in the box (the optimum is clipped); L2: away from its faces.
    x = torch.rand(300, 2, generator=g) if norm == "linf" else 0.3 + 0.4 * torch.rand(300, 2, generator=g)
    y = linear_model.predict(x)
    eps = 0.15 if norm == "linf" else 0.1
    result = APGD(eps=eps, norm=norm, steps=50)(linear_model, x, y)
    best = _worst_case_margin(x, y, eps, norm)
    assert 0 < int((best < 0).sum()) < len(x)  # the test has points on both sides
    assert torch.equal(result.success, best < 0)
    if norm == "linf":  # the unfooled ones end at the worst-case point itself
        sign = torch.where(y == 0, 1.0, -1.0)
        worst = torch.clamp(x + eps * torch.stack([-sign, sign], 1), 0, 1)
        torch.testing.assert_close(result.x_adv[~result.success], worst[~result.success], atol=1e-6, rtol=0)


def test_apgd_t_falls_back_to_targeted_ce_on_two_classes(linear_model):
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(4))
    y = linear_model.predict(x)
    result = APGDT(eps=0.15, steps=30)(linear_model, x, y)
    assert torch.equal(result.success, _worst_case_margin(x, y, 0.15, "linf") < 0)


def test_dlr_needs_three_classes(linear_model):
    x = torch.rand(4, 2)
    with pytest.raises(UsageError, match="3 classes"):
        APGDDLR(eps=0.1)(linear_model, x, linear_model.predict(x))


def test_dlr_aimed_at_a_class_needs_four_classes():
    # Aimed at a class the DLR loss is the targeted one; APGD-T falls back to CE, APGD-DLR refuses.
    torch.manual_seed(0)
    model = WhiteBoxModel(torch.nn.Linear(4, 3), InputSpec(shape=(4,), num_classes=3, kind="tabular"))
    x = torch.rand(8, 4)
    with pytest.raises(UsageError, match="targeted DLR loss needs at least 4 classes"):
        TopTargets(APGDDLR(eps=0.1))(model, x, model.predict(x))


def test_clean_misclassified_points_are_not_attacked(linear_model):
    x = torch.rand(50, 2, generator=torch.Generator().manual_seed(5))
    wrong = 1 - linear_model.predict(x)
    result = APGD(eps=0.2, steps=20)(linear_model, x, wrong)
    assert torch.equal(result.x_adv, x)
    assert result.queries == len(x)  # one clean prediction, no iteration


# ------------------------------------------------------------------ budget, bounds, reproducibility
@pytest.mark.parametrize("cls, norm, eps", [(APGD, "linf", 0.1), (APGD, "l2", 0.8), (APGDT, "linf", 0.1)])
def test_raw_iterates_respect_budget_bounds_and_query_count(digits_cnn, digits_batch, cls, norm, eps):
    x, y = digits_batch
    x, y = x[:32], y[:32]
    steps, restarts = 20, 2
    attack = cls(eps=eps, norm=norm, steps=steps, restarts=restarts)
    oracle = Oracle(digits_cnn)
    adv = attack.run(oracle, x, y, None, torch_generator(0))  # before the base's projection
    assert float(attack._norm.distance(adv - x).max()) <= eps * (1 + 1e-5)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    runs = restarts * (attack.n_target_classes if cls is APGDT else 1)
    assert len(x) < oracle.queries <= len(x) * (1 + runs * (steps + 1))
    result = attack(digits_cnn, x, y)
    assert result.queries == oracle.queries


@pytest.mark.parametrize("cls, norm", [(APGD, "linf"), (APGD, "l2"), (APGDT, "linf")])
def test_fixed_seed_reproduces_bit_for_bit(digits_cnn, digits_batch, cls, norm):
    x, y = digits_batch
    eps = 0.05 if norm == "linf" else 0.5
    first = cls(eps=eps, norm=norm, steps=20, seed=7)(digits_cnn, x, y)
    again = cls(eps=eps, norm=norm, steps=20, seed=7)(digits_cnn, x, y)
    other = cls(eps=eps, norm=norm, steps=20, seed=8)(digits_cnn, x, y)
    assert torch.equal(first.x_adv, again.x_adv) and first.queries == again.queries
    assert not torch.equal(first.x_adv, other.x_adv)  # the seed does drive the random start


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_targeted_mode_reaches_the_given_targets(digits_cnn, digits_batch, cls):
    x, y = digits_batch
    target = (y + 3) % 10
    result = cls(eps=0.3, steps=50, targeted=True)(digits_cnn, x, y, target=target)
    assert result.success.float().mean() >= 0.9
    assert torch.equal(result.success, result.adv_pred == target)


# ------------------------------------------------------------------ strength on the zoo CNN
def test_apgd_ce_at_least_as_strong_as_pgd(digits_cnn, digits200, apgd_ce_result):
    x, y = digits200
    pgd = PGD(eps=EPS, steps=100, seed=0)(digits_cnn, x, y)
    assert apgd_ce_result.robust_accuracy < apgd_ce_result.clean_accuracy - 0.2  # it does attack
    assert apgd_ce_result.robust_accuracy <= pgd.robust_accuracy + 0.01


def test_apgd_t_at_least_as_strong_as_apgd_ce(digits_cnn, digits200, apgd_ce_result):
    x, y = digits200
    t = APGDT(eps=EPS, seed=0)(digits_cnn, x, y)
    assert t.robust_accuracy <= apgd_ce_result.robust_accuracy + 0.01


def test_at_least_as_strong_as_torchattacks_apgd(digits_cnn, digits200, apgd_ce_result):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits200
    theirs = torchattacks.APGD(digits_cnn, norm="Linf", eps=EPS, steps=100, n_restarts=1, loss="ce", seed=0)
    with torch.no_grad():
        their_acc = float((digits_cnn(theirs(x, y)).argmax(1) == y).float().mean())
    assert apgd_ce_result.robust_accuracy <= their_acc + 0.01


def test_at_least_as_strong_as_torchattacks_apgdt(digits_cnn, digits200):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits200
    x, y = x[:100], y[:100]  # three target classes, 50 iterations: keeps their (unpruned) run short
    ours = APGDT(eps=EPS, steps=50, n_target_classes=3, seed=0)(digits_cnn, x, y)
    theirs = torchattacks.APGDT(digits_cnn, norm="Linf", eps=EPS, steps=50, n_restarts=1, seed=0, n_classes=4)
    with torch.no_grad():
        their_acc = float((digits_cnn(theirs(x, y)).argmax(1) == y).float().mean())
    assert ours.robust_accuracy < ours.clean_accuracy - 0.2
    assert ours.robust_accuracy <= their_acc + 0.01
