"""Word- and character-level attacks on text classifiers, under one contract.

An attack is configured by keyword-only hyperparameters (the budget ``max_change``, the
fraction of a text's words it may change; ``query_budget``, the most model queries per text;
``keep_stopwords``; ``seed``) and called as ``attack(model, texts, labels)``.
:meth:`TextAttack.__call__` is the one verb: it validates the inputs and the model's access
level, scores the clean texts (one batched query), hands each correctly classified text to the
subclass's :meth:`TextAttack.run` through a :class:`TextOracle`, and scores the result. The
oracle is where the constraints live: it refuses (never queries) a candidate that changes more
words than the budget allows or touches a protected word, counts every text it sends to the
model, stops at the query budget, and remembers the first candidate that fools the model.
A subclass writes only the search.

* :class:`PWWS` (Ren et al. 2019): word saliency by replacing each word with ``[UNK]``, the
  best WordNet synonym per word, words taken in the order of softmax(saliency) x gain.
* :class:`TextFooler` (Jin et al. 2020): importance by deleting each word, then WordNet
  synonyms of the word's usual part of speech, filtered by cosine similarity in the model's
  own input embedding (white-box models; black-box models skip that filter and say so).
* :class:`DeepWordBug` (Gao et al. 2018): importance by ``[UNK]`` replacement, then character
  edits (swap two neighbours, substitute, delete, insert) of the most important words.
* :class:`HotFlip` (Ebrahimi et al. 2018): white-box; the gradient with respect to the input
  embeddings ranks every (word, replacement) flip by its first-order gain in loss, and the
  best few are checked with one batched query per step.

The model's queries are batched: every candidate of one step goes to the model in one call,
and ``lockstep`` texts are attacked together, each step's candidates of all of them in one call.
A search is a generator that yields the texts it wants scored and receives their probabilities
(``yield from oracle.score(...)``), so the base class can interleave the searches of several
texts without changing what any of them does: a text's queries, its random draws and its
result are the same whichever texts it runs beside (a test checks it against ``lockstep=1``).

Example:
    >>> attack = PWWS(max_change=0.2)                               # doctest: +SKIP
    >>> result = attack(model, ["a gorgeous, witty film"], [1])     # doctest: +SKIP
    >>> result.marked[0]                                            # doctest: +SKIP
    'a [[gorgeous->beautiful]], witty film'
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dlsec.core.model import Access
from dlsec.errors import UsageError
from dlsec.text.models import QueryRefusedError, TextClassifier, TokenizedModel
from dlsec.text.wordnet import WordNet
from dlsec.text.words import STOPWORDS, Words, mark_changes

__all__ = [
    "TEXT_ATTACKS",
    "TextAttack",
    "TextAttackResult",
    "TextOracle",
    "PWWS",
    "TextFooler",
    "DeepWordBug",
    "HotFlip",
    "get_text_attack",
    "register_text_attack",
    "word_importance",
]

TEXT_ATTACKS: dict[str, type[TextAttack]] = {}
UNK = "[UNK]"

#: A search step: yields the texts to score, receives their probabilities ``(n, K)``.
Queries = Generator[list[str], np.ndarray, None]


def register_text_attack(name: str) -> Callable[[type[TextAttack]], type[TextAttack]]:
    """Class decorator: register a text attack under ``name``; a duplicate raises ``UsageError``."""
    from dlsec.core.registration import register_in

    return register_in(TEXT_ATTACKS, name, "text attack")


def get_text_attack(name: str, **params: Any) -> TextAttack:
    """Build the registered text attack ``name`` with ``params``."""
    key = name.lower()
    if key not in TEXT_ATTACKS:
        raise UsageError(f"unknown text attack {name!r}; choose one of: {', '.join(sorted(TEXT_ATTACKS))}")
    return TEXT_ATTACKS[key](**params)


class _BudgetSpent(Exception):
    """The query budget of one text ran out."""


@dataclass(frozen=True)
class TextAttackResult:
    """What a text attack returns.

    Attributes:
        texts / adv_texts: the clean and the adversarial texts (``adv == clean`` where the attack
            failed or was not run).
        marked: the adversarial texts with each changed word written ``[[old->new]]``.
        y, clean_pred, adv_pred: true labels and the model's predictions.
        success: per text, whether the model misclassifies ``adv_texts`` (a text the model
            already got wrong counts as a success with no change, as in the evasion engine).
        clean_correct: per text, whether the clean text was classified correctly.
        queries: per text, texts sent to the model (the clean query included; final scoring
            excluded).
        changed: per text, the indices of the words changed.
        words: per text, its number of words.
        exhausted: per text, whether the query budget ran out.
        truncated: texts the model's tokenizer truncated (white-box models; else 0).
        stopped: why the attack stopped early, when the model refused a query
            (:class:`~dlsec.text.models.QueryRefusedError`, e.g. a gateway key's budget); the
            result is then partial: texts from the one it stopped on are left unattacked.
        attacked: how many texts (from the first) the attack went through; ``None``: all.
    """

    texts: tuple[str, ...]
    adv_texts: tuple[str, ...]
    marked: tuple[str, ...]
    y: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    success: np.ndarray
    clean_correct: np.ndarray
    queries: np.ndarray
    changed: tuple[tuple[int, ...], ...]
    words: np.ndarray
    exhausted: np.ndarray
    attack: str
    max_change: float
    query_budget: int | None
    seed: int
    truncated: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    attacked: int | None = None

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if len(self.y) else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float((~self.success).mean()) if len(self.y) else float("nan")

    @property
    def success_rate(self) -> float:
        """Fraction of the correctly classified texts the attack fooled."""
        attacked = self.clean_correct
        return float(self.success[attacked].mean()) if attacked.any() else float("nan")

    @property
    def median_queries(self) -> float:
        """Median queries over the successful attacks on correctly classified texts."""
        won = self.success & self.clean_correct
        return float(np.median(self.queries[won])) if won.any() else float("nan")

    @property
    def changed_fraction(self) -> np.ndarray:
        """Per text, the fraction of its words changed."""
        return np.array([len(c) / max(int(n), 1) for c, n in zip(self.changed, self.words, strict=True)])

    def summary(self) -> dict[str, Any]:
        won = self.success & self.clean_correct
        return {
            "attack": self.attack,
            "n": int(len(self.y)),
            "max_change": self.max_change,
            "query_budget": self.query_budget,
            "seed": self.seed,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "success_rate": self.success_rate,
            "median_queries": self.median_queries,
            "mean_words_changed": float(self.changed_fraction[won].mean()) if won.any() else float("nan"),
            "budget_exhausted": int(self.exhausted.sum()),
            "truncated": self.truncated,
            "stopped": self.stopped,
            "attacked": len(self.y) if self.attacked is None else self.attacked,
            **self.extras,
        }

    def examples(self) -> list[dict[str, Any]]:
        return [
            {
                "text": self.texts[i],
                "adversarial": self.adv_texts[i],
                "marked": self.marked[i],
                "label": int(self.y[i]),
                "clean_pred": int(self.clean_pred[i]),
                "adv_pred": int(self.adv_pred[i]),
                "success": bool(self.success[i]),
                "attacked": bool(self.clean_correct[i]),
                "words_changed": list(self.changed[i]),
                "queries": int(self.queries[i]),
            }
            for i in range(len(self.y))
        ]


class TextOracle:
    """One text's view of the model, with the constraints and the query count.

    Attributes:
        original: the clean text's words.
        label: its true label.
        limit: the most words a candidate may change (``floor(max_change * words)``).
        protected: word indices that must not change.
        queries: texts sent to the model so far.
        found: the first candidate that fooled the model (``None`` until one does).
    """

    def __init__(
        self,
        model: TextClassifier,
        original: Words,
        label: int,
        *,
        limit: int,
        protected: frozenset[int],
        query_budget: int | None,
        clean: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.original = original
        self.label = label
        self.limit = limit
        self.protected = protected
        self.query_budget = query_budget
        self.queries = 0
        self.found: Words | None = None
        self.found_probs: np.ndarray | None = None  # the model's answer on ``found``
        self._clean = clean

    @property
    def clean(self) -> np.ndarray:
        """The model's probabilities on the clean text (from the attack's clean query, or one query)."""
        if self._clean is None:
            self.queries += 1
            self._clean = self.model.probs([self.original.text()])[0]
        return self._clean

    def changed(self, words: Words) -> tuple[int, ...]:
        return tuple(
            k for k, slot in enumerate(words.slots) if words.pieces[slot] != self.original.pieces[slot]
        )

    def allowed(self, words: Words) -> bool:
        changed = self.changed(words)
        return len(changed) <= self.limit and not self.protected.intersection(changed)

    def changeable(self) -> list[int]:
        """Word indices a candidate may change."""
        return [k for k in range(len(self.original)) if k not in self.protected]

    def _ask(self, texts: list[str]) -> Generator[list[str], np.ndarray, np.ndarray]:
        room = None if self.query_budget is None else self.query_budget - self.queries
        if room is not None and room < len(texts):
            if room > 0:
                self.queries += room
                yield texts[:room]
            raise _BudgetSpent
        self.queries += len(texts)
        probs = yield texts
        return probs

    def probe(self, texts: list[str]) -> Generator[list[str], np.ndarray, np.ndarray]:
        """Probabilities for probe texts (importance by deletion or ``[UNK]``); counted, not candidates.

        A generator: ``probs = yield from oracle.probe(texts)``.
        """
        if not texts:
            return np.zeros((0, self.model.num_classes))
        return (yield from self._ask(texts))

    def score(self, candidates: Sequence[Words]) -> Generator[list[str], np.ndarray, np.ndarray]:
        """The true-class probability of each candidate; ``inf`` for one the constraints refuse.

        The first candidate (in order) that fools the model is kept in :attr:`found`. A
        generator: ``scores = yield from oracle.score(candidates)``.
        """
        out = np.full(len(candidates), np.inf)
        keep = [i for i, c in enumerate(candidates) if self.allowed(c)]
        if not keep:
            return out
        probs = yield from self._ask([candidates[i].text() for i in keep])
        out[keep] = probs[:, self.label]
        fooled = probs.argmax(axis=1) != self.label
        if self.found is None and fooled.any():
            first = int(np.flatnonzero(fooled)[0])
            self.found = candidates[keep[first]]
            self.found_probs = probs[first]
        return out


class TextAttack(ABC):
    """Base of the text attacks: :meth:`__call__` is final, subclasses write :meth:`run`.

    Args:
        max_change: the most words changed, as a fraction of the text's words (0 < x <= 1).
        query_budget: the most texts sent to the model per attacked text (``None``: no limit).
        keep_stopwords: never change a stop word.
        keep_names: never change a capitalised word that does not start a sentence (a
            named-entity stand-in without a tagger).
        seed: seeds any random choice (DeepWordBug's edits).
        lockstep: texts attacked together, their candidates sent to the model in one call
            (1: one text after another). The results do not depend on it.
    """

    name: ClassVar[str] = "text-attack"
    access: ClassVar[Access] = Access.SCORE

    def __init__(
        self,
        *,
        max_change: float = 0.2,
        query_budget: int | None = None,
        keep_stopwords: bool = True,
        keep_names: bool = False,
        seed: int = 0,
        lockstep: int = 16,
    ) -> None:
        if lockstep < 1:
            raise UsageError(f"lockstep must be positive, got {lockstep}")
        if not 0.0 < max_change <= 1.0:
            raise UsageError(f"max_change must be in (0, 1], got {max_change}")
        if query_budget is not None and query_budget < 1:
            raise UsageError(f"query_budget must be positive, got {query_budget}")
        self.max_change = max_change
        self.query_budget = query_budget
        self.keep_stopwords = keep_stopwords
        self.keep_names = keep_names
        self.seed = seed
        self.lockstep = lockstep

    def _protected(self, words: Words) -> frozenset[int]:
        out: set[int] = set()
        for k in range(len(words)):
            w = words.word(k)
            if self.keep_stopwords and w.lower() in STOPWORDS:
                out.add(k)
            if self.keep_names and k > 0 and w[:1].isupper():
                before = "".join(words.pieces[words.slots[k - 1] + 1 : words.slots[k]]).strip()
                if not before.endswith((".", "!", "?")):
                    out.add(k)
        return frozenset(out)

    def __call__(
        self, model: TextClassifier, texts: Sequence[str], labels: Sequence[int] | np.ndarray
    ) -> TextAttackResult:
        """Attack each text; return the adversarial texts, the success mask and the queries used."""
        if not isinstance(model, TextClassifier):
            raise UsageError(f"a text attack needs a TextClassifier, got {type(model).__name__}")
        if model.access < self.access:
            raise UsageError(
                f"{self.name} needs {self.access.label} access; the model gives {model.access.label}"
            )
        texts = tuple(texts)
        y = np.asarray(labels, dtype=np.int64)
        if y.shape != (len(texts),):
            raise UsageError(f"{len(texts)} texts but {y.shape[0] if y.ndim else 0} labels")
        if len(texts) and (y.min() < 0 or y.max() >= model.num_classes):
            raise UsageError(f"labels must lie in 0..{model.num_classes - 1}")
        if isinstance(model, TokenizedModel):
            model.truncated_texts = 0
        clean_probs = model.probs(texts) if texts else np.zeros((0, model.num_classes))
        clean_pred = np.asarray(clean_probs.argmax(axis=1), dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        adv: list[str] = list(texts)
        queries = np.ones(len(texts), dtype=np.int64)
        exhausted = np.zeros(len(texts), dtype=bool)
        n_words = np.zeros(len(texts), dtype=np.int64)
        parsed = [Words.of(t) for t in texts]
        final = list(parsed)
        adv_pred = clean_pred.copy()
        jobs: list[tuple[int, TextOracle, int]] = []
        for i, (words, label) in enumerate(zip(parsed, y.tolist(), strict=True)):
            n_words[i] = len(words)
            if clean_pred[i] != label:
                continue
            oracle = TextOracle(
                model,
                words,
                label,
                limit=math.floor(self.max_change * len(words) + 1e-9),
                protected=self._protected(words),
                query_budget=None if self.query_budget is None else self.query_budget - 1,
                clean=clean_probs[i],
            )
            if oracle.limit >= 1 and oracle.changeable():
                jobs.append((i, oracle, int(rng.integers(2**63))))
        stopped, attacked = self._search(model, jobs, exhausted)
        for i, oracle, _ in jobs:
            queries[i] += oracle.queries
            if attacked is not None and i >= attacked:
                continue  # the model stopped answering: from here on, nothing counts as attacked
            if oracle.found is not None and oracle.found_probs is not None:
                if not oracle.allowed(oracle.found):  # the oracle only keeps allowed candidates
                    raise AssertionError("a candidate outside the constraints was kept")
                final[i] = oracle.found
                adv[i] = oracle.found.text()
                adv_pred[i] = int(oracle.found_probs.argmax())
        changed = tuple(
            tuple(k for k, slot in enumerate(f.slots) if f.pieces[slot] != p.pieces[slot])
            for p, f in zip(parsed, final, strict=True)
        )
        truncated = model.truncated_texts if isinstance(model, TokenizedModel) else 0
        return TextAttackResult(
            texts=texts,
            adv_texts=tuple(adv),
            marked=tuple(mark_changes(p, f, c) for p, f, c in zip(parsed, final, changed, strict=True)),
            y=y,
            clean_pred=clean_pred,
            adv_pred=adv_pred,
            success=adv_pred != y,
            clean_correct=clean_pred == y,
            queries=queries,
            changed=changed,
            words=n_words,
            exhausted=exhausted,
            attack=self.name,
            max_change=self.max_change,
            query_budget=self.query_budget,
            seed=self.seed,
            truncated=truncated,
            extras=self.extras(model),
            stopped=stopped,
            attacked=attacked,
        )

    def _search(
        self, model: TextClassifier, jobs: list[tuple[int, TextOracle, int]], exhausted: np.ndarray
    ) -> tuple[str | None, int | None]:
        """Run the searches, ``lockstep`` at a time, each step's queries of all in one model call.

        Returns why and at which text the model stopped answering (``None, None`` if it did not):
        a refusal stops every search, and the texts from the first unfinished one on are left
        unattacked, so what was attacked is a prefix of the texts, as one text at a time.
        """
        waiting = list(reversed(jobs))
        active: dict[int, tuple[Queries, list[str]]] = {}

        def advance(i: int, search: Queries, answer: np.ndarray | None) -> None:
            try:
                request = next(search) if answer is None else search.send(answer)
            except StopIteration:
                return
            except _BudgetSpent:
                exhausted[i] = True
                return
            active[i] = (search, request)

        while waiting or active:
            while waiting and len(active) < self.lockstep:
                i, oracle, seed = waiting.pop()
                advance(i, self.run(oracle, np.random.default_rng(seed)), None)
            if not active:
                continue
            order = sorted(active)
            texts = [t for i in order for t in active[i][1]]
            try:
                probs = model.probs(texts)
            except QueryRefusedError as exc:
                return str(exc), order[0]
            start = 0
            for i in order:
                search, request = active.pop(i)
                advance(i, search, probs[start : start + len(request)])
                start += len(request)
        return None, None

    def extras(self, model: TextClassifier) -> dict[str, Any]:
        """Attack-specific facts recorded in the result (e.g. which similarity was used)."""
        return {}

    @abstractmethod
    def run(self, oracle: TextOracle, rng: np.random.Generator) -> Queries:
        """Search for a candidate that fools the model; :attr:`TextOracle.found` holds it.

        A generator: every query goes through the oracle with ``yield from`` (``scores = yield
        from oracle.score(candidates)``), so that the base class can batch several searches.
        """


# --------------------------------------------------------------------------- helpers


def _cased(original: str, new: str) -> str:
    if original.isupper() and len(original) > 1:
        return new.upper()
    if original[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _unk_saliency(oracle: TextOracle) -> Generator[list[str], np.ndarray, np.ndarray]:
    """Drop in the true-class probability when each word is replaced by ``[UNK]``.

    Only the words a candidate may change are probed; the others score ``-inf``.
    """
    keys = oracle.changeable()
    out = np.full(len(oracle.original), -np.inf)
    probes = [oracle.original.replace(k, UNK).text() for k in keys]
    if keys:
        out[keys] = oracle.clean[oracle.label] - (yield from oracle.probe(probes))[:, oracle.label]
    return out


def _deletion_importance(oracle: TextOracle) -> Generator[list[str], np.ndarray, np.ndarray]:
    """TextFooler's importance: the drop in the true class when a word is deleted, plus the rise
    of the new class where deletion changes the prediction (changeable words only, else ``-inf``)."""
    keys = oracle.changeable()
    out = np.full(len(oracle.original), -np.inf)
    if not keys:
        return out
    p0, label = oracle.clean, oracle.label
    probs = yield from oracle.probe([oracle.original.replace(k, "").text() for k in keys])
    score = p0[label] - probs[:, label]
    pred = probs.argmax(axis=1)
    flip = pred != label
    score[flip] += probs[flip, pred[flip]] - p0[pred[flip]]
    out[keys] = score
    return out


def word_importance(model: TextClassifier, text: str, label: int, *, method: str = "deletion") -> np.ndarray:
    """How much each word of ``text`` supports ``label``: TextFooler's deletion score, or PWWS's
    drop in the label's probability when the word is replaced by ``[UNK]`` (``method="unk"``).

    Example:
        >>> word_importance(model, "a gorgeous, witty film", 1)     # doctest: +SKIP
        array([0.01, 0.31, 0.12, 0.02])
    """
    if method not in ("deletion", "unk"):
        raise UsageError(f"method must be deletion or unk, got {method!r}")
    words = Words.of(text)
    oracle = TextOracle(model, words, label, limit=len(words), protected=frozenset(), query_budget=None)
    return _answered(model, _deletion_importance(oracle) if method == "deletion" else _unk_saliency(oracle))


def _answered(model: TextClassifier, search: Generator[list[str], np.ndarray, np.ndarray]) -> np.ndarray:
    """Run a query generator against ``model`` alone and return what it returns."""
    try:
        request = next(search)
        while True:
            request = search.send(model.probs(request))
    except StopIteration as done:
        return np.asarray(done.value)


class _WordNetAttack(TextAttack):
    """Word-swap attacks whose candidates are WordNet synonyms (or a thesaurus given as a mapping).

    Args:
        same_pos: only synonyms in the word's usual part of speech (WordNet only).
        max_candidates: the most synonyms tried per word.
        wordnet: the WordNet database (default: :meth:`WordNet.load`).
        thesaurus: a mapping from a lower-case word to its replacements, used instead of WordNet.
    """

    def __init__(
        self,
        *,
        same_pos: bool = True,
        max_candidates: int = 50,
        wordnet: WordNet | None = None,
        thesaurus: Mapping[str, Sequence[str]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if max_candidates < 1:
            raise UsageError(f"max_candidates must be positive, got {max_candidates}")
        self.same_pos = same_pos
        self.max_candidates = max_candidates
        self._wordnet = wordnet
        self.thesaurus = (
            {k.lower(): tuple(v) for k, v in thesaurus.items()} if thesaurus is not None else None
        )

    @property
    def wordnet(self) -> WordNet:
        if self._wordnet is None:
            self._wordnet = WordNet.load()
        return self._wordnet

    def synonyms(self, word: str) -> list[str]:
        if self.thesaurus is not None:
            found = self.thesaurus.get(word.lower(), ())
            return [_cased(word, s) for s in found if s.lower() != word.lower()][: self.max_candidates]
        pos = self.wordnet.usual_pos(word) if self.same_pos else None
        if self.same_pos and pos is None:
            return []
        return [_cased(word, s) for s in self.wordnet.synonyms(word, pos)[: self.max_candidates]]


@register_text_attack("pwws")
class PWWS(_WordNetAttack):
    """Probability Weighted Word Saliency (Ren et al., ACL 2019) with WordNet synonyms.

    Example:
        >>> PWWS(max_change=0.2, same_pos=False).name
        'pwws'
    """

    name = "pwws"

    def run(self, oracle: TextOracle, rng: np.random.Generator) -> Queries:
        words = oracle.original
        p0 = float(oracle.clean[oracle.label])
        saliency = yield from _unk_saliency(oracle)
        best: dict[int, tuple[float, Words]] = {}
        cands: list[Words] = []
        owner: list[int] = []
        for k in oracle.changeable():
            for syn in self.synonyms(words.word(k)):
                cands.append(words.replace(k, syn))
                owner.append(k)
        scores = yield from oracle.score(cands)
        if oracle.found is not None:
            return
        for k, c, s in zip(owner, cands, scores, strict=True):
            if np.isfinite(s) and (k not in best or s < best[k][0]):
                best[k] = (float(s), c)
        if not best:
            return
        keys = sorted(best)
        sal = np.array([saliency[k] for k in keys])
        weights = np.exp(sal - sal.max())
        weights /= weights.sum()
        gain = np.array([p0 - best[k][0] for k in keys])
        order = [keys[j] for j in np.argsort(-(weights * gain), kind="stable")]
        current = words
        for k in order[: oracle.limit]:
            swap = best[k][1]
            current = current.replace(k, swap.pieces[swap.slots[k]])
            yield from oracle.score([current])
            if oracle.found is not None:
                return


@register_text_attack("textfooler")
class TextFooler(_WordNetAttack):
    """TextFooler (Jin et al., AAAI 2020) with WordNet synonyms of the word's usual part of speech.

    The similarity constraint (``min_similarity``, off by default) is the cosine between the
    word's and the synonym's input embeddings in the attacked model itself (white-box models
    only): no embedding of meaning is available offline, and a classifier's own embedding
    measures how alike the model treats two words, not how alike they mean, so a threshold there
    mostly removes the swaps that work (on the Rotten Tomatoes embedding bag, a threshold of 0
    cuts TextFooler's success from 73% to 54%). The synonyms themselves come from WordNet, in
    the word's usual part of speech, which is the meaning-preserving constraint here.

    Example:
        >>> TextFooler(max_change=0.2).name
        'textfooler'
    """

    name = "textfooler"

    def __init__(self, *, min_similarity: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.min_similarity = min_similarity

    def extras(self, model: TextClassifier) -> dict[str, Any]:
        if self.min_similarity is None:
            return {"similarity": "off"}
        if isinstance(model, TokenizedModel):
            return {"similarity": f"cosine >= {self.min_similarity} in the model's input embedding"}
        return {"similarity": "skipped: a score-based model has no embedding to compare in"}

    def _similar(self, model: TextClassifier, word: str, syns: list[str]) -> list[tuple[str, float]]:
        if self.min_similarity is None or not isinstance(model, TokenizedModel):
            return [(s, 1.0) for s in syns]
        table = model.embedding_matrix()
        i = model.single_token(word)
        out = []
        for s in syns:
            j = model.single_token(s)
            if i is None or j is None:
                out.append((s, 1.0))  # no vector to compare: the WordNet synonym stands on its own
                continue
            a, b = table[i], table[j]
            cos = float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-12))
            if cos >= self.min_similarity:
                out.append((s, cos))
        return out

    def run(self, oracle: TextOracle, rng: np.random.Generator) -> Queries:
        words = oracle.original
        importance = yield from _deletion_importance(oracle)
        current, p_cur = words, float(oracle.clean[oracle.label])
        for k in sorted(oracle.changeable(), key=lambda k: -importance[k]):
            if len(oracle.changed(current)) >= oracle.limit:
                return
            pairs = self._similar(oracle.model, words.word(k), self.synonyms(words.word(k)))
            if not pairs:
                continue
            cands = [current.replace(k, s) for s, _ in pairs]
            scores = yield from oracle.score(cands)
            if oracle.found is not None:
                return
            j = int(np.argmin(scores))
            if np.isfinite(scores[j]) and scores[j] < p_cur:
                current, p_cur = cands[j], float(scores[j])


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@register_text_attack("deepwordbug")
class DeepWordBug(TextAttack):
    """DeepWordBug (Gao et al., 2018): character edits of the most important words.

    Each step tries, for one word, ``edits_per_kind`` seeded edits of each kind (swap two
    neighbouring letters, substitute, delete, insert a letter) in one batched query.

    Example:
        >>> DeepWordBug(max_change=0.2, seed=1).name
        'deepwordbug'
    """

    name = "deepwordbug"

    def __init__(self, *, edits_per_kind: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        if edits_per_kind < 1:
            raise UsageError(f"edits_per_kind must be positive, got {edits_per_kind}")
        self.edits_per_kind = edits_per_kind

    def edits(self, word: str, rng: np.random.Generator) -> list[str]:
        n = len(word)
        out: list[str] = []
        for _ in range(self.edits_per_kind):
            if n >= 4:
                i = int(rng.integers(1, n - 2))
                out.append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
            i = int(rng.integers(n))
            out.append(
                word[:i] + str(rng.choice(list(_LETTERS.replace(word[i].lower(), "")))) + word[i + 1 :]
            )
            if n >= 3:
                i = int(rng.integers(1, n - 1))
                out.append(word[:i] + word[i + 1 :])
            i = int(rng.integers(1, n + 1)) if n > 1 else 1
            out.append(word[:i] + str(rng.choice(list(_LETTERS))) + word[i:])
        return [e for e in dict.fromkeys(out) if e and e != word]

    def run(self, oracle: TextOracle, rng: np.random.Generator) -> Queries:
        words = oracle.original
        saliency = yield from _unk_saliency(oracle)
        current, p_cur = words, float(oracle.clean[oracle.label])
        for k in sorted(oracle.changeable(), key=lambda k: -saliency[k]):
            if len(oracle.changed(current)) >= oracle.limit:
                return
            cands = [current.replace(k, e) for e in self.edits(words.word(k), rng)]
            if not cands:
                continue
            scores = yield from oracle.score(cands)
            if oracle.found is not None:
                return
            j = int(np.argmin(scores))
            if np.isfinite(scores[j]) and scores[j] < p_cur:
                current, p_cur = cands[j], float(scores[j])


@register_text_attack("hotflip")
class HotFlip(_WordNetAttack):
    """HotFlip (Ebrahimi et al., ACL 2018) at the word level, for white-box models.

    Each step takes the gradient of the loss with respect to the input embeddings (one query),
    ranks every flip of a one-token word ``w`` to a candidate ``c`` by ``(E[c] - E[w]) . grad``,
    and checks the ``beam`` best flips in one batched query. Candidates are the word's WordNet
    synonyms that are one token (``synonyms_only=True``), or every whole-word token of the
    vocabulary.

    Example:
        >>> HotFlip(max_change=0.2).name
        'hotflip'
    """

    name = "hotflip"
    access = Access.WHITE_BOX

    def __init__(self, *, beam: int = 5, synonyms_only: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        if beam < 1:
            raise UsageError(f"beam must be positive, got {beam}")
        self.beam = beam
        self.synonyms_only = synonyms_only

    def _vocabulary(self, model: TokenizedModel) -> list[tuple[str, int]]:
        vocab = model.tokenizer.get_vocab()
        return sorted((w, i) for w, i in vocab.items() if w.isalpha() and w.islower() and len(w) > 1)

    def run(self, oracle: TextOracle, rng: np.random.Generator) -> Queries:
        import torch

        model = oracle.model
        if not isinstance(model, TokenizedModel):
            raise UsageError("hotflip needs a white-box TokenizedModel")
        table = model.embedding_matrix()
        words = oracle.original
        spans: list[tuple[int, int]] = []
        pos = 0
        starts = []
        for piece in words.pieces:
            starts.append(pos)
            pos += len(piece)
        everything = None if self.synonyms_only else self._vocabulary(model)
        current = words
        for _ in range(oracle.limit):
            spans = []
            offset = 0
            for piece in current.pieces:
                spans.append((offset, offset + len(piece)))
                offset += len(piece)
            word_spans = [spans[s] for s in current.slots]
            oracle.queries += 1  # the gradient: one forward and backward pass
            if oracle.query_budget is not None and oracle.queries > oracle.query_budget:
                raise _BudgetSpent
            grads = model.word_gradients(current.text(), word_spans, oracle.label)
            flips: list[tuple[float, int, str]] = []
            done = set(oracle.changed(current))
            for k, g in grads.items():
                if k in oracle.protected or k in done:
                    continue
                w = current.word(k)
                src = model.single_token(w)
                if src is None:
                    continue
                if everything is None:
                    options = [(s, model.single_token(s)) for s in self.synonyms(w)]
                    pairs = [(s, t) for s, t in options if t is not None and t != src]
                else:
                    pairs = [(_cased(w, s), t) for s, t in everything if t != src]
                if not pairs:
                    continue
                ids = torch.tensor([t for _, t in pairs])
                gain = ((table[ids] - table[src]) @ g).tolist()
                flips.extend((float(v), k, s) for v, (s, _) in zip(gain, pairs, strict=True))
            if not flips:
                return
            flips.sort(key=lambda f: -f[0])
            cands = [current.replace(k, s) for _, k, s in flips[: self.beam]]
            scores = yield from oracle.score(cands)
            if oracle.found is not None:
                return
            current = cands[int(np.argmin(scores))]
