"""Training text classifiers from scratch, optionally hardened with adversarial augmentation.

Two architectures, both saved as Hugging Face style folders (``config.json``,
``model.safetensors``, ``tokenizer.json``) with a training card (``model.json``):

* ``embedding-bag``: a word-level tokenizer (``tokenizers`` WordLevel, lower-cased) and the mean
  of word embeddings under a linear layer; trains in seconds on a CPU.
* ``bert-tiny``: a WordPiece tokenizer trained on the corpus and a two-layer
  ``transformers`` ``BertForSequenceClassification`` (hidden size 128) trained from scratch.

Three recipes:

* ``standard``: cross-entropy on the training split.
* ``augment`` (``augment=ATTACK``): the model is trained, then the attack is run on
  ``augment_n`` training texts, and training goes on for ``augment_epochs`` over the training
  set plus every adversarial text that fooled the model, under its true label (adversarial data
  augmentation, one round).
* ``adversarial`` (``adversarial=AdversarialTraining(...)``): after ``warmup`` clean epochs,
  every ``every`` epochs the attack is run against the *current* model on ``n`` freshly sampled
  training texts (a cheap per-text query budget), and the epochs until the next round train on
  the training set plus the texts that fooled it, under their true labels (adversarial
  training with regenerated examples, as PGD-AT regenerates its batches; Wang et al. 2021's
  "adversarial training with fast gradient projection" and TextAttack's ``Trainer`` with
  ``num_clean_epochs`` / ``attack_epoch_interval`` follow the same schedule). The attack's
  success rate at each round goes into the card, and ``robust_n`` test texts are attacked at
  the end (``robust_accuracy`` and ``attack_success`` in the metrics).

Example:
    >>> data = load_text_dataset("builtin:rotten-tomatoes")              # doctest: +SKIP
    >>> result = train_text_model(data, arch="embedding-bag", out="tm")   # doctest: +SKIP
    >>> result.metrics["test_accuracy"]                                   # doctest: +SKIP
    0.74
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlsec.errors import DataError, UsageError
from dlsec.text.corpus import TextDataset
from dlsec.text.models import EMBEDDING_BAG_TYPE, TokenizedModel, build_embedding_bag, save_text_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from dlsec.text.attacks import TextAttack, TextAttackResult

__all__ = [
    "TEXT_ARCHS",
    "TEXT_RECIPES",
    "AdversarialTraining",
    "TextTrainResult",
    "accuracy",
    "adversarial_examples",
    "train_text_model",
]

TEXT_ARCHS = ("embedding-bag", "bert-tiny")
TEXT_RECIPES = ("standard", "text-augment", "text-adversarial")
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class TextTrainResult:
    """A trained text model, where it was written, its metrics and (adversarial recipe) its rounds."""

    model: TokenizedModel
    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: str = "standard"
    rounds: tuple[dict[str, Any], ...] = ()
    robustness: dict[str, Any] | None = None


@dataclass(frozen=True)
class AdversarialTraining:
    """The ``adversarial`` recipe: adversarial examples regenerated against the current model.

    Args:
        attack: a text attack name (``pwws``, ``deepwordbug``, ``textfooler``, ``hotflip``).
        max_change: the attack's budget (fraction of a text's words changed).
        n: training texts attacked per round.
        every: epochs between rounds (each round's examples are trained on until the next).
        warmup: clean epochs before the first round.
        query_budget: the most model queries per attacked text (keeps a round cheap).

    Example:
        >>> AdversarialTraining(attack="deepwordbug", n=100).params()["attack"]
        'deepwordbug'
    """

    attack: str = "pwws"
    max_change: float = 0.2
    n: int = 200
    every: int = 1
    warmup: int = 1
    query_budget: int | None = 200

    def __post_init__(self) -> None:
        for name in ("n", "every"):
            if getattr(self, name) < 1:
                raise UsageError(
                    f"adversarial training: {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.warmup < 0:
            raise UsageError(f"adversarial training: warmup must be >= 0, got {self.warmup}")

    def params(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "max_change": self.max_change,
            "n": self.n,
            "every": self.every,
            "warmup": self.warmup,
            "query_budget": self.query_budget,
        }


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


def _encoded(model: TokenizedModel, data: TextDataset) -> tuple[Any, Any, Any]:
    import torch

    ids, mask, _ = model.encode(data.texts)
    model.truncated_texts = 0
    return ids, mask, torch.as_tensor(data.y)


def _fit(
    model: TokenizedModel,
    data: TextDataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    before_epoch: Callable[[int], TextDataset | None] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> None:
    """Train ``epochs`` epochs on ``data`` with one AdamW optimiser.

    ``before_epoch(e)``, when given, may return the dataset epoch ``e`` trains on instead (the
    training set plus adversarial texts); ``None`` keeps the current one.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.module.parameters(), lr=lr, weight_decay=0.01, fused=True)
    ids, mask, y = _encoded(model, data)
    model.module.train()
    for epoch in range(epochs):
        if before_epoch is not None:
            replaced = before_epoch(epoch)
            if replaced is not None:
                ids, mask, y = _encoded(model, replaced)
            model.module.train()
        n = len(y)
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            width = int(mask[idx].sum(1).max())
            out = model.module(input_ids=ids[idx, :width], attention_mask=mask[idx, :width])
            logits = out.logits if hasattr(out, "logits") else out
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress is not None:
            progress(epoch + 1, epochs, {"loss": float(loss.detach())})
    model.module.eval()


def adversarial_examples(
    model: TokenizedModel, attack: TextAttack, data: TextDataset
) -> tuple[TextDataset | None, TextAttackResult]:
    """Attack ``data`` and return the texts that fooled the model, under their true labels.

    Only texts the model classified correctly and the attack then fooled are kept (a text the
    model already got wrong is no adversarial example), in the order of ``data``; ``None`` when
    the attack fooled none.

    Example:
        >>> extra, result = adversarial_examples(model, DeepWordBug(), train)   # doctest: +SKIP
        >>> len(extra) == int((result.success & result.clean_correct).sum())    # doctest: +SKIP
        True
    """
    result = attack(model, data.texts, data.y)
    fooled = [i for i in range(len(data)) if result.success[i] and result.clean_correct[i]]
    if not fooled:
        return None, result
    extra = TextDataset(
        tuple(result.adv_texts[i] for i in fooled),
        np.asarray(data.y[fooled], dtype=np.int64),
        data.class_names,
        f"{data.name}+{attack.name}",
    )
    return extra, result


def _joined(a: TextDataset, b: TextDataset | None, name: str) -> TextDataset:
    if b is None:
        return a
    return TextDataset(a.texts + b.texts, np.concatenate([a.y, b.y]), a.class_names, name)


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
    adversarial: AdversarialTraining | None = None,
    robust_n: int | None = None,
    name: str | None = None,
    extra_card: dict[str, Any] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
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
        adversarial: the ``adversarial`` recipe (examples regenerated against the current
            model every ``every`` epochs); not with ``augment``.
        robust_n: test texts attacked after training (default 100 with ``adversarial``, else
            none); the attack is the recipe's, or PWWS at ``max_change``.
        name: the card's model name (default: the folder's name).
        extra_card: more card fields (the zoo records its recipe hash there).
        progress: called after each epoch with ``(epoch, epochs, stats)``.

    Raises:
        UsageError: unknown architecture or attack, or both recipes at once.
        DataError: fewer than two classes, or too few rows to split.
    """
    import torch

    from dlsec.core.seeding import seed_everything
    from dlsec.text.attacks import get_text_attack

    if arch not in TEXT_ARCHS:
        raise UsageError(f"unknown text architecture {arch!r}; choose one of: {', '.join(TEXT_ARCHS)}")
    if augment is not None and adversarial is not None:
        raise UsageError("choose one recipe: augmentation (one round) or adversarial training, not both")
    if robust_n is not None and robust_n < 0:
        raise UsageError(f"robust_n must be >= 0, got {robust_n}")
    if len(set(data.y.tolist())) < 2:
        raise DataError(f"{data.name}: training needs at least two classes, found one")
    if augment is not None:
        attack = get_text_attack(augment, max_change=max_change, seed=seed)
    if adversarial is not None:  # fail on a bad attack name or budget before training
        get_text_attack(
            adversarial.attack,
            max_change=adversarial.max_change,
            query_budget=adversarial.query_budget,
            seed=seed,
        )
    seed_everything(seed)
    train, test = data.split(test_size=test_size, seed=seed)
    model = _build(
        arch, train, vocab_size=vocab_size, max_length=max_length, dim=64 if arch == "embedding-bag" else 128
    )
    bag = arch == "embedding-bag"
    n_epochs = epochs if epochs is not None else (8 if bag else 4)
    lr = 5e-3 if bag else 1e-3
    batch = 64 if bag else 32
    rounds: list[dict[str, Any]] = []
    before_epoch = None
    if adversarial is not None:
        before_epoch = _adversarial_schedule(model, train, adversarial, seed, rounds)
    torch.manual_seed(seed)
    _fit(
        model,
        train,
        epochs=n_epochs,
        lr=lr,
        batch_size=batch,
        seed=seed,
        before_epoch=before_epoch,
        progress=progress,
    )
    metrics: dict[str, Any] = {
        "test_accuracy": accuracy(model, test),
        "train_accuracy": accuracy(model, train),
    }
    augmentation: dict[str, Any] | None = None
    if augment is not None:
        rows = np.random.default_rng(seed).permutation(len(train))[: min(augment_n, len(train))]
        sample = train.subset(np.sort(rows))
        fooled_set, result = adversarial_examples(model, attack, sample)
        extra = _joined(train, fooled_set, f"{train.name}+{augment}")
        _fit(model, extra, epochs=augment_epochs, lr=lr / 2, batch_size=batch, seed=seed + 1)
        augmentation = {
            "attack": augment,
            "attacked": len(sample),
            "added": 0 if fooled_set is None else len(fooled_set),
            "epochs": augment_epochs,
            "max_change": max_change,
        }
        metrics["attack_success_before"] = result.success_rate
        metrics["test_accuracy"] = accuracy(model, test)
        metrics["train_accuracy"] = accuracy(model, train)
    robustness: dict[str, Any] | None = None
    k = robust_n if robust_n is not None else (100 if adversarial is not None else 0)
    if k > 0:
        name_, budget = (
            (adversarial.attack, adversarial.max_change) if adversarial is not None else ("pwws", max_change)
        )
        final = get_text_attack(name_, max_change=budget, seed=seed)
        held = test.subset(range(min(k, len(test))))
        result = final(model, held.texts, held.y)
        robustness = {
            "attack": name_,
            "max_change": budget,
            "n": len(held),
            "rows": f"first {len(held)} texts of the test split",
            "seed": seed,
            "clean_accuracy": result.clean_accuracy,
            "robust_accuracy": result.robust_accuracy,
            "success_rate": result.success_rate,
        }
        metrics["robust_accuracy"] = result.robust_accuracy
        metrics["attack_success"] = result.success_rate
    recipe = (
        "text-adversarial"
        if adversarial is not None
        else ("text-augment" if augment is not None else "standard")
    )
    if adversarial is not None:
        recipe_params: dict[str, Any] = adversarial.params()
    elif augment is not None:
        recipe_params = {
            "attack": augment,
            "n": augment_n,
            "epochs": augment_epochs,
            "max_change": max_change,
        }
    else:
        recipe_params = {}
    path: Path | None = None
    if out is not None:
        card = {
            "schema": "dlsec.model-card/1",
            "name": name if name is not None else Path(out).name,
            "architecture": arch,
            "recipe": recipe,
            "recipe_params": recipe_params,
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
            "robustness": robustness,
            "training": {"augmentation": augmentation, "adversarial_rounds": rounds or None},
            **(extra_card or {}),
        }
        path = save_text_model(model, out, card=card)
    return TextTrainResult(model, path, metrics, recipe=recipe, rounds=tuple(rounds), robustness=robustness)


def _adversarial_schedule(
    model: TokenizedModel,
    train: TextDataset,
    plan: AdversarialTraining,
    seed: int,
    rounds: list[dict[str, Any]],
) -> Callable[[int], TextDataset | None]:
    """The hook :func:`_fit` calls before each epoch: a new round of adversarial texts when due."""
    from dlsec.text.attacks import get_text_attack

    def before_epoch(epoch: int) -> TextDataset | None:
        if epoch < plan.warmup or (epoch - plan.warmup) % plan.every:
            return None
        rows = np.random.default_rng(seed + 1000 + epoch).permutation(len(train))[: min(plan.n, len(train))]
        sample = train.subset(np.sort(rows))
        attack = get_text_attack(
            plan.attack, max_change=plan.max_change, query_budget=plan.query_budget, seed=seed + epoch
        )
        fooled, result = adversarial_examples(model, attack, sample)
        rounds.append(
            {
                "epoch": epoch,
                "attacked": len(sample),
                "clean_correct": int(result.clean_correct.sum()),
                "added": 0 if fooled is None else len(fooled),
                "success_rate": result.success_rate,
                "queries": int(result.queries.sum()),
            }
        )
        return _joined(train, fooled, f"{train.name}+{plan.attack}@{epoch}")

    return before_epoch
