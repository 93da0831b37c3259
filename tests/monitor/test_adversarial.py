"""Per-example detectors on the zoo model: calibrated false positives, attacks flagged, embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dlsec.attacks import PGD
from dlsec.core import load_dataset
from dlsec.errors import UsageError
from dlsec.monitor import FeatureSqueezing, Mahalanobis, embedding_fn
from dlsec.monitor.adversarial import median_filter
from dlsec.zoo import load_zoo_model


@pytest.fixture(scope="module")
def setup():
    model = load_zoo_model("digits-cnn")
    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    # Rows of the bundled table are grouped by writer: shuffle before halving the test split.
    test = test.subset(np.random.default_rng(0).permutation(len(test)))
    x, y = torch.from_numpy(test.x[225:]), torch.from_numpy(test.y[225:])
    adv = PGD(eps=0.1, steps=20, seed=0)(model, x, y)
    return model, train, test, adv


@pytest.mark.parametrize(
    "make",
    [lambda m: FeatureSqueezing(model=m, fpr=0.1), lambda m: Mahalanobis(model=m, fpr=0.1)],
    ids=["squeezing", "mahalanobis"],
)
def test_detectors_hold_their_false_positive_rate_and_flag_pgd(setup, make):
    model, train, test, adv = setup
    det = make(model).fit(train.x, train.y).calibrate(test.x[:225])
    clean_flags = det.predict(test.x[225:])
    interval = stats.binomtest(int(clean_flags.sum()), len(clean_flags)).proportion_ci(0.999)
    assert interval.low <= 0.1 <= interval.high
    fooled = adv.success.numpy()
    assert fooled.sum() > 50
    detected = det.predict(adv.x_adv.numpy()[fooled]).mean()
    assert detected > 2 * clean_flags.mean()
    # A window of attack traffic is flagged as a whole; a clean window is not.
    assert det.score(adv.x_adv.numpy()[fooled]).drift
    assert not det.score(test.x[225:]).drift


def test_squeezing_scores_are_the_l1_gap_of_probabilities(setup):
    model, _, test, _ = setup
    det = FeatureSqueezing(model=model, bit_depth=1, median_size=2).fit(test.x[:50])
    x = torch.from_numpy(test.x[:5])
    p = model.probs(x).cpu()
    p_bits = model.probs((x >= 0.5).float()).cpu()
    p_med = model.probs(median_filter(x, 2)).cpu()
    expected = torch.maximum((p - p_bits).abs().sum(1), (p - p_med).abs().sum(1))
    assert det.score_samples(x) == pytest.approx(expected.numpy(), abs=1e-5)


def test_median_filter_matches_scipy():
    from scipy.ndimage import median_filter as scipy_median

    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ours = median_filter(x, 3).numpy()
    ref = np.stack([scipy_median(x[i, 0].numpy(), size=3, mode="mirror") for i in range(2)])[:, None]
    assert ours == pytest.approx(ref)


def test_penultimate_embedding_and_mahalanobis_by_hand(setup):
    model, train, _, _ = setup
    f = embedding_fn(model)
    x = torch.from_numpy(train.x[:4]).to(model.device)
    head = model.module.classifier
    mean, std = model.spec.mean[0], model.spec.std[0]
    manual = head[3](head[2](head[1](head[0](model.module.features((x - mean) / std)))))
    assert f(x).detach().cpu().numpy() == pytest.approx(manual.detach().cpu().numpy(), abs=1e-5)
    det = Mahalanobis(model=model, shrinkage=0.0).fit(train.x[:600], train.y[:600])
    feats = f(torch.from_numpy(train.x[:5])).double().cpu()
    d = feats[:, None, :] - det.class_means_.double().cpu()[None]
    by_hand = torch.einsum("ncd,de,nce->nc", d, det.precision_.double().cpu(), d).amin(1)
    assert det.score_samples(train.x[:5]) == pytest.approx(by_hand.detach().numpy(), rel=1e-3)
    with pytest.raises(UsageError, match="no layer"):
        embedding_fn(model, layer="nope")
    with pytest.raises(UsageError, match="white-box"):
        Mahalanobis(model=model.as_score()).fit(train.x[:100])


class _LengthScore:
    """A stand-in for a detector written elsewhere (STRIP's shape: fit, score, threshold)."""

    def fit(self, clean_x):
        self.mean = clean_x.reshape(len(clean_x), -1).mean(0)
        self.threshold = 123.0
        return self

    def score(self, x):
        return np.abs(x.reshape(len(x), -1) - self.mean).sum(1)


def test_an_external_per_example_detector_is_calibrated_like_ours():
    from dlsec.monitor import ExternalExampleDetector, OnlineMonitor

    rng = np.random.default_rng(0)
    det = ExternalExampleDetector(detector=_LengthScore(), name="strip", fpr=0.1).fit(
        rng.normal(size=(1000, 4))
    )
    assert det.own_threshold_ == 123.0 and det.threshold_ < 123.0
    flags = det.predict(rng.normal(size=(2000, 4)))
    interval = stats.binomtest(int(flags.sum()), len(flags)).proportion_ci(0.999)
    assert interval.low <= 0.1 <= interval.high
    assert (
        det.score(rng.normal(size=(50, 4)) * 3).drift
        and det.score(rng.normal(size=(50, 4))).detector == "strip"
    )
    mon = OnlineMonitor(ExternalExampleDetector(detector=_LengthScore(), name="strip"), window=20, ert=400)
    assert mon.fit(rng.normal(size=(600, 4))).update(rng.normal(size=(20, 4)) * 4)[0].rule == "strip"


def test_the_window_test_of_a_per_example_detector_holds_its_level_with_a_small_calibration():
    """30 calibration scores set a noisy threshold; the beta-binomial window test accounts for it
    (a Binomial(n, fpr) test would fire on clean windows far more often than alpha)."""
    from dlsec.monitor import ExternalExampleDetector

    rng = np.random.default_rng(1)
    trials, alpha = 400, 0.1
    fired = 0
    for i in range(trials):
        det = ExternalExampleDetector(
            detector=_LengthScore(), fpr=0.1, alpha=alpha, calibration_fraction=0.5, seed=i
        )
        det.fit(rng.normal(size=(60, 2)))
        assert det.n_calibration_ == 30
        fired += det.score(rng.normal(size=(50, 2))).drift
    interval = stats.binomtest(fired, trials).proportion_ci(0.999)
    assert interval.low <= alpha <= interval.high, fired
