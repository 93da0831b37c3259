"""The text zoo: trained on first use, cached with the zoo's trust rule, assessed as text by default."""

from __future__ import annotations

import json

import pytest
import yaml

from dlsec.cli import main
from dlsec.errors import ModelLoadError, UsageError
from dlsec.text import TEXT_ZOO, TextZooEntry, load_text_model, register_text_zoo, text_zoo_folder
from dlsec.text import zoo as text_zoo

ROWS = [
    ("a good and moving film", "pos"),
    ("great acting and a fine story", "pos"),
    ("a dull and awful mess", "neg"),
    ("bad plot and bad actors", "neg"),
] * 15


@pytest.fixture
def tiny_entry(tmp_path, monkeypatch):
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS), encoding="utf-8")
    entry = TextZooEntry(name="tiny-text-bag", dataset=str(data), epochs=30, vocab_size=100, max_length=16)
    monkeypatch.setitem(TEXT_ZOO, entry.name, entry)
    monkeypatch.setenv("DLSEC_HOME", str(tmp_path / "home"))
    return entry, data


def test_rotten_tomatoes_bag_is_listed_by_dlsec_zoo(capsys):
    assert main(["zoo", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["zoo:rotten-tomatoes-bag"]["dataset"] == "builtin:rotten-tomatoes"
    assert rows["zoo:rotten-tomatoes-bag"]["architecture"] == "embedding-bag"
    assert "zoo:digits-cnn" in rows  # the classifiers' zoo is still listed


def test_first_use_trains_and_caches_then_the_cache_is_trusted(tiny_entry, monkeypatch):
    entry, _ = tiny_entry
    folder = text_zoo_folder(entry.name)
    card = json.loads((folder / "model.json").read_text())
    assert card["name"] == "zoo:tiny-text-bag" and card["zoo"]["recipe_hash"] == entry.recipe_hash
    model = load_text_model("zoo:tiny-text-bag")
    assert model.predict(["a good film", "a bad mess"]).tolist() == [1, 0]
    assert not list(folder.parent.glob(".tiny-text-bag.*"))  # no staging folder left behind
    calls = []
    monkeypatch.setattr("dlsec.text.training.train_text_model", lambda *a, **k: calls.append(1))
    assert text_zoo_folder(entry.name) == folder and calls == []  # cached: not trained again


def test_tampered_weights_or_another_recipe_retrain(tiny_entry, monkeypatch):
    entry, _ = tiny_entry
    folder = text_zoo_folder(entry.name)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert not text_zoo._trusted(entry, folder)
    text_zoo_folder(entry.name)  # trained again: the card's digest matches the new weights
    assert text_zoo._trusted(entry, folder)
    changed = TextZooEntry(name=entry.name, dataset=entry.dataset, epochs=29, vocab_size=100, max_length=16)
    assert changed.recipe_hash != entry.recipe_hash and not text_zoo._trusted(changed, folder)


def test_names_are_unique_across_both_zoos():
    with pytest.raises(UsageError, match="already registered"):
        register_text_zoo(TextZooEntry(name="digits-cnn", dataset="builtin:rotten-tomatoes"))
    with pytest.raises(UsageError, match="already registered"):
        register_text_zoo(TextZooEntry(name="rotten-tomatoes-bag", dataset="builtin:rotten-tomatoes"))


def test_unknown_text_zoo_name_is_a_one_line_error():
    with pytest.raises(ModelLoadError, match="zoo:rotten-tomatoes-bag"):
        load_text_model("zoo:no-such-text-model")


def test_dlsec_assess_on_a_text_zoo_model_runs_the_text_section(tiny_entry, tmp_path, capsys):
    entry, data = tiny_entry
    campaign = tmp_path / "campaign.yaml"
    text = {"attacks": ["deepwordbug"], "max_change": [0.5], "examples": 6, "safer": {"enabled": False}}
    campaign.write_text(yaml.safe_dump({"seed": 0, "text": text}))
    out = tmp_path / "out"
    args = ["assess", "--model", f"zoo:{entry.name}", "--data", str(data), "--campaign", str(campaign)]
    assert main([*args, "--out", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["text"]["attacks"]) == ["deepwordbug"]
    assert report["model_folder"]["safe"] is True
    assert report["model_folder"]["path"] == str(text_zoo_folder(entry.name))
