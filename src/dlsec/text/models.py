"""Text classifiers under test, and loading Hugging Face folders without running their code.

* :class:`TextClassifier` is the contract the attacks see: texts in, class probabilities out.
  :class:`ScoreTextModel` wraps any callable that returns probabilities (a remote gateway);
  :class:`TokenizedModel` is the white-box level: a ``torch`` module over a Hugging Face
  ``tokenizers`` tokenizer, with gradients with respect to the input embeddings.
* :func:`load_text_model` loads a folder laid out as Hugging Face lays it out
  (``config.json``, ``model.safetensors``, ``tokenizer.json``): a ``transformers`` sequence
  classifier of a built-in model type, or dlsec's embedding-bag model. It never runs code from
  the folder: :func:`check_model_folder` first refuses remote-code hooks (``auto_map``,
  ``trust_remote_code``, ``custom_pipelines``, Python files), pickled weights (``*.bin``,
  ``*.pt``, ...), pickled tokenizer files and a model type ``transformers`` does not ship; the
  weights come from safetensors only, the tokenizer from ``tokenizer.json`` only, and the
  model is built from its configuration class, so ``trust_remote_code`` is never in play.

Tokenisation stays with the model: a text longer than the model's maximum length is truncated,
and :meth:`TokenizedModel.encode` reports which texts were.

Example:
    >>> model = load_text_model("out/text-model")               # doctest: +SKIP
    >>> model.predict(["a gorgeous, witty film"])                # doctest: +SKIP
    array([1])
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dlsec.core.model import Access
from dlsec.errors import ModelLoadError, UnsafeModelFileError, UsageError

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer
    from torch import nn

__all__ = [
    "QueryRefusedError",
    "TextClassifier",
    "ScoreTextModel",
    "TokenizedModel",
    "EMBEDDING_BAG_TYPE",
    "check_model_folder",
    "load_text_model",
    "save_text_model",
    "build_embedding_bag",
]

EMBEDDING_BAG_TYPE = "dlsec-embedding-bag"
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill", ".npy", ".msgpack")
_REMOTE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")


class QueryRefusedError(UsageError):
    """The model refused a query it would otherwise answer (a gateway key's budget or rate limit).

    A text attack stops at it and keeps what it found so far, naming the reason in its result.
    """


class TextClassifier(ABC):
    """A text classifier: :meth:`probs` maps texts to class probabilities ``(N, K)``.

    Attributes:
        access: what an attacker sees (``Access.SCORE`` or ``Access.WHITE_BOX``).
        class_names: one name per class.
    """

    access: Access
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, float64 ``(N, K)``."""

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted labels, int64 ``(N,)``."""
        return np.asarray(self.probs(texts).argmax(axis=1), dtype=np.int64)


class ScoreTextModel(TextClassifier):
    """A score-based text classifier: any callable from texts to probabilities.

    Example:
        >>> m = ScoreTextModel(lambda ts: np.array([[0.2, 0.8]] * len(ts)), ("neg", "pos"))
        >>> m.predict(["fine"]).tolist()
        [1]
    """

    access = Access.SCORE

    def __init__(
        self, fn: Callable[[list[str]], Any], class_names: Sequence[str], *, batch_size: int = 256
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {batch_size}")
        self.fn = fn
        self.class_names = tuple(class_names)
        self.batch_size = batch_size

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            p = np.asarray(self.fn(batch), dtype=np.float64)
            if p.shape != (len(batch), self.num_classes):
                raise UsageError(
                    f"the model returned shape {p.shape}, expected ({len(batch)}, {self.num_classes})"
                )
            out.append(p)
        return np.concatenate(out) if out else np.zeros((0, self.num_classes))


class TokenizedModel(TextClassifier):
    """A white-box text classifier: a module over a ``tokenizers`` tokenizer.

    ``module(input_ids=..., attention_mask=...)`` or ``module(inputs_embeds=...,
    attention_mask=...)`` returns logits (or an object with ``.logits``, as ``transformers``
    models do); ``module.get_input_embeddings()`` is its embedding table.

    Args:
        module: the classifier.
        tokenizer: its tokenizer (special tokens added by its post-processor).
        class_names: one name per class.
        max_length: longest token sequence; longer texts are truncated and reported.
        batch_size: texts per forward pass in :meth:`probs`.
        config: the model's ``config.json`` fields (written back by :func:`save_text_model`).
    """

    access = Access.WHITE_BOX

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Tokenizer,
        class_names: Sequence[str],
        *,
        max_length: int = 128,
        batch_size: int = 64,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if max_length < 2:
            raise UsageError(f"max_length must be at least 2, got {max_length}")
        self.module = module
        self.tokenizer = tokenizer
        self.class_names = tuple(class_names)
        self.max_length = max_length
        self.batch_size = batch_size
        self.config = dict(config or {})
        pad = tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self.truncated_texts = 0  # texts truncated by encode() so far
        self._single: dict[str, int | None] = {}

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Token ids and attention mask ``(N, T)``, and which texts were truncated."""
        import torch

        encodings = self.tokenizer.encode_batch(list(texts))
        truncated = np.array([len(e.ids) > self.max_length for e in encodings], dtype=bool)
        self.truncated_texts += int(truncated.sum())
        width = max([min(len(e.ids), self.max_length) for e in encodings] + [1])
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for i, e in enumerate(encodings):
            row = _truncate(e.ids, self.max_length)
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask, truncated

    def logits(
        self, ids: torch.Tensor, mask: torch.Tensor, embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of a batch (differentiable; the module in eval mode for the call)."""
        from dlsec.core.model import inference_mode

        with inference_mode(self.module):
            if embeds is not None:
                out = self.module(inputs_embeds=embeds, attention_mask=mask)
            else:
                out = self.module(input_ids=ids, attention_mask=mask)
        return out if not hasattr(out, "logits") else out.logits

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                ids, mask, _ = self.encode(texts[start : start + self.batch_size])
                out.append(torch.softmax(self.logits(ids, mask).double(), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes))

    def _embedding(self) -> nn.Embedding:
        layer = getattr(self.module, "get_input_embeddings")()  # noqa: B009 (typed nn.Module lacks it)
        if not callable(layer) or not hasattr(layer, "weight"):
            raise UsageError("the module's get_input_embeddings() must return an embedding layer")
        return cast("nn.Embedding", layer)

    def embedding_matrix(self) -> torch.Tensor:
        """The input embedding table ``(V, D)`` (a detached view)."""
        return self._embedding().weight.detach()

    def single_token(self, word: str) -> int | None:
        """The token id of ``word`` when the tokenizer keeps it whole, else ``None``."""
        if word not in self._single:
            ids = self.tokenizer.encode(word, add_special_tokens=False).ids
            unk = self.tokenizer.token_to_id("[UNK]")
            self._single[word] = ids[0] if len(ids) == 1 and ids[0] != unk else None
        return self._single[word]

    def word_gradients(
        self, text: str, spans: Sequence[tuple[int, int]], label: int
    ) -> dict[int, torch.Tensor]:
        """Gradient of the cross-entropy at ``label`` with respect to each word's input embedding.

        ``spans`` are the words' character spans; only a word that is exactly one token gets a
        gradient (keyed by its position in ``spans``).
        """
        import torch

        enc = self.tokenizer.encode(text)
        ids = torch.tensor([_truncate(enc.ids, self.max_length)], dtype=torch.long)
        mask = torch.ones_like(ids)
        embeds = self._embedding()(ids).detach().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(self.logits(ids, mask, embeds), torch.tensor([label]))
            (grad,) = torch.autograd.grad(loss, embeds)
        offsets = enc.offsets[: ids.shape[1]]
        special = enc.special_tokens_mask
        out: dict[int, torch.Tensor] = {}
        for k, (start, end) in enumerate(spans):
            hits = [t for t, (s, e) in enumerate(offsets) if not special[t] and s < end and e > start]
            if len(hits) == 1 and offsets[hits[0]] == (start, end):
                out[k] = grad[0, hits[0]]
        return out


def _truncate(ids: list[int], max_length: int) -> list[int]:
    # Keep the first max_length - 1 tokens and the closing special token (BERT's [SEP]), if any.
    if len(ids) <= max_length:
        return list(ids)
    return list(ids[: max_length - 1]) + [ids[-1]]


# --------------------------------------------------------------------------- the embedding bag


def build_embedding_bag(vocab_size: int, num_classes: int, *, dim: int = 64, pad_id: int = 0) -> nn.Module:
    """dlsec's fast text model: mean of word embeddings (padding masked out), then a linear layer."""
    import torch
    from torch import nn

    class EmbeddingBagClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
            self.dropout = nn.Dropout(0.2)
            self.head = nn.Linear(dim, num_classes)

        def get_input_embeddings(self) -> nn.Embedding:
            return self.embedding

        def forward(
            self,
            input_ids: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None,
            inputs_embeds: torch.Tensor | None = None,
        ) -> torch.Tensor:
            emb = inputs_embeds if inputs_embeds is not None else self.embedding(input_ids)
            if attention_mask is None:
                attention_mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
            m = attention_mask.to(emb.dtype).unsqueeze(-1)
            pooled = (emb * m).sum(1) / m.sum(1).clamp(min=1.0)
            out: torch.Tensor = self.head(self.dropout(pooled))
            return out

    return EmbeddingBagClassifier()


# --------------------------------------------------------------------------- folders


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{path}: not a JSON file") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return value


def _hooks(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in _REMOTE_KEYS and inner not in (None, False, {}, []):
                yield f"{where}: {key}"
            yield from _hooks(inner, where)
    elif isinstance(value, list):
        for inner in value:
            yield from _hooks(inner, where)


def check_model_folder(folder: str | Path) -> list[str]:
    """What makes a model folder unsafe to load: remote-code hooks, code, pickled files.

    Reads names and JSON only; imports, unpickles and executes nothing. An empty list means
    none was found (the folder may still lack what loading needs).
    """
    root = Path(folder)
    problems: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        lower = name.lower()
        if lower.endswith(".py"):
            problems.append(f"{name}: Python code (remote code)")
        elif lower.endswith(_PICKLED):
            problems.append(f"{name}: pickled or pickle-capable file (code runs when loaded)")
        elif lower.endswith(".json"):
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            problems.extend(f"{hook} (runs repository code)" for hook in _hooks(value, name))
    return problems


def load_text_model(
    folder: str | Path, *, batch_size: int = 64, home: str | Path | None = None
) -> TokenizedModel:
    """Load a text classifier folder (safetensors weights and ``tokenizer.json``) without running its code.

    ``zoo:NAME`` names a built-in text model (:mod:`dlsec.text.zoo`), trained on first use and
    cached under ``home``.

    Raises:
        UnsafeModelFileError: the folder holds a remote-code hook, Python code or a pickled file.
        ModelLoadError: a file is missing, malformed, or the tokenizer does not match the model.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    if str(folder).startswith("zoo:"):
        from dlsec.text.zoo import resolve_text_model

        folder = resolve_text_model(folder, home=home)
    root = Path(folder)
    if not root.is_dir():
        raise ModelLoadError(f"{root}: not a model folder (config.json, model.safetensors, tokenizer.json)")
    problems = check_model_folder(root)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafeModelFileError(
            f"{root}: refused, {problems[0]}{more}; keep only safetensors weights and tokenizer.json"
        )
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (root / needed).is_file():
            raise ModelLoadError(
                f"{root}: {needed} is missing (needed: config.json, model.safetensors, tokenizer.json)"
            )
    config = _json_file(root / "config.json")
    try:
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises its own Exception type for malformed files
        raise ModelLoadError(
            f"{root / 'tokenizer.json'}: not a tokenizers file ({str(exc).splitlines()[0][:80]})"
        ) from None
    try:
        state = load_file(str(root / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{root / 'model.safetensors'}: not a safetensors file ({exc})") from None
    model_type = config.get("model_type")
    if model_type == EMBEDDING_BAG_TYPE:
        module, class_names, max_length = _embedding_bag_from(config, root)
    else:
        module, class_names, max_length = _transformers_from(config, root)
    vocab = int(config.get("vocab_size", 0))
    if tokenizer.get_vocab_size() > vocab:
        raise ModelLoadError(
            f"{root}: tokenizer of {tokenizer.get_vocab_size()} tokens, model of {vocab}: they do not match"
        )
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or result.unexpected_keys:
        what = missing[:1] or result.unexpected_keys[:1]
        raise ModelLoadError(f"{root}: the weights do not match the configuration (e.g. {what[0]})")
    module.eval()
    torch.set_grad_enabled(True)
    return TokenizedModel(
        module, tokenizer, class_names, max_length=max_length, batch_size=batch_size, config=config
    )


def _class_names(config: Mapping[str, Any], num: int) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict):
        return tuple(str(i) for i in range(num))
    return tuple(str(id2label.get(str(i), id2label.get(i, i))) for i in range(num))


def _embedding_bag_from(config: Mapping[str, Any], root: Path) -> tuple[nn.Module, tuple[str, ...], int]:
    try:
        vocab, classes, dim = int(config["vocab_size"]), int(config["num_labels"]), int(config.get("dim", 64))
        max_length = int(config.get("max_length", 128))
    except (KeyError, TypeError, ValueError):
        raise ModelLoadError(
            f"{root / 'config.json'}: an embedding-bag config needs vocab_size and num_labels"
        ) from None
    return build_embedding_bag(vocab, classes, dim=dim), _class_names(config, classes), max_length


def _transformers_from(config: Mapping[str, Any], root: Path) -> tuple[nn.Module, tuple[str, ...], int]:
    from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise UnsafeModelFileError(
            f"{root}: model_type {model_type!r} is not built into transformers (needs repository code)"
        )
    try:
        hf_config = CONFIG_MAPPING[model_type].from_dict(dict(config))
        module = AutoModelForSequenceClassification.from_config(hf_config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(
            f"{root / 'config.json'}: not a sequence-classifier configuration ({exc})"
        ) from None
    max_length = min(int(getattr(hf_config, "max_position_embeddings", 512)), 512)
    tok_config = root / "tokenizer_config.json"
    if tok_config.is_file():
        declared = _json_file(tok_config).get("model_max_length")
        if isinstance(declared, int) and 2 <= declared < max_length:
            max_length = declared
    return module, _class_names(config, int(hf_config.num_labels)), max_length


def save_text_model(
    model: TokenizedModel, folder: str | Path, *, card: Mapping[str, Any] | None = None
) -> Path:
    """Write config.json, model.safetensors, tokenizer.json (and model.json), each atomically."""
    from safetensors.torch import save_file

    from dlsec.core.card import CARD_FILE, TrainingCard
    from dlsec.fsutil import atomic_write_text, atomic_write_with, sha256_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.module.state_dict().items()}
    atomic_write_with(root / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(root / "tokenizer.json", model.tokenizer.to_str())
    atomic_write_text(root / "config.json", json.dumps(model.config, indent=2, sort_keys=True) + "\n")
    if card is not None:
        fields = dict(card)
        fields["weights"] = {"file": "model.safetensors", "sha256": sha256_file(root / "model.safetensors")}
        TrainingCard(fields, source=root / CARD_FILE).write(root / CARD_FILE)
    return root
