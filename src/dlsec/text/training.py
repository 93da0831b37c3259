"""Training text classifiers from scratch, optionally hardened with adversarial augmentation.

Two architectures, both saved as Hugging Face style folders (``config.json``,
``model.safetensors``, ``tokenizer.json``) with a training card (``model.json``):

* ``embedding-bag``: a word-level tokenizer (``tokenizers`` WordLevel, lower-cased) and the mean
  of word embeddings under a linear layer; trains in seconds on a CPU.
* ``bert-tiny``: a WordPiece tokenizer trained on the corpus and a two-layer
  ``transformers`` ``BertForSequenceClassification`` (hidden size 128) trained from scratch.

With ``augment=ATTACK`` the model is trained, then the attack is run on ``augment_n`` training
texts, and training goes on for ``augment_epochs`` over the training set plus every adversarial
text that fooled the model, under its true label (adversarial data augmentation).

Example:
    >>> data = load_text_dataset("builtin:rotten-tomatoes")              # doctest: +SKIP
    >>> result = train_text_model(data, arch="embedding-bag", out="tm")   # doctest: +SKIP
    >>> result.metrics["test_accuracy"]                                   # doctest: +SKIP
    0.74
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlsec.errors import DataError, UsageError
from dlsec.text.corpus import TextDataset
from dlsec.text.models import EMBEDDING_BAG_TYPE, TokenizedModel, build_embedding_bag, save_text_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["TEXT_ARCHS", "TextTrainResult", "train_text_model", "accuracy"]

TEXT_ARCHS = ("embedding-bag", "bert-tiny")
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class TextTrainResult:
    """A trained text model, where it was written, and its metrics."""

    model: TokenizedModel
    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


def _word_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.train_from_iterator(
        texts, WordLevelTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=_SPECIALS)
    )
    return tok


def _wordpiece_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.processors import TemplateProcessing
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, WordPieceTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def _build(arch: str, train: TextDataset, *, vocab_size: int, max_length: int, dim: int) -> TokenizedModel:
    labels = {str(i): name for i, name in enumerate(train.class_names)}
    if arch == "embedding-bag":
        tok = _word_tokenizer(list(train.texts), vocab_size)
        config: dict[str, Any] = {
            "model_type": EMBEDDING_BAG_TYPE,
            "vocab_size": tok.get_vocab_size(),
            "num_labels": train.num_classes,
            "dim": dim,
            "max_length": max_length,
            "id2label": labels,
        }
        module = build_embedding_bag(
            tok.get_vocab_size(), train.num_classes, dim=dim, pad_id=tok.token_to_id("[PAD]")
        )
        return TokenizedModel(module, tok, train.class_names, max_length=max_length, config=config)
    from transformers import BertConfig, BertForSequenceClassification

    tok = _wordpiece_tokenizer(list(train.texts), vocab_size)
    hf = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=max_length,
        num_labels=train.num_classes,
        id2label={i: n for i, n in enumerate(train.class_names)},
        label2id={n: i for i, n in enumerate(train.class_names)},
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    config = hf.to_dict()
    config.pop("transformers_version", None)
    bert = BertForSequenceClassification(hf)
    return TokenizedModel(bert, tok, train.class_names, max_length=max_length, config=config)


def _fit(
    model: TokenizedModel, data: TextDataset, *, epochs: int, lr: float, batch_size: int, seed: int
) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.module.parameters(), lr=lr, weight_decay=0.01, fused=True)
    ids, mask, _ = model.encode(data.texts)
    model.truncated_texts = 0
    y = torch.as_tensor(data.y)
    model.module.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            width = int(mask[idx].sum(1).max())
            out = model.module(input_ids=ids[idx, :width], attention_mask=mask[idx, :width])
            logits = out.logits if hasattr(out, "logits") else out
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.module.eval()


def accuracy(model: TokenizedModel, data: TextDataset) -> float:
    """Fraction of ``data`` the model classifies correctly."""
    return float((model.predict(data.texts) == data.y).mean())


def train_text_model(
    data: TextDataset,
    *,
    arch: str = "embedding-bag",
    out: str | Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    test_size: float = 0.25,
    vocab_size: int = 20000,
    max_length: int = 128,
    augment: str | None = None,
    augment_n: int = 500,
    augment_epochs: int = 2,
    max_change: float = 0.2,
) -> TextTrainResult:
    """Train ``arch`` on ``data``'s training split, score it on the test split, write the folder.

    Args:
        data: a labelled corpus with at least two classes.
        arch: ``embedding-bag`` or ``bert-tiny``.
        out: the folder to write (``None``: nothing is written).
        epochs: training epochs (default 8 for the embedding bag, 4 for bert-tiny).
        seed: seeds the split, the initial weights, the batch order and the attack.
        augment: an attack name (``pwws``, ``textfooler``, ``deepwordbug``, ``hotflip``) for
            adversarial data augmentation, or ``None``.
        augment_n: training texts attacked for augmentation.
        max_change: the augmentation attack's budget (fraction of words changed).

    Raises:
        UsageError: unknown architecture or attack.
        DataError: fewer than two classes, or too few rows to split.
    """
    import torch

    from dlsec.core.seeding import seed_everything

    if arch not in TEXT_ARCHS:
        raise UsageError(f"unknown text architecture {arch!r}; choose one of: {', '.join(TEXT_ARCHS)}")
    if len(set(data.y.tolist())) < 2:
        raise DataError(f"{data.name}: training needs at least two classes, found one")
    if augment is not None:
        from dlsec.text.attacks import get_text_attack

        attack = get_text_attack(augment, max_change=max_change, seed=seed)
    seed_everything(seed)
    train, test = data.split(test_size=test_size, seed=seed)
    model = _build(
        arch, train, vocab_size=vocab_size, max_length=max_length, dim=64 if arch == "embedding-bag" else 128
    )
    bag = arch == "embedding-bag"
    n_epochs = epochs if epochs is not None else (8 if bag else 4)
    lr = 5e-3 if bag else 1e-3
    batch = 64 if bag else 32
    torch.manual_seed(seed)
    _fit(model, train, epochs=n_epochs, lr=lr, batch_size=batch, seed=seed)
    metrics: dict[str, Any] = {
        "test_accuracy": accuracy(model, test),
        "train_accuracy": accuracy(model, train),
    }
    augmentation: dict[str, Any] | None = None
    if augment is not None:
        rows = np.random.default_rng(seed).permutation(len(train))[: min(augment_n, len(train))]
        sample = train.subset(np.sort(rows))
        result = attack(model, sample.texts, sample.y)
        fooled = [i for i in range(len(sample)) if result.success[i] and result.clean_correct[i]]
        extra = TextDataset(
            train.texts + tuple(result.adv_texts[i] for i in fooled),
            np.concatenate([train.y, sample.y[fooled]]),
            train.class_names,
            f"{train.name}+{augment}",
        )
        _fit(model, extra, epochs=augment_epochs, lr=lr / 2, batch_size=batch, seed=seed + 1)
        augmentation = {
            "attack": augment,
            "attacked": len(sample),
            "added": len(fooled),
            "epochs": augment_epochs,
            "max_change": max_change,
        }
        metrics["attack_success_before"] = result.success_rate
        metrics["test_accuracy"] = accuracy(model, test)
        metrics["train_accuracy"] = accuracy(model, train)
    path: Path | None = None
    if out is not None:
        card = {
            "schema": "dlsec.model-card/1",
            "name": Path(out).name,
            "architecture": arch,
            "seed": seed,
            "dataset": {
                "name": data.name,
                "sha256": data.sha256,
                "rows": len(data),
                "split": {"test_size": test_size, "seed": seed},
            },
            "train_config": {
                "epochs": n_epochs,
                "lr": lr,
                "batch_size": batch,
                "vocab_size": vocab_size,
                "max_length": max_length,
            },
            "metrics": metrics,
            "training": {"augmentation": augmentation},
        }
        path = save_text_model(model, out, card=card)
    return TextTrainResult(model, path, metrics)
