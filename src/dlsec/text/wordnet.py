"""WordNet synonyms from the local database files (no download, no NLTK).

Reads Princeton WordNet 3.0's ``index.*``, ``data.*`` and ``*.exc`` files as Debian's
``wordnet-base`` package installs them under ``/usr/share/wordnet`` (``apt-get install
wordnet-base``); ``DLSEC_WORDNET_DIR`` or ``root=`` names another copy of the same files. A
word's base forms come from the exception lists and WordNet's detachment rules (what NLTK's
``morphy`` does), its synonyms are the single-word lemmas of its synsets, and its usual part of
speech is the one with the most sense-tagged uses in the SemCor counts of the index (a
tagger-free stand-in for a part-of-speech tag).

Example:
    >>> wn = WordNet.load()                               # doctest: +SKIP
    >>> wn.synonyms("movie")[:3]                          # doctest: +SKIP
    ['film', 'picture', 'moving_picture']
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from dlsec.errors import DataError

__all__ = ["WordNet", "POS", "DEFAULT_WORDNET_DIR"]

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
POS = ("noun", "verb", "adj", "adv")
_INSTALL = "apt-get install wordnet-base (or set DLSEC_WORDNET_DIR to a WordNet 3.0 dict folder)"
_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "noun": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "verb": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}


@dataclass(frozen=True)
class _Entry:
    offsets: tuple[int, ...]
    tagged: int  # sense-tagged uses in SemCor


class WordNet:
    """Synonyms and usual parts of speech from a WordNet 3.0 database folder.

    Use :meth:`load` (cached per folder) rather than the constructor.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, dict[str, _Entry]] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._data: dict[str, bytes] = {}
        for pos in POS:
            self._index[pos] = self._read_index(pos)
            self._exceptions[pos] = self._read_exceptions(pos)
            try:
                self._data[pos] = (root / f"data.{pos}").read_bytes()
            except OSError:
                raise DataError(f"WordNet: {root / f'data.{pos}'} is missing; {_INSTALL}") from None

    @staticmethod
    def load(root: str | Path | None = None) -> WordNet:
        """The database at ``root``, else ``$DLSEC_WORDNET_DIR``, else /usr/share/wordnet (read once)."""
        where = (
            Path(root)
            if root is not None
            else Path(os.environ.get("DLSEC_WORDNET_DIR") or DEFAULT_WORDNET_DIR)
        )
        return _load(where.resolve())

    def _read_index(self, pos: str) -> dict[str, _Entry]:
        path = self.root / f"index.{pos}"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            raise DataError(f"WordNet: {path} is missing; {_INSTALL}") from None
        except UnicodeDecodeError:
            raise DataError(f"WordNet: {path} is not a WordNet index file; {_INSTALL}") from None
        index: dict[str, _Entry] = {}
        for line in lines:
            if not line or line.startswith(" "):
                continue  # the licence header
            parts = line.split()
            try:
                n_synsets, n_pointers = int(parts[2]), int(parts[3])
                tagged = int(parts[5 + n_pointers])
                offsets = tuple(int(p) for p in parts[6 + n_pointers : 6 + n_pointers + n_synsets])
            except (IndexError, ValueError):
                raise DataError(f"WordNet: {path} has a malformed line: {line[:40]!r}") from None
            index[parts[0]] = _Entry(offsets, tagged)
        return index

    def _read_exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        path = self.root / f"{pos}.exc"
        out: dict[str, tuple[str, ...]] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return out
        for line in lines:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = tuple(parts[1:])
        return out

    def base_forms(self, word: str, pos: str) -> list[str]:
        """Forms of ``word`` in the index for ``pos``: itself, its exceptions, its detachments."""
        w = word.lower()
        index = self._index[pos]
        found: list[str] = []
        for form in (w, *self._exceptions[pos].get(w, ())):
            if form in index and form not in found:
                found.append(form)
        for suffix, ending in _RULES[pos]:
            if w.endswith(suffix) and len(w) > len(suffix):
                form = w[: len(w) - len(suffix)] + ending
                if form in index and form not in found:
                    found.append(form)
        return found

    def usual_pos(self, word: str) -> str | None:
        """The part of speech with the most sense-tagged uses of ``word`` (ties: most senses)."""
        best: tuple[int, int] | None = None
        choice: str | None = None
        for pos in POS:
            for form in self.base_forms(word, pos):
                entry = self._index[pos][form]
                key = (entry.tagged, len(entry.offsets))
                if best is None or key > best:
                    best, choice = key, pos
        return choice

    def synonyms(self, word: str, pos: str | None = None) -> list[str]:
        """Single-word lemmas sharing a synset with ``word`` (in ``pos`` only, when given), in order.

        Multi-word lemmas (``moving_picture``) and the word itself are left out.
        """
        w = word.lower()
        out: list[str] = []
        for p in (pos,) if pos is not None else POS:
            for form in self.base_forms(w, p):
                for offset in self._index[p][form].offsets:
                    for lemma in self._lemmas(p, offset):
                        if lemma != w and lemma.isalpha() and lemma not in out:
                            out.append(lemma)
        return out

    def _lemmas(self, pos: str, offset: int) -> list[str]:
        data = self._data[pos]
        end = data.find(b"\n", offset)
        fields = data[offset : end if end >= 0 else len(data)].split()
        try:
            count = int(fields[3], 16)
            words = [fields[4 + 2 * i].decode("utf-8") for i in range(count)]
        except (IndexError, ValueError, UnicodeDecodeError):
            raise DataError(f"WordNet: data.{pos} has a malformed synset at offset {offset}") from None
        return [w.split("(")[0].lower() for w in words]


@functools.lru_cache(maxsize=4)
def _load(root: Path) -> WordNet:
    if not root.is_dir():
        raise DataError(f"WordNet: {root} is not a folder; {_INSTALL}")
    return WordNet(root)
