"""Presidio, offline: the analyzer, its recognisers and the cheap prefilters in front of them.

Private to :mod:`dlsec.comply.pii`. Everything here runs with no network and no model download:

* the NLP engine is a tokenizer only (``spacy.blank("en")``, which ships inside spaCy), so
  Presidio's context enhancer sees the words around a match, and nothing is ever fetched;
* the e-mail recogniser checks domains against tldextract's bundled suffix list, never the
  online one (Presidio's stock recogniser asks the network on first use);
* Presidio is imported with ``torch`` and ``transformers`` hidden: its package face imports its
  transformer engine, which would pull in PyTorch (seconds of start-up) for nothing we use.
"""

from __future__ import annotations

import bisect
import importlib
import importlib.resources
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: Entities scanned by default, with what each one is.
DEFAULT_ENTITIES: dict[str, str] = {
    "EMAIL_ADDRESS": "e-mail address (Presidio's pattern, domain checked against the public suffix list)",
    "PHONE_NUMBER": "phone number (Presidio's recogniser: python-phonenumbers, valid for a region)",
    "US_SSN": "US social security number (Presidio's patterns; area 000, 666, group 00, serial 0000 refused)",
    "UK_NHS": "UK NHS number (Presidio's pattern and mod-11 check digit)",
    "CREDIT_CARD": "payment card number (Presidio's pattern and the Luhn check)",
    "IBAN_CODE": "IBAN (Presidio's per-country formats and the ISO 13616 mod-97 check)",
    "IP_ADDRESS": "IPv4 or IPv6 address (Presidio's patterns)",
    "DATE_OF_BIRTH": "a date (Presidio's patterns) with birth context: a dob/birth column or words",
    "PERSON": "a person's name from the US Census name lists (package 'names'); see dlsec.comply.pii",
}
#: Entities available on request (``--entities``); each is a Presidio recogniser with a check.
EXTRA_ENTITIES: dict[str, str] = {
    "UK_NINO": "UK national insurance number (Presidio's pattern)",
    "US_ITIN": "US individual taxpayer identification number (Presidio's pattern)",
    "ES_NIF": "Spanish NIF (Presidio's pattern and check letter)",
    "IN_AADHAAR": "Indian Aadhaar number (Presidio's pattern and Verhoeff check)",
}
ALL_ENTITIES: dict[str, str] = {**DEFAULT_ENTITIES, **EXTRA_ENTITIES}

#: Words that make a date a date of birth (whole words, lower case), in text or a column name.
DOB_CONTEXT = ("birth", "born", "dob", "birthday", "birthdate", "bday", "yob", "nee")
PERSON_CONTEXT = (
    "name",
    "names",
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "forename",
    "given",
    "mr",
    "mrs",
    "ms",
    "miss",
    "dr",
    "dear",
    "patient",
    "customer",
    "employee",
    "client",
    "contact",
    "signed",
)

#: What the analyzer sees between two values analysed together: six throw-away words (more than
#: the context enhancer's window of five) between blank lines, so no pattern, phone number or
#: context word reaches from one value into the next.
SEPARATOR = "\n\n" + " ".join(["qqsepqq"] * 6) + "\n\n"
LANGUAGE = "en"


def _hidden(names: Sequence[str]) -> list[str]:
    hidden = [n for n in names if n not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # an ImportError for `import name`
    return hidden


def import_presidio() -> Any:
    """Import ``presidio_analyzer`` without letting it import PyTorch or transformers.

    Presidio's package face imports its transformers engine (and so PyTorch), and spaCy's thinc
    imports PyTorch when it can; all of them treat an ImportError as "not installed". So the two
    names are hidden while Presidio loads, then released: a later ``import torch`` works.
    """
    if "presidio_analyzer" in sys.modules:
        return sys.modules["presidio_analyzer"]
    hidden = _hidden(("torch", "transformers"))
    try:
        return importlib.import_module("presidio_analyzer")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


@lru_cache(maxsize=1)
def name_lexicon() -> tuple[frozenset[str], frozenset[str]] | str:
    """Upper-case (first names, surnames) from the US Census 1990 lists the ``names`` package
    ships, or the reason they cannot be read."""
    try:
        root = importlib.resources.files("names")
        first: set[str] = set()
        for fname in ("dist.female.first", "dist.male.first"):
            first.update(line.split(" ", 1)[0] for line in (root / fname).read_text().splitlines() if line)
        last = {line.split(" ", 1)[0] for line in (root / "dist.all.last").read_text().splitlines() if line}
    except (ModuleNotFoundError, OSError) as exc:
        return f"no name lexicon: install the 'names' package (US Census name lists) ({exc})"
    return frozenset(first), frozenset(last)


# -- prefilters: cheap necessary conditions, so Presidio only sees values that could match -----

_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d[\d .()/-]*\d")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:")
_IBAN = re.compile(r"[A-Za-z]{2}\d{2}")
_UPPER = re.compile(r"[A-Z]")
_MONTH = re.compile(r"(?i)\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)")
_WORDS = re.compile(r"[a-z]+")
_ALPHA = re.compile(r"[^\W\d_]")


def words(text: str) -> list[str]:
    """Lower-case words of a text or a column name (``date_of_birth`` -> date, of, birth)."""
    return _WORDS.findall(text.lower())


def has_dob_context(text: str) -> bool:
    return any(w in DOB_CONTEXT for w in words(text))


#: Words that name an identifier other than a phone number, as a column's name (whole words).
OTHER_ID_WORDS = frozenset(
    (
        "nhs",
        "ssn",
        "ssns",
        "iban",
        "card",
        "cc",
        "credit",
        "email",
        "mail",
        "ip",
        "ipv4",
        "ipv6",
        *DOB_CONTEXT,
        "nino",
        "itin",
        "nif",
        "aadhaar",
        "passport",
        "zip",
        "zipcode",
        "postcode",
    )
)
#: Words that name a phone number; they keep a column's phone findings (``email_or_phone``).
PHONE_WORDS = frozenset(("phone", "phones", "telephone", "tel", "mobile", "cell", "cellphone", "fax"))


def names_other_identifier(column: str) -> bool:
    """True when a column's name says it holds another identifier (``nhs``, ``ssn``, ``card``...)
    and says nothing of phones: phone findings in it are that identifier's digits, not a phone."""
    ws = set(words(column))
    return bool(ws & OTHER_ID_WORDS) and not ws & PHONE_WORDS


def candidates(value: str, entities: frozenset[str], *, dob_column: bool) -> set[str]:
    """The entities ``value`` could hold, by necessary conditions far cheaper than Presidio."""
    out: set[str] = set()
    if "EMAIL_ADDRESS" in entities and "@" in value:
        out.add("EMAIL_ADDRESS")
    if "PERSON" in entities and _UPPER.search(value):
        out.add("PERSON")
    if not _DIGIT.search(value):
        return out
    longest = max((sum(c.isdigit() for c in m.group()) for m in _DIGIT_RUN.finditer(value)), default=1)
    if "IP_ADDRESS" in entities and (_IPV4.search(value) or _IPV6.search(value)):
        out.add("IP_ADDRESS")
    if "IBAN_CODE" in entities and _IBAN.search(value):
        out.add("IBAN_CODE")
    dob = "DATE_OF_BIRTH" in entities and (dob_column or has_dob_context(value))
    if dob and (longest >= 2 or _MONTH.search(value)):
        out.add("DATE_OF_BIRTH")
    if longest >= 7:
        for entity in ("PHONE_NUMBER", "US_SSN", "UK_NHS", "CREDIT_CARD", *EXTRA_ENTITIES):
            if entity in entities:
                out.add(entity)
    return out


# -- the engine ---------------------------------------------------------------------------------


@dataclass
class Engine:
    """Presidio's analyzer with the recognisers for ``entities``, and what could not be built.

    :meth:`analyze` gives, value by value, what ``analyzer.analyze(value, entities=[entity],
    context=context, score_threshold=min_score)`` gives (``test_pii`` checks it on every kind of
    value), by running Presidio's own steps with less repeated work:

    1. the entity's recogniser runs once over many values joined by :data:`SEPARATOR` (a regex
       pass over 4 KB instead of one call per value), its spans mapped back to their values;
    2. Presidio's context enhancer runs per value, and only on values with a span; the value
       is tokenised only when its words could matter: context words are whole words with
       letters, so a value without letters cannot supply one, and when the column's name
       already holds one the enhancer's outcome (score + 0.35, at least 0.4, at most 1) does
       not depend on the value's words;
    3. Presidio's threshold and de-duplication, per value.
    """

    analyzer: Any
    entities: frozenset[str]
    not_run: dict[str, str] = field(default_factory=dict)
    _recognizers: dict[str, Any] = field(default_factory=dict, repr=False)

    def analyze(
        self, texts: Sequence[str], entity: str, *, context: list[str], min_score: float
    ) -> Iterator[list[tuple[int, int, float]]]:
        """Spans ``(start, end, score)`` of ``entity`` in each of ``texts``, analysed in chunks."""
        recognizer = self._recognizer(entity)
        enhancer = self.analyzer.context_aware_enhancer
        context = [w.lower() for w in context]
        column_word = ""
        if recognizer.context and context:
            column_word = enhancer._find_supportive_word_in_context(
                context, recognizer.context, enhancer.context_matching_mode
            )
        keep_explanation = entity == "DATE_OF_BIRTH"  # it says which word gave context
        best = getattr(recognizer, "best_score", None)
        if best is None or column_word:
            yield from self._analyze_all(texts, recognizer, context, column_word, min_score, keep_explanation)
            return
        # A value without letters, in a column whose name gives no context, gets no context
        # boost: when the recogniser's best score there is below the threshold, it finds nothing.
        skip = [best(t) < min_score and not _ALPHA.search(t) for t in texts]
        analysed = self._analyze_all(
            [t for t, s in zip(texts, skip, strict=True) if not s],
            recognizer,
            context,
            column_word,
            min_score,
            keep_explanation,
        )
        for s in skip:
            yield [] if s else next(analysed)

    def _analyze_all(
        self,
        texts: Sequence[str],
        recognizer: Any,
        context: list[str],
        column_word: str,
        min_score: float,
        keep_explanation: bool,
    ) -> Iterator[list[tuple[int, int, float]]]:
        chunk: list[str] = []
        size = 0
        for text in texts:
            chunk.append(text)
            size += len(text) + len(SEPARATOR)
            if size >= 4096:
                yield from self._analyze_chunk(
                    chunk, recognizer, context, column_word, min_score, keep_explanation
                )
                chunk, size = [], 0
        if chunk:
            yield from self._analyze_chunk(
                chunk, recognizer, context, column_word, min_score, keep_explanation
            )

    def _recognizer(self, entity: str) -> Any:
        if entity not in self._recognizers:
            (recognizer,) = self.analyzer.registry.get_recognizers(language=LANGUAGE, entities=[entity])
            if not recognizer.is_loaded:
                recognizer.load()
                recognizer.is_loaded = True
            self._recognizers[entity] = recognizer
        return self._recognizers[entity]

    def _analyze_chunk(
        self,
        chunk: list[str],
        recognizer: Any,
        context: list[str],
        column_word: str,
        min_score: float,
        keep_explanation: bool,
    ) -> Iterator[list[tuple[int, int, float]]]:
        from presidio_analyzer import EntityRecognizer, RecognizerResult

        joined = SEPARATOR.join(chunk)
        raw = recognizer.analyze(
            text=joined, entities=list(recognizer.supported_entities), nlp_artifacts=None
        )
        per_value: list[list[Any]] = [[] for _ in chunk]
        if raw:
            starts = []
            pos = 0
            for text in chunk:
                starts.append(pos)
                pos += len(text) + len(SEPARATOR)
            for r in raw:
                i = bisect.bisect_right(starts, r.start) - 1
                lo, hi = r.start - starts[i], r.end - starts[i]
                if 0 <= lo < hi <= len(chunk[i]):  # a span across the separator is not a value's
                    r.start, r.end = lo, hi
                    per_value[i].append(r)
        for text, results in zip(chunk, per_value, strict=True):
            if not results:
                yield []
                continue
            for r in results:  # what AnalyzerEngine.analyze adds before enhancing
                meta = r.recognition_metadata if r.recognition_metadata else {}
                meta.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
                meta.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, recognizer.name)
                r.recognition_metadata = meta
            results = recognizer.enhance_using_context(
                text=text,
                raw_recognizer_results=results,
                other_raw_recognizer_results=[],
                nlp_artifacts=None,
                context=context,
            )
            results = self._enhance(text, results, recognizer, context, column_word, keep_explanation)
            results = [r for r in results if r.score >= min_score]
            if len(results) > 1:
                results = EntityRecognizer.remove_duplicates(results)
            elif results and results[0].score == 0:  # what remove_duplicates does with one result
                results = []
            yield [
                (r.start, r.end, float(r.score))
                for r in results
                if not keep_explanation or _context_backed(r)
            ]

    def _enhance(
        self,
        text: str,
        results: list[Any],
        recognizer: Any,
        context: list[str],
        column_word: str,
        keep_explanation: bool,
    ) -> list[Any]:
        """Presidio's context enhancer on one value, without tokenising it when its words cannot matter."""
        from presidio_analyzer import RecognizerResult

        enhancer = self.analyzer.context_aware_enhancer
        if not recognizer.context:
            return results
        if not keep_explanation and all(r.score >= enhancer.MAX_SCORE for r in results):
            return results  # a checksum-validated 1.0 stays 1.0; only the discarded explanation would change
        if enhancer.context_matching_mode != "whole_word" or (not column_word and _ALPHA.search(text)):
            return list(
                enhancer.enhance_using_context(
                    text=text,
                    raw_results=results,
                    nlp_artifacts=self.analyzer.nlp_engine.process_text(text, LANGUAGE),
                    recognizers=[recognizer],
                    context=context,
                )
            )
        if not column_word:  # no letters in the value, none in the column's name: no support
            return results
        for r in results:  # the enhancer's arithmetic, as in LemmaContextAwareEnhancer
            if r.recognition_metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            r.score += enhancer.context_similarity_factor
            r.score = max(r.score, enhancer.min_score_with_context_similarity)
            r.score = min(r.score, enhancer.MAX_SCORE)
            if r.analysis_explanation is not None:
                r.analysis_explanation.set_supportive_context_word(column_word)
                r.analysis_explanation.set_improved_score(r.score)
        return results


def _context_backed(result: Any) -> bool:
    explanation = result.analysis_explanation
    return bool(explanation is not None and explanation.supportive_context_word)


@lru_cache(maxsize=8)
def build_engine(entities: frozenset[str], phone_regions: tuple[str, ...]) -> Engine:
    """Build (once per configuration) an offline analyzer for ``entities``."""
    presidio = import_presidio()
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from dlsec.comply import _pii_recognizers as rec

    not_run: dict[str, str] = {}
    recognizers = []
    for entity in sorted(entities):
        made = rec.make(entity, phone_regions=phone_regions)
        if isinstance(made, str):
            not_run[entity] = made
        else:
            recognizers.append(made)
    registry = presidio.RecognizerRegistry(recognizers=recognizers, supported_languages=[LANGUAGE])
    analyzer = presidio.AnalyzerEngine(
        registry=registry,
        nlp_engine=rec.TokenizerNlpEngine(),
        supported_languages=[LANGUAGE],
        context_aware_enhancer=LemmaContextAwareEnhancer(context_matching_mode="whole_word"),
    )
    return Engine(analyzer=analyzer, entities=frozenset(entities) - set(not_run), not_run=not_run)


def chunks_of(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
