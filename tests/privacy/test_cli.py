"""dlsec privacy: audits end to end, findings, and bad inputs (exit 2, one line)."""

import json

import numpy as np
import pytest

from dlsec.attacks.privacy import dp_audit
from dlsec.core import load_dataset
from dlsec.train import DPSGD, TrainConfig, UnsafeNoNoiseDPSGD
from tests.cli.test_cli import assert_user_error, run, run_json

BC = ("-m", "zoo:breast-cancer-mlp", "-d", "builtin:breast-cancer")


def test_audit_reads_members_from_the_card(capsys, tmp_path):
    out = tmp_path / "audit.json"
    code, stdout, err = run(
        capsys, "privacy", "audit", *BC, "--references", "0", "--bootstrap", "20", "--out", str(out), "--json"
    )
    # The zoo MLP does not leak to the loss, confidence and label-only attacks (AUC about 0.52):
    # the one finding is the medium "partial" one, so the exit is 0 (1 only for high or critical).
    assert code == 0, err
    payload = json.loads(stdout)
    assert [(f["code"], f["severity"]) for f in payload["findings"]] == [
        ("membership-audit-partial", "medium")
    ]
    assert payload["members"] == 426 and payload["non_members"] == 143
    assert payload["members_from"].startswith("card split")
    assert set(payload["attacks"]) == {"loss", "confidence", "label-only"}
    # What could not run is named, and the audit says it is partial.
    assert set(payload["skipped"]) == {"shadow", "lira-offline", "lira-online", "rmia"}
    assert payload["partial"] is True
    assert "reference models" in payload["skipped"]["rmia"]
    loss = payload["attacks"]["loss"]
    assert 0.3 < loss["auc"] < 0.8 and list(loss["tpr_at_fpr"]) == ["0.01"]
    assert json.loads(out.read_text())["best"] == payload["best"]
    # The same rows named by an index file give the same answer.
    from dlsec.assess.privacy import split_indices

    data = load_dataset("builtin:breast-cancer")
    index = tmp_path / "members.npy"
    np.save(index, split_indices(data.y, 2, test_size=0.25, seed=0))
    again = run_json(
        capsys,
        "privacy",
        "audit",
        *BC,
        "--members",
        str(index),
        "--references",
        "0",
        "--attack",
        "loss",
        "--bootstrap",
        "20",
    )
    assert again["attacks"]["loss"]["auc"] == loss["auc"]
    # Decision access leaves only the label-only attack.
    decision = run_json(
        capsys, "privacy", "audit", *BC, "--access", "decision", "--references", "0", "--bootstrap", "0"
    )
    assert list(decision["attacks"]) == ["label-only"]


def test_invert_command_writes_reconstructions(capsys, tmp_path):
    images = tmp_path / "recon.npz"
    args = ["-m", "zoo:digits-mlp", "-d", "builtin:digits", "--steps", "200", "--images", str(images)]
    code, out, err = run(capsys, "privacy", "invert", *args, "--json")
    payload = json.loads(out)
    # The seeded digits MLP inverts well: a high-severity finding, exit 1.
    assert payload["recognition_rate"] >= 0.8
    assert code == 1, err
    assert [(f["code"], f["severity"]) for f in payload["findings"]] == [("model-inversion", "high")]
    assert [row["class"] for row in payload["per_class"]] == list(range(10))
    assert all(row["target_confidence"] > 0.9 for row in payload["per_class"])
    with np.load(images) as saved:
        assert saved["x"].shape == (10, 1, 8, 8) and saved["y"].tolist() == list(range(10))
        assert saved["x"].min() >= 0.0 and saved["x"].max() <= 1.0
    code, _, err = run(
        capsys,
        "privacy",
        "invert",
        "-m",
        "zoo:digits-mlp",
        "-d",
        "builtin:digits",
        "--images",
        str(tmp_path / "x.png"),
    )
    assert_user_error(code, err, "--images")


def test_attribute_command_compares_with_the_baseline(capsys):
    payload = run_json(capsys, "privacy", "attribute", *BC, "--feature", "mean radius")
    assert payload["feature"] == "mean radius" and payload["bins"] == 2
    assert set(payload["members"]) == {"prior", "baseline", "model", "model+baseline"}
    best = max(payload["members"]["model"], payload["members"]["model+baseline"])
    no_model = max(payload["members"]["baseline"], payload["members"]["prior"])
    assert payload["advantage"] == pytest.approx(best - no_model)


def test_bad_inputs_exit_2(capsys, tmp_path):
    outside = tmp_path / "outside.npy"
    np.save(outside, np.array([0, 1, 5000]))
    code, _, err = run(capsys, "privacy", "audit", *BC, "--members", str(outside), "--references", "0")
    assert_user_error(code, err, "not a subset")
    foreign = tmp_path / "rows.npz"
    np.savez(foreign, x=np.full((3, 30), 0.123, dtype=np.float32), y=np.array([0, 1, 0]))
    code, _, err = run(capsys, "privacy", "audit", *BC, "--members", str(foreign), "--references", "0")
    assert_user_error(code, err, "not a subset")
    code, _, err = run(capsys, "privacy", "audit", *BC, "--references", "0", "--fpr", "0.001")
    assert_user_error(code, err, "needs at least 1000 non-members")
    code, _, err = run(capsys, "privacy", "audit", *BC, "--references", "0", "--attack", "nope")
    assert_user_error(code, err, "unknown membership attack")
    code, _, err = run(capsys, "privacy", "audit", *BC, "--members", "elsewhere", "--references", "0")
    assert_user_error(code, err, "--members")
    code, _, err = run(
        capsys, "privacy", "dp-audit", "-d", "builtin:breast-cancer", "--epsilon", "1", "--canary-kind", "odd"
    )
    assert_user_error(code, err, "--canary-kind")
    code, _, err = run(capsys, "privacy", "attribute", *BC, "--feature", "no such feature")
    assert_user_error(code, err, "no feature named")


def test_dp_audit_command_stays_below_a_real_claim(capsys):
    payload = run_json(
        capsys,
        "privacy",
        "dp-audit",
        "-d",
        "builtin:breast-cancer",
        "--epsilon",
        "1",
        "--delta",
        "1e-3",
        "--canaries",
        "40",
        "--epochs",
        "3",
        "--batch-size",
        "64",
    )
    assert payload["exceeds_claim"] is False and payload["findings"] == []
    assert payload["epsilon_claimed"] <= 1.0 + 1e-6
    assert payload["epsilon_lower"] <= payload["epsilon_claimed"]
    assert payload["one_run"]["canaries"] == 40 and payload["hypothesis_test"]["method"] == "clopper-pearson"


def test_unsafe_recipe_adds_no_noise_but_claims_its_epsilon():
    data = load_dataset("builtin:breast-cancer")
    config = TrainConfig(epochs=1, batch_size=64, lr=1.0, optimizer="sgd")
    broken = dp_audit(data, recipe=UnsafeNoNoiseDPSGD(epsilon=1.0, delta=1e-3), config=config, canaries=20)
    honest = dp_audit(data, recipe=DPSGD(epsilon=1.0, delta=1e-3), config=config, canaries=20)
    # Both claim the same budget and noise multiplier; only the honest one adds noise.
    assert broken.privacy["noise_multiplier"] == pytest.approx(honest.privacy["noise_multiplier"])
    assert broken.epsilon_claimed == pytest.approx(honest.epsilon_claimed)
    assert not np.allclose(broken.scores, honest.scores)


def test_dp_audit_catches_a_false_claim_quickly():
    """The DP audit's reason to exist, in the default run: noise off, epsilon 1 claimed, caught.

    100 canaries and 15 epochs (about 20 s on 2 cores) are enough for the memorised canaries
    to push the one-run lower bound above the claim; the larger case below is marked slow.
    """
    data = load_dataset("builtin:digits")
    config = TrainConfig(epochs=15, batch_size=64, lr=1.0, optimizer="sgd")
    result = dp_audit(
        data,
        recipe=UnsafeNoNoiseDPSGD(epsilon=1.0),
        config=config,
        arch="mlp",
        arch_kwargs={"hidden": [256]},
        canaries=100,
    )
    assert result.exceeds_claim
    assert result.epsilon_lower > 1.0 >= result.epsilon_claimed - 1e-6


@pytest.mark.slow
def test_dp_audit_catches_training_without_noise():
    data = load_dataset("builtin:digits")
    config = TrainConfig(epochs=60, batch_size=64, lr=1.0, optimizer="sgd")
    result = dp_audit(
        data,
        recipe=UnsafeNoNoiseDPSGD(epsilon=1.0),
        config=config,
        arch="mlp",
        arch_kwargs={"hidden": [256]},
        canaries=200,
    )
    assert result.exceeds_claim and result.epsilon_lower > 1.0
