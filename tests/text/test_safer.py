"""SAFER (certified robustness to word substitutions): known answers on tiny cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from dlsec.errors import UsageError
from dlsec.text import SAFER, ScoreTextModel
from dlsec.text.certify import cp_lower, safer_delta


def constant(cls: int = 1) -> ScoreTextModel:
    row = [0.1, 0.9] if cls == 1 else [0.9, 0.1]
    return ScoreTextModel(lambda ts: np.array([row] * len(ts)), ("neg", "pos"))


def test_clopper_pearson_matches_the_beta_quantile():
    assert cp_lower(90, 100, 0.01) == pytest.approx(beta.ppf(0.01, 90, 11), rel=1e-9)
    assert cp_lower(0, 10, 0.01) == 0.0
    # all successes: alpha ** (1 / n)
    assert cp_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-9)
    with pytest.raises(UsageError):
        cp_lower(5, 4, 0.01)


def test_delta_is_one_minus_the_product_of_the_smallest_ratios():
    ratios = [1.0, 0.5, 0.25, 0.8]
    assert safer_delta(ratios, 0) == 0.0
    assert safer_delta(ratios, 1) == pytest.approx(0.75)
    assert safer_delta(ratios, 2) == pytest.approx(1 - 0.25 * 0.5)
    assert safer_delta(ratios, 3) == pytest.approx(1 - 0.25 * 0.5 * 0.8)


def test_overlap_ratio_by_hand():
    # S(good) = {good, fine, nice, ok}; S(fine) = {fine, good}; S(nice) = {nice};
    # S(ok) = {ok, good, fine, nice}
    thesaurus = {"good": ["fine", "nice", "ok"], "fine": ["good"], "ok": ["good", "fine", "nice"]}
    safer = SAFER(thesaurus=thesaurus)
    # fine: |{good, fine}| / max(4, 2) = 0.5; nice: 1/4; ok: 4/4. The minimum is 1/4.
    assert safer.overlap_ratio("good") == pytest.approx(0.25)
    assert safer.overlap_ratio("nice") == 1.0
    assert safer.perturbation_set("Good") == ("Good", "Fine", "Nice", "Ok")


def test_constant_model_is_certified_at_every_radius():
    groups = [["good", "fine", "nice"], ["movie", "film", "picture"]]
    thesaurus = {w: [o for o in g if o != w] for g in groups for w in g}
    safer = SAFER(n0=10, n=100, alpha=0.01, thesaurus=thesaurus)
    texts = ["a good movie", "nice film, fine picture", "plot"]
    cert = safer.certify(constant(1), texts)
    assert cert.prediction.tolist() == [1, 1, 1]
    assert cert.all_words.all()
    assert cert.certified_accuracy([1, 1, 1], [0, 1, 2, 5, 50]) == [1.0] * 5
    assert cert.p_lower[0] == pytest.approx(0.01 ** (1 / 100))


def test_a_model_that_flips_on_one_word_is_not_certified_beyond_radius_zero():
    # "good" has a large perturbation set whose members share nothing with it.
    syns = [f"syn{c}" for c in "abcdefghij"]
    thesaurus = {"good": syns}
    model = ScoreTextModel(
        lambda ts: np.array([[0.1, 0.9] if "good" in t.lower().split() else [0.9, 0.1] for t in ts]),
        ("neg", "pos"),
    )
    safer = SAFER(n0=20, n=200, alpha=0.01, thesaurus=thesaurus, seed=1)
    cert = safer.certify(model, ["not good at all"])
    # the smoothed class is "neg" (good survives 1 draw in 11): right at radius 0, never beyond
    assert cert.prediction.tolist() == [0]
    assert cert.ratios[0][1] == pytest.approx(1 / 11)
    assert cert.certified_accuracy([0], [0, 1, 2]) == [1.0, 0.0, 0.0]
    # the label it should have had ("pos") is certified nowhere
    assert cert.certified_accuracy([1], [0, 1]) == [0.0, 0.0]


def test_radius_matches_a_hand_computation():
    # two risky words with ratio 1/2 each: Delta_1 = 0.5, Delta_2 = 0.75.
    thesaurus = {"aa": ["bb"], "cc": ["dd"]}
    safer = SAFER(n0=10, n=1000, alpha=0.001, thesaurus=thesaurus)
    safer._sets.update({"bb": ("bb",), "dd": ("dd",)})
    assert safer.overlap_ratio("aa") == 0.5
    cert = safer.certify(constant(1), ["aa cc"])
    p = 0.001 ** (1 / 1000)  # every sample agrees
    assert cert.p_lower[0] == pytest.approx(p)
    # p - 1/2 ~ 0.497 < 0.5 = Delta_1: certified at radius 0 only
    assert cert.radius.tolist() == [0]
    assert not cert.all_words[0]


def test_seeded_runs_reproduce_and_bad_settings_are_refused():
    thesaurus = {"good": ["fine", "nice"]}
    model = ScoreTextModel(
        lambda ts: np.array([[0.2, 0.8] if "good" in t.lower() else [0.7, 0.3] for t in ts]), ("n", "p")
    )
    a = SAFER(n0=10, n=60, alpha=0.05, thesaurus=thesaurus, seed=3).certify(model, ["good good good"])
    b = SAFER(n0=10, n=60, alpha=0.05, thesaurus=thesaurus, seed=3).certify(model, ["good good good"])
    assert a.p_lower.tolist() == b.p_lower.tolist()
    with pytest.raises(UsageError):
        SAFER(alpha=0.7)
    with pytest.raises(UsageError):
        SAFER(n=0)
    with pytest.raises(UsageError, match="TextClassifier"):
        SAFER().certify(object(), ["x"])  # type: ignore[arg-type]
