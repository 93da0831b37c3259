"""Known answers for FGSM, PGD and MI-FGSM, and the wrappers."""

from __future__ import annotations

import math

import pytest
import torch

from dlsec.attacks import APGD, APGDT, FAB, FGSM, MIFGSM, PGD, FABTargeted, TabularConstraints
from dlsec.attacks.evasion._losses import margin_loss
from dlsec.attacks.evasion.gradient import cross_entropy
from dlsec.attacks.evasion.wrappers import EOT, ExpectationModel, Restarts, Targeted, TopTargets
from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.errors import UsageError


def _inside_points(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
    return x


def test_fgsm_linf_is_the_closed_form_optimum(linear_model):
    # For logits [x0 - x1, x1 - x0] the worst case for class 0 is x + eps * (-1, +1), clipped.
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(1))
    y = linear_model.predict(x)
    eps = 0.15
    direction = torch.stack([torch.where(y == 0, -1.0, 1.0), torch.where(y == 0, 1.0, -1.0)], dim=1)
    expected = torch.clamp(x + eps * direction, 0, 1)
    result = FGSM(eps=eps)(linear_model, x, y)
    torch.testing.assert_close(result.x_adv, expected)
    # Exactly the points whose margin under that optimum turns negative are fooled.
    margin = (expected[:, 0] - expected[:, 1]) * torch.where(y == 0, 1.0, -1.0)
    assert torch.equal(result.success, margin < 0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_linear_optimum(linear_model, norm):
    x = _inside_points()
    y = linear_model.predict(x)
    eps = 0.1
    sign = torch.where(y == 0, -1.0, 1.0)
    if norm == "linf":
        best_margin = (x[:, 0] - x[:, 1]).abs() - 2 * eps
    else:  # move eps along -w/||w|| = (-1, 1)/sqrt(2): the margin drops by eps * sqrt(2) * ... per logit
        best_margin = (x[:, 0] - x[:, 1]).abs() - eps * math.sqrt(2)
    result = PGD(eps=eps, steps=30, step_size=eps / 5, norm=norm, random_start=True)(linear_model, x, y)
    margin = (result.x_adv[:, 0] - result.x_adv[:, 1]) * -sign
    fooled = result.success
    # Unfooled points sit at the optimum; fooled ones are at least as good as it needs.
    torch.testing.assert_close(margin[~fooled], best_margin[~fooled], atol=1e-5, rtol=0)
    assert torch.equal(fooled, best_margin < 0)


def test_targeted_pgd_reaches_targets_and_untargeted_call_with_target_is_refused(digits_cnn, digits_batch):
    x, y = digits_batch
    target = (y + 3) % 10
    result = PGD(eps=0.3, steps=40, targeted=True)(digits_cnn, x, y, target=target)
    assert result.success.float().mean() >= 0.9
    assert torch.equal(result.success, result.adv_pred == target)
    with pytest.raises(UsageError, match="untargeted"):
        PGD(eps=0.1)(digits_cnn, x, y, target=target)
    with pytest.raises(UsageError, match="targeted"):
        PGD(eps=0.1, targeted=True)(digits_cnn, x, y)


def test_pgd_restarts_and_wrapper_never_weaker(digits_cnn, digits_batch):
    x, y = digits_batch
    one = PGD(eps=0.08, steps=10, seed=1)(digits_cnn, x, y)
    several = PGD(eps=0.08, steps=10, seed=1, restarts=4)(digits_cnn, x, y)
    wrapped = Restarts(PGD(eps=0.08, steps=10, seed=1), restarts=4)(digits_cnn, x, y)
    assert several.robust_accuracy <= one.robust_accuracy
    assert wrapped.robust_accuracy <= one.robust_accuracy
    assert (several.success | ~one.success).all()  # restart 0 is the single run


def test_pgd_ascends_the_loss_it_is_given(digits_cnn, digits_batch):
    x, y = digits_batch
    default = PGD(eps=0.1, steps=10, seed=0)(digits_cnn, x, y)
    explicit = PGD(eps=0.1, steps=10, seed=0, loss=cross_entropy)(digits_cnn, x, y)
    assert torch.equal(default.x_adv, explicit.x_adv) and default.queries == explicit.queries

    def margin(model, x, labels):
        return lambda logits: margin_loss(logits, labels)

    cw = PGD(eps=0.1, steps=10, seed=0, loss=margin)(digits_cnn, x, y)
    assert cw.robust_accuracy < cw.clean_accuracy - 0.2
    assert not torch.equal(cw.x_adv, default.x_adv)
    assert "loss=cross_entropy," in repr(PGD(eps=0.1))  # by name, not by address
    with pytest.raises(UsageError, match="loss"):
        PGD(eps=0.1, loss="ce")


def test_mifgsm_fools_and_respects_budget(digits_cnn, digits_batch):
    x, y = digits_batch
    result = MIFGSM(eps=0.2, steps=10)(digits_cnn, x, y)
    assert result.robust_accuracy < 0.3
    assert float(result.norms.max()) <= 0.2 + 1e-6


def test_targeted_wrapper_policies(digits_cnn, digits_batch):
    x, y = digits_batch
    nxt = Targeted(PGD(eps=0.3, steps=20), policy="next")(digits_cnn, x, y)
    assert torch.equal(nxt.target, (y + 1) % 10) and nxt.targeted
    rnd = Targeted(PGD(eps=0.3, steps=20), policy="random")(digits_cnn, x, y)
    assert (rnd.target != y).all()
    ll = Targeted(PGD(eps=0.3, steps=20), policy="least-likely")
    targets = ll.choose_targets(digits_cnn, x, y)
    probs = digits_cnn.probs(x)
    probs[torch.arange(len(y)), y] = float("inf")
    assert torch.equal(targets, probs.argmin(1))
    with pytest.raises(UsageError, match="scores"):
        ll.choose_targets(digits_cnn.as_decision(), x, y)


def test_least_likely_policy_is_the_least_likely_class_other_than_the_label():
    # Logits are the input itself: the least likely class is the smallest coordinate.
    spec = InputSpec(shape=(3,), num_classes=3, kind="tabular")
    model = WhiteBoxModel(torch.nn.Identity(), spec, device="cpu")
    x = torch.tensor([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.2, 0.7, 0.4], [0.2, 0.7, 0.4], [0.6, 0.3, 0.8]])
    y = torch.tensor([0, 2, 1, 0, 1])
    # Rows 2 and 4 have the least likely class as their label: the next least likely is chosen.
    targets = Targeted(PGD(eps=0.1), policy="least-likely").choose_targets(model, x, y)
    assert targets.tolist() == [2, 1, 0, 2, 0]
    result = Targeted(PGD(eps=0.1), policy="least-likely")(model, x, y)
    assert result.target is not None and result.target.tolist() == [2, 1, 0, 2, 0]


class _SignFlip(torch.nn.Module):
    """Logits ``[z, -z]`` with ``z = 4 s (x0 - x1)``, ``s = +1`` with probability ``p`` else ``-1``.

    ``s`` is drawn per row and per pass, so one pass's gradient points the wrong way 30% of
    the time and the expected prediction is correct with probability ``p`` (``1 - p`` across
    the boundary). The draws are recorded.
    """

    def __init__(self, p: float = 0.7):
        super().__init__()
        self.p = p
        self.signs: list[torch.Tensor] = []

    def forward(self, x):
        s = torch.where(torch.rand(len(x), 1) < self.p, 1.0, -1.0)
        self.signs.append(s)
        z = 4 * s * (x[:, :1] - x[:, 1:2])
        return torch.cat([z, -z], 1)


def test_eot_gradient_is_the_gradient_of_the_mean_softmax_over_the_passes():
    module = _SignFlip()
    model = WhiteBoxModel(module, InputSpec(shape=(2,), num_classes=2, kind="tabular"), device="cpu")
    eot = ExpectationModel(model, 16)
    x = _inside_points(6).requires_grad_(True)
    torch.manual_seed(0)
    assert sum(eot.plan(x)) == 16  # the plan probes the model first; its draws are not counted
    module.signs.clear()
    log_probs = eot(x)
    (grad,) = torch.autograd.grad(log_probs[:, 0].sum(), x)
    # By hand from the recorded signs: p0 = mean over passes of sigmoid(2 z).
    signs = torch.cat(module.signs).reshape(16, len(x))
    d = (x[:, 0] - x[:, 1]).detach()
    sig = torch.sigmoid(8 * signs * d)
    p0 = sig.mean(0)
    torch.testing.assert_close(log_probs[:, 0].detach(), p0.log())
    dlog = (sig * (1 - sig) * 8 * signs).mean(0) / p0  # d log p0 / d (x0 - x1)
    torch.testing.assert_close(grad, torch.stack([dlog, -dlog], 1))
    # The passes disagree, so a mean of the logits or one pass's gradient would differ.
    assert (signs == 1).any(0).all() and (signs == -1).any()
    first = (sig[0] * (1 - sig[0]) * 8 * signs[0]) / sig[0]
    assert not torch.allclose(first, dlog)


def test_eot_attacks_the_expectation_and_counts_every_pass():
    torch.manual_seed(0)
    model = WhiteBoxModel(_SignFlip(), InputSpec(shape=(2,), num_classes=2, kind="tabular"), device="cpu")
    x = _inside_points(60)
    y = (x[:, 1] > x[:, 0]).long()
    eps = 0.15
    result = EOT(PGD(eps=eps, steps=10), samples=32)(model, x, y)
    plain = PGD(eps=eps, steps=10)(model, x, y)
    assert result.queries == 32 * plain.queries and result.passes == 32
    # The best attack pushes every point with |x0 - x1| < 2 eps across the boundary, where the
    # expected prediction is right 30% of the time; the rest stay right 70% of the time. EOT
    # over 32 passes gets within 0.04 of that optimum; attacking one pass at a time (a broken
    # average) leaves the expected accuracy above 0.6.
    optimum = float(torch.where((x[:, 0] - x[:, 1]).abs() < 2 * eps, 0.3, 0.7).mean())
    assert result.robust_accuracy <= optimum + 0.04, (result.robust_accuracy, optimum)


def test_tabular_constraints_hold():
    spec = InputSpec(
        shape=(6,), num_classes=2, kind="tabular", lower=(0, 0, 0, 0, 0, 0), upper=(1, 10, 1, 1, 1, 1)
    )
    layer = torch.nn.Linear(6, 2)
    torch.manual_seed(0)
    model = WhiteBoxModel(layer, spec, device="cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 6, generator=g)
    x[:, 1] = torch.randint(0, 10, (50,), generator=g).float()
    x[:, 3:] = 0
    x[torch.arange(50), 3 + torch.randint(0, 3, (50,), generator=g)] = 1.0
    y = model.predict(x)
    c = TabularConstraints(immutable=[0], integer=[1], one_hot=[[3, 4, 5]])
    result = PGD(eps=1.5, steps=20)(model, x, y, constraints=c)
    adv = result.x_adv
    assert torch.equal(adv[:, 0], x[:, 0])
    assert torch.equal(adv[:, 1], adv[:, 1].round())
    assert torch.equal(adv[:, 3:].sum(1), torch.ones(50)) and set(adv[:, 3:].unique().tolist()) <= {0.0, 1.0}
    assert float((adv - x).abs().max()) <= 1.5 + 1e-6
    assert torch.equal(result.success, model.predict(adv) != y)
    with pytest.raises(UsageError, match="outside"):
        PGD(eps=0.1)(model, x, y, constraints=TabularConstraints(immutable=[9]))


def test_access_is_enforced(digits_cnn, digits_batch):
    x, y = digits_batch
    with pytest.raises(UsageError, match="white-box access"):
        PGD(eps=0.1)(digits_cnn.as_score(), x, y)


def test_pgd_at_least_as_strong_as_torchattacks(digits_cnn):
    torchattacks = pytest.importorskip("torchattacks")
    from dlsec.core import load_dataset

    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    x, y = torch.from_numpy(test.x[:200]), torch.from_numpy(test.y[:200])
    for seed in range(3):
        ours = PGD(eps=0.1, steps=40, step_size=0.01, seed=seed)(digits_cnn, x, y)
        torch.manual_seed(seed)  # the same random start: our generator draws what torch's global one would
        adv = torchattacks.PGD(digits_cnn, eps=0.1, alpha=0.01, steps=40, random_start=True)(x, y)
        theirs = float((digits_cnn.predict(adv) == y).float().mean())
        assert ours.robust_accuracy <= theirs


# ------------------------------------------------------------------ the top-k target sweep
@pytest.mark.parametrize(
    "registered, wrapped",
    [
        (
            lambda: APGDT(eps=0.1, steps=20, n_target_classes=3, restarts=2, seed=1),
            lambda: TopTargets(APGD(eps=0.1, steps=20, loss="dlr", restarts=2, seed=1), n_target_classes=3),
        ),
        (
            lambda: FABTargeted(norm="l2", steps=20, n_target_classes=3),
            lambda: TopTargets(FAB(norm="l2", steps=20), n_target_classes=3),
        ),
    ],
    ids=["apgd-t", "fab-t"],
)
def test_apgd_t_and_fab_t_are_the_sweep_around_apgd_and_fab(registered, wrapped, digits_cnn, digits_batch):
    x, y = digits_batch
    ours, sweep = registered()(digits_cnn, x, y), wrapped()(digits_cnn, x, y)
    assert torch.equal(ours.x_adv, sweep.x_adv) and ours.queries == sweep.queries
    one = TopTargets(wrapped().attack, n_target_classes=1)(digits_cnn, x, y)
    assert (ours.success | ~one.success).all()  # the first class tried is the same run
    assert ours.robust_accuracy <= one.robust_accuracy


def test_top_targets_aims_at_the_runner_up_first_and_at_most_k_minus_one_classes():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.2], [0.6, 0.1, 0.2, 0.9]])
    # rows rank as 1, 2, 3, 0 and 3, 0, 2, 1: aim at ranks 2, 3, 4 (capped at K - 1 = 3)
    targets = TopTargets(FAB(), n_target_classes=9).targets(scores)
    assert [t.tolist() for t in targets] == [[2, 0], [3, 2], [0, 1]]
    assert len(TopTargets(FAB(), n_target_classes=2).targets(scores)) == 2


def test_top_targets_needs_an_attack_that_can_aim(digits_cnn, digits_batch):
    with pytest.raises(UsageError, match="aim at a class"):
        TopTargets(PGD(eps=0.1))
    with pytest.raises(UsageError, match="n_target_classes"):
        TopTargets(FAB(), n_target_classes=0)
    x, y = digits_batch
    target = (y + 1) % 10  # built around a targeted attack, it runs it once on the targets
    swept = TopTargets(FAB(steps=20, targeted=True))(digits_cnn, x[:16], y[:16], target=target[:16])
    plain = FAB(steps=20, targeted=True)(digits_cnn, x[:16], y[:16], target=target[:16])
    assert swept.targeted and torch.equal(swept.x_adv, plain.x_adv)
