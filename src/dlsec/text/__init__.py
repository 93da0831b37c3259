"""Text models: offline corpora, Hugging Face classifiers loaded safely, word- and character-level attacks.

The face resolves its names lazily (PEP 562): ``import dlsec.text`` costs nothing heavy, and
``load_text_dataset`` never imports torch.

Example:
    >>> from dlsec.text import load_text_dataset, load_text_model, get_text_attack
    >>> data = load_text_dataset("builtin:rotten-tomatoes")                  # doctest: +SKIP
    >>> model = load_text_model("out/text-model")                            # doctest: +SKIP
    >>> pwws = get_text_attack("pwws", max_change=0.2)
    >>> result = pwws(model, data.texts[:50], data.y[:50])                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve

if TYPE_CHECKING:
    from dlsec.text.attacks import (
        PWWS,
        TEXT_ATTACKS,
        DeepWordBug,
        HotFlip,
        TextAttack,
        TextAttackResult,
        TextFooler,
        get_text_attack,
        register_text_attack,
        word_importance,
    )
    from dlsec.text.certify import SAFER, SaferCertificate
    from dlsec.text.corpus import BUILTIN_TEXT_DATASETS, TextDataset, load_text_dataset
    from dlsec.text.models import (
        QueryRefusedError,
        ScoreTextModel,
        TextClassifier,
        TokenizedModel,
        check_model_folder,
        load_text_model,
        save_text_model,
    )
    from dlsec.text.training import (
        TEXT_ARCHS,
        TEXT_RECIPES,
        AdversarialTraining,
        TextTrainResult,
        adversarial_examples,
        train_text_model,
    )
    from dlsec.text.wordnet import WordNet
    from dlsec.text.zoo import (
        TEXT_ZOO,
        TextZooEntry,
        is_text_zoo_ref,
        register_text_zoo,
        resolve_text_model,
        text_zoo_folder,
    )

_EXPORTS = {
    **dict.fromkeys(
        (
            "PWWS",
            "TEXT_ATTACKS",
            "DeepWordBug",
            "HotFlip",
            "TextAttack",
            "TextAttackResult",
            "TextFooler",
            "get_text_attack",
            "register_text_attack",
            "word_importance",
        ),
        "attacks",
    ),
    **dict.fromkeys(("SAFER", "SaferCertificate"), "certify"),
    **dict.fromkeys(("BUILTIN_TEXT_DATASETS", "TextDataset", "load_text_dataset"), "corpus"),
    **dict.fromkeys(
        (
            "QueryRefusedError",
            "ScoreTextModel",
            "TextClassifier",
            "TokenizedModel",
            "check_model_folder",
            "load_text_model",
            "save_text_model",
        ),
        "models",
    ),
    **dict.fromkeys(
        (
            "TEXT_ARCHS",
            "TEXT_RECIPES",
            "AdversarialTraining",
            "TextTrainResult",
            "adversarial_examples",
            "train_text_model",
        ),
        "training",
    ),
    "WordNet": "wordnet",
    **dict.fromkeys(
        (
            "TEXT_ZOO",
            "TextZooEntry",
            "is_text_zoo_ref",
            "register_text_zoo",
            "resolve_text_model",
            "text_zoo_folder",
        ),
        "zoo",
    ),
}

__all__ = [
    "AdversarialTraining",
    "BUILTIN_TEXT_DATASETS",
    "DeepWordBug",
    "HotFlip",
    "PWWS",
    "QueryRefusedError",
    "SAFER",
    "SaferCertificate",
    "ScoreTextModel",
    "TEXT_ARCHS",
    "TEXT_ATTACKS",
    "TEXT_RECIPES",
    "TEXT_ZOO",
    "TextAttack",
    "TextAttackResult",
    "TextClassifier",
    "TextDataset",
    "TextFooler",
    "TextTrainResult",
    "TextZooEntry",
    "TokenizedModel",
    "WordNet",
    "adversarial_examples",
    "check_model_folder",
    "get_text_attack",
    "is_text_zoo_ref",
    "load_text_dataset",
    "load_text_model",
    "register_text_attack",
    "register_text_zoo",
    "resolve_text_model",
    "save_text_model",
    "text_zoo_folder",
    "train_text_model",
    "word_importance",
]


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)
