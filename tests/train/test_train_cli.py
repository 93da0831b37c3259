"""``dlsec train`` through ``dlsec.cli.main``: recipes, config files, resumption, bad input."""

import hashlib
import json

import pytest

from dlsec.cli import main
from dlsec.core.checkpoint import Checkpoint

BC = ["--data", "builtin:breast-cancer"]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_dp_sgd_from_a_config_file_records_the_budget_and_reloads(capsys, tmp_path):
    config = tmp_path / "dp.yaml"
    config.write_text(
        "recipe: dp-sgd\nepsilon: 3.0\ndelta: 1.0e-5\nepochs: 2\nbatch_size: 64\n"
        "arch: mlp\narch_args: {hidden: [8]}\nseed: 4\n"
    )
    out = tmp_path / "dp"
    result = run_json(capsys, "train", *BC, "--config", str(config), "--lr", "0.5", "--out", str(out))
    assert result["recipe"] == "dp-sgd" and result["recipe_params"]["epsilon"] == 3.0
    assert result["privacy"]["epsilon_spent"] <= 3.0 and result["arch_kwargs"]["hidden"] == [8]
    card = json.loads((out / "model.json").read_text())
    assert card["train_config"]["lr"] == 0.5 and card["train_config"]["seed"] == 4  # command line wins
    assert card["privacy"]["delta"] == 1e-5 and card["dataset"]["sha256"]
    assert not (out / ".checkpoint").exists()  # removed once the model is written
    evaluated = run_json(capsys, "eval", "--model", str(out / "model.safetensors"), *BC)
    assert evaluated["accuracy"] == pytest.approx(result["clean_accuracy"])


def test_pgd_at_human_output_reports_autoattack(capsys, tmp_path):
    args = ["train", *BC, "--recipe", "pgd-at", "--eps", "0.05", "--attack-steps", "3", "--epochs", "1"]
    code, out, err = run(capsys, *args, "--robust-n", "8", "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert "pgd-at" in out and "AutoAttack (linf, eps 0.05, 8 test rows)" in out


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_interrupted_run_resumes_with_the_same_command(capsys, tmp_path, monkeypatch):
    args = ["train", *BC, "--epochs", "4", "--dropout", "0.2", "--augment", "--seed", "2"]
    assert run(capsys, *args, "--out", str(tmp_path / "whole"))[0] == 0

    original, saves = Checkpoint.save, []

    def save_then_die(self, tensors, state):
        path = original(self, tensors, state)
        saves.append(state["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed right after the second checkpoint
        return path

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 130, err
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(Checkpoint, "save", original)
    result = run_json(capsys, *args, "--out", str(tmp_path / "cut"))
    assert result["training"]["resumed_from_epoch"] == 2
    assert _sha(tmp_path / "cut" / "model.safetensors") == _sha(tmp_path / "whole" / "model.safetensors")


def test_a_checkpoint_of_another_run_needs_force(capsys, tmp_path, monkeypatch):
    out = tmp_path / "m"
    monkeypatch.setattr(Checkpoint, "remove", lambda self: None)
    original = Checkpoint.save

    def die(self, tensors, state):
        original(self, tensors, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", die)
    assert run(capsys, "train", *BC, "--epochs", "3", "--out", str(out))[0] == 130
    monkeypatch.setattr(Checkpoint, "save", original)
    code, _, err = run(capsys, "train", *BC, "--epochs", "5", "--out", str(out))
    assert code == 2 and "different training configuration" in err and "--force" in err
    assert run(capsys, "train", *BC, "--epochs", "5", "--force", "--out", str(out))[0] == 0


def _assert_user_error(code, err, fragment):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--recipe", "dp-sgd", "--epsilon", "-1"], "epsilon must be a positive number"),
        (["--recipe", "dp-sgd", "--epsilon", "1", "--delta", "0.01"], "below 1/n"),
        (["--recipe", "dp-sgd", "--epsilon", "1", "--delta", "1"], "delta must be in (0, 1)"),
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (
            ["--recipe", "dp-sgd", "--epsilon", "1", "--arch", "tests.train.test_dp:batchnorm_net"]
            + ["--arch-arg", "in_features=30"],
            "BatchNorm",
        ),
        (["--recipe", "dp-sgd"], "needs --epsilon"),
        (["--recipe", "pgd-at"], "needs --eps"),
        (["--recipe", "pgd-at", "--eps", "0.1", "--epsilon", "1"], "--epsilon does not apply"),
        (["--recipe", "dp-sgd", "--epsilon", "1", "--early-stopping", "3"], "early-stop"),
        (["--optimizer", "rmsprop"], "optimizer"),
        (["--lr-schedule", "step"], "lr schedule"),
        (["--recipe", "trades", "--eps", "0.1", "--beta", "-2"], "beta"),
    ],
)
def test_bad_configurations_exit_2_with_one_line(capsys, tmp_path, args, fragment):
    out = tmp_path / "m"
    code, _, err = run(capsys, "train", *BC, *args, "--out", str(out))
    _assert_user_error(code, err, fragment)
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("recipe: standard\nbogus: 1\n", "unknown option(s) bogus"),
        ("epochs: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("recipe: dp-sgd\nepsilon: 1.0\ndelta: 0.5\n", "below 1/n"),
    ],
)
def test_bad_config_files_exit_2(capsys, tmp_path, text, fragment):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    code, _, err = run(capsys, "train", *BC, "--config", str(config), "--out", str(tmp_path / "m"))
    _assert_user_error(code, err, fragment)
    code, _, err = run(
        capsys, "train", *BC, "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "m")
    )
    _assert_user_error(code, err, "not found")
