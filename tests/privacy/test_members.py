"""Member resolution and reference trainers: the one implementation the CLI and the assessment use."""

import shutil

import numpy as np
import pytest

from dlsec.assess.privacy import (
    reference_trainer,
    references_dir,
    resolve_members,
    split_indices,
    training_card,
)
from dlsec.attacks.privacy import ShadowTrainer
from dlsec.core import TrainingCard, load_dataset
from dlsec.errors import DataError, ModelLoadError, UsageError
from dlsec.train import TrainConfig
from dlsec.zoo import ZOO, zoo_path

BC = "zoo:breast-cancer-mlp"


@pytest.fixture(scope="module")
def data():
    return load_dataset("builtin:breast-cancer")


@pytest.fixture(scope="module")
def zoo_file():
    training_card(BC)  # trains the zoo model on first use
    return zoo_path("breast-cancer-mlp") / "model.safetensors"


def test_every_way_of_naming_members_gives_the_same_rows(data, zoo_file, tmp_path):
    expected = split_indices(data.y, 2, test_size=0.25, seed=0)
    by_card, how = resolve_members(data, "card", model_ref=BC)
    assert how == "card split (test_size=0.25, seed=0)"
    assert np.array_equal(np.nonzero(by_card == 1)[0], np.sort(expected))
    assert (by_card == 0).sum() == len(data) - len(expected) and (by_card == -1).sum() == 0
    # The card beside a model file is the same card as the zoo's.
    by_file, _ = resolve_members(data, "card", model_ref=zoo_file)
    by_train, how = resolve_members(data, "train", test_size=0.25, split_seed=0)
    assert how.startswith("train split")
    index = tmp_path / "members.txt"
    index.write_text("\n".join(map(str, expected)))
    by_index, how = resolve_members(data, str(index))
    rows = tmp_path / "members.npz"
    data.subset(expected).save_npz(rows)
    by_rows, _ = resolve_members(data, str(rows))
    for labels in (by_file, by_train, by_index, by_rows):
        assert np.array_equal(labels, by_card)
    # Named non-members leave the other rows out.
    outside = tmp_path / "outside.npy"
    rest = np.setdiff1d(np.arange(len(data)), expected)[:20]
    np.save(outside, rest)
    labels, _ = resolve_members(data, "train", non_members=outside)
    assert (labels == 0).sum() == 20 and (labels == -1).sum() == len(data) - len(expected) - 20


def test_member_errors_name_the_setting(data, tmp_path):
    with pytest.raises(UsageError, match="privacy.members: 'elsewhere' is not card"):
        resolve_members(data, "elsewhere", option="privacy.members")
    with pytest.raises(UsageError, match="--members card needs the model's file"):
        resolve_members(data, "card")
    lonely = tmp_path / "lonely" / "model.safetensors"
    lonely.parent.mkdir()
    lonely.write_bytes(b"")
    with pytest.raises(UsageError, match="no training card"):
        resolve_members(data, "card", model_ref=lonely)
    (lonely.parent / "model.json").write_text('{"dataset": {"sha256": "00"}}')
    with pytest.raises(DataError, match="not on these rows"):
        resolve_members(data, "card", model_ref=lonely)
    (lonely.parent / "model.json").write_text("{}")
    with pytest.raises(UsageError, match="records no split"):
        resolve_members(data, "card", model_ref=lonely)
    (lonely.parent / "model.json").write_text("[]")
    with pytest.raises(ModelLoadError, match="model.json"):
        resolve_members(data, "card", model_ref=lonely)


def test_card_split_leaves_out_the_validation_rows(data, tmp_path):
    model = tmp_path / "m" / "model.safetensors"
    model.parent.mkdir()
    split = {"test_size": 0.25, "seed": 0, "validation_rows": 43, "validation_seed": 3}
    card = TrainingCard(
        {"dataset": {"sha256": data.sha256, "split": split}, "train_config": {"val_size": 0.1}}
    )
    card.write(model.parent / "model.json")
    labels, _ = resolve_members(data, "card", model_ref=model)
    train = split_indices(data.y, 2, test_size=0.25, seed=0)
    fit = train[split_indices(data.y[train], 2, test_size=0.1, seed=3)]
    assert np.array_equal(np.nonzero(labels == 1)[0], np.sort(fit))


def test_reference_trainer_follows_the_card(zoo_file, tmp_path):
    entry = ZOO["breast-cancer-mlp"]
    by_zoo = reference_trainer(BC, seed=2, device="cpu")
    by_file = reference_trainer(zoo_file, seed=2, device="cpu")
    for trainer in (by_zoo, by_file):
        assert isinstance(trainer, ShadowTrainer)
        assert trainer.arch == entry.arch and trainer.arch_kwargs == entry.arch_kwargs
        assert trainer.config == TrainConfig(
            epochs=entry.epochs, batch_size=entry.batch_size, lr=entry.lr, weight_decay=entry.weight_decay
        )
        assert (trainer.seed, trainer.group_size) == (2, 16)
    assert reference_trainer(BC, epochs=3).config.epochs == 3
    # Without a card: TrainConfig's defaults (epochs overridable); no architecture: None.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(zoo_file, bare / "model.safetensors")
    assert reference_trainer(bare, epochs=4).config == TrainConfig(epochs=4)
    assert reference_trainer(tmp_path / "model.onnx") is None
    assert references_dir(BC, load_dataset("builtin:breast-cancer"), 16, 0).name.startswith("references-")
