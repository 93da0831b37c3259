"""Model folders: a round trip through safetensors, and folders that would run code are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dlsec.errors import ModelLoadError, UnsafeModelFileError
from dlsec.text import TextDataset, check_model_folder, load_text_model, save_text_model, train_text_model

from .conftest import linear_model

TEXTS = [
    "a good and moving film",
    "great acting, fine story",
    "a dull and awful mess",
    "bad plot, bad actors",
] * 10


def corpus() -> TextDataset:
    return TextDataset(tuple(TEXTS), np.array([1, 1, 0, 0] * 10, dtype=np.int64), ("neg", "pos"), "tiny")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("bert") / "model"
    train_text_model(corpus(), arch="bert-tiny", out=out, epochs=1, vocab_size=200, max_length=16)
    return out


def test_embedding_bag_round_trip(tmp_path):
    model = linear_model()
    save_text_model(model, tmp_path / "m", card={"name": "linear"})
    loaded = load_text_model(tmp_path / "m")
    texts = ["good movie", "bad awful plot", "Paris, the film"]
    np.testing.assert_allclose(loaded.probs(texts), model.probs(texts), rtol=1e-6)
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["weights"]["file"] == "model.safetensors"


def test_transformers_folder_round_trip_and_card(bert_folder):
    model = load_text_model(bert_folder)
    assert model.class_names == ("neg", "pos")
    assert type(model.module).__name__ == "BertForSequenceClassification"
    assert model.probs(TEXTS[:4]).shape == (4, 2)
    card = json.loads((bert_folder / "model.json").read_text())
    assert card["architecture"] == "bert-tiny" and card["dataset"]["sha256"] == corpus().sha256


def test_long_texts_are_truncated_and_reported(bert_folder):
    model = load_text_model(bert_folder)
    model.probs(["good " * 40, "bad"])
    assert model.truncated_texts == 1


EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("code from the model folder ran")
"""


def _with_remote_code(src, dst, marker, where="config.json"):
    shutil.copytree(src, dst)
    (dst / "evil_model.py").write_text(EVIL.format(marker=str(marker)))
    target = dst / where
    config = json.loads(target.read_text()) if target.exists() else {}
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil_model.EvilModel"}
    target.write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_and_its_code_never_runs(bert_folder, tmp_path, where):
    marker = tmp_path / "pwned"
    folder = _with_remote_code(bert_folder, tmp_path / "evil", marker, where)
    with pytest.raises(UnsafeModelFileError, match="refused") as info:
        load_text_model(folder)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    found = check_model_folder(folder)
    assert any("auto_map" in f for f in found) and any("evil_model.py" in f for f in found)


def test_the_marker_would_appear_if_the_code_ran(bert_folder, tmp_path):
    # The control: the same file does write the marker when it is executed.
    marker = tmp_path / "pwned"
    folder = _with_remote_code(bert_folder, tmp_path / "evil", marker)
    exec(compile((folder / "evil_model.py").read_text(), "evil_model.py", "exec"), {})
    assert marker.exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "training_args.bin", "tokenizer.pkl", "vocab.pickle"])
def test_pickled_files_are_refused(bert_folder, tmp_path, name):
    folder = tmp_path / "m"
    shutil.copytree(bert_folder, folder)
    (folder / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeModelFileError, match="pickle"):
        load_text_model(folder)


def test_unknown_model_type_is_refused(bert_folder, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(bert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my-custom-arch"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeModelFileError, match="not built into transformers"):
        load_text_model(folder)


def test_mismatched_tokenizer_and_missing_files(bert_folder, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(bert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 10
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="do not match"):
        load_text_model(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        load_text_model(folder)
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_text_model(tmp_path / "nowhere")
