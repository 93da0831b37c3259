import json

import pytest
import torch

from dlsec.core import load_model
from dlsec.errors import ModelLoadError
from dlsec.zoo import ZOO, load_zoo_model, zoo_card, zoo_path


def test_every_zoo_model_trains_and_beats_a_floor():
    floors = {"digits-cnn": 0.95, "digits-mlp": 0.93, "breast-cancer-mlp": 0.92}
    assert set(floors) <= set(ZOO)
    for name, floor in floors.items():
        card = zoo_card(name)
        assert card["metrics"]["clean_accuracy"] >= floor, name
        assert card["schema"] == "dlsec.model-card/1"
        assert len(card["weights"]["sha256"]) == 64 and len(card["dataset"]["sha256"]) == 64


def test_cache_is_reused_when_intact(tmp_path):
    card = zoo_card("breast-cancer-mlp", home=tmp_path)
    weights = zoo_path("breast-cancer-mlp", home=tmp_path) / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert zoo_card("breast-cancer-mlp", home=tmp_path) == card
    assert weights.stat().st_mtime_ns == mtime


def test_tampered_cache_is_retrained_not_trusted(tmp_path):
    original = zoo_card("breast-cancer-mlp", home=tmp_path)
    weights = zoo_path("breast-cancer-mlp", home=tmp_path) / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # flip bits in the last weight
    weights.write_bytes(bytes(raw))
    card = zoo_card("breast-cancer-mlp", home=tmp_path)
    assert card["weights"]["sha256"] == original["weights"]["sha256"]  # deterministic retrain
    from dlsec.fsutil import sha256_file

    assert sha256_file(weights) == original["weights"]["sha256"]


def test_cache_from_another_recipe_is_retrained(tmp_path):
    zoo_card("breast-cancer-mlp", home=tmp_path)
    card_path = zoo_path("breast-cancer-mlp", home=tmp_path) / "model.json"
    card = json.loads(card_path.read_text())
    card["zoo"]["recipe_hash"] = "0" * 64
    card_path.write_text(json.dumps(card))
    assert (
        zoo_card("breast-cancer-mlp", home=tmp_path)["zoo"]["recipe_hash"]
        == ZOO["breast-cancer-mlp"].recipe_hash
    )


def test_same_seed_same_weights(tmp_path):
    a = load_zoo_model("digits-mlp", home=tmp_path / "a", device="cpu")
    b = load_zoo_model("digits-mlp", home=tmp_path / "b", device="cpu")
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_zoo_reference_through_load_model():
    model = load_model("zoo:digits-cnn", device="cpu")
    assert model.spec.shape == (1, 8, 8) and model.spec.mean is not None
    with pytest.raises(ModelLoadError, match="unknown zoo model"):
        load_model("zoo:imagenet-resnet")
