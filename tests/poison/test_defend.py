import numpy as np
import pytest

from dlsec.attacks.poisoning import LabelFlip, train_victim
from dlsec.defend import STRIP, BackdoorFound, DataAuditor, NeuralCleanse
from dlsec.defend._signals import (
    activation_clustering_scores,
    confident_learning,
    robust_z,
    spectral_signature_scores,
)
from dlsec.errors import NotFittedError, UsageError
from dlsec.zoo import load_zoo_model


def _rates(flagged: np.ndarray, poison: np.ndarray, n: int) -> tuple[float, float]:
    mask = np.zeros(n, dtype=bool)
    mask[flagged] = True
    truth = np.zeros(n, dtype=bool)
    truth[poison] = True
    return float((mask & truth).sum() / truth.sum()), float((mask & ~truth).sum() / (~truth).sum())


def test_the_audit_finds_badnets_poison_and_its_target(badnets):
    x_before = badnets.data.x.copy()
    report = DataAuditor(device="cpu").audit(badnets.data)
    tpr, fpr = _rates(report.flagged, badnets.poison_index, len(badnets.data))
    assert tpr >= 0.9 and fpr <= 0.05
    assert report.suspected_target == 0
    assert np.array_equal(badnets.data.x, x_before)  # never modified
    assert report.scores.shape == (len(badnets.data),)
    assert report.scores[badnets.poison_index].mean() > report.scores.mean() * 3
    cleaned = report.clean(badnets.data)
    assert len(cleaned) == len(badnets.data) - len(report.flagged)
    assert {"early_learning", "spectral_signature", "activation_clustering", "outlier", "label_noise"} <= set(
        report.signals
    )
    # each backdoor row's trigger is located: in the bottom-right corner, where BadNets stamps it
    backdoor_rows = [r for r, why in report.reasons.items() if "backdoor" in why]
    assert backdoor_rows and set(report.trigger_regions) == set(backdoor_rows)
    poisoned = [r for r in backdoor_rows if r in set(badnets.poison_index.tolist())]
    in_corner = [report.trigger_regions[r][0] >= 4 and report.trigger_regions[r][2] >= 4 for r in poisoned]
    assert np.mean(in_corner) >= 0.9


@pytest.mark.slow
def test_the_audit_flags_little_on_clean_data(digits_split):
    report = DataAuditor(device="cpu").audit(digits_split[0])
    assert len(report.flagged) <= 0.02 * len(digits_split[0])
    assert report.suspected_target is None


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"folds": 1}, "folds"),
        ({"exclude_quantile": 1.2}, "exclude_quantile"),
        ({"early_epochs": 5, "epochs": 3}, "cannot exceed"),
        ({"epochs": 0}, "epochs"),
        ({"confirm_fraction": 0.0}, "confirm_fraction"),
        ({"folds": 500}, "smallest class"),
    ],
)
def test_unsatisfiable_audit_parameters_are_errors(digits_split, params, fragment):
    with pytest.raises(UsageError, match=fragment):
        DataAuditor(**params).audit(digits_split[0])


def test_confident_learning_matches_cleanlab():
    filters = pytest.importorskip("cleanlab.filter")
    rng = np.random.default_rng(0)
    n, k = 600, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 3.0
    noisy = labels.copy()
    flip = rng.choice(n, 60, replace=False)
    noisy[flip] = (labels[flip] + 1) % k
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ours, _ = confident_learning(probs, noisy)
    theirs = filters.find_label_issues(noisy, probs, filter_by="prune_by_noise_rate")
    jaccard = (ours & theirs).sum() / (ours | theirs).sum()
    assert jaccard >= 0.8
    assert ours[flip].mean() >= 0.8


def test_spectral_signatures_and_activation_clustering_find_a_planted_cluster():
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (300, 16))
    labels = np.zeros(300, dtype=np.int64)
    feats[:30] += 6.0 * np.eye(16)[0]  # 10% of the class, shifted along one direction
    spectral = spectral_signature_scores(feats, labels)
    assert set(np.argsort(-spectral)[:30]) >= set(range(27))
    ac, stats = activation_clustering_scores(feats, labels)
    assert (
        (ac[:30] > 0).all() and (ac[30:] == 0).all() and stats[0]["minority_fraction"] == pytest.approx(0.1)
    )
    assert robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))[-1] > 3


def test_neural_cleanse_flags_the_backdoored_model_with_its_target(digits_split, badnets_model):
    test = digits_split[1]
    report = NeuralCleanse(max_examples=96).scan(badnets_model, test)
    assert report.backdoor and report.target == 0
    mask = report.masks[0]
    assert mask[5:, 5:].sum() > 0.5 * mask.sum()  # the reconstructed trigger sits in the corner


def test_neural_cleanse_passes_a_model_trained_on_flipped_labels(digits_split):
    # Random label noise plants no trigger but makes several classes cheap to reach (before the
    # margin check the scan flagged class 3 with anomaly index 4.5, class 5 next at 3.2).
    flipped = LabelFlip(rate=0.1).poison(digits_split[0])
    model = train_victim(flipped.data, seed=0, device="cpu")
    report = NeuralCleanse().scan(model, digits_split[1])
    assert not report.backdoor and report.target is None
    order = np.argsort(report.mask_l1)
    assert report.anomaly_index.max() > 2.0  # the anomaly index alone would have flagged it
    assert report.mask_l1[order[0]] > 0.75 * report.mask_l1[order[1]]
    with pytest.raises(UsageError, match="margin"):
        NeuralCleanse(margin=1.5).scan(model, digits_split[1])


@pytest.mark.slow
def test_neural_cleanse_passes_the_clean_zoo_model(digits_split, badnets_model):
    scanner = NeuralCleanse(max_examples=96)
    report = scanner.check(load_zoo_model("digits-cnn"), digits_split[1])  # does not raise
    assert not report.backdoor and report.target is None
    with pytest.raises(BackdoorFound, match="class 0"):
        scanner.check(badnets_model, digits_split[1])


def test_strip_detects_triggered_inputs(digits_split, badnets, badnets_model):
    test = digits_split[1]
    clean, others = test.x[: len(test) // 2], test.x[len(test) // 2 :]
    detector = STRIP(model=badnets_model, fpr=0.05).fit(clean)
    triggered = badnets.apply_trigger(others[test.y[len(test) // 2 :] != 0])
    assert detector.predict(triggered).mean() >= 0.9
    assert detector.predict(others).mean() <= 0.12
    assert detector.score(others).shape == (len(others),)
    assert (detector.clean_scores_ > detector.threshold).mean() <= 0.05
    with pytest.raises(NotFittedError):
        STRIP(model=badnets_model).score(others)
    with pytest.raises(UsageError, match="fpr"):
        STRIP(model=badnets_model, fpr=1.5).fit(clean)
