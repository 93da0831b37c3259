"""Personal data in training data: where it is, how much, and how identifiable the rows are.

:func:`scan_file` reads a CSV/TSV file, an ``.npz`` with string arrays, or a text corpus (``.txt``
one record per line, ``.jsonl`` one JSON value per line) and reports, per column and per row,
the entities found (type, count, confidence, a masked sample: never a raw value in full). For
tables it also finds the quasi-identifiers (zip or postcode, age or birth date, sex or gender)
and computes k-anonymity and the re-identification risk exactly. :meth:`PiiReport.write_redacted`
writes a copy with every finding replaced by ``<ENTITY>``, atomically.

The recognisers are Presidio's (``presidio-analyzer``), run fully offline: no spaCy model, no
download (see ``_pii_engine``). Checksums come with them: Luhn for cards, mod 97 for IBANs,
mod 11 for NHS numbers, the SSA's never-issued ranges for SSNs (000, 666, 9xx), Verhoeff for
Aadhaar. What each entity means:

* ``DATE_OF_BIRTH``: a date (Presidio's date patterns, plus ``17 May 1990`` and ``May 17, 1990``)
  that has birth context: a column named like ``dob``, ``birth_date``, ``born``, or one of the
  words birth, born, dob, birthday within five words before it. A date without that context is
  not reported (it is not personal data by itself).
* ``PERSON``: there is no NER model offline, so names come from a lexicon: the US Census 1990
  lists of 5,494 first names and 88,799 surnames (the ``names`` package). It catches a listed
  first name followed by a listed surname (``Mary Smith``, ``Mary J. Smith``, ``SMITH, Mary``, in
  any case), and, with context (a name-like column, or Mr, Mrs, Dr, Dear, patient... just
  before), a single listed name or a capitalised pair with one listed word. It misses names
  outside the lists (many non-Anglophone names), lower-case names, single names without
  context and names in non-Latin scripts; it can flag capitalised word pairs that are both
  listed names but mean something else (``Will Young`` as a verb and an adjective).
* ``UK_NHS``: ten digits with a valid mod-11 check digit; written ``943 476 5919`` (or with
  dashes), or as ten bare digits with NHS context, because one bare ten-digit number in eleven
  passes the check.
* ``PHONE_NUMBER``: numbers that python-phonenumbers finds valid for one of the configured
  regions (Presidio's defaults: US, GB, DE, FR, IL, IN, CA, BR) or in international format.
  Ten bare digits need phone context (a ``phone`` column, "mobile" before them). A digit run
  that reads as a full date (``1990-01-31``) is not a phone number. A column whose name says
  it holds another identifier (``nhs``, ``ssn``, ``iban``, ``card``, ``email``, ``ip``, ``dob``...)
  and not a phone is not searched for phone numbers: an NHS number failing its check digit,
  ``423 759 4592``, is still a valid US phone number, but in an ``nhs`` column it is not one.
  Fewer regions scan faster (each region is one phonenumbers pass over a value that holds no
  number) and miss national-format numbers of the regions left out.

Speed: each distinct value of a column is analysed once; values are analysed in 4 KB batches
by the recognisers themselves, and Presidio's context enhancer tokenises a value only when its
words can change the score (see ``_pii_engine.Engine``; a test checks the result equals
``AnalyzerEngine.analyze`` per value).

Example:
    >>> from dlsec.comply.pii import scan_file
    >>> report = scan_file("patients.csv")                      # doctest: +SKIP
    >>> report.found, report.columns["email"].counts            # doctest: +SKIP
    (True, {'EMAIL_ADDRESS': 120})
    >>> report.write_redacted("patients.redacted.csv")          # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsec.comply import _pii_engine as _engine
from dlsec.comply import _pii_io as _io
from dlsec.errors import DataError, UsageError

__all__ = [
    "ALL_ENTITIES",
    "DEFAULT_ENTITIES",
    "ColumnSummary",
    "Finding",
    "KAnonymity",
    "PiiReport",
    "PiiScanner",
    "k_anonymity",
    "mask",
    "quasi_identifier_columns",
    "scan_file",
]

DEFAULT_ENTITIES: tuple[str, ...] = tuple(_engine.DEFAULT_ENTITIES)
ALL_ENTITIES: dict[str, str] = dict(_engine.ALL_ENTITIES)
PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")

# Which entity wins when two overlap with the same score: the one with the stronger check first.
_PRIORITY = {
    e: i
    for i, e in enumerate(
        (
            "CREDIT_CARD",
            "IBAN_CODE",
            "US_SSN",
            "UK_NHS",
            "IN_AADHAAR",
            "ES_NIF",
            "UK_NINO",
            "US_ITIN",
            "EMAIL_ADDRESS",
            "IP_ADDRESS",
            "DATE_OF_BIRTH",
            "PHONE_NUMBER",
            "PERSON",
        )
    )
}

Progress = Callable[[int, int, dict[str, float]], None]


def mask(value: str) -> str:
    """Mask a value for display: letters and digits become ``*`` except the last quarter (at most 4).

    Separators stay, so the format shows; never more than a quarter of the characters.

    Example:
        >>> mask("4111 1111 1111 1111")
        '**** **** **** 1111'
        >>> mask("123-45-6789")
        '***-**-**89'
    """
    keep = min(4, len(_ALNUM.findall(value)) // 4)
    cut = len(value)
    while keep:
        cut -= 1
        keep -= value[cut].isalnum()
    return _ALNUM.sub("*", value[:cut]) + value[cut:]


_ALNUM = re.compile(r"[^\W_]")  # str.isalnum, as a regex


@dataclass(frozen=True)
class Finding:
    """One entity found in one cell."""

    entity: str
    row: int
    column: str
    start: int
    end: int
    score: float
    masked: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "row": self.row,
            "column": self.column,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "masked": self.masked,
        }


@dataclass
class ColumnSummary:
    """What one column holds: per entity, the count, the rows, the confidence and a masked sample."""

    name: str
    cells: int
    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    max_score: dict[str, float] = field(default_factory=dict)
    mean_score: dict[str, float] = field(default_factory=dict)
    sample: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cells": self.cells,
            "entities": {
                e: {
                    "count": self.counts[e],
                    "rows": self.rows[e],
                    "max_score": round(self.max_score[e], 4),
                    "mean_score": round(self.mean_score[e], 4),
                    "sample": self.sample[e],
                }
                for e in sorted(self.counts)
            },
        }


@dataclass(frozen=True)
class KAnonymity:
    """k-anonymity of a table over its quasi-identifiers, computed exactly.

    ``k`` is the size of the smallest equivalence class (rows sharing all quasi-identifier
    values); ``max_risk = 1/k`` is the prosecutor risk of the most exposed row, ``mean_risk``
    the mean over rows of 1/(size of its class) (= classes / rows), and ``at_risk`` the fraction
    of rows in classes smaller than ``threshold``.
    """

    quasi_identifiers: tuple[str, ...]
    rows: int
    classes: int
    k: int
    threshold: int
    at_risk: float
    max_risk: float
    mean_risk: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "quasi_identifiers": list(self.quasi_identifiers),
            "rows": self.rows,
            "classes": self.classes,
            "k": self.k,
            "threshold": self.threshold,
            "rows_at_risk": round(self.at_risk, 6),
            "max_risk": round(self.max_risk, 6),
            "mean_risk": round(self.mean_risk, 6),
        }


def k_anonymity(
    table: Mapping[str, Sequence[str]], quasi_identifiers: Sequence[str], *, threshold: int = 5
) -> KAnonymity:
    """k-anonymity and re-identification risk of ``table`` (column -> values) over the given columns.

    Example:
        >>> t = {"zip": ["02139", "02139", "02140"], "sex": ["F", "F", "M"]}
        >>> r = k_anonymity(t, ["zip", "sex"], threshold=2)
        >>> r.k, r.classes, r.at_risk
        (1, 2, 0.3333333333333333)
    """
    if threshold < 1:
        raise UsageError(f"the k-anonymity threshold must be at least 1, got {threshold}")
    missing = [q for q in quasi_identifiers if q not in table]
    if missing:
        raise UsageError(f"no column {missing[0]!r} in the table (columns: {', '.join(table)})")
    if not quasi_identifiers:
        raise UsageError("k-anonymity needs at least one quasi-identifier column")
    rows = len(table[quasi_identifiers[0]])
    if rows == 0:
        raise DataError("k-anonymity of an empty table is undefined")
    classes = Counter(zip(*(table[q] for q in quasi_identifiers), strict=True))
    k = min(classes.values())
    small = sum(n for n in classes.values() if n < threshold)
    return KAnonymity(
        quasi_identifiers=tuple(quasi_identifiers),
        rows=rows,
        classes=len(classes),
        k=k,
        threshold=threshold,
        at_risk=small / rows,
        max_risk=1.0 / k,
        mean_risk=len(classes) / rows,
    )


_QI_WORDS = {
    "zip": "zip",
    "zipcode": "zip",
    "postcode": "zip",
    "postal": "zip",
    "age": "age",
    "dob": "age",
    "birth": "age",
    "birthdate": "age",
    "birthday": "age",
    "yob": "age",
    "born": "age",
    "sex": "sex",
    "gender": "sex",
}


def quasi_identifier_columns(columns: Iterable[str]) -> list[str]:
    """The columns whose names say zip/postcode, age/birth date or sex/gender (Sweeney's triple)."""
    out = []
    for name in columns:
        ws = _engine.words(name)
        if any(w in _QI_WORDS for w in ws) or ("post" in ws and "code" in ws):
            out.append(name)
    return out


@dataclass
class PiiReport:
    """The result of a scan. ``found`` is true when any entity was found (the CLI exits 1)."""

    path: str
    kind: str
    rows: int
    entities: tuple[str, ...]
    min_score: float
    columns: dict[str, ColumnSummary]
    findings: list[Finding]
    k_anonymity: KAnonymity | None
    not_run: dict[str, str]
    _source: _io.Source | None = field(default=None, repr=False)
    _replaced: _io.Replaced = field(default_factory=dict, repr=False)

    @property
    def found(self) -> bool:
        return bool(self.findings)

    @property
    def partial(self) -> bool:
        """True when a requested entity could not be scanned (named in ``not_run``)."""
        return bool(self.not_run)

    def by_row(self) -> dict[int, list[Finding]]:
        rows: dict[int, list[Finding]] = {}
        for f in self.findings:
            rows.setdefault(f.row, []).append(f)
        return rows

    def to_dict(self) -> dict[str, Any]:
        counts: Counter[str] = Counter(f.entity for f in self.findings)
        return {
            "path": self.path,
            "kind": self.kind,
            "rows": self.rows,
            "entities": list(self.entities),
            "min_score": self.min_score,
            "found": self.found,
            "partial": self.partial,
            "not_run": dict(self.not_run),
            "totals": dict(sorted(counts.items())),
            "rows_with_pii": len(self.by_row()),
            "columns": [c.to_dict() for c in self.columns.values()],
            "rows_detail": [
                {
                    "row": row,
                    "findings": [
                        {k: v for k, v in f.to_dict().items() if k not in ("row", "start", "end")} for f in fs
                    ],
                }
                for row, fs in sorted(self.by_row().items())
            ],
            "k_anonymity": self.k_anonymity.to_dict() if self.k_anonymity else None,
        }

    def write_redacted(self, out: str | Path) -> Path:
        """Write a copy of the scanned file with every finding replaced by ``<ENTITY>``, atomically."""
        if self._source is None or self._source.write is None:
            raise UsageError("this report was not made from a file, so there is nothing to redact")
        out = Path(out)
        if out.suffix.lower() != Path(self.path).suffix.lower():
            raise UsageError(
                f"the redacted copy must have the input's suffix ({Path(self.path).suffix}), got {out}"
            )
        if out.resolve() == Path(self.path).resolve():
            raise UsageError("the redacted copy must not overwrite the scanned file")
        return self._source.write(out, self._replaced)


@dataclass
class PiiScanner:
    """A configured PII scan (Presidio's recognisers, offline).

    Args:
        entities: Entity names to look for (default :data:`DEFAULT_ENTITIES`; see
            :data:`ALL_ENTITIES` for the rest).
        min_score: Findings below this confidence are dropped (0.4: Presidio's phone score, and
            a weak pattern with context).
        quasi_identifiers: Table columns for k-anonymity (default: found by name).
        k: Rows in equivalence classes smaller than this count as at risk.
        phone_regions: Regions whose national phone formats are recognised.

    Example:
        >>> scanner = PiiScanner(entities=["EMAIL_ADDRESS", "CREDIT_CARD"])
        >>> report = scanner.scan_texts(["mail me: ann@example.org"])
        >>> [(f.entity, f.masked) for f in report.findings]
        [('EMAIL_ADDRESS', '***@*******.*rg')]
    """

    entities: Sequence[str] | None = None
    min_score: float = 0.4
    quasi_identifiers: Sequence[str] | None = None
    k: int = 5
    phone_regions: Sequence[str] = PHONE_REGIONS

    def _checked(self) -> tuple[frozenset[str], float]:
        entities = tuple(self.entities) if self.entities else DEFAULT_ENTITIES
        unknown = [e for e in entities if e not in ALL_ENTITIES]
        if unknown:
            raise UsageError(f"unknown entity {unknown[0]!r}; known: {', '.join(ALL_ENTITIES)}")
        if not 0.0 <= self.min_score <= 1.0 or math.isnan(self.min_score):
            raise UsageError(f"min_score must be between 0 and 1, got {self.min_score}")
        if self.k < 1:
            raise UsageError(f"k must be at least 1, got {self.k}")
        return frozenset(entities), float(self.min_score)

    def scan_file(self, path: str | Path, *, progress: Progress | None = None) -> PiiReport:
        """Scan a ``.csv``, ``.tsv``, ``.npz``, ``.txt`` or ``.jsonl`` file."""
        self._checked()
        source = _io.read(Path(path))
        return self._scan(source, str(path), progress)

    def scan_table(
        self, table: Mapping[str, Sequence[str]], *, progress: Progress | None = None
    ) -> PiiReport:
        """Scan an in-memory table (column -> string values of equal length)."""
        names = list(table)
        lengths = {len(v) for v in table.values()}
        if len(lengths) > 1:
            raise DataError("the table's columns have different lengths")
        rows = lengths.pop() if lengths else 0
        cells = [[(r, str(v)) for r, v in enumerate(table[n])] for n in names]
        source = _io.Source("table", names, cells, rows, {n: [str(v) for v in table[n]] for n in names})
        return self._scan(source, "<table>", progress)

    def scan_texts(self, texts: Sequence[str], *, progress: Progress | None = None) -> PiiReport:
        """Scan records of free text (one per row)."""
        source = _io.Source("text", ["text"], [list(enumerate(texts))], len(texts))
        return self._scan(source, "<texts>", progress)

    def _scan(self, source: _io.Source, path: str, progress: Progress | None) -> PiiReport:
        wanted, min_score = self._checked()
        engine = _engine.build_engine(wanted, tuple(self.phone_regions))
        active = engine.entities
        # 1. distinct values per column, and the entities each could hold (cheap prefilters)
        plans = []
        total = 0
        for name, cells in zip(source.columns, source.cells, strict=True):
            distinct: dict[str, None] = {}
            for _, value in cells:
                distinct.setdefault(value, None)
            table = source.kind == "table"
            dob_column = _engine.has_dob_context(name) if table else False
            by_entity: dict[str, list[str]] = {}
            for value in distinct:
                for e in _engine.candidates(value, active, dob_column=dob_column):
                    by_entity.setdefault(e, []).append(value)
            if table and _engine.names_other_identifier(name):
                by_entity.pop("PHONE_NUMBER", None)  # an NHS or card column's numbers are not phones
            plans.append((name, by_entity))
            total += sum(len(v) for v in by_entity.values())
        # 2. Presidio on the candidates, column by column, entity by entity (phone numbers last,
        #    skipping values another recogniser already covers)
        done = 0
        if progress is not None:
            progress(0, total, {})
        summaries: dict[str, ColumnSummary] = {}
        findings: list[Finding] = []
        replaced: _io.Replaced = {}
        for c, (name, by_entity) in enumerate(plans):
            context = _engine.words(name) if source.kind == "table" else []
            spans: dict[str, list[tuple[int, int, str, float]]] = {}
            order = sorted(by_entity, key=lambda e: (e in ("PHONE_NUMBER", "PERSON"), _PRIORITY.get(e, 99)))
            for entity in order:
                values = by_entity[entity]
                if entity == "PHONE_NUMBER":
                    values = [v for v in values if not _covered(v, spans.get(v, []))]
                for value, found in zip(
                    values,
                    _engine_spans(engine, values, entity, context, min_score),
                    strict=True,
                ):
                    if found:
                        spans.setdefault(value, []).extend((s, e, entity, sc) for s, e, sc in found)
                done += len(by_entity[entity])
                if progress is not None:
                    progress(done, total, {})
            resolved = {v: _resolve(s) for v, s in spans.items()}
            summary = ColumnSummary(name=name, cells=len(source.cells[c]))
            scores: dict[str, list[float]] = {}
            rows_hit: dict[str, set[int]] = {}
            for i, (row, value) in enumerate(source.cells[c]):
                hits = resolved.get(value)
                if not hits:
                    continue
                for lo, hi, entity, sc in hits:
                    masked = mask(value[lo:hi])
                    findings.append(Finding(entity, row, name, lo, hi, sc, masked))
                    scores.setdefault(entity, []).append(sc)
                    rows_hit.setdefault(entity, set()).add(row)
                    summary.sample.setdefault(entity, masked)
                replaced[(c, i)] = _redact(value, hits)
            for entity, sc_list in scores.items():
                summary.counts[entity] = len(sc_list)
                summary.rows[entity] = len(rows_hit[entity])
                summary.max_score[entity] = max(sc_list)
                summary.mean_score[entity] = sum(sc_list) / len(sc_list)
            summaries[name] = summary
        findings.sort(key=lambda f: (f.row, source.columns.index(f.column), f.start))
        kanon = None
        if source.kind == "table" and source.table and source.rows:
            qis = (
                list(self.quasi_identifiers)
                if self.quasi_identifiers
                else quasi_identifier_columns(source.table)
            )
            if qis:
                kanon = k_anonymity(source.table, qis, threshold=self.k)
        elif self.quasi_identifiers:
            raise UsageError("quasi-identifiers apply to tables (CSV, npz), not to text corpora")
        return PiiReport(
            path=path,
            kind=source.kind,
            rows=source.rows,
            entities=tuple(sorted(wanted)),
            min_score=min_score,
            columns=summaries,
            findings=findings,
            k_anonymity=kanon,
            not_run=dict(engine.not_run),
            _source=source,
            _replaced=replaced,
        )


def _engine_spans(
    engine: _engine.Engine, values: list[str], entity: str, context: list[str], min_score: float
) -> Iterable[list[tuple[int, int, float]]]:
    if not values:
        return []
    return engine.analyze(values, entity, context=context, min_score=min_score)


def _covered(value: str, spans: list[tuple[int, int, str, float]]) -> bool:
    """True when spans of other entities cover every digit of ``value``."""
    if not spans:
        return False
    digits = [i for i, ch in enumerate(value) if ch.isdigit()]
    return all(any(s <= i < e for s, e, _, _ in spans) for i in digits)


def _resolve(spans: list[tuple[int, int, str, float]]) -> list[tuple[int, int, str, float]]:
    """Overlapping findings in one value: the higher score wins, then the longer span (a card
    number's digits inside an IBAN), then the stronger check."""
    kept: list[tuple[int, int, str, float]] = []
    for span in sorted(spans, key=lambda x: (-x[3], x[0] - x[1], _PRIORITY.get(x[2], 99), x[0])):
        if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
            kept.append(span)
    return sorted(kept)


def _redact(value: str, spans: list[tuple[int, int, str, float]]) -> str:
    out = []
    pos = 0
    for s, e, entity, _ in spans:
        out.append(value[pos:s])
        out.append(f"<{entity}>")
        pos = e
    out.append(value[pos:])
    return "".join(out)


def scan_file(
    path: str | Path,
    *,
    entities: Sequence[str] | None = None,
    min_score: float = 0.4,
    quasi_identifiers: Sequence[str] | None = None,
    k: int = 5,
    progress: Progress | None = None,
) -> PiiReport:
    """Scan a training-data file for personal data (see :class:`PiiScanner` for the arguments).

    Example:
        >>> report = scan_file("train.csv", entities=["EMAIL_ADDRESS", "US_SSN"])  # doctest: +SKIP
        >>> report.found, report.k_anonymity                                       # doctest: +SKIP
    """
    scanner = PiiScanner(entities=entities, min_score=min_score, quasi_identifiers=quasi_identifiers, k=k)
    return scanner.scan_file(path, progress=progress)
