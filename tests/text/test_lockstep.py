"""Attacking several texts in lockstep (their candidates in one model call) changes nothing else."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from dlsec.errors import UsageError
from dlsec.text import PWWS, DeepWordBug, HotFlip, ScoreTextModel, TextDataset, TextFooler, train_text_model
from tests.text.test_attacks import THESAURUS

SCORE = {"good": 2, "great": 2, "fine": 1, "dull": -1, "bad": -2, "awful": -2}
WORDS = ["good", "great", "fine", "dull", "bad", "awful", "movie", "plot", "film", "the", "actors"]


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(300):
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        score = sum(
            {"good": 2, "great": 2, "fine": 1, "dull": -1, "bad": -2, "awful": -2}.get(w, 0) for w in words
        )
        texts.append(" ".join(words))
        labels.append(int(score > 0))
    data = TextDataset(tuple(texts), np.array(labels, dtype=np.int64), ("neg", "pos"), "synthetic")
    result = train_text_model(data, epochs=6, vocab_size=50, max_length=16, seed=0)
    return result.model, data.subset(range(60))


def _fields(result):
    return (
        result.adv_texts,
        result.marked,
        result.adv_pred.tolist(),
        result.success.tolist(),
        result.queries.tolist(),
        result.changed,
        result.exhausted.tolist(),
    )


ATTACKS = [
    lambda **kw: PWWS(thesaurus=THESAURUS, **kw),
    lambda **kw: TextFooler(thesaurus=THESAURUS, **kw),
    lambda **kw: DeepWordBug(edits_per_kind=2, **kw),
    lambda **kw: HotFlip(thesaurus=THESAURUS, **kw),
]


@pytest.mark.parametrize(
    ("make", "query_budget"),
    list(itertools.product(ATTACKS, [None, 12])),
    ids=lambda v: getattr(v(), "name", None) if callable(v) else str(v),
)
def test_lockstep_results_equal_one_text_at_a_time(trained, make, query_budget):
    model, data = trained
    # One text per forward pass: a BLAS kernel may round a row differently with the batch's size,
    # and ties between equal words (a bag of words scores "good good bad" and "good bad good"
    # alike) then break differently. What is compared is the lockstep bookkeeping, not BLAS.
    model = copy.copy(model)
    model.batch_size = 1
    alone = make(max_change=0.5, query_budget=query_budget, seed=3, lockstep=1)(model, data.texts, data.y)
    together = make(max_change=0.5, query_budget=query_budget, seed=3, lockstep=16)(model, data.texts, data.y)
    assert _fields(together) == _fields(alone)
    assert alone.success[alone.clean_correct].any()  # the attack does something to compare
    if query_budget is not None:
        assert alone.exhausted.any()  # and the budget path is exercised


def test_lockstep_sends_the_candidates_of_several_texts_in_one_call(trained):
    model, data = trained
    calls: list[int] = []

    def counted(texts):
        calls.append(len(texts))
        return model.probs(texts)

    remote = ScoreTextModel(counted, model.class_names, batch_size=10_000)
    DeepWordBug(max_change=0.5, seed=3, lockstep=1)(remote, data.texts, data.y)
    one_at_a_time = list(calls)
    calls.clear()
    DeepWordBug(max_change=0.5, seed=3, lockstep=16)(remote, data.texts, data.y)
    assert sum(calls) == sum(one_at_a_time)  # the same texts are sent...
    assert len(calls) < len(one_at_a_time) / 4  # ...in far fewer calls
    assert max(calls) > max(one_at_a_time)


def test_lockstep_must_be_positive():
    with pytest.raises(UsageError, match="lockstep"):
        PWWS(lockstep=0)
