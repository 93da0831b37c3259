"""AutoAttack on randomised models: the rand version, batched EOT, scoring by the expectation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dlsec.attacks import AutoAttack
from dlsec.attacks.evasion import Oracle
from dlsec.attacks.evasion._losses import ce_loss
from dlsec.attacks.evasion.wrappers import EOT, ExpectationModel
from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.errors import UsageError

_CENTRES = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])


class _NearestCentre(nn.Module):
    """Three classes in the unit square, scored by closeness to a centre, after Gaussian input noise."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.lin = nn.Linear(2, 3)
        with torch.no_grad():  # logits -10 |x - c|^2 up to a term shared by all classes
            self.lin.weight.copy_(20 * _CENTRES)
            self.lin.bias.copy_(-10 * (_CENTRES**2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x + self.sigma * torch.randn_like(x))


def _toy(sigma: float) -> WhiteBoxModel:
    return WhiteBoxModel(
        _NearestCentre(sigma), InputSpec(shape=(2,), num_classes=3, kind="tabular"), device="cpu"
    )


def _toy_data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = (_CENTRES[y] + 0.08 * torch.randn(n, 2, generator=g)).clamp(0, 1)
    return x, y


def test_rand_components_follow_the_reference_settings():
    components = AutoAttack(eps=0.1, version="rand").components()
    assert [type(c) for c in components] == [EOT, EOT]
    assert [c.attack.name for c in components] == ["apgd-ce", "apgd-dlr"]
    for c in components:
        assert c.samples == 20
        params = c.attack.get_params()
        assert params["steps"] == 100 and params["restarts"] == 1 and params["rho"] == 0.75
        assert params["eps"] == 0.1 and params["norm"] == "linf"
    assert [c.name for c in AutoAttack(eps=0.1).components()] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    with pytest.raises(UsageError, match="version"):
        AutoAttack(eps=0.1, version="plus")


def test_randomised_model_gets_the_rand_version_which_is_stronger():
    model, (x, y) = _toy(sigma=0.2), _toy_data()
    rand = AutoAttack(eps=0.3, seed=0)(model, x, y)  # auto
    assert rand.extras["version"] == "rand" and rand.summary()["version"] == "rand"
    assert rand.passes == 20 and rand.summary()["scoring"] == "expectation over 20 passes"
    assert rand.correct_rate is not None and len(rand.correct_rate) == len(y)
    assert set(rand.extras["fooled_by"]) == {"apgd-ce", "apgd-dlr"}
    assert float((rand.x_adv - x).abs().max()) <= 0.3 + 1e-6
    torch.manual_seed(0)  # the standard version scores with one (random) pass
    standard = AutoAttack(eps=0.3, seed=0, version="standard")(model, x, y)
    assert standard.extras["version"] == "standard" and standard.passes == 1
    # One noisy pass misleads the standard version: examples are kept at points that one pass
    # got wrong by chance (about 0.43 here against 0.22 for rand).
    assert standard.robust_accuracy >= rand.robust_accuracy + 0.1, (
        standard.robust_accuracy,
        rand.robust_accuracy,
    )
    again = AutoAttack(eps=0.3, seed=0)(model, x, y)
    assert torch.equal(again.x_adv, rand.x_adv) and again.robust_accuracy == rand.robust_accuracy


def test_deterministic_model_gets_the_standard_version_unchanged():
    model, (x, y) = _toy(sigma=0.0), _toy_data(48)
    auto = AutoAttack(eps=0.4, seed=0)(model, x, y)  # a budget APGD-CE and APGD-T settle quickly
    standard = AutoAttack(eps=0.4, seed=0, version="standard")(model, x, y)
    assert auto.extras["version"] == "standard" and auto.passes == 1 and auto.correct_rate is None
    assert "scoring" not in auto.summary()
    assert torch.equal(auto.x_adv, standard.x_adv)
    assert auto.robust_accuracy == standard.robust_accuracy and auto.queries == standard.queries
    assert auto.extras == standard.extras and auto.extras["fooled_by"]["apgd-t"] > 0


class _NoisyMLP(nn.Module):
    """A small MLP after Gaussian input noise; it keeps every noise draw it makes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        self.noise: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = 0.3 * torch.randn_like(x)
        self.noise.append(noise)
        return self.net(x + noise)


@pytest.mark.parametrize("max_rows", [None, 10, 1])
def test_batched_eot_gradient_is_the_mean_of_the_per_draw_gradients(max_rows):
    module = _NoisyMLP()
    model = WhiteBoxModel(module, InputSpec(shape=(4,), num_classes=3, kind="tabular"), device="cpu")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(5, 4, generator=g), torch.tensor([0, 1, 2, 0, 1])
    eot = ExpectationModel(model, 20, max_rows=max_rows)
    torch.manual_seed(0)
    plan = eot.plan(x)
    assert sum(plan) == 20 and max(plan) == (20 if max_rows is None else max(1, max_rows // 5))
    module.noise.clear()
    oracle = Oracle(eot)
    draws, loss, grad = oracle.loss_and_grad(
        x, lambda d: ce_loss(d.reshape(-1, 3), y.repeat(len(d))).reshape(len(d), -1)
    )
    assert draws.shape == (20, 5, 3) and oracle.queries == 5
    assert len(module.noise) == len(plan)  # one forward pass per stack, not one per draw
    # The same draws, one at a time: the mean of the per-draw losses and gradients.
    noise = torch.cat([n.reshape(-1, *x.shape) for n in module.noise])
    grads, losses = [], []
    for n in noise:
        xi = x.clone().requires_grad_(True)
        li = ce_loss(module.net(xi + n), y)
        grads.append(torch.autograd.grad(li.sum(), xi)[0])
        losses.append(li.detach())
    torch.testing.assert_close(grad, torch.stack(grads).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, torch.stack(losses).mean(0), atol=1e-6, rtol=1e-5)
    # The passes really differ: the mean is not one pass's gradient.
    assert float((torch.stack(grads) - grads[0]).abs().max()) > 1e-3


class _NoisePerCall(nn.Module):
    """One noise draw shared by the whole batch: stacking copies would share it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], 1) + torch.randn(1, 2)


def test_models_drawing_once_per_call_get_one_pass_per_draw():
    model = WhiteBoxModel(_NoisePerCall(), InputSpec(shape=(1,), num_classes=2, kind="tabular"), device="cpu")
    eot = ExpectationModel(model, 6)
    x = torch.rand(4, 1)
    assert eot.plan(x) == [1] * 6
    draws = eot.draws(x)
    assert draws.shape == (6, 4, 2) and len({round(float(d[0, 0] - x[0, 0]), 6) for d in draws}) == 6
    deterministic = ExpectationModel(_toy(sigma=0.0), 6)
    assert deterministic.plan(torch.rand(4, 2)) == [6]


class _Threshold(nn.Module):
    """Class 0 when ``x0 + noise > 0``, else class 1 (class 2 never): ``P(correct)`` is known."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :1] + self.sigma * torch.randn_like(x[:, :1])
        return torch.cat([s, torch.zeros_like(s), torch.full_like(s, -50.0)], 1)


def test_scoring_by_the_expectation_matches_the_known_probabilities():
    sigma = 0.2
    spec = InputSpec(shape=(2,), num_classes=3, lower=-1.0, upper=1.0, kind="tabular")
    model = WhiteBoxModel(_Threshold(sigma), spec, device="cpu")
    n = 300
    x0 = torch.linspace(-0.4, 0.4, n)
    x = torch.stack([x0, torch.zeros(n)], 1)
    y = torch.where(torch.arange(n) % 2 == 0, 0, 1)
    # P(correct) = Phi(x0 / sigma) for class 0, Phi(-x0 / sigma) for class 1.
    z = torch.where(y == 0, x0, -x0) / sigma
    p = 0.5 * (1 + torch.erf(z / math.sqrt(2))).double()
    result = AutoAttack(eps=0.0, seed=0)(model, x, y)  # no budget: the attack cannot move
    assert result.extras["version"] == "rand" and result.passes == 20
    assert torch.equal(result.x_adv, x)
    rates = result.correct_rate
    assert rates is not None and torch.equal(rates * 20, (rates * 20).round())  # counts out of 20 passes
    sd = float((p * (1 - p) / 20).sum().sqrt() / n)
    assert abs(result.robust_accuracy - float(p.mean())) < 4 * sd, (result.robust_accuracy, float(p.mean()))
    assert abs(result.clean_accuracy - float(p.mean())) < 4 * sd
    # Per example, the rate tracks the probability (20 passes: binomial noise around it).
    assert float((rates - p).abs().mean()) < 0.12
    assert torch.equal(result.robust, rates)


def test_rand_on_two_classes_names_the_attack_it_cannot_run():
    spec = InputSpec(shape=(2,), num_classes=2, lower=-1.0, upper=1.0, kind="tabular")
    model = WhiteBoxModel(_Threshold(0.2), spec, device="cpu")
    x = torch.stack([torch.linspace(-0.3, 0.3, 20), torch.zeros(20)], 1)
    y = (x[:, 0] <= 0).long()

    class _TwoClasses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model.module(x)[:, :2]

    two = WhiteBoxModel(_TwoClasses(), spec, device="cpu")
    result = AutoAttack(eps=0.2, seed=0)(two, x, y)
    assert result.extras["version"] == "rand" and list(result.extras["fooled_by"]) == ["apgd-ce"]
    assert "3 classes" in result.extras["skipped"]["apgd-dlr"]
    assert result.summary()["skipped"] == result.extras["skipped"]
    assert result.robust_accuracy < 0.5


def test_campaign_gates_read_the_rand_version_and_the_report_names_it(tmp_path):
    from dlsec.assess import run_assessment
    from dlsec.assess.campaign import Campaign
    from dlsec.core.data import Dataset

    model, (x, y) = _toy(sigma=0.2), _toy_data(48)
    data = Dataset(x.numpy(), y.numpy(), model.spec, "toy")
    campaign = Campaign.model_validate(
        {
            "threat_model": {"access": "white-box", "norms": {"linf": [0.3]}},
            "attacks": ["autoattack"],
            "examples": 48,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            "masking_checks": False,
            "gates": [
                {"name": "robust", "metric": "robust_accuracy", "norm": "linf", "eps": 0.3, "min": 0.5}
            ],
        }
    )
    done = run_assessment(model, data, campaign, tmp_path / "out", model_ref="toy", model_sha256="x")
    curve = done.report["robustness"]["curves"]["linf"]
    assert curve["versions"] == {"autoattack": "rand"}
    assert curve["scoring"] == {"autoattack": "expectation over 20 passes"}
    direct = AutoAttack(eps=0.3, seed=campaign.seed)(model, x, y)
    assert curve["robust_accuracy"] == [pytest.approx(direct.robust_accuracy, abs=1e-12)]
    assert curve["per_attack"]["autoattack"] == curve["robust_accuracy"]
    # The gate reads the expectation (below 0.5 here), so it fails.
    assert direct.robust_accuracy < 0.5 and not done.passed
    html = (tmp_path / "out" / "report.html").read_text()
    assert "autoattack (rand version)" in html and "expectation over 20 passes" in html


def noisy_centres(sigma: float = 0.2) -> nn.Module:
    """The randomised toy model, as a factory for ``--arch`` (its weights are fixed)."""
    return _NearestCentre(sigma)


def test_cli_runs_rand_on_a_randomised_model_and_takes_version(capsys, tmp_path):
    from safetensors.torch import save_file

    from tests.cli.test_cli import assert_user_error, run, run_json

    save_file(noisy_centres().state_dict(), tmp_path / "toy.safetensors", metadata={"model": "noisy centres"})
    x, y = _toy_data(24)
    np.savez(tmp_path / "toy.npz", x=x.numpy(), y=y.numpy())
    args = (
        "attack",
        "-m",
        str(tmp_path / "toy.safetensors"),
        "--arch",
        "tests.attacks.test_autoattack_rand:noisy_centres",
        "-d",
        str(tmp_path / "toy.npz"),
        "--split",
        "all",
        "--attack",
        "autoattack",
        "--eps",
        "0.3",
    )
    auto = run_json(capsys, *args)
    assert auto["version"] == "rand" and auto["scoring"] == "expectation over 20 passes"
    standard = run_json(capsys, *args, "--version", "standard")
    assert standard["version"] == "standard" and "scoring" not in standard
    code, out, _ = run(capsys, *args)
    assert code == 0 and "rand" in out and "expectation over 20 passes" in out
    code, _, err = run(capsys, *args, "--version", "plus")
    assert_user_error(code, err, "version")
    code, _, err = run(capsys, *args[:-4], "--attack", "pgd", "--eps", "0.3", "--version", "rand")
    assert_user_error(code, err, "--version")


def test_campaign_attacks_run_under_eot_on_a_randomised_model_and_say_so_when_they_cannot(tmp_path):
    from dlsec.assess import run_assessment
    from dlsec.assess.campaign import Campaign
    from dlsec.attacks import get_attack
    from dlsec.core.data import Dataset

    model, (x, y) = _toy(sigma=0.2), _toy_data(48)
    data = Dataset(x.numpy(), y.numpy(), model.spec, "toy")

    def campaign(eot: int) -> Campaign:
        return Campaign.model_validate(
            {
                "threat_model": {"access": "white-box", "norms": {"linf": [0.3]}},
                "attacks": ["apgd-ce"],
                "examples": 48,
                "eot_samples": eot,
                "corruptions": {"enabled": False},
                "certification": {"enabled": False},
                "masking_checks": False,
                "explain": {"enabled": False},
            }
        )

    done = run_assessment(model, data, campaign(20), tmp_path / "eot", model_ref="toy", model_sha256="x")
    curve = done.report["robustness"]["curves"]["linf"]
    assert curve["scoring"] == {"apgd-ce": "expectation over 20 passes"}
    assert done.report["robustness"]["randomised_forward"] == {"eot_samples": 20}
    direct = EOT(get_attack("apgd-ce", eps=0.3, norm="linf", seed=0), samples=20)(model, x, y)
    assert curve["robust_accuracy"] == [pytest.approx(direct.robust_accuracy, abs=1e-12)]
    assert [i["check"] for i in done.report["not_run"]] == ["model-file scan"]  # in memory: no file
    single = run_assessment(model, data, campaign(0), tmp_path / "one", model_ref="toy", model_sha256="x")
    checks = {i["check"]: i["reason"] for i in single.report["not_run"]}
    assert "single passes" in checks["evasion under EOT"] and single.report["complete"] is False
    # one noisy pass is kinder than the expectation the EOT run scores
    assert single.report["robustness"]["curves"]["linf"]["robust_accuracy"][0] > curve["robust_accuracy"][0]
