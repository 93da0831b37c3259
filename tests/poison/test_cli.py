import hashlib
import json

import numpy as np
import pytest

from dlsec.attacks.poisoning import ShillingAttack, synthetic_ratings
from dlsec.attacks.poisoning._base import victim_architecture
from dlsec.core import save_safetensors_model
from tests.cli.test_cli import assert_user_error, run, run_json


def badnets_model_data(model):
    from dlsec.core import load_dataset

    return load_dataset("builtin:digits")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_poison_then_audit_then_write_clean(capsys, tmp_path):
    poisoned = tmp_path / "poisoned.npz"
    made = run_json(
        capsys,
        "data",
        "poison",
        "--data",
        "builtin:digits",
        "--attack",
        "badnets",
        "--param",
        "rate=0.1",
        "--param",
        "target=3",
        "--out",
        str(poisoned),
    )
    assert made["target"] == 3 and len(made["poison_index"]) == 180
    with np.load(poisoned) as npz:
        assert set(npz.files) >= {"x", "y", "poison_index"}
    before = _sha(poisoned)
    clean = tmp_path / "clean.npz"
    code, out, err = run(
        capsys,
        "data",
        "audit",
        "--data",
        str(poisoned),
        "--write-clean",
        str(clean),
        "--folds",
        "2",
        "--epochs",
        "20",
        "--json",
    )
    assert code == 1, err  # rows were flagged: a finding
    report = json.loads(out)
    assert len(report["scores"]) == 1797 and report["suspected_target"] == 3
    flagged = set(report["flagged"])
    poison = set(made["poison_index"])
    assert len(flagged & poison) >= 0.9 * len(poison) and len(flagged - poison) <= 0.05 * 1617
    assert _sha(poisoned) == before  # the input is never modified
    with np.load(clean) as npz:
        assert npz["x"].shape[0] == 1797 - len(flagged)


def test_audit_of_recommender_ratings_finds_the_fake_profiles(capsys, tmp_path):
    ratings = synthetic_ratings(seed=0)
    attacked = ShillingAttack(kind="average", profiles=0.05, target_item=101).inject(ratings)
    path = tmp_path / "ratings.npz"
    np.savez(path, ratings=attacked.ratings)
    code, out, _ = run(capsys, "data", "audit", "--data", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["suspected_target_item"] == 101
    assert set(attacked.fake_index.tolist()) <= set(report["flagged"])


def test_scan_backdoor_exits_1_with_the_target(capsys, tmp_path, badnets_model):
    arch, kwargs = victim_architecture(badnets_model_data(badnets_model))
    path = tmp_path / "model.safetensors"
    save_safetensors_model(badnets_model.module, badnets_model.spec, path, arch=arch, arch_kwargs=kwargs)
    code, out, err = run(
        capsys,
        "model",
        "scan-backdoor",
        "--model",
        str(path),
        "--data",
        "builtin:digits",
        "--examples",
        "96",
        "--json",
    )
    assert code == 1, err
    report = json.loads(out)
    assert report["backdoor"] and report["target"] == 0
    assert np.asarray(report["trigger"]["mask"]).shape == (8, 8)


def test_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(
        capsys, "data", "audit", "--data", "builtin:digits", "--write-clean", str(tmp_path / "x.csv")
    )
    assert_user_error(code, err, "--write-clean")
    code, _, err = run(capsys, "data", "audit", "--data", "builtin:digits", "--folds", "1")
    assert_user_error(code, err, "folds")
    code, _, err = run(
        capsys,
        "data",
        "poison",
        "--data",
        "builtin:digits",
        "--attack",
        "badnets",
        "--param",
        "rate=2",
        "--out",
        str(tmp_path / "p.npz"),
    )
    assert_user_error(code, err, "rate")
    assert not (tmp_path / "p.npz").exists()
