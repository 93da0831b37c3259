"""Reading training data into text cells, and writing it back redacted (atomically).

Private to :mod:`dlsec.comply.pii`. A source is a list of columns, each a list of
``(row, text)`` cells; ``write(out, replaced)`` writes the same file with some cells replaced.
CSV/TSV (a header row), ``.npz`` (string arrays; object arrays are refused, because loading
them means unpickling), ``.txt`` (one record per line) and ``.jsonl`` (one JSON value per line,
every string in it a cell, its column the key path).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsec.errors import DataError
from dlsec.fsutil import atomic_write_text, atomic_write_with

Cell = tuple[int, str]  # (row, text)
Replaced = dict[tuple[int, int], str]  # (column index, cell index) -> new text

SUFFIXES = (".csv", ".tsv", ".npz", ".txt", ".jsonl")


@dataclass
class Source:
    kind: str  # "table" or "text"
    columns: list[str]
    cells: list[list[Cell]]
    rows: int
    #: Every column of a table, text or not, as strings per row (quasi-identifiers are searched here).
    table: dict[str, list[str]] = field(default_factory=dict)
    write: Callable[[Path, Replaced], Path] | None = None


def read(path: Path) -> Source:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".txt":
        return _read_txt(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    raise DataError(f"{path}: unknown kind of file; give a {', '.join(SUFFIXES)} file")


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None


def _read_csv(path: Path, delimiter: str) -> Source:
    text = _text(path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows or not rows[0]:
        raise DataError(f"{path}: empty CSV file (a header row is needed)")
    header, body = rows[0], rows[1:]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header names a column twice")
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {i + 2} has {len(row)} fields, the header has {len(header)}; fix the quoting"
            )
    columns = [[(r, row[c]) for r, row in enumerate(body)] for c in range(len(header))]

    def write(out: Path, replaced: Replaced) -> Path:
        new = [list(row) for row in body]
        for (c, i), value in replaced.items():
            new[i][c] = value
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(new)
        return atomic_write_text(out, buf.getvalue())

    table = {name: [row[c] for row in body] for c, name in enumerate(header)}
    return Source("table", header, columns, len(body), table, write)


def _read_npz(path: Path) -> Source:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: an array holds Python objects, which only unpickling can load; dlsec never "
                "unpickles data: save text columns as NumPy string arrays (array.astype(str))"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    names: list[str] = []
    cells: list[list[Cell]] = []
    where: list[tuple[str, int | None]] = []
    rows = 0
    for key, arr in arrays.items():
        if arr.dtype.kind not in "US" or arr.ndim not in (1, 2):
            continue
        decoded = arr if arr.dtype.kind == "U" else np.char.decode(arr, "utf-8", errors="replace")
        rows = max(rows, int(arr.shape[0]))
        if arr.ndim == 1:
            names.append(key)
            where.append((key, None))
            cells.append([(r, str(v)) for r, v in enumerate(decoded)])
        else:
            for j in range(arr.shape[1]):
                names.append(f"{key}[:, {j}]")
                where.append((key, j))
                cells.append([(r, str(v)) for r, v in enumerate(decoded[:, j])])
    if not names:
        raise DataError(f"{path}: no text column (no string array of one or two dimensions) to scan")
    table = {
        key: [str(v) for v in arr.tolist()]
        for key, arr in arrays.items()
        if arr.ndim == 1 and len(arr) == rows
    }

    def write(out: Path, replaced: Replaced) -> Path:
        new: dict[str, Any] = {k: v for k, v in arrays.items()}
        edits: dict[str, list[Any]] = {}
        for (c, i), value in replaced.items():
            key, j = where[c]
            if key not in edits:
                edits[key] = arrays[key].astype(str).tolist()
            if j is None:
                edits[key][i] = value
            else:
                edits[key][i][j] = value
        for key, values in edits.items():
            new[key] = np.array(values, dtype=str)

        def dump(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **new)

        return atomic_write_with(out, dump)

    return Source("table", names, cells, rows, table, write)


def _read_txt(path: Path) -> Source:
    text = _text(path)
    lines = text.split("\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()

    def write(out: Path, replaced: Replaced) -> Path:
        new = list(lines)
        for (_, i), value in replaced.items():
            new[i] = value
        return atomic_write_text(out, "\n".join(new) + ("\n" if trailing else ""))

    return Source("text", ["text"], [list(enumerate(lines))], len(lines), {}, write)


def _read_jsonl(path: Path) -> Source:
    text = _text(path)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    records: list[Any] = []
    for n, line in enumerate(lines):
        if not line.strip():
            records.append(None)
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {n + 1} is not JSON ({exc.msg})") from None
    names: list[str] = []
    index: dict[str, int] = {}
    cells: list[list[Cell]] = []
    locators: list[list[tuple[Any, ...]]] = []

    def walk(value: Any, row: int, column: str, loc: tuple[Any, ...]) -> None:
        if isinstance(value, str):
            if column not in index:
                index[column] = len(names)
                names.append(column)
                cells.append([])
                locators.append([])
            c = index[column]
            cells[c].append((row, value))
            locators[c].append(loc)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, row, f"{column}.{k}" if column else str(k), (*loc, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, row, f"{column}[]", (*loc, i))

    for row, record in enumerate(records):
        if record is not None:
            walk(record, row, "", ())

    def write(out: Path, replaced: Replaced) -> Path:
        new = json.loads(json.dumps(records))
        for (c, i), value in replaced.items():
            row = cells[c][i][0]
            loc = locators[c][i]
            if not loc:
                new[row] = value
                continue
            target = new[row]
            for step in loc[:-1]:
                target = target[step]
            target[loc[-1]] = value
        body = "\n".join("" if r is None else json.dumps(r, ensure_ascii=False) for r in new)
        return atomic_write_text(out, body + ("\n" if text.endswith("\n") else ""))

    return Source("text", [n or "(value)" for n in names], cells, len(records), {}, write)
