"""Shared fixtures: a bag-of-words linear model whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlsec.text.models import TokenizedModel, build_embedding_bag

#: Each word's score for class 1 ("positive"); class 0's score is always 0. Logits are the
#: mean over the words, so class 1 wins exactly when the mean score is positive.
SCORES = {
    "good": 3.0,
    "great": 2.0,
    "fine": 1.0,
    "movie": 0.0,
    "plot": 0.0,
    "film": 0.0,
    "actors": 0.0,
    "the": 0.5,
    "a": 0.5,
    "dull": -0.5,
    "bad": -2.0,
    "awful": -3.0,
    "Paris": 1.5,
    "london": -1.5,
}


def linear_model() -> TokenizedModel:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    specials = ["[PAD]", "[UNK]"]
    words = [w.lower() for w in SCORES]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.add_special_tokens(specials)
    module = build_embedding_bag(len(vocab), 2, dim=2, pad_id=0)
    with torch.no_grad():
        module.embedding.weight.zero_()
        for w, s in SCORES.items():
            module.embedding.weight[vocab[w.lower()], 1] = s
        module.head.weight.copy_(torch.eye(2))
        module.head.bias.zero_()
    config = {"model_type": "dlsec-embedding-bag", "vocab_size": len(vocab), "num_labels": 2, "dim": 2}
    return TokenizedModel(module, tok, ("neg", "pos"), max_length=64, config=config)


@pytest.fixture
def linear() -> TokenizedModel:
    torch.manual_seed(0)
    return linear_model()


def mean_score(text: str) -> float:
    words = text.lower().replace(",", " ").split()
    return float(np.mean([SCORES.get(w, SCORES.get(w.capitalize(), 0.0)) for w in words]))
