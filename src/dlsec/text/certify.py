"""Certified robustness to word substitutions: SAFER (Ye, Gong and Liu, ACL 2020).

SAFER smooths a text classifier over random word substitutions. Each word ``w`` has a
perturbation set ``S(w)``: the word itself and its synonyms (WordNet, or a thesaurus given as
a mapping; stop words keep ``{w}`` when ``keep_stopwords``). A random perturbation replaces
every word independently by a uniform draw from its set, and the smoothed classifier
``g(x) = argmax_c P(f(perturb(x)) = c)`` predicts the majority class.

An attacker who replaces words by members of their perturbation sets moves ``x`` to ``x'``.
The perturbation distributions of ``x`` and ``x'`` differ, in total variation, by at most

    Delta = 1 - prod over the changed words j of |S(x_j) & S(x'_j)| / max(|S(x_j)|, |S(x'_j)|)

(the paper's ``q_x``; the larger set in the denominator keeps the bound sound when the two sets
differ in size, and equals the paper's expression when they do not). So ``g(x') = g(x)`` when
``p_A - p_B > 2 Delta``; with ``p_B <= 1 - p_A`` this is ``p_A - 1/2 > Delta``. ``p_A`` is the
one-sided Clopper-Pearson lower bound at level ``alpha`` on the top class's probability (after
the class is chosen on ``n0`` separate samples, as in Cohen et al. 2019's CERTIFY). Against any
``K`` substitutions the worst ``Delta`` takes the ``K`` words with the smallest overlap ratio
``min over w' in S(w) of |S(w) & S(w')| / max(|S(w)|, |S(w')|)``; the certified radius is the
largest ``K`` whose worst ``Delta`` satisfies the condition.

Example:
    >>> safer = SAFER(n0=20, n=200, alpha=0.01, thesaurus={"good": ["fine"], "fine": ["good"]})
    >>> safer.perturbation_set("Good")
    ('Good', 'Fine')
    >>> cert = safer.certify(model, ["a good film"])                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlsec.errors import UsageError
from dlsec.text.attacks import _cased
from dlsec.text.models import TextClassifier
from dlsec.text.wordnet import WordNet
from dlsec.text.words import STOPWORDS, Words

__all__ = ["ABSTAIN", "SAFER", "SaferCertificate", "cp_lower", "safer_delta"]

ABSTAIN = -1


def cp_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound (scipy's exact binomial interval)."""
    from scipy.stats import binomtest

    if trials < 1 or not 0 <= successes <= trials:
        raise UsageError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if successes == 0:
        return 0.0
    # The two-sided exact interval at 1 - 2 alpha has the one-sided alpha bound as its lower end.
    return float(binomtest(successes, trials).proportion_ci(1 - 2 * alpha, method="exact").low)


def safer_delta(ratios: Sequence[float], k: int) -> float:
    """The worst total-variation bound against ``k`` substitutions, given per-word overlap ratios."""
    if k < 0:
        raise UsageError(f"k must be non-negative, got {k}")
    worst = sorted(float(r) for r in ratios)[:k]
    return float(1.0 - np.prod(worst)) if worst else 0.0


@dataclass(frozen=True)
class SaferCertificate:
    """Per text: the smoothed prediction (``-1``: abstained), ``p_lower``, and the certified radius.

    ``radius`` is the most substituted words certified (``-1`` when abstaining); ``all_words``
    marks texts certified against substituting every word (so at any radius); ``ratios`` are
    the words' overlap ratios (1 for a word whose set is itself).
    """

    prediction: np.ndarray
    p_lower: np.ndarray
    radius: np.ndarray
    all_words: np.ndarray
    ratios: tuple[tuple[float, ...], ...]

    def certified(self, y: Sequence[int] | np.ndarray, radius: int) -> np.ndarray:
        """Per text, whether it is correctly classified and certified at ``radius`` words."""
        y = np.asarray(y)
        return (self.prediction == y) & ((self.radius >= radius) | self.all_words)

    def certified_accuracy(self, y: Sequence[int] | np.ndarray, radii: Sequence[int]) -> list[float]:
        """The fraction of texts correctly classified and certified, per radius."""
        if len(self.prediction) == 0:
            return [float("nan") for _ in radii]
        return [float(self.certified(y, int(r)).mean()) for r in radii]


class SAFER:
    """Randomised smoothing over word substitutions, and its certificate.

    Args:
        n0: selection samples per text (which class is the top one).
        n: estimation samples per text (its probability's lower bound).
        alpha: failure probability of each certificate.
        keep_stopwords: stop words keep themselves only (they are not substituted, by the
            smoothing nor, in the threat model, by the attacker).
        same_pos: synonyms in the word's usual part of speech only (WordNet).
        max_candidates: the most synonyms per word.
        wordnet: the WordNet database (default: :meth:`WordNet.load`).
        thesaurus: a mapping from a lower-case word to its replacements, used instead of WordNet.
        seed: seeds the perturbations.
    """

    def __init__(
        self,
        *,
        n0: int = 50,
        n: int = 500,
        alpha: float = 0.001,
        keep_stopwords: bool = True,
        same_pos: bool = True,
        max_candidates: int = 50,
        wordnet: WordNet | None = None,
        thesaurus: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
    ) -> None:
        if n0 < 1 or n < 1:
            raise UsageError("n0 and n must be at least 1")
        if not 0 < alpha < 0.5:
            raise UsageError(f"alpha must lie in (0, 0.5), got {alpha}")
        if max_candidates < 1:
            raise UsageError(f"max_candidates must be positive, got {max_candidates}")
        self.n0, self.n, self.alpha = n0, n, alpha
        self.keep_stopwords = keep_stopwords
        self.same_pos = same_pos
        self.max_candidates = max_candidates
        self._wordnet = wordnet
        self.thesaurus = (
            {k.lower(): tuple(s.lower() for s in v) for k, v in thesaurus.items()}
            if thesaurus is not None
            else None
        )
        self.seed = seed
        self._sets: dict[str, tuple[str, ...]] = {}

    def _lower_set(self, w: str) -> tuple[str, ...]:
        """``S(w)`` in lower case, ``w`` first."""
        if w in self._sets:
            return self._sets[w]
        if self.keep_stopwords and w in STOPWORDS:
            syns: Sequence[str] = ()
        elif self.thesaurus is not None:
            syns = self.thesaurus.get(w, ())
        else:
            if self._wordnet is None:
                self._wordnet = WordNet.load()
            pos = self._wordnet.usual_pos(w) if self.same_pos else None
            syns = [] if self.same_pos and pos is None else self._wordnet.synonyms(w, pos)
        out = tuple(dict.fromkeys([w, *(s for s in syns if s != w and s.isalpha())]))
        out = out[: self.max_candidates + 1]
        self._sets[w] = out
        return out

    def perturbation_set(self, word: str) -> tuple[str, ...]:
        """``S(word)``: the word itself first, then its synonyms, cased like the word."""
        return tuple(_cased(word, s) if i else word for i, s in enumerate(self._lower_set(word.lower())))

    def overlap_ratio(self, word: str) -> float:
        """``min over w' in S(word)`` of ``|S(word) & S(w')| / max(|S(word)|, |S(w')|)`` (1: no risk)."""
        own = self._lower_set(word.lower())
        mine = set(own)
        worst = 1.0
        for other in own[1:]:
            theirs = set(self._lower_set(other))
            worst = min(worst, len(mine & theirs) / max(len(mine), len(theirs)))
        return worst

    def sample(self, text: str, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` random perturbations of ``text`` (each word drawn uniformly from its set)."""
        words = Words.of(text)
        sets = [self.perturbation_set(words.word(k)) for k in range(len(words))]
        picks = [rng.integers(0, len(s), size=count) if len(s) > 1 else None for s in sets]
        out = []
        for i in range(count):
            pieces = list(words.pieces)
            for k, pick in enumerate(picks):
                if pick is not None:
                    pieces[words.slots[k]] = sets[k][int(pick[i])]
            out.append("".join(pieces))
        return out

    def _counts(self, model: TextClassifier, text: str, count: int, rng: np.random.Generator) -> np.ndarray:
        preds = model.predict(self.sample(text, count, rng))
        return np.bincount(preds, minlength=model.num_classes)

    def certify(self, model: TextClassifier, texts: Sequence[str]) -> SaferCertificate:
        """The smoothed prediction of each text and its certified radius in substituted words."""
        if not isinstance(model, TextClassifier):
            raise UsageError(f"SAFER needs a TextClassifier, got {type(model).__name__}")
        rng = np.random.default_rng(self.seed)
        preds, lowers, radii, every, all_ratios = [], [], [], [], []
        for text in texts:
            words = Words.of(text)
            ratios = tuple(self.overlap_ratio(words.word(k)) for k in range(len(words)))
            top = int(self._counts(model, text, self.n0, rng).argmax())
            n_a = int(self._counts(model, text, self.n, rng)[top])
            p = cp_lower(n_a, self.n, self.alpha)
            margin = p - 0.5
            if margin <= 0:
                preds.append(ABSTAIN)
                radii.append(-1)
                every.append(False)
            else:
                risky = sorted(r for r in ratios if r < 1.0)
                k = 0
                while k < len(risky) and safer_delta(risky, k + 1) < margin:
                    k += 1
                preds.append(top)
                every.append(k == len(risky))
                radii.append(len(ratios) if k == len(risky) else k)
            lowers.append(p)
            all_ratios.append(ratios)
        return SaferCertificate(
            prediction=np.asarray(preds, dtype=np.int64),
            p_lower=np.asarray(lowers, dtype=np.float64),
            radius=np.asarray(radii, dtype=np.int64),
            all_words=np.asarray(every, dtype=bool),
            ratios=tuple(all_ratios),
        )

    def settings(self) -> dict[str, Any]:
        return {
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "keep_stopwords": self.keep_stopwords,
            "same_pos": self.same_pos,
            "max_candidates": self.max_candidates,
            "synonyms": "thesaurus" if self.thesaurus is not None else "wordnet",
            "seed": self.seed,
        }
