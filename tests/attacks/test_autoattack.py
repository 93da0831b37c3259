"""AutoAttack: the published protocol, and its worst case over the components."""

from __future__ import annotations

import pytest

from dlsec.attacks import PGD, AutoAttack
from dlsec.attacks.evasion.apgd import APGD


def test_components_follow_the_published_standard_version():
    names = [(a.name, a.get_params()) for a in AutoAttack(eps=8 / 255).components()]
    assert [n for n, _ in names] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    params = dict(names)
    assert params["apgd-ce"]["steps"] == 100 and params["apgd-ce"]["restarts"] == 1
    assert params["apgd-t"]["steps"] == 100 and params["apgd-t"]["n_target_classes"] == 9
    assert params["fab-t"]["steps"] == 100 and params["fab-t"]["n_target_classes"] == 9
    assert params["square"]["n_queries"] == 5000 and params["square"]["p_init"] == 0.8
    assert all(p["eps"] == 8 / 255 and p["norm"] == "linf" for p in params.values())


def test_worst_case_over_components(digits_cnn, digits_batch):
    x, y = digits_batch
    x, y = x[:24], y[:24]
    result = AutoAttack(eps=0.1)(digits_cnn, x, y)
    apgd = APGD(eps=0.1, steps=100)(digits_cnn, x, y)
    pgd = PGD(eps=0.1, steps=100)(digits_cnn, x, y)
    assert result.robust_accuracy <= apgd.robust_accuracy
    assert result.robust_accuracy <= pgd.robust_accuracy + 1 / len(y)
    fooled_by = result.extras["fooled_by"]
    assert sum(fooled_by.values()) == int((result.clean_correct & result.success).sum())
    assert float(result.norms.max()) <= 0.1 + 1e-6


@pytest.mark.slow
def test_at_least_as_strong_as_torchattacks(digits_cnn, digits_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits_batch
    ours = AutoAttack(eps=0.1)(digits_cnn, x, y)
    theirs = torchattacks.AutoAttack(
        digits_cnn, norm="Linf", eps=0.1, version="standard", n_classes=10, seed=0
    )
    adv = theirs(x, y)
    theirs_acc = float((digits_cnn.predict(adv) == y).float().mean())
    assert ours.robust_accuracy <= theirs_acc
