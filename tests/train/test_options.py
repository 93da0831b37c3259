"""``train_options`` (config file plus given options) and ``train_and_save``; the training card."""

import json

import pytest

from dlsec.core import TrainingCard
from dlsec.errors import ModelLoadError, UsageError
from dlsec.train import DPSGD, TrainConfig, train, train_and_save, train_options
from tests.train.test_standard import _blobs


def _file(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_given_options_win_over_the_file_which_wins_over_the_recipe(tmp_path):
    path = _file(
        tmp_path,
        "recipe: dp-sgd\nepsilon: 3.0\ndelta: 1.0e-5\nepochs: 2\nbatch_size: 64\ndata: builtin:digits\n"
        "arch: mlp\narch_args: {hidden: [8], dropout: 0.0}\nseed: 4\ntest_size: 0.3\n",
    )
    opts = train_options(
        path,
        train_config={"lr": 0.5, "epochs": None},
        recipe_params={"epsilon": 2.0, "delta": None},
        arch_kwargs={"hidden": [16]},
        split_seed=7,
    )
    assert isinstance(opts.recipe, DPSGD)
    assert opts.recipe.epsilon == 2.0 and opts.recipe.delta == 1e-5  # None is "not given"
    assert (opts.config.lr, opts.config.epochs, opts.config.seed) == (0.5, 2, 4)
    assert opts.config.batch_size == 64
    assert opts.data == "builtin:digits" and opts.arch == "mlp"
    assert opts.arch_kwargs == {"hidden": [16], "dropout": 0.0}
    assert (opts.test_size, opts.split_seed, opts.robust_n) == (0.3, 7, 200)
    # Without a file: the recipe's defaults.
    plain = train_options(data="builtin:digits")
    assert plain.recipe.name == "standard" and plain.config == TrainConfig()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("recipe: standard\nbogus: 1\n", "unknown option(s) bogus for recipe standard"),
        ("data: builtin:digits\ntest_size: [1, 2]\n", "c.yaml:2: test_size:"),
        ("data: builtin:digits\narch_args: 3\n", "c.yaml:2: arch_args:"),
        ("epochs: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("recipe: pgd-at\ndata: builtin:digits\n", "recipe pgd-at needs eps"),
        ("epochs: 2\n", "pass data"),
    ],
)
def test_bad_files_name_the_line_and_field(tmp_path, text, fragment):
    with pytest.raises(UsageError) as caught:
        train_options(_file(tmp_path, text))
    assert fragment in str(caught.value)


def test_messages_use_the_callers_names(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        train_options(tmp_path / "none.yaml")
    with pytest.raises(UsageError, match="needs --eps"):
        train_options(recipe="pgd-at", data="builtin:digits", names={"eps": "--eps"})
    with pytest.raises(UsageError, match="--epsilon does not apply to recipe pgd-at"):
        train_options(
            recipe="pgd-at",
            data="builtin:digits",
            recipe_params={"eps": 0.1, "epsilon": 1.0},
            names={"epsilon": "--epsilon"},
        )


def test_train_and_save_refuses_a_model_already_there(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"x")
    with pytest.raises(UsageError, match="--force"):
        train_and_save(train_options(data="builtin:breast-cancer"), out)


def test_the_card_is_written_and_read_back_by_one_type(tmp_path):
    trained = train(_blobs(), config=TrainConfig(epochs=2, seed=3))
    weights, card_path = trained.save(tmp_path, name="blobs", extra={"note": {"by": "test"}})
    card = TrainingCard.read(card_path)
    assert card == trained.card(name="blobs", weights_sha256=card.weights_sha256).with_fields(
        note={"by": "test"}
    )
    assert list(card)[-1] == "note" and card["seed"] == 3 and card.seed == 3
    assert card.architecture == trained.arch and card.data_sha256 == _blobs().sha256
    assert card.split["test_size"] == 0.25 and card.train_config["epochs"] == 2
    assert json.loads(card_path.read_text()) == card.to_dict()
    assert TrainingCard.find(weights) == card and TrainingCard.find(tmp_path) == card
    assert TrainingCard.find(tmp_path / "elsewhere" / "model.safetensors") is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a training card"),
        ('{"dataset": [1]}', "dataset must be an object"),
        ('{"dataset": {"split": 0.25}}', "dataset.split must be an object"),
        ('{"train_config": "fast"}', "train_config must be an object"),
    ],
)
def test_a_malformed_card_is_a_clear_error_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "model.json"
    path.write_bytes(text.encode())
    with pytest.raises(ModelLoadError) as caught:
        TrainingCard.read(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)
    with pytest.raises(ModelLoadError, match="no training card"):
        TrainingCard.read(tmp_path / "missing.json")
