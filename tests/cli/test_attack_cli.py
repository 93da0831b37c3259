import json

import numpy as np
import torch

from dlsec.attacks import PGD
from dlsec.cli import main
from dlsec.core import load_dataset, load_model
from tests.cli.test_cli import assert_user_error, run, run_json


def test_attack_command_matches_the_library(capsys, tmp_path):
    out = tmp_path / "adv.npz"
    summary = run_json(
        capsys,
        "attack",
        "-m",
        "zoo:digits-cnn",
        "-d",
        "builtin:digits",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "-p",
        "steps=20",
        "--n",
        "64",
        "--seed",
        "4",
        "--out",
        str(out),
    )
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    x, y = torch.from_numpy(test.x[:64]), torch.from_numpy(test.y[:64])
    lib = PGD(eps=0.1, steps=20, seed=4)(load_model("zoo:digits-cnn", device="cpu"), x, y)
    assert summary["robust_accuracy"] == lib.robust_accuracy
    assert summary["clean_accuracy"] == lib.clean_accuracy and summary["n"] == 64
    adv = load_dataset(out)  # the output is itself a valid dataset
    assert np.abs(adv.x - test.x[:64]).max() <= 0.1 + 1e-6
    assert json.loads(json.dumps(summary))["perturbation_norms"]["max"] <= 0.1 + 1e-6


def test_attack_listing_and_black_box_access(capsys):
    names = {row["name"] for row in run_json(capsys, "attack", "--list")}
    assert {"pgd", "apgd-ce", "square", "hsj", "autoattack"} <= names
    summary = run_json(
        capsys,
        "attack",
        "-m",
        "zoo:breast-cancer-mlp",
        "-d",
        "builtin:breast-cancer",
        "--attack",
        "square",
        "--access",
        "score",
        "--eps",
        "0.2",
        "-p",
        "n_queries=100",
        "--n",
        "20",
    )
    assert summary["access"] == "score" and summary["queries_per_example"] <= 101


def test_attack_bad_usage(capsys, tmp_path):
    cases = [
        (
            ["attack", "-m", "zoo:digits-cnn", "-d", "builtin:digits", "--attack", "nope", "--eps", "0.1"],
            "unknown attack",
        ),
        (["attack", "-m", "zoo:digits-cnn", "-d", "builtin:digits"], "needs a budget"),
        (
            ["attack", "-m", "zoo:digits-cnn", "-d", "builtin:digits", "--eps", "0.1", "--access", "score"],
            "white-box access",
        ),
        (
            [
                "attack",
                "-m",
                "zoo:digits-cnn",
                "-d",
                "builtin:digits",
                "--eps",
                "0.1",
                "--out",
                str(tmp_path / "a.txt"),
            ],
            ".npz",
        ),
        (["attack", "-m", "zoo:digits-cnn", "-d", "builtin:digits", "--eps", "-1"], "eps"),
        (
            ["attack", "-m", "zoo:digits-cnn", "-d", "builtin:digits", "--eps", "0.1", "-p", "steps=0"],
            "steps",
        ),
        (["attack", "-d", "builtin:digits"], "--model"),
    ]
    for args, fragment in cases:
        code, _, err = run(capsys, *args)
        assert_user_error(code, err, fragment)
    assert main(["attack", "--list"]) == 0


def test_transfer_and_tabular_constraints_from_the_command_line(capsys, tmp_path):
    transfer = run_json(
        capsys,
        "attack",
        "-m",
        "zoo:digits-cnn",
        "-d",
        "builtin:digits",
        "--surrogate",
        "zoo:digits-mlp",
        "--eps",
        "0.2",
        "--n",
        "64",
        "-p",
        "steps=10",
    )
    assert transfer["attack"] == "transfer" and transfer["queries"] == 0
    assert transfer["robust_accuracy"] < transfer["clean_accuracy"]
    out = tmp_path / "adv.npz"
    run_json(
        capsys,
        "attack",
        "-m",
        "zoo:breast-cancer-mlp",
        "-d",
        "builtin:breast-cancer",
        "--eps",
        "0.2",
        "--immutable",
        "mean radius,3",
        "--n",
        "40",
        "--out",
        str(out),
    )
    with np.load(out) as arrays:
        assert np.array_equal(arrays["x"][:, [0, 3]], arrays["x_clean"][:, [0, 3]])
        assert np.abs(arrays["x"] - arrays["x_clean"]).max() > 0.1
    code, _, err = run(
        capsys,
        "attack",
        "-m",
        "zoo:breast-cancer-mlp",
        "-d",
        "builtin:breast-cancer",
        "--eps",
        "0.2",
        "--immutable",
        "shoe size",
    )
    assert_user_error(code, err, "unknown feature")
