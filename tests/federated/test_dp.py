"""Client-level DP (DP-FedAvg): clipping, the noise, and accounting by Opacus's RDP accountant."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from dlsec.errors import UsageError
from dlsec.federated import DPFedAvg, FLConfig, clip_updates, epsilon_for, noise_for_epsilon, simulate
from dlsec.federated._dp import rdp_orders


def _direct_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=z, sample_rate=q)
    return float(accountant.get_epsilon(delta=delta, alphas=rdp_orders()))


def test_clipping_bounds_each_update_norm() -> None:
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    clipped, norms = clip_updates(updates, 1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5, 0.0, 10.0])
    assert bool((clipped.norm(dim=1) <= 1.0 + 1e-6).all())
    assert clipped[1].tolist() == pytest.approx([0.3, 0.4])  # under the norm: untouched
    assert clipped[0].tolist() == pytest.approx([0.6, 0.8])  # direction kept


def test_noise_std_is_z_c_over_m_and_seeded() -> None:
    z, c, m, d = 1.3, 0.5, 4, 20_000
    updates = torch.randn(m, d, generator=torch.Generator().manual_seed(1)) * 10
    mech = DPFedAvg(noise_multiplier=z, clipping_norm=c, sample_rate=0.4, delta=1e-5, seed=7)
    out = mech(updates).update
    assert mech.noise_stds == [z * c / m]
    clipped, _ = clip_updates(updates, c)
    expected = clipped.sum(dim=0) / m + mech.noise(1, d, z * c / m)
    assert torch.equal(out, expected)
    # the noise is exactly std times the round's seeded standard normal draw
    g = torch.Generator().manual_seed(mech.noise_seed(1))
    assert torch.equal(mech.noise(1, d, z * c / m), torch.randn(d, generator=g) * (z * c / m))
    # and a second mechanism of the same seed adds the same noise
    again = DPFedAvg(noise_multiplier=z, clipping_norm=c, sample_rate=0.4, delta=1e-5, seed=7)
    assert torch.equal(again(updates).update, out)
    residual = out - clipped.sum(dim=0) / m
    assert float(residual.std()) == pytest.approx(z * c / m, rel=0.03)


def test_epsilon_matches_the_accountant_called_directly() -> None:
    z, q, rounds, delta = 1.1, 0.1, 8, 100**-1.1
    mech = DPFedAvg(noise_multiplier=z, clipping_norm=1.0, sample_rate=q, delta=delta)
    for _ in range(rounds):
        mech(torch.randn(10, 5))
    assert mech.epsilons[-1] == _direct_epsilon(z, q, rounds, delta)
    assert mech.epsilons[4] == _direct_epsilon(z, q, 5, delta)
    assert mech.epsilons == sorted(mech.epsilons)
    assert epsilon_for(z, sample_rate=q, rounds=rounds, delta=delta) == mech.epsilons[-1]


def test_target_epsilon_chooses_z_as_opacus_does() -> None:
    z = noise_for_epsilon(4.0, sample_rate=0.1, rounds=20, delta=1e-4)
    assert z == get_noise_multiplier(
        target_epsilon=4.0,
        target_delta=1e-4,
        sample_rate=0.1,
        steps=20,
        accountant="rdp",
        alphas=rdp_orders(),
    )
    assert epsilon_for(z, sample_rate=0.1, rounds=20, delta=1e-4) <= 4.0


def test_adaptive_clipping_moves_toward_the_quantile() -> None:
    mech = DPFedAvg(noise_multiplier=0.5, clipping_norm=0.1, adaptive=True, count_std=2.0, seed=0)
    updates = torch.randn(20, 50, generator=torch.Generator().manual_seed(0))  # norms about 7
    for _ in range(10):
        mech(updates)
    assert mech.clipping_norms[0] == 0.1
    assert mech.clipping_norms[-1] > mech.clipping_norms[0]  # every norm was above C: C grows
    # update noise: z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2
    z_delta = (0.5**-2 - 4.0**-2) ** -0.5
    assert mech.noise_stds[3] == pytest.approx(z_delta * mech.clipping_norms[3] / 20)


def test_bad_dp_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="clipping norm"):
        DPFedAvg(noise_multiplier=1.0, clipping_norm=0.0)
    with pytest.raises(UsageError, match="dp mode"):
        simulate(FLConfig(engine="local", dp="strong"))
    with pytest.raises(UsageError, match="cannot combine with flame: its own noise"):
        simulate(FLConfig(engine="local", dp="fixed", defense="flame"))
    with pytest.raises(UsageError, match="clients_per_round"):
        simulate(FLConfig(engine="local", clients_per_round=11))
    with pytest.raises(UsageError, match="adaptive clipping"):
        simulate(FLConfig(engine="local", dp="adaptive", num_clients=4, noise_multiplier=1.0))
    with pytest.raises(UsageError, match="target epsilon"):
        noise_for_epsilon(-1.0, sample_rate=0.5, rounds=3, delta=1e-5)


def test_simulation_reports_epsilon_per_round() -> None:
    config = FLConfig(
        num_clients=6,
        rounds=2,
        clients_per_round=3,
        dp="fixed",
        noise_multiplier=0.9,
        local_epochs=1,
        engine="local",
    )
    result = simulate(config)
    delta = 6**-1.1
    assert result.privacy is not None
    z = result.privacy["noise_multiplier"]
    assert z == 0.9
    eps = [r.epsilon for r in result.rounds]
    assert eps[0] is None
    assert eps[1:] == [_direct_epsilon(z, 0.5, t, delta) for t in (1, 2)]
    assert result.privacy["epsilon"] == eps[-1]
    assert result.privacy["noise_stds"] == [z * 1.0 / 3] * 2
    assert result.to_dict()["rounds"][2]["epsilon"] == eps[-1]
    assert all(len(r.distances) == 3 for r in result.rounds[1:])  # three clients sampled a round


@pytest.mark.slow
def test_inversion_under_dp_falls_to_chance() -> None:
    from dlsec.federated import study_inversion

    clear = study_inversion(examples=10, steps=150, seed=0)
    noisy = study_inversion(examples=10, steps=150, seed=0, dp_epsilon=8.0)
    assert clear.recognition_rate >= 0.8
    assert noisy.privacy is not None and noisy.privacy["epsilon"] == 8.0
    assert noisy.recognition_rate <= 0.3  # chance is 0.1 on ten classes
