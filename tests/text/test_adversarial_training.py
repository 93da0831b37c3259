"""Adversarial training of text models: the examples added, the recipe in dlsec train, and its effect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlsec.cli import main
from dlsec.errors import UsageError
from dlsec.text import PWWS, AdversarialTraining, TextDataset, adversarial_examples


def test_adversarial_examples_are_exactly_the_attacks_successes_on_correct_texts(linear):
    texts = ("good movie", "great plot", "bad film", "fine actors", "awful movie", "dull film")
    y = np.array([1, 1, 0, 1, 0, 1], dtype=np.int64)  # "dull film" (neg) is already wrong
    data = TextDataset(texts, y, ("neg", "pos"), "tiny")
    attack = PWWS(thesaurus={"good": ["bad"], "fine": ["awful"], "bad": ["great"]}, max_change=0.5)
    extra, result = adversarial_examples(linear, attack, data)
    won = [i for i in range(len(texts)) if result.success[i] and result.clean_correct[i]]
    assert won == [0, 2, 3]  # the three texts with a swap in the thesaurus
    assert extra is not None
    assert extra.texts == ("bad movie", "great film", "awful actors")
    assert extra.y.tolist() == [1, 0, 1]  # the true labels, not the fooled predictions
    assert result.success[5] and not result.clean_correct[5]  # a misclassified text is no example
    assert linear.predict(extra.texts).tolist() == [0, 1, 0]  # each one fools the model
    none, _ = adversarial_examples(linear, PWWS(thesaurus={}, max_change=0.5), data)
    assert none is None


@pytest.mark.parametrize("field", [{"n": 0}, {"every": 0}, {"warmup": -1}])
def test_adversarial_training_refuses_bad_schedules(field):
    with pytest.raises(UsageError):
        AdversarialTraining(**field)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("advtrain")
    data = root / "reviews.jsonl"
    rows = [
        ("a good and moving film", 1),
        ("great acting and a fine story", 1),
        ("a dull and awful mess", 0),
        ("bad plot and bad actors", 0),
    ] * 15
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    return data


def test_dlsec_train_text_adversarial_records_its_rounds_in_the_card(corpus, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["train", "--data", str(corpus), "--recipe", "text-adversarial", "--text-attack", "deepwordbug"]
    args += ["--max-change", "0.5", "--attack-n", "20", "--warmup", "2", "--attack-every", "2"]
    args += ["--epochs", "8", "--query-budget", "30", "--robust-n", "10", "--out", str(out), "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    card = json.loads((out / "model.json").read_text())
    assert card["recipe"] == payload["recipe"] == "text-adversarial"
    assert card["recipe_params"] == {
        "attack": "deepwordbug",
        "max_change": 0.5,
        "n": 20,
        "every": 2,
        "warmup": 2,
        "query_budget": 30,
    }
    rounds = card["training"]["adversarial_rounds"]
    assert [r["epoch"] for r in rounds] == [2, 4, 6]  # after 2 clean epochs, every 2 epochs
    for r in rounds:
        assert r["attacked"] == 20 and 0 <= r["added"] <= r["clean_correct"] <= 20
        assert r["queries"] <= 20 * 30
    assert card["robustness"]["attack"] == "deepwordbug" and card["robustness"]["n"] == 10
    assert card["metrics"]["robust_accuracy"] == payload["robust_accuracy"]
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    # The folder is a text model like any other: dlsec text attack reads it.
    attack = ["text", "attack", "--model", str(out), "--data", str(corpus), "--attack", "deepwordbug"]
    assert main([*attack, "--n", "5", "--json"]) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--recipe", "pgd-at"],  # an image recipe on text data
        ["--eps", "0.1"],  # an image option on text data
        ["--recipe", "text-adversarial", "--text-attack", "nope"],
        ["--recipe", "text-adversarial", "--attack-n", "0"],
        ["--recipe", "text-augment", "--warmup", "1"],  # not an option of augmentation
    ],
)
def test_text_training_bad_options_exit_2_with_one_line(corpus, tmp_path, capsys, args):
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "m"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_text_options_on_image_data_exit_2(tmp_path, capsys):
    args = ["train", "--data", "builtin:digits", "--text-attack", "pwws", "--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert "--text-attack applies to text data" in capsys.readouterr().err


@pytest.mark.slow
def test_adversarial_training_lowers_the_attacks_success_on_training_texts():
    """Same seed, same data: regenerated DeepWordBug examples make DeepWordBug succeed less."""
    from dlsec.text import get_text_attack, load_text_dataset, train_text_model

    data = load_text_dataset("builtin:rotten-tomatoes")
    sub = data.subset(np.random.default_rng(0).permutation(len(data))[:600])
    train, _ = sub.split(test_size=0.25, seed=0)
    probe = train.subset(range(150))
    success = {}
    for plan in (None, AdversarialTraining(attack="deepwordbug", n=150, warmup=2, query_budget=100)):
        result = train_text_model(sub, epochs=10, seed=0, adversarial=plan, robust_n=0)
        attack = get_text_attack("deepwordbug", max_change=0.2, seed=5)
        success[plan is not None] = attack(result.model, probe.texts, probe.y).success_rate
        if plan is not None:
            assert len(result.rounds) == 8 and all(r["added"] > 0 for r in result.rounds)
    assert success[True] < 0.75 * success[False], success
