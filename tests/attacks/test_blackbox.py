"""Black-box attacks: Square (score-based), HopSkipJump (decision-based) and Transfer.

Exact checks on the linear fixture (logits ``[x0 - x1, x1 - x0]``, bounds [0, 1]), where the
worst case under a budget and the minimal distance are known in closed form; budget, bounds,
query and seed properties; and, on the zoo digits CNN, strength against white-box PGD and
against the Square implementations of torchattacks and ART when they are installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlsec.attacks import ATTACKS, MIFGSM, PGD, get_attack
from dlsec.attacks.evasion.hsj import HopSkipJump
from dlsec.attacks.evasion.square import Square
from dlsec.attacks.evasion.transfer import Transfer
from dlsec.core import Access, load_dataset, load_model
from dlsec.errors import UsageError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Thousands of tiny forward passes: one thread avoids oversubscribing shared CPUs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits100():
    _, test = load_dataset("builtin:digits").split()
    return torch.from_numpy(test.x[:100]), torch.from_numpy(test.y[:100])


@pytest.fixture(scope="module")
def digits_mlp():
    return load_model("zoo:digits-mlp", device="cpu")


def _grid(step: float = 0.05, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    values = torch.arange(lo, hi + 1e-9, step)
    return torch.cartesian_prod(values, values).float()


def _worst_margin_linf(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact worst-case logit margin of the linear fixture over the L-inf ball and the box."""
    own = x.gather(1, y[:, None]).squeeze(1)
    other = x.gather(1, (1 - y)[:, None]).squeeze(1)
    return 2 * ((own - eps).clamp(0, 1) - (other + eps).clamp(0, 1))


# --------------------------------------------------------------------------- exact answers
def test_square_linf_fools_exactly_the_points_whose_worst_case_flips(linear_model):
    x = _grid()
    y = linear_model.predict(x)
    eps = 0.15
    margin = _worst_margin_linf(x, y, eps)
    keep = (margin.abs() > 1e-3) & ((x[:, 0] - x[:, 1]).abs() > 1e-3)
    x, y, margin = x[keep], y[keep], margin[keep]
    result = Square(eps=eps, n_queries=100, seed=0)(linear_model.as_score(), x, y)
    assert torch.equal(result.success, margin < 0)
    assert float(result.norms.max()) <= eps + 1e-6


def test_square_l2_fools_exactly_the_points_within_eps_of_the_boundary(linear_model):
    x = _grid()
    y = linear_model.predict(x)
    eps = 0.2
    minimal = (x[:, 0] - x[:, 1]).abs() / math.sqrt(2)  # the move stays in the box
    keep = ((minimal - eps).abs() > 0.02 * eps) & (minimal > 1e-3)
    x, y, minimal = x[keep], y[keep], minimal[keep]
    result = Square(eps=eps, norm="l2", n_queries=100, seed=0)(linear_model.as_score(), x, y)
    assert torch.equal(result.success, minimal < eps)
    assert float(result.norms.max()) <= eps * (1 + 1e-5)


@pytest.mark.parametrize("norm, scale", [("l2", math.sqrt(2)), ("linf", 2.0)])
def test_hsj_finds_the_minimal_distance_on_the_linear_model(linear_model, norm, scale):
    x = _grid(step=0.1, lo=0.3, hi=0.7)
    x = x[(x[:, 0] - x[:, 1]).abs() > 0.02]
    y = linear_model.predict(x)
    result = HopSkipJump(norm=norm, max_queries=1000, seed=0)(linear_model.as_decision(), x, y)
    exact = (x[:, 0] - x[:, 1]).abs() / scale
    assert bool(result.success.all())
    ratio = result.norms / exact
    assert float(ratio.min()) >= 1 - 1e-4 and float(ratio.max()) <= 1.10, ratio


def test_hsj_with_eps_stops_once_within_it(linear_model):
    x = _grid(step=0.1, lo=0.3, hi=0.7)
    x = x[(x[:, 0] - x[:, 1]).abs() > 0.02]
    y = linear_model.predict(x)
    free = HopSkipJump(max_queries=1000)(linear_model.as_decision(), x, y)
    eps = 0.2
    bounded = HopSkipJump(eps=eps, max_queries=1000)(linear_model.as_decision(), x, y)
    assert bounded.queries < free.queries / 2
    assert float(bounded.norms.max()) <= eps * (1 + 1e-5)
    within = (x[:, 0] - x[:, 1]).abs() / math.sqrt(2) < 0.9 * eps
    assert bool(bounded.success[within].all())


# --------------------------------------------------------------------------- properties
CASES = {
    "square-linf": (lambda: Square(eps=0.2, n_queries=60), 0.2, 60 + 1),
    "square-l2": (lambda: Square(eps=1.5, norm="l2", n_queries=60), 1.5, 60 + 1),
    "hsj-l2": (lambda: HopSkipJump(max_queries=250), None, 250),
    "hsj-linf-eps": (lambda: HopSkipJump(norm="linf", eps=0.15, max_queries=250), 0.15, 250),
}


def _target_view(attack, model):
    return model.as_score() if attack.access is Access.SCORE else model.as_decision()


@pytest.mark.parametrize("case", sorted(CASES))
def test_budget_bounds_and_query_budget_hold(case, digits_cnn, digits_batch):
    factory, eps, per_example = CASES[case]
    x, y = digits_batch[0][:20], digits_batch[1][:20]
    attack = factory()
    result = attack(_target_view(attack, digits_cnn), x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    if eps is not None:
        assert float(result.norms.max()) <= eps * (1 + 1e-5) + 1e-6
    assert 0 < result.queries <= per_example * len(x)
    assert torch.equal(result.success, result.adv_pred != y)
    assert result.success_rate > 0.5


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixed_seed_reproduces_bit_for_bit(case, digits_cnn, digits_batch):
    factory, _, _ = CASES[case]
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    attack = factory().replace(seed=5)
    first = attack(_target_view(attack, digits_cnn), x, y)
    second = attack(_target_view(attack, digits_cnn), x, y)
    assert torch.equal(first.x_adv, second.x_adv) and first.queries == second.queries
    other = attack.replace(seed=6)(_target_view(attack, digits_cnn), x, y)
    assert not torch.equal(first.x_adv, other.x_adv)


@pytest.mark.parametrize(
    "attack", [Square(eps=0.3, n_queries=200), HopSkipJump(max_queries=500)], ids=["square", "hsj"]
)
def test_targeted_attacks_reach_the_target(attack, digits_cnn, digits_batch):
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    target = (y + 1) % 10
    result = attack.replace(targeted=True)(_target_view(attack, digits_cnn), x, y, target=target)
    assert torch.equal(result.success, result.adv_pred == target)
    assert result.success_rate >= 0.75, result.summary()


def test_access_levels_are_enforced(digits_cnn, digits_mlp, digits_batch):
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    assert Square(eps=0.1, n_queries=5)(digits_cnn.as_score(), x, y).queries > 0
    assert HopSkipJump(max_queries=30)(digits_cnn.as_decision(), x, y).queries > 0
    with pytest.raises(UsageError, match="score"):
        Square(eps=0.1, n_queries=5)(digits_cnn.as_decision(), x, y)
    with pytest.raises(UsageError, match="white-box"):
        Transfer(digits_mlp.as_score(), PGD(eps=0.1, steps=2))
    square_on_scores = Transfer(digits_mlp.as_score(), Square(eps=0.1, n_queries=5))
    assert square_on_scores(digits_cnn.as_decision(), x, y).queries == 0


@pytest.mark.parametrize(
    "build",
    [
        lambda: Square(eps=None),  # type: ignore[arg-type]
        lambda: Square(eps=0.1, n_queries=0),
        lambda: Square(eps=0.1, p_init=0.0),
        lambda: Square(eps=0.1, p_init=1.5),
        lambda: Square(eps=0.1, restarts=0),
        lambda: Square(eps=0.1, norm="l1"),
        lambda: HopSkipJump(max_queries=0),
        lambda: HopSkipJump(init_evals=0),
        lambda: HopSkipJump(max_evals=1.5),  # type: ignore[arg-type]
        lambda: HopSkipJump(gamma=0.0),
        lambda: HopSkipJump(norm="l1"),
        lambda: Transfer("zoo:digits-mlp", PGD(eps=0.1)),  # type: ignore[arg-type]
        lambda: Transfer(load_model("zoo:digits-mlp"), "pgd"),  # type: ignore[arg-type]
    ],
)
def test_bad_hyperparameters_raise_usage_errors(build):
    with pytest.raises(UsageError):
        build()


def test_registered_names_and_threat_models(digits_mlp):
    assert {"square", "hsj", "transfer"} <= set(ATTACKS)
    assert isinstance(get_attack("square", eps=0.1), Square)
    assert isinstance(get_attack("hsj"), HopSkipJump)
    assert Square.access is Access.SCORE and HopSkipJump.access is Access.DECISION
    assert HopSkipJump.minimal and not Square.minimal
    transfer = Transfer(digits_mlp, PGD(eps=0.2, norm="l2"))
    assert transfer.access is Access.DECISION and (transfer.norm, transfer.eps) == ("l2", 0.2)
    assert isinstance(transfer.replace(attack=PGD(eps=0.1)), Transfer)


def test_transfer_refuses_a_surrogate_of_another_shape(linear_model, digits_cnn, digits_batch):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(UsageError, match="surrogate"):
        Transfer(linear_model, PGD(eps=0.1))(digits_cnn.as_decision(), x, y)


# --------------------------------------------------------------------------- strength
def test_square_fools_the_digits_cnn_but_not_beyond_white_box_pgd(digits_cnn, digits100):
    x, y = digits100
    square = Square(eps=0.2, n_queries=1000, seed=0)(digits_cnn.as_score(), x, y)
    pgd = PGD(eps=0.2, steps=100, seed=0)(digits_cnn, x, y)
    assert square.robust_accuracy < 0.3
    assert square.robust_accuracy >= pgd.robust_accuracy - 0.05
    assert square.queries <= (1000 + 1) * len(x)


@pytest.mark.parametrize("inner", [PGD(eps=0.2, steps=40), MIFGSM(eps=0.2, steps=10)], ids=["pgd", "mifgsm"])
def test_transfer_from_the_mlp_lowers_the_cnn_accuracy(inner, digits_cnn, digits_mlp, digits100):
    x, y = digits100
    result = Transfer(digits_mlp, inner)(digits_cnn.as_decision(), x, y)
    assert result.queries == 0
    assert result.robust_accuracy < result.clean_accuracy - 0.03
    assert float(result.norms.max()) <= 0.2 + 1e-6


# --------------------------------------------------------------------------- peers
PEER_EPS, PEER_QUERIES = 0.1, 1000


@pytest.fixture(scope="module")
def ours_at_peer_settings(digits_cnn, digits100):
    x, y = digits100
    return Square(eps=PEER_EPS, n_queries=PEER_QUERIES, seed=0)(digits_cnn.as_score(), x, y).robust_accuracy


def test_square_is_at_least_as_strong_as_torchattacks(digits_cnn, digits100, ours_at_peer_settings):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits100
    theirs = torchattacks.Square(digits_cnn, norm="Linf", eps=PEER_EPS, n_queries=PEER_QUERIES, seed=0)(x, y)
    theirs_acc = float((digits_cnn.predict(theirs) == y).float().mean())
    assert ours_at_peer_settings <= theirs_acc + 0.02, (ours_at_peer_settings, theirs_acc)


def test_square_is_at_least_as_strong_as_art(digits_cnn, digits100, ours_at_peer_settings):
    pytest.importorskip("art")
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    x, y = digits100
    classifier = PyTorchClassifier(
        model=digits_cnn,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    attack = SquareAttack(
        classifier, norm=np.inf, eps=PEER_EPS, max_iter=PEER_QUERIES, p_init=0.8, nb_restarts=1, verbose=False
    )
    np.random.seed(0)
    theirs = torch.from_numpy(attack.generate(x.numpy(), y.numpy())).float()
    theirs_acc = float((digits_cnn.predict(theirs) == y).float().mean())
    assert ours_at_peer_settings <= theirs_acc + 0.02, (ours_at_peer_settings, theirs_acc)
