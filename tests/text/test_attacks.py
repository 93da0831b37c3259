"""Text attacks: known answers on a linear bag-of-words model, constraints, seeds, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from dlsec.errors import UsageError
from dlsec.text import (
    PWWS,
    DeepWordBug,
    HotFlip,
    ScoreTextModel,
    TextFooler,
    get_text_attack,
    word_importance,
)
from dlsec.text.words import STOPWORDS, Words

THESAURUS = {
    "good": ["bad", "dull", "great"],
    "fine": ["dull"],
    "great": ["awful", "fine"],
    "movie": ["film"],
    "the": ["a"],  # a stop word: never swapped when keep_stopwords
    "paris": ["london"],  # a name: never swapped when keep_names
}


def word_attacks(**kw):
    return [
        PWWS(thesaurus=THESAURUS, **kw),
        TextFooler(thesaurus=THESAURUS, **kw),
        HotFlip(thesaurus=THESAURUS, **kw),
    ]


@pytest.mark.parametrize("method", ["deletion", "unk"])
def test_word_importance_ranks_words_by_their_weight(linear, method):
    text = "fine great good movie bad"
    scores = word_importance(linear, text, 1, method=method)
    weights = np.array([1.0, 2.0, 3.0, 0.0, -2.0])
    assert list(np.argsort(-scores, kind="stable")) == list(np.argsort(-weights, kind="stable"))


@pytest.mark.parametrize("attack", word_attacks(max_change=0.25), ids=lambda a: a.name)
def test_one_swap_attack_finds_the_swap_the_weights_predict(linear, attack):
    # mean score 1.0 > 0: class 1. One swap allowed (25% of 4 words). Only good->bad flips it:
    # fine->dull gives 2.5/4, good->dull 0.5/4, good->great 0.75, movie->film 1.0.
    result = attack(linear, ["fine good movie plot"], [1])
    assert result.clean_correct.tolist() == [True]
    assert result.success.tolist() == [True]
    assert result.adv_texts == ("fine bad movie plot",)
    assert result.changed == ((1,),)
    assert result.marked == ("fine [[good->bad]] movie plot",)
    assert result.adv_pred.tolist() == [0]


def test_deepwordbug_edits_the_most_important_word(linear):
    # Any edit of "good" makes it an unknown word (score 0): (3 - 0.5)/4 -> -0.5/4 < 0.
    result = DeepWordBug(max_change=0.25, seed=0)(linear, ["dull good movie plot"], [1])
    assert result.success.tolist() == [True]
    assert result.changed == ((1,),)
    assert Words.of(result.adv_texts[0]).word(1) != "good"


def test_no_swap_can_flip_so_the_attack_fails_honestly(linear):
    # every word swapped to "fine" still leaves a positive mean
    result = PWWS(thesaurus={"good": ["fine"]}, max_change=1.0)(linear, ["great good good"], [1])
    assert result.success.tolist() == [False]
    assert result.adv_texts == ("great good good",)
    assert result.changed == ((),)


TEXTS = [
    "The good movie, a fine plot and great actors in Paris",
    "the movie is good",
    "A great film with a fine plot",
    "good good fine movie the the plot",
    "Paris is a fine place for a good movie",
    "the plot the film the actors",
    "fine movie plot film actors",  # mean 0.2: one swap (fine->dull, or an edit of fine) flips it
    "movie Paris plot film actors",  # only the protected name carries it
]


@pytest.mark.parametrize("max_change", [0.1, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("name", ["pwws", "textfooler", "hotflip", "deepwordbug"])
def test_constraints_always_hold(linear, name, max_change):
    params = {"max_change": max_change, "keep_stopwords": True, "keep_names": True, "seed": 1}
    if name != "deepwordbug":
        params["thesaurus"] = THESAURUS
    result = get_text_attack(name, **params)(linear, TEXTS, [1] * len(TEXTS))
    for text, changed, n in zip(TEXTS, result.changed, result.words, strict=True):
        words = Words.of(text)
        assert len(changed) <= np.floor(max_change * n + 1e-9)
        for k in changed:
            assert words.word(k).lower() not in STOPWORDS
            assert words.word(k) != "Paris" or k == 0  # a capital that starts a sentence is no name
    # something was attacked, so the checks above are not vacuous
    assert any(result.changed) or max_change < 0.2


def test_stop_words_are_swapped_only_when_allowed(linear):
    # Kept stop words are neither probed nor tried: the clean query and one [UNK] probe of "good".
    text = ["the the good"]
    kept = PWWS(thesaurus={"the": ["a"]}, max_change=1.0)(linear, text, [1])
    assert kept.queries.tolist() == [1 + 1]
    free = PWWS(thesaurus={"the": ["a"]}, max_change=1.0, keep_stopwords=False)(linear, text, [1])
    assert free.queries[0] > kept.queries[0]


def test_seeded_runs_reproduce(linear):
    texts = TEXTS * 2
    a = DeepWordBug(max_change=0.5, seed=7, edits_per_kind=2)(linear, texts, [1] * len(texts))
    b = DeepWordBug(max_change=0.5, seed=7, edits_per_kind=2)(linear, texts, [1] * len(texts))
    assert a.adv_texts == b.adv_texts
    assert a.queries.tolist() == b.queries.tolist()


def test_query_budget_is_never_exceeded(linear):
    texts = TEXTS
    result = PWWS(thesaurus=THESAURUS, max_change=1.0, query_budget=4)(linear, texts, [1] * len(texts))
    assert result.queries.max() <= 4
    assert result.exhausted.any()


def test_already_misclassified_texts_are_successes_without_change(linear):
    result = PWWS(thesaurus=THESAURUS)(linear, ["bad awful movie"], [1])
    assert result.clean_correct.tolist() == [False]
    assert result.success.tolist() == [True]
    assert result.changed == ((),)
    assert result.queries.tolist() == [1]


def test_score_based_models_run_word_attacks_but_not_hotflip(linear):
    black_box = ScoreTextModel(lambda texts: linear.probs(texts), linear.class_names)
    result = PWWS(thesaurus=THESAURUS, max_change=0.25)(black_box, ["fine good movie plot"], [1])
    assert result.adv_texts == ("fine bad movie plot",)
    with pytest.raises(UsageError, match="white-box"):
        HotFlip(thesaurus=THESAURUS)(black_box, ["fine good movie plot"], [1])


@pytest.mark.parametrize("bad", [{"max_change": 0.0}, {"max_change": 1.5}, {"query_budget": 0}])
def test_bad_hyperparameters_are_usage_errors(bad):
    with pytest.raises(UsageError):
        PWWS(**bad)


def test_labels_must_match_texts(linear):
    with pytest.raises(UsageError, match="labels"):
        PWWS(thesaurus=THESAURUS)(linear, ["good movie"], [1, 0])
    with pytest.raises(UsageError, match="labels"):
        PWWS(thesaurus=THESAURUS)(linear, ["good movie"], [5])


def test_textfooler_similarity_in_the_model_embedding_refuses_opposite_words(linear):
    # In the linear model, "good" is (0, 3) and "bad" (0, -2): cosine -1. With the filter at 0,
    # the only flipping swap is refused; without it, it is found.
    text, label = ["fine good movie plot"], [1]
    strict = TextFooler(thesaurus=THESAURUS, min_similarity=0.0, max_change=0.25)(linear, text, label)
    assert strict.success.tolist() == [False]
    assert "cosine >= 0.0" in strict.extras["similarity"]
    loose = TextFooler(thesaurus=THESAURUS, max_change=0.25)(linear, text, label)
    assert loose.adv_texts == ("fine bad movie plot",)
