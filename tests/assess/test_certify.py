"""Randomised smoothing against the closed form on a linear classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from dlsec.assess.certify import ABSTAIN, RandomizedSmoothing, certified_accuracy, clopper_pearson_lower


@pytest.mark.parametrize("k, n, alpha", [(50, 100, 0.05), (990, 1000, 0.001), (1, 10, 0.01), (10, 10, 0.05)])
def test_clopper_pearson_matches_the_exact_interval(k, n, alpha):
    # A two-sided exact interval at level 1 - 2 alpha has the one-sided 1 - alpha bound as its low end.
    expected = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert clopper_pearson_lower(0, n, alpha) == 0.0


def test_certified_radius_is_the_distance_to_a_linear_boundary(linear_model):
    # Smoothing a linear classifier gives p_A = Phi(d / sigma), d the distance to the boundary
    # x0 = x1, so the exact certified radius is d. The bound must not exceed it, and with many
    # samples it comes close.
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(12, 2, generator=g)
    distance = (x[:, 0] - x[:, 1]).abs().numpy() / np.sqrt(2)
    sigma = 0.25
    smoothing = RandomizedSmoothing(sigma=sigma, n0=100, n=20000, alpha=0.001, seed=1)
    cert = smoothing.certify(linear_model, x)
    label = linear_model.predict(x).numpy()
    certified = cert.prediction != ABSTAIN
    assert np.all(cert.radius <= distance + 1e-9)
    assert np.all(cert.prediction[certified] == label[certified])
    far = distance > 0.05
    assert certified[far].all()
    np.testing.assert_allclose(cert.radius[far], distance[far], atol=0.1 * sigma)


def test_points_on_the_boundary_abstain(linear_model):
    x = torch.tensor([[0.5, 0.5], [0.3, 0.3]])
    smoothing = RandomizedSmoothing(sigma=0.25, n0=100, n=2000, alpha=0.001, seed=0)
    assert (smoothing.predict(linear_model, x) == ABSTAIN).all()
    assert (smoothing.certify(linear_model, x).prediction == ABSTAIN).all()


def test_certified_accuracy_counts_correct_and_certified():
    from dlsec.assess.certify import Certificate

    cert = Certificate(np.array([0, 1, ABSTAIN, 1]), np.array([0.5, 0.2, 0.0, 0.9]), np.zeros(4))
    assert certified_accuracy(cert, np.array([0, 0, 1, 1]), [0.0, 0.3, 1.0]) == [0.5, 0.5, 0.0]


def test_works_with_labels_only(linear_model):
    x = torch.tensor([[0.9, 0.1]])
    cert = RandomizedSmoothing(sigma=0.1, n=500, seed=0).certify(linear_model.as_decision(), x)
    # Every noisy copy is class 0, so the bound is alpha^(1/n) and the radius sigma * Phi^-1 of it.
    from scipy.stats import norm

    assert cert.prediction[0] == 0
    assert cert.radius[0] == pytest.approx(0.1 * norm.ppf(0.001 ** (1 / 500)))
