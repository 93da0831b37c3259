"""``dlsec text certify``: SAFER from the command line on a tiny model trained here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlsec.text import TextDataset, train_text_model
from tests.cli.test_cli import assert_user_error, run
from tests.text.test_corpus import _tiny_wordnet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("certify")
    (root / "wn").mkdir()
    _tiny_wordnet(root / "wn")
    texts, labels = [], []
    for filler in ["movie", "film", "plot", "story", "show", "cast"] * 4:
        for word, label in (("good", 1), ("big", 1), ("bad", 0), ("full", 0)):
            texts.append(f"{filler} {word}")
            labels.append(label)
    data = TextDataset(tuple(texts), np.array(labels, dtype=np.int64), ("neg", "pos"), "tiny")
    train_text_model(data, out=root / "model", epochs=6, vocab_size=100, max_length=8)
    with open(root / "texts.jsonl", "w", encoding="utf-8") as f:
        for text, label in zip(texts, labels, strict=True):
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    return root


def test_certify_prints_certified_accuracy_per_radius(tiny, capsys):
    args = ["text", "certify", "--model", str(tiny / "model"), "--data", str(tiny / "texts.jsonl")]
    opts = ["--split", "all", "--n", "8", "--n0", "5", "--samples", "60", "--alpha", "0.05"]
    code, out, err = run(capsys, *args, *opts, "--radii", "0,1,3", "--wordnet", str(tiny / "wn"), "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["radii"] == [0, 1, 3] and payload["texts"] == 8 and payload["n"] == 60
    acc = payload["certified_accuracy"]
    assert len(acc) == 3 and acc == sorted(acc, reverse=True) and all(0 <= a <= 1 for a in acc)
    # In the tiny WordNet, S(good) = S(full) = {good, full} (overlap 1: a certificate there covers every
    # substitution) and S(bad) = {bad, big, tough} with S(big) = {big} (overlap 1/3: Delta = 2/3 at one
    # word, beyond any p_A - 1/2). So no text is certified at one word without being certified at all.
    assert acc[1] == acc[2]
    assert payload["synonyms"] == "wordnet" and payload["n0"] == 5

    code, _, err = run(capsys, *args, "--radii", "one,two")
    assert_user_error(code, err, "--radii")
    code, _, err = run(capsys, *args, "--alpha", "0.9")
    assert_user_error(code, err, "--alpha")
