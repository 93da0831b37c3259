"""Minimal-norm attacks (DeepFool, C&W L2, FAB, FAB-T) against known answers.

On linear classifiers the smallest adversarial perturbation has a closed form, so the attacks
are checked against it from both sides: every returned example is misclassified (so its norm
cannot beat the exact minimum) and its norm is within a few percent of that minimum. On the
zoo digits MLP they are checked against a PGD bisection and, when installed, torchattacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from dlsec.attacks import get_attack
from dlsec.attacks.evasion.base import Attack
from dlsec.attacks.evasion.cw import CarliniWagnerL2
from dlsec.attacks.evasion.deepfool import DeepFool
from dlsec.attacks.evasion.fab import FAB, FABTargeted, _project_l1, _project_l2, _project_linf
from dlsec.attacks.evasion.gradient import PGD
from dlsec.core import InputSpec, WhiteBoxModel, load_dataset, load_model
from dlsec.errors import UsageError

P = {"linf": math.inf, "l2": 2.0, "l1": 1.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: extra intra-op threads only add contention on shared runners."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- linear models


def _binary_points(n: int = 48) -> torch.Tensor:
    """Points well inside [0, 1]^2, not too close to the boundary x0 = x1."""
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(4 * n, 2, generator=g)
    return x[(x[:, 0] - x[:, 1]).abs() > 0.02][:n]


def _binary_distance(x: torch.Tensor, norm: str) -> torch.Tensor:
    gap = (x[:, 0] - x[:, 1]).abs()
    return {"l2": gap / math.sqrt(2), "linf": gap / 2, "l1": gap}[norm]


BINARY_CASES: list[tuple[str, Callable[[], Attack], float]] = [
    # (id, attack, allowed ratio to the exact minimum)
    ("deepfool-l2", lambda: DeepFool(norm="l2"), 1.03),
    ("deepfool-linf", lambda: DeepFool(norm="linf"), 1.03),
    ("cw-l2", lambda: CarliniWagnerL2(steps=200, lr=0.01, binary_search_steps=9), 1.05),
    ("fab-linf", lambda: FAB(norm="linf"), 1.05),
    ("fab-l2", lambda: FAB(norm="l2"), 1.05),
    ("fab-l1", lambda: FAB(norm="l1"), 1.05),
    ("fab-t-linf", lambda: FABTargeted(norm="linf"), 1.05),
]


@pytest.mark.parametrize("make, ratio", [c[1:] for c in BINARY_CASES], ids=[c[0] for c in BINARY_CASES])
def test_binary_linear_model_exact_minimal_distance(linear_model, make, ratio):
    x = _binary_points()
    y = linear_model.predict(x)
    attack = make()
    exact = _binary_distance(x, attack.norm)
    result = attack(linear_model, x, y)
    assert bool(result.success.all()), result.summary()
    assert bool((result.adv_pred != y).all())
    # Misclassified points cannot be closer than the boundary; the attack gets within `ratio`.
    assert bool((result.norms >= exact * (1 - 1e-4)).all())
    assert bool((result.norms <= exact * ratio + 1e-3).all()), (result.norms / exact).max()
    if isinstance(attack, DeepFool):  # the overshoot of 2% shows, and no more
        assert float((result.norms / exact).max()) <= 1.03


def _multiclass_model() -> tuple[WhiteBoxModel, torch.Tensor, torch.Tensor]:
    """5 classes, 10 features, weights fixed by a seed; inputs near the centre of [0, 1]^10."""
    g = torch.Generator().manual_seed(7)
    layer = torch.nn.Linear(10, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 10, generator=g))
        layer.bias.copy_(0.1 * torch.randn(5, generator=g))
    spec = InputSpec(shape=(10,), num_classes=5, kind="tabular")
    model = WhiteBoxModel(layer, spec, device="cpu")
    x = 0.45 + 0.1 * torch.rand(40, 10, generator=g)
    return model, x, model.predict(x)


def _multiclass_minimum(
    model: WhiteBoxModel, x: torch.Tensor, y: torch.Tensor, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``min_j (z_y - z_j) / ||w_y - w_j||_q`` and whether its minimiser stays inside the box."""
    layer = model.module
    assert isinstance(layer, torch.nn.Linear)
    w, z = layer.weight.detach(), model.logits(x)
    diff_w = w[y][:, None, :] - w[None, :, :]  # (N, K, D): w_y - w_j
    gap = z.gather(1, y[:, None]) - z  # (N, K): z_y - z_j >= 0
    q = {"l2": 2.0, "linf": 1.0}[norm]
    dist = gap / diff_w.norm(p=q, dim=2).clamp_min(1e-12)
    dist[torch.arange(len(y)), y] = math.inf
    best, j = dist.min(dim=1)
    direction = -diff_w[torch.arange(len(y)), j]  # towards class j
    if norm == "l2":
        step = direction / direction.norm(dim=1, keepdim=True) * best[:, None]
    else:
        step = direction.sign() * best[:, None]
    inside = ((x + step) >= 0).all(1) & ((x + step) <= 1).all(1)
    return best, inside


@pytest.mark.parametrize(
    "make",
    [
        lambda norm: DeepFool(norm=norm),
        lambda norm: FAB(norm=norm),
    ],
    ids=["deepfool", "fab"],
)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_multiclass_linear_model_exact_minimal_distance(make, norm):
    model, x, y = _multiclass_model()
    exact, inside = _multiclass_minimum(model, x, y, norm)
    assert int(inside.sum()) >= 30  # the closed form is the box-free one; keep points it holds for
    x, y, exact = x[inside], y[inside], exact[inside]
    result = make(norm)(model, x, y)
    assert bool(result.success.all())
    assert bool((result.norms >= exact * (1 - 1e-4)).all())
    assert bool((result.norms <= exact * 1.05).all()), (result.norms / exact).max()


# ----------------------------------------------------------------------------- projections


def _row(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)[None]


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_box_projections_match_a_generic_solver(norm):
    """FAB's projection onto hyperplane-and-box equals a linear/quadratic programme's optimum."""
    opt = pytest.importorskip("scipy.optimize")
    project = {"linf": _project_linf, "l2": _project_l2, "l1": _project_l1}[norm]
    rng = np.random.default_rng(0)
    for trial in range(40):
        dim = int(rng.integers(2, 7))
        t = rng.uniform(0, 1, dim)
        t[0] = 0.0 if trial % 2 else t[0]  # a coordinate on the bound
        w = rng.normal(size=dim)
        w[-1] = 0.0 if trial % 3 == 0 else w[-1]  # a coordinate with no effect
        c = float(rng.normal())
        lo, hi = -t, 1 - t  # bounds on d
        room = float(np.abs(w) @ np.where(w * np.sign(c) > 0, hi, -lo))
        d = project(
            _row(t), _row(w), torch.tensor([c], dtype=torch.float64), _row(np.zeros(dim)), _row(np.ones(dim))
        )[0].numpy()
        assert np.all(d >= lo - 1e-9) and np.all(d <= hi + 1e-9)
        if abs(c) > room:  # the box cannot reach the hyperplane: go as far as it allows
            assert w @ d == pytest.approx(math.copysign(room, c), abs=1e-9)
            continue
        assert w @ d == pytest.approx(c, abs=1e-9)
        bounds = list(zip(lo, hi, strict=True))
        if norm == "l2":
            on_plane = {"type": "eq", "fun": lambda v, w=w, c=c: w @ v - c}
            ref = opt.minimize(
                lambda v: v @ v,
                np.zeros(dim),
                jac=lambda v: 2 * v,
                method="SLSQP",
                bounds=bounds,
                constraints=[on_plane],
                options={"ftol": 1e-14, "maxiter": 500},
            )
            best = math.sqrt(ref.fun)
        elif norm == "linf":  # variables (d, s): min s, -s <= d <= s
            a_ub = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])
            ref = opt.linprog(
                np.r_[np.zeros(dim), 1.0],
                A_ub=a_ub,
                b_ub=np.zeros(2 * dim),
                A_eq=np.r_[w, 0.0][None],
                b_eq=[c],
                bounds=[*bounds, (0, None)],
            )
            best = ref.fun
        else:  # d = u - v with u, v >= 0
            ref = opt.linprog(
                np.ones(2 * dim),
                A_eq=np.r_[w, -w][None],
                b_eq=[c],
                bounds=[(0, h) for h in hi] + [(0, -lo_) for lo_ in lo],
            )
            best = ref.fun
        assert np.linalg.norm(d, P[norm]) <= best + 1e-6


# ----------------------------------------------------------------------------- the digits MLP


@pytest.fixture(scope="module")
def digits() -> tuple[WhiteBoxModel, torch.Tensor, torch.Tensor]:
    """The zoo MLP and the first 100 held-out digits it classifies correctly."""
    model = load_model("zoo:digits-mlp", device="cpu")
    assert isinstance(model, WhiteBoxModel)
    test = load_dataset("builtin:digits").split()[1]
    x, y = torch.from_numpy(test.x[:100]), torch.from_numpy(test.y[:100])
    ok = model.predict(x) == y
    return model, x[ok], y[ok]


DIGITS_CASES: dict[str, Callable[[], Attack]] = {
    "deepfool-l2": lambda: DeepFool(norm="l2"),
    "deepfool-linf": lambda: DeepFool(norm="linf"),
    "cw-l2": lambda: CarliniWagnerL2(steps=100, lr=0.05),
    "fab-linf": lambda: FAB(norm="linf"),
    "fab-l2": lambda: FAB(norm="l2", steps=50),
    "fab-t-linf": lambda: FABTargeted(norm="linf", steps=50),
}


@pytest.fixture(scope="module")
def digits_results(digits):
    model, x, y = digits
    return {name: make()(model, x, y) for name, make in DIGITS_CASES.items()}


@pytest.mark.parametrize("name", list(DIGITS_CASES))
def test_unbounded_attacks_fool_the_digits_mlp(name, digits_results):
    result = digits_results[name]
    assert result.success_rate >= 0.95, result.summary()
    assert result.eps is None


def test_fab_linf_is_as_small_as_a_pgd_bisection(digits, digits_results):
    """The median FAB norm is no larger than the eps at which PGD fools half the examples."""
    model, x, y = digits
    lo, hi = 0.0, 0.3
    for _ in range(7):
        mid = (lo + hi) / 2
        rate = PGD(eps=mid, steps=20, step_size=mid / 8, norm="linf", restarts=1)(model, x, y).success_rate
        lo, hi = (lo, mid) if rate >= 0.5 else (mid, hi)
    fab = digits_results["fab-linf"]
    median = float(fab.norms[fab.success].median())
    assert median <= 1.1 * hi, (median, hi)


def test_minimal_attack_with_eps_is_scored_inside_the_ball(digits, digits_results):
    """With eps, the result lies in the ball; examples fooled below eps unbounded stay fooled."""
    model, x, y = digits
    free = digits_results["deepfool-l2"]
    eps = float(free.norms.median())
    bounded = DeepFool(norm="l2", eps=eps)(model, x, y)
    assert float(bounded.norms.max()) <= eps * (1 + 1e-5)
    assert bool(bounded.success[free.success & (free.norms <= eps)].all())
    fab = FAB(norm="linf", eps=0.05, restarts=2)(model, x, y)
    assert float(fab.norms.max()) <= 0.05 + 1e-6
    assert 0.0 < fab.success_rate < 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepFool(norm="l2", targeted=True),
        lambda: CarliniWagnerL2(steps=100, lr=0.05, targeted=True),
        lambda: FAB(norm="linf", steps=50, targeted=True),
        lambda: FABTargeted(norm="l2", steps=50, targeted=True),
    ],
    ids=["deepfool", "cw", "fab", "fab-t"],
)
def test_targeted_modes_reach_the_target(make, digits):
    model, x, y = digits
    x, y = x[:40], y[:40]
    target = (y + 1) % 10
    result = make()(model, x, y, target=target)
    assert float(result.success.float().mean()) >= 0.9, result.summary()
    assert torch.equal(result.success, result.adv_pred == target)


def test_fab_t_tries_the_runner_up_classes(digits):
    """FAB-T's first target is the runner-up class: its adversarials mostly land there."""
    model, x, y = digits
    result = FABTargeted(norm="linf", steps=50, n_target_classes=1)(model, x, y)
    runner_up = model.logits(x).argsort(dim=1, descending=True)[:, 1]
    landed = result.adv_pred[result.success] == runner_up[result.success]
    assert float(landed.float().mean()) >= 0.9


def test_seeded_restarts_reproduce_and_do_not_hurt(digits):
    model, x, y = digits
    x, y = x[:30], y[:30]
    one = FAB(norm="l2", steps=30, restarts=1)(model, x, y)
    three = FAB(norm="l2", steps=30, restarts=3, seed=5)(model, x, y)
    again = FAB(norm="l2", steps=30, restarts=3, seed=5)(model, x, y)
    assert torch.equal(three.x_adv, again.x_adv)
    both = one.success & three.success
    assert bool((three.norms[both] <= one.norms[both] + 1e-6).all())
    assert three.queries > one.queries


# ----------------------------------------------------------------------------- torchattacks


def _torchattacks_norms(make, model, x, y, p):
    adv = make(model)(x, y)
    fooled = model.predict(adv) != y
    return (adv - x).flatten(1).norm(p=p, dim=1), fooled


@pytest.mark.parametrize(
    "name, make, p",
    [
        ("deepfool-l2", lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02), 2.0),
        ("cw-l2", lambda ta, m: ta.CW(m, c=1, kappa=0, steps=50, lr=0.01), 2.0),
        (
            "fab-linf",
            lambda ta, m: ta.FAB(m, norm="Linf", eps=1.0, steps=100, n_restarts=1, n_classes=10),
            math.inf,
        ),
    ],
    ids=["deepfool", "cw", "fab"],
)
def test_norms_no_larger_than_torchattacks(name, make, p, digits, digits_results):
    ta = pytest.importorskip("torchattacks")
    model, x, y = digits
    if name == "deepfool-l2":  # torchattacks' DeepFool loops over single images: keep it short
        x, y = x[:40], y[:40]
    theirs, fooled = _torchattacks_norms(lambda m: make(ta, m), model, x, y, p)
    ours = digits_results[name]
    both = fooled & ours.success[: len(y)]
    assert int(both.sum()) >= 10
    assert float(ours.success[: len(y)].float().mean()) >= float(fooled.float().mean())
    assert float(ours.norms[: len(y)][both].median()) <= 1.05 * float(theirs[both].median())


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    "name, cls",
    [
        ("deepfool", DeepFool),
        ("cw", CarliniWagnerL2),
        ("fab", FAB),
        ("fab-t", FABTargeted),
    ],
)
def test_registered_minimal_attacks(name, cls):
    attack = get_attack(name)
    assert type(attack) is cls and attack.minimal and attack.eps is None
    assert attack.replace(seed=2).get_params()["seed"] == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepFool(steps=0),
        lambda: DeepFool(overshoot=-0.1),
        lambda: DeepFool(candidates=1),
        lambda: DeepFool(norm="l1"),
        lambda: CarliniWagnerL2(norm="linf"),
        lambda: CarliniWagnerL2(confidence=-1.0),
        lambda: CarliniWagnerL2(lr=0.0),
        lambda: CarliniWagnerL2(binary_search_steps=0),
        lambda: CarliniWagnerL2(initial_const=0.0),
        lambda: FAB(steps=0),
        lambda: FAB(restarts=0),
        lambda: FAB(alpha_max=1.5),
        lambda: FAB(eta=0.5),
        lambda: FAB(beta=1.0),
        lambda: FAB(eps=-1.0),
        lambda: FABTargeted(n_target_classes=0),
    ],
)
def test_bad_hyperparameters_raise_usage_errors(make):
    with pytest.raises(UsageError):
        make()
