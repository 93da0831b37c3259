"""The recognisers behind :mod:`dlsec.comply.pii`: Presidio's, each adjusted where noted.

Import this only through :func:`dlsec.comply._pii_engine.build_engine`, which first imports
Presidio without PyTorch. Every class here is a Presidio recogniser (its extension point), so
the analyzer's context enhancement, thresholds and de-duplication apply to all of them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import phonenumbers
import spacy
import tldextract
from presidio_analyzer import (
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    EmailRecognizer,
    EsNifRecognizer,
    IbanRecognizer,
    InAadhaarRecognizer,
    IpRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    UkNinoRecognizer,
    UsItinRecognizer,
    UsSsnRecognizer,
)
from spacy.lang.en.stop_words import STOP_WORDS

from dlsec.comply._pii_engine import DOB_CONTEXT, LANGUAGE, PERSON_CONTEXT, SEPARATOR, name_lexicon


class TokenizerNlpEngine(NlpEngine):
    """Presidio's NLP engine reduced to spaCy's English tokenizer: no model, no download.

    The context enhancer needs tokens, their offsets and lemmas; the lower-cased token stands
    in for the lemma (``born``, ``dob``, ``birth`` are matched as written).
    """

    def __init__(self) -> None:
        self.nlp: Any = None

    def load(self) -> None:
        self.nlp = spacy.blank(LANGUAGE)

    def is_loaded(self) -> bool:
        return self.nlp is not None

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        if self.nlp is None:
            self.load()
        doc = self.nlp.make_doc(text)
        return NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lower_ for t in doc],
            nlp_engine=self,
            language=language,
            scores=[],
        )

    def process_batch(
        self, texts: Iterable[str], language: str, batch_size: int = 1, n_process: int = 1, **kwargs: Any
    ) -> Iterator[tuple[str, NlpArtifacts]]:
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        return word.lower() in STOP_WORDS

    def is_punct(self, word: str, language: str) -> bool:
        return bool(word) and all(unicodedata.category(c).startswith("P") for c in word)

    def get_supported_entities(self) -> list[str]:
        return []

    def get_supported_languages(self) -> list[str]:
        return [LANGUAGE]


_TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recogniser, its domain checked against tldextract's bundled list only."""

    def validate_result(self, pattern_text: str) -> bool:
        return _TLD(pattern_text).fqdn != ""


class SsnRecognizer(UsSsnRecognizer):
    """Presidio's SSN recogniser, also refusing areas 900-999 (never issued as SSNs: ITINs)."""

    def invalidate_result(self, pattern_text: str) -> bool:
        digits = "".join(c for c in pattern_text if c.isdigit())
        return bool(super().invalidate_result(pattern_text)) or digits[:1] == "9"


_NHS_SPACED = re.compile(r"\d{3} \d{3} \d{4}")


class ContextualNhsRecognizer(NhsRecognizer):
    """Presidio's NHS recogniser; a number not written the NHS's way needs context too.

    One ten-digit number in eleven passes the mod-11 check, so a number not in the NHS's own
    ``3 3 4`` spacing (ten bare digits, an account number, a US phone number ``415-555-0123``)
    is scored 0.3 and counts only with NHS context nearby or in the column's name.
    """

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None, regex_flags: Any = None
    ) -> Any:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for r in results:
            if not _NHS_SPACED.fullmatch(text[r.start : r.end]):
                r.score = min(r.score, 0.3)
        return results


_PHONE_RUN = re.compile(r"[+(]?\d[\d \t().-]*\d")


def _segments(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    for part in text.split(SEPARATOR):
        yield start, part
        start += len(part) + len(SEPARATOR)


#: Presidio's date patterns that name a day, a month and a year (``1990-01-31``, ``31.01.1990``).
_FULL_DATES = [
    re.compile(p.regex, re.DOTALL | re.MULTILINE | re.IGNORECASE)
    for p in DateRecognizer.PATTERNS
    if p.score >= 0.6 and "MMM" not in p.name
]


def _date_runs(seg: str, runs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The digit runs of ``seg`` that a full date (Presidio's date patterns) covers."""
    dates = [(m.start(), m.end()) for rx in _FULL_DATES for m in rx.finditer(seg)]
    if not dates:
        return set()
    out = set()
    for s, e in runs:
        first = s + next(i for i, c in enumerate(seg[s:e]) if c.isdigit())
        if any(ds <= first and e <= de for ds, de in dates):
            out.add((s, e))
    return out


class FastPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recogniser (python-phonenumbers, numbers valid for a region), stopping early.

    Presidio runs phonenumbers' matcher once per region over the whole text (about 150 us per
    number and region). Here each value is matched region by region, in the configured order,
    and the remaining regions are skipped once every digit run of seven or more digits in the
    value lies inside a number found: a ``+44`` number or a US number costs one pass, not eight.
    A number written as bare digits (``4155550123``) scores 0.3, so it counts only with phone
    context (a ``phone`` column, "call", "mobile"...): unformatted, it is as often a reference.
    A digit run that Presidio's date patterns read as a full date (``1990-01-31``,
    ``31.01.1990``) is not a phone number, as phonenumbers already decides for ``31/01/1990``:
    it is not searched (a value whose only long runs are dates costs no phonenumbers pass).
    """

    BARE_SCORE = 0.3

    def best_score(self, text: str) -> float:
        """The highest score :meth:`analyze` can give in ``text``, before context."""
        return self.BARE_SCORE if text.strip().isdigit() else float(self.SCORE)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        leniency = 1 if self.leniency is None else int(self.leniency)
        for offset, seg in _segments(text):
            runs = [
                (m.start(), m.end())
                for m in _PHONE_RUN.finditer(seg)
                if sum(c.isdigit() for c in m.group()) >= 7
            ]
            dates = _date_runs(seg, runs) if runs else set()
            runs = [r for r in runs if r not in dates]
            if not runs:
                continue
            found: list[tuple[int, int, str]] = []
            for region in self.supported_regions:
                for match in phonenumbers.PhoneNumberMatcher(seg, region, leniency=leniency):
                    if not any(ds <= match.start and match.end <= de for ds, de in dates):
                        found.append((match.start, match.end, region))
                if found and all(any(s < e2 and s2 < e for s2, e2, _ in found) for s, e in runs):
                    break
            for start, end, region in found:
                results.append(
                    RecognizerResult(
                        entity_type=self.supported_entities[0],
                        start=offset + start,
                        end=offset + end,
                        # ten bare digits are as often an account or order number: context decides
                        score=self.BARE_SCORE if seg[start:end].isdigit() else self.SCORE,
                        analysis_explanation=self._get_analysis_explanation(region),
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: self.name,  # type: ignore[has-type]
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        },
                    )
                )
        deduped: list[RecognizerResult] = EntityRecognizer.remove_duplicates(results)
        return deduped


_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)


def dob_recognizer() -> PatternRecognizer:
    """Presidio's date patterns as DATE_OF_BIRTH, counted only with birth context (see Engine).

    Two patterns are added for written dates, which Presidio's date recogniser lacks:
    ``17 May 1990`` and ``May 17, 1990``.
    """
    patterns = [Pattern(p.name, p.regex, p.score) for p in DateRecognizer.PATTERNS]
    patterns += [
        Pattern(
            "d Month yyyy", rf"\b(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\s+{_MONTHS}\.?,?\s+\d{{4}}\b", 0.6
        ),
        Pattern(
            "Month d, yyyy", rf"\b{_MONTHS}\.?\s+(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?,?\s+\d{{4}}\b", 0.6
        ),
    ]
    return PatternRecognizer(
        supported_entity="DATE_OF_BIRTH",
        name="DateOfBirthRecognizer",
        patterns=patterns,
        context=list(DOB_CONTEXT),
        supported_language=LANGUAGE,
    )


_NAME_TOKEN = re.compile(r"\b(?:[A-Z][a-z]+(?:['\u2019-][A-Z]?[a-z]+)?|[A-Z]{2,}(?:['-][A-Z]+)?)\b")
_PAIR_GAP = re.compile(r"[ \t]+(?:[A-Z]\.?[ \t]+)?")
_COMMA_GAP = re.compile(r",[ \t]*")


class LexiconPersonRecognizer(LocalRecognizer):
    """Names from the US Census 1990 lists (5,494 first names, 88,799 surnames).

    Scores: a first name followed by a surname (``Mary Smith``, ``Mary J. Smith``, ``SMITH, Mary``)
    0.85; a capitalised pair of which one word is in the lists 0.35; one listed word alone 0.3.
    The last two count only with context (Presidio adds 0.35): a name-like column (``name``,
    ``first_name``, ``surname``, ``patient``...) or a title or cue word just before (Mr, Dr, Dear).
    """

    def __init__(self, first: frozenset[str], last: frozenset[str]) -> None:
        self.first = first
        self.last = last
        super().__init__(
            supported_entities=["PERSON"],
            supported_language=LANGUAGE,
            context=list(PERSON_CONTEXT),
            name="LexiconPersonRecognizer",
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        tokens = list(_NAME_TOKEN.finditer(text))
        results: list[RecognizerResult] = []
        i = 0
        while i < len(tokens):
            a = tokens[i]
            upper_a = a.group().upper()
            if i + 1 < len(tokens):
                b = tokens[i + 1]
                upper_b = b.group().upper()
                gap = text[a.end() : b.start()]
                score = 0.0
                if _PAIR_GAP.fullmatch(gap):
                    if upper_a in self.first and upper_b in self.last:
                        score = 0.85
                    elif upper_a in self.first or upper_b in self.last:
                        score = 0.35
                elif _COMMA_GAP.fullmatch(gap) and upper_a in self.last and upper_b in self.first:
                    score = 0.85
                if score:
                    results.append(self._result(a.start(), b.end(), score))
                    i += 2
                    continue
            # a cue word that is also a listed name (Patient, Customer) must not cue itself
            if (upper_a in self.first or upper_a in self.last) and upper_a.lower() not in PERSON_CONTEXT:
                results.append(self._result(a.start(), a.end(), 0.3))
            i += 1
        return results

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type="PERSON",
            start=start,
            end=end,
            score=score,
            analysis_explanation=self.build_explanation(score),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,  # type: ignore[has-type]
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )

    def build_explanation(self, score: float) -> Any:
        from presidio_analyzer import AnalysisExplanation

        return AnalysisExplanation(
            recognizer=type(self).__name__,
            original_score=score,
            textual_explanation="name words from the US Census 1990 lists",
        )


def make(entity: str, *, phone_regions: tuple[str, ...]) -> EntityRecognizer | str:
    """The recogniser for ``entity``, or why it cannot run."""
    if entity == "EMAIL_ADDRESS":
        return OfflineEmailRecognizer()
    if entity == "PHONE_NUMBER":
        return FastPhoneRecognizer(supported_regions=phone_regions)
    if entity == "US_SSN":
        return SsnRecognizer()
    if entity == "UK_NHS":
        return ContextualNhsRecognizer()
    if entity == "CREDIT_CARD":
        return CreditCardRecognizer()
    if entity == "IBAN_CODE":
        return IbanRecognizer()
    if entity == "IP_ADDRESS":
        return IpRecognizer()
    if entity == "DATE_OF_BIRTH":
        return dob_recognizer()
    if entity == "PERSON":
        lexicon = name_lexicon()
        if isinstance(lexicon, str):
            return lexicon
        return LexiconPersonRecognizer(*lexicon)
    extra: dict[str, Any] = {
        "UK_NINO": UkNinoRecognizer,
        "US_ITIN": UsItinRecognizer,
        "ES_NIF": EsNifRecognizer,
        "IN_AADHAAR": InAadhaarRecognizer,
    }
    made: EntityRecognizer = extra[entity]()
    return made
