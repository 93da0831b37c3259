"""Properties every attack must have, driven by one table of attacks.

A new registered attack must be added to ``TABLE`` (a test checks it), so none escapes these.
"""

from __future__ import annotations

import math

import pytest
import torch

from dlsec.attacks import ATTACKS, get_attack
from dlsec.core import Access
from dlsec.errors import UsageError

# name -> (fast hyperparameters, norms to test, large budget per norm that must fool the zoo CNN)
LARGE = {"linf": 0.3, "l2": 3.0, "l1": 15.0}
TABLE: dict[str, dict] = {
    "fgsm": {"params": {}, "norms": ("linf", "l2"), "strong": False},
    "pgd": {"params": {"steps": 20}, "norms": ("linf", "l2", "l1"), "strong": True},
    "mifgsm": {"params": {"steps": 10}, "norms": ("linf", "l2"), "strong": True},
    "apgd-ce": {"params": {"steps": 20}, "norms": ("linf", "l2"), "strong": True},
    "apgd-dlr": {"params": {"steps": 20}, "norms": ("linf", "l2"), "strong": True},
    "apgd-t": {"params": {"steps": 10, "n_target_classes": 2}, "norms": ("linf", "l2"), "strong": True},
    "autoattack": {"params": {}, "norms": ("linf",), "strong": False, "slow": True},
    "square": {"params": {"n_queries": 300}, "norms": ("linf", "l2"), "strong": True},
    "hsj": {"params": {"max_queries": 500}, "norms": ("l2", "linf"), "strong": True},
    "transfer": {"params": {}, "norms": ("linf", "l2"), "strong": False},
    "deepfool": {"params": {}, "norms": ("l2", "linf"), "strong": True},
    "cw": {"params": {"steps": 50, "lr": 0.05, "binary_search_steps": 4}, "norms": ("l2",), "strong": True},
    "fab": {"params": {"steps": 30}, "norms": ("linf", "l2", "l1"), "strong": True},
    "fab-t": {"params": {"steps": 30}, "norms": ("linf", "l2"), "strong": True},
}


def _transfer(norm, eps, **extra):
    from dlsec.attacks import PGD, Transfer
    from dlsec.core import load_model

    seed = extra.pop("seed", 0)
    return Transfer(load_model("zoo:digits-mlp", device="cpu"), PGD(eps=eps, norm=norm, steps=10, seed=seed))


def _model_for(attack, model):
    if attack.access is Access.SCORE:
        return model.as_score()
    if attack.access is Access.DECISION:
        return model.as_decision()
    return model


def _build(name, norm, eps, **extra):
    if name == "transfer":  # built around a surrogate model and an attack, not by name alone
        return _transfer(norm, eps, **extra)
    entry = TABLE[name]
    return get_attack(name, norm=norm, eps=eps, **{**entry["params"], **extra})


def _cases(*, include_slow=False):
    return [
        (name, norm)
        for name, entry in TABLE.items()
        for norm in entry["norms"]
        if include_slow or not entry.get("slow")
    ]


def test_every_registered_attack_is_in_the_table():
    missing = set(ATTACKS) - set(TABLE)
    assert not missing, f"add these attacks to the property table: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_registered_classes_say_their_access_norms_and_kind(name):
    # `dlsec attack --list` and campaigns read these from the class, before building the attack
    # (registered wrappers such as apgd-t and fab-t declare them too).
    cls = ATTACKS[name]
    assert isinstance(cls.access, Access) and isinstance(cls.minimal, bool)
    assert isinstance(cls.norms, tuple) and cls.norms and all(isinstance(n, str) for n in cls.norms)


@pytest.mark.parametrize("name, norm", _cases(include_slow=True))
def test_budget_bounds_dtype_and_device_hold(name, norm, digits_cnn, digits_batch):
    x, y = digits_batch
    n = 4 if TABLE[name].get("slow") else 16
    x, y = x[:n], y[:n]
    eps = LARGE[norm] / 3
    attack = _build(name, norm, eps)
    result = attack(_model_for(attack, digits_cnn), x.double(), y)
    assert result.x_adv.dtype == torch.float64 and result.x_adv.device == x.device
    assert result.x_adv.shape == x.shape
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    p = {"linf": math.inf, "l2": 2, "l1": 1}[norm]
    norms = (result.x_adv - x.double()).reshape(n, -1).norm(p=p, dim=1)
    assert float(norms.max()) <= eps * (1 + 1e-5) + 1e-6
    torch.testing.assert_close(result.norms.double(), norms, rtol=1e-4, atol=1e-5)
    assert result.success.dtype == torch.bool and result.success.shape == (n,)
    assert torch.equal(result.success, result.adv_pred != y)


@pytest.mark.parametrize("name, norm", _cases())
def test_fixed_seed_reproduces(name, norm, digits_cnn, digits_batch):
    x, y = digits_batch
    a = _build(name, norm, LARGE[norm] / 4, seed=3)
    first = a(_model_for(a, digits_cnn), x[:8], y[:8])
    second = a(_model_for(a, digits_cnn), x[:8], y[:8])
    assert torch.equal(first.x_adv, second.x_adv)


@pytest.mark.parametrize("name, norm", [c for c in _cases() if TABLE[c[0]]["strong"]])
def test_large_budget_fools_the_undefended_model(name, norm, digits_cnn, digits_batch):
    x, y = digits_batch
    attack = _build(name, norm, LARGE[norm])
    result = attack(_model_for(attack, digits_cnn), x, y)
    assert result.robust_accuracy <= 0.05, result.summary()


@pytest.mark.parametrize("name", [n for n in TABLE if TABLE[n]["strong"]])
def test_robust_accuracy_does_not_rise_with_eps(name, digits_cnn, digits_batch):
    x, y = digits_batch
    accs = []
    norm = TABLE[name]["norms"][0]
    for fraction in (0.0, 1 / 6, 1 / 3, 2 / 3):
        attack = _build(name, norm, LARGE[norm] * fraction)
        accs.append(attack(_model_for(attack, digits_cnn), x, y).robust_accuracy)
    assert accs[0] == pytest.approx(float((digits_cnn.predict(x) == y).float().mean()))
    for lo, hi in zip(accs, accs[1:], strict=False):
        assert hi <= lo + 1 / len(y), accs


@pytest.mark.parametrize("name", list(TABLE))
def test_bad_inputs_raise_clear_errors(name, digits_cnn, digits_batch):
    x, y = digits_batch
    norm = TABLE[name]["norms"][0]
    attack = _build(name, norm, 0.1)
    model = _model_for(attack, digits_cnn)
    bad_cases = [
        (torch.full_like(x[:2], float("nan")), y[:2], "NaN"),
        (x[:2] + 2.0, y[:2], "outside the input bounds"),
        (x[:2, :, :4], y[:2], "shape"),
        (x[:2], torch.tensor([0, 10]), "labels must lie"),
        (x[:2], y[:3], "labels"),
        (x[:2], y[:2].float(), "integers"),
    ]
    for bx, by, fragment in bad_cases:
        with pytest.raises(UsageError, match=fragment):
            attack(model, bx, by)
    with pytest.raises(UsageError, match="eps"):
        _build(name, norm, -0.1)
    with pytest.raises(UsageError, match="norm"):
        _build(name, "l7", 0.1)
