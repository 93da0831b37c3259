"""Erasure: SISA retrains one shard, equals training from scratch without the rows, is verified by
LiRA (fail closed), recorded in the signed audit log and registered with lineage to the old model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.assess.privacy import split_indices
from dlsec.comply.erasure import (
    SISA,
    ErasureVerificationError,
    Verification,
    erase,
    row_hashes,
    row_hmacs,
    train_sisa,
    verify_erasure,
)
from dlsec.core.card import TrainingCard
from dlsec.core.data import Dataset, load_dataset
from dlsec.core.loading import load_model
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import DataError
from dlsec.fsutil import sha256_file
from dlsec.release import generate_signing_keys
from dlsec.store import Registry
from tests.cli.test_cli import assert_user_error, run, run_json

PASS = "erasure test passphrase"
SHARDS, SLICES = 3, 3


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 rows of digits as a .npz (a tiny training set)."""
    full = load_dataset("builtin:digits")
    path = tmp_path_factory.mktemp("erasure-data") / "digits600.npz"
    full.subset(np.arange(600)).save_npz(path)
    return path


@pytest.fixture(scope="module")
def sisa_model(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlsec.cli import main

    out = tmp_path_factory.mktemp("erasure-sisa") / "sisa"

    code = main(
        [
            "train", "--recipe", "sisa", "--data", str(digits), "--arch", "mlp", "--arch-arg", "hidden=[32]",
            "--epochs", "10", "--lr", "0.01", "--shards", str(SHARDS), "--slices", str(SLICES),
            "--out", str(out), "--json",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def _training_rows(model: Path) -> tuple[Dataset, np.ndarray, list[str]]:
    card = TrainingCard.find(model)
    assert card is not None
    data = load_dataset(card.dataset.get("ref") or card.dataset["name"])
    index = split_indices(
        data.y, data.spec.num_classes, test_size=card.split["test_size"], seed=card.split["seed"]
    )
    return data, index, row_hashes(data)


def _rows_in_one_shard(model: Path, count: int) -> tuple[list[int], int]:
    data, index, hashes = _training_rows(model)
    state = json.loads((model / "sisa" / "state.json").read_text())
    by_shard: dict[int, list[int]] = {}
    for i in index:
        shard, _ = state["rows"][hashes[i]]
        by_shard.setdefault(shard, []).append(int(i))
    shard = 1
    return by_shard[shard][:count], shard


def test_sisa_trains_saves_and_loads_like_any_model(sisa_model: Path, digits: Path) -> None:
    card = json.loads((sisa_model / "model.json").read_text())
    assert card["recipe"] == "sisa" and card["architecture"] == "ensemble"
    assert card["recipe_params"] == {"shards": SHARDS, "slices": SLICES, "aggregate": "mean"}
    assert card["weights"]["sha256"] == sha256_file(sisa_model / "model.safetensors")
    model = load_model(str(sisa_model / "model.safetensors"))  # no --arch: a registered architecture
    data = load_dataset(digits)
    assert float((model.predict(torch.from_numpy(data.x)) == torch.from_numpy(data.y)).float().mean()) > 0.7
    state = json.loads((sisa_model / "sisa" / "state.json").read_text())
    assert len(state["rows"]) == card["dataset"]["split"]["train_rows"]
    assert {tuple(v)[0] for v in state["rows"].values()} == set(range(SHARDS))
    for k in range(SHARDS):  # a checkpoint after every slice
        from safetensors import safe_open

        with safe_open(str(sisa_model / "sisa" / f"shard-{k}.safetensors"), framework="pt") as f:
            assert {name.split(".")[0] for name in f.keys()}  # noqa: SIM118 - safe_open is not a dict == {f"slice{j}" for j in range(SLICES)}


def test_erasing_rows_retrains_one_shard_and_equals_training_from_scratch(
    sisa_model: Path, tmp_path: Path
) -> None:
    ids, shard = _rows_in_one_shard(sisa_model, 3)
    result = erase(sisa_model, ids=ids, out=tmp_path / "erased", verify=False)
    assert result.method == "sisa" and result.erased == 3
    assert set(result.shards_retrained) == {shard}
    old_state = json.loads((sisa_model / "sisa" / "state.json").read_text())
    new_state = json.loads((tmp_path / "erased" / "sisa" / "state.json").read_text())
    for k in range(SHARDS):  # the other shards' checkpoints are bit for bit the same files
        same = sha256_file(sisa_model / "sisa" / f"shard-{k}.safetensors") == sha256_file(
            tmp_path / "erased" / "sisa" / f"shard-{k}.safetensors"
        )
        assert same == (k != shard)
    assert len(new_state["rows"]) == len(old_state["rows"]) - 3 and len(new_state["erased"]) == 3
    old = load_model(str(sisa_model / "model.safetensors"))
    new = load_model(str(tmp_path / "erased" / "model.safetensors"))
    for k, (a, b) in enumerate(zip(old.module.members, new.module.members, strict=True)):
        equal = all(
            torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )
        assert equal == (k != shard)

    # Known answer: SISA trained from scratch, same seed, on the training rows without the erased ones.
    data, index, hashes = _training_rows(sisa_model)
    erased = {hashes[i] for i in ids}
    keep = np.array([i for i in index if hashes[i] not in erased])
    card = TrainingCard.find(sisa_model)
    assert card is not None
    config = TrainConfig(**card.train_config)
    scratch = train_sisa(
        data.subset(keep), recipe=SISA(shards=SHARDS, slices=SLICES), arch="mlp",
        arch_kwargs={"hidden": [32]}, config=config, device="cpu",
    )  # fmt: skip
    for a, b in zip(scratch.model.module.members, new.module.members, strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    x = torch.from_numpy(data.x[:50])
    assert torch.equal(scratch.model.logits(x), new.logits(x))

    # Verified again later, from the two folders; rows that are still there are refused.
    again = verify_erasure(sisa_model, tmp_path / "erased", ids=ids, references=4, fresh=60)
    assert again.verified and again.n_erased == 3 and again.n_references == 4
    kept = next(int(i) for i in index if hashes[i] not in erased)
    with pytest.raises(DataError, match="still training rows"):
        verify_erasure(sisa_model, tmp_path / "erased", ids=[kept], references=4, fresh=60)


def test_rows_not_in_the_training_set_exit_2_and_write_nothing(
    sisa_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, index, _ = _training_rows(sisa_model)
    test_row = int(np.setdiff1d(np.arange(len(data)), index)[0])
    home = tmp_path / "home"
    out = tmp_path / "erased"
    code, _, err = run(
        capsys, "--home", str(home), "erase", "--model", str(sisa_model), "--ids", f"{index[0]},{test_row}",
        "--out", str(out), "--no-sign",
    )  # fmt: skip
    assert_user_error(code, err, "not in the model's training set")
    foreign = tmp_path / "foreign.npz"
    Dataset(np.full((1, 1, 8, 8), 0.5, np.float32), np.array([3]), data.spec, "x").save_npz(foreign)
    code, _, err = run(
        capsys, "--home", str(home), "erase", "--model", str(sisa_model), "--rows", str(foreign),
        "--out", str(out), "--no-sign",
    )  # fmt: skip
    assert_user_error(code, err, "1 of 1 rows")
    assert not out.exists() and not home.exists()
    code, _, err = run(capsys, "erase", "--model", str(sisa_model), "--ids", "x1", "--out", str(out))
    assert_user_error(code, err, "--ids")
    code, _, err = run(
        capsys, "erase", "--model", str(sisa_model), "--ids", "1", "--out", str(out), "--method", "x"
    )
    assert_user_error(code, err, "--method")


def test_erasure_is_verified_signed_recorded_and_registered_with_lineage(
    sisa_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    generate_signing_keys(home / "keys", passphrase=PASS, scrypt_log_n=10)
    monkeypatch.setenv("DLSEC_PASSPHRASE", PASS)
    ids, _ = _rows_in_one_shard(sisa_model, 2)
    out = tmp_path / "erased"
    result = run_json(
        capsys, "--home", str(home), "erase", "--model", str(sisa_model), "--ids", ",".join(map(str, ids)),
        "--out", str(out), "--name", "digits", "--references", "4", "--fresh", "60",
    )  # fmt: skip
    v = result["verification"]
    assert v["verified"] and v["attack"] == "lira-online" and v["auc_ci"][0] <= 0.5 <= v["auc_ci"][1]
    assert v["n_erased"] == 2 and v["n_fresh"] == 60 and v["n_references"] == 4
    assert result["signed"] and (out / "model.sig").is_file()
    assert (result["parent"], result["version"]) == ("digits@1", "digits@2")

    # The record: hashes of the rows, never the rows; old and new digests; method; verification.
    record = result["record"]
    data, _, hashes = _training_rows(sisa_model)
    # keyed digests (the key beside the registry, never in the log), not the rows' plain hashes
    assert record["row_hmac"] == row_hmacs(sorted(hashes[i] for i in ids), Registry.open(home=home))
    assert not set(record["row_hmac"]) & set(hashes)
    assert record["method"] == "sisa" and record["verification"]["verified"]
    assert (
        record["old"]["root_digest"] == result["old_digest"]
        and record["new"]["root_digest"] == result["new_digest"]
    )
    assert all(len(h) == 64 for h in record["row_hmac"]) and not {"x", "y", "rows_x", "row_sha256"} & set(
        record
    )

    # Verified by `dlsec audit verify` and by an inclusion proof against the signed checkpoint.
    code, out_text, err = run(capsys, "--home", str(home), "audit", "verify")
    assert code == 0, err
    code, proof_text, err = run(capsys, "--home", str(home), "audit", "proof", str(result["record_index"]))
    assert code == 0, err
    proof = json.loads(proof_text)
    assert proof["verified"] and proof["index"] == result["record_index"]
    registry = Registry.open(home=home)
    try:
        entry = registry.audit.entries()[result["record_index"]]
        assert entry.action == "erasure.record" and entry.subject == "digits@2"
        assert entry.details["row_hmac"] == record["row_hmac"]
        new = registry.get("digits@2")
        assert new.lineage["parent"] == "digits@1" and new.signed
        assert registry.get("digits@1").root_digest == result["old_digest"]
        assert new.root_digest == result["new_digest"]
    finally:
        registry.close()
    # The erased rows are gone for good: erasing them again is bad input.
    code, _, err = run(
        capsys, "--home", str(home), "erase", "--model", str(out), "--ids", str(ids[0]),
        "--out", str(tmp_path / "again"), "--no-sign",
    )  # fmt: skip
    assert_user_error(code, err, "not in the model's training set")


def test_a_failed_verification_fails_the_erasure_closed(
    sisa_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlsec.comply.erasure as erasure

    def leaky(*args: object, **kwargs: object) -> Verification:
        return Verification(
            verified=False, attack="lira-online", auc=0.9, auc_ci=(0.8, 1.0), auc_before=0.9,
            auc_ci_before=(0.8, 1.0), auc_bootstrap_ci=(0.8, 1.0), p_value=1e-6, n_erased=2, n_fresh=60,
            n_references=4, references_trained_as="test",
        )  # fmt: skip

    monkeypatch.setattr(erasure, "lira_verify", leaky)
    ids, _ = _rows_in_one_shard(sisa_model, 2)
    registry = Registry.open(home=tmp_path / "home")
    try:
        with pytest.raises(ErasureVerificationError, match="excludes 0.5"):
            erase(sisa_model, ids=ids, out=tmp_path / "erased", registry=registry, name="digits")
        assert not (tmp_path / "erased").exists()
        assert [e.action for e in registry.audit.entries()] == ["erasure.failed"]
        assert registry.versions() == []
        assert registry.audit.verify().ok
    finally:
        registry.close()


@pytest.fixture(scope="module")
def standard_model(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlsec.cli import main

    out = tmp_path_factory.mktemp("erasure-standard") / "std"
    code = main(
        [
            "train", "--data", str(digits), "--arch", "mlp", "--arch-arg", "hidden=[32]", "--epochs", "10",
            "--lr", "0.01", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_exact_retraining_equals_training_without_the_rows(standard_model: Path, tmp_path: Path) -> None:
    from dlsec.core.loop import run_training
    from dlsec.core.model import WhiteBoxModel
    from dlsec.core.recipe import Standard

    data, index, _ = _training_rows(standard_model)
    ids = [int(i) for i in index[:4]]
    result = erase(standard_model, ids=ids, out=tmp_path / "exact", verify=False, device="cpu")
    assert result.method == "exact" and result.erased == 4
    card = TrainingCard.find(tmp_path / "exact")
    assert card is not None and card["erasure"]["erased_rows"] == 4 and card["erasure"]["method"] == "exact"
    # Known answer: the card's recipe, config and seed on the retained rows.
    keep = data.subset(np.setdiff1d(index, ids))
    recipe = Standard()
    config = TrainConfig(**card.train_config)
    torch.manual_seed(config.seed)
    from dlsec.core.arch import build_architecture

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        module = build_architecture("mlp", card.arch_kwargs)
    model = WhiteBoxModel(module, recipe.input_spec(keep), device="cpu")
    run_training(model, keep, replace(config), recipe)
    new = load_model(str(tmp_path / "exact" / "model.safetensors"))
    x = torch.from_numpy(data.x[:40])
    assert torch.equal(model.logits(x), new.logits(x))


def test_approximate_unlearning_raises_the_erased_rows_loss_and_is_verified(
    standard_model: Path, tmp_path: Path
) -> None:
    data, index, _ = _training_rows(standard_model)
    ids = [int(i) for i in index[10:16]]
    old = load_model(str(standard_model / "model.safetensors"))
    result = erase(
        standard_model, ids=ids, method="approximate", out=tmp_path / "approx", references=4, fresh=60
    )
    assert result.method == "approximate" and result.verification is not None
    assert result.verification.verified, result.verification.reason
    new = load_model(str(tmp_path / "approx" / "model.safetensors"))
    x, y = torch.from_numpy(data.x[ids]), torch.from_numpy(data.y[ids])
    from dlsec.attacks.privacy import logit_confidence

    def conf(m: object) -> np.ndarray:
        logp = torch.log_softmax(m.logits(x), dim=1).double().numpy()  # type: ignore[attr-defined]
        return np.asarray(logit_confidence(logp, y.numpy()))

    # The hinge pulls each erased row's confidence down towards a non-member's (held-out median).
    target = result.record["unlearning"]["target_confidence"]
    before, after = conf(old), conf(new)
    high = before > target + 0.5
    assert high.any() and bool((after[high] < before[high]).all()), (before, after, target)
    assert result.metrics["clean_accuracy"] > 0.7
    assert result.record is not None and result.record["unlearning"]["algorithm"].startswith("NegGrad+")


def test_sisa_refuses_the_plain_training_loop_and_approximate_on_sisa(
    sisa_model: Path, tmp_path: Path
) -> None:
    from dlsec.errors import UsageError
    from dlsec.train import train

    with pytest.raises(UsageError, match="shard by shard"):
        train(load_dataset("builtin:breast-cancer"), recipe="sisa", config=TrainConfig(epochs=1))
    ids, _ = _rows_in_one_shard(sisa_model, 1)
    with pytest.raises(UsageError, match="SISA model"):
        erase(sisa_model, ids=ids, method="approximate", out=tmp_path / "x")
    with pytest.raises(UsageError, match="sisa"):
        SISA(shards=0)


@pytest.mark.slow
def test_the_verification_catches_an_erasure_that_forgot_nothing(tmp_path: Path) -> None:
    """Power: half-mislabelled rows are memorised; "erasing" 60 of them without unlearning fails
    closed (LiRA tells them apart), exact retraining of the same rows passes."""
    from dlsec.cli import main
    from dlsec.comply._unlearn import NegGradPlus

    small = load_dataset("builtin:digits").subset(np.arange(400))
    rng = np.random.default_rng(0)
    flip = rng.random(len(small)) < 0.5
    y = np.where(flip, (small.y + rng.integers(1, 10, len(small))) % 10, small.y).astype(np.int64)
    path = tmp_path / "canaries.npz"
    Dataset(small.x, y, small.spec, "canaries").save_npz(path)
    model = tmp_path / "overfit"
    code = main(
        [
            "train", "--data", str(path), "--arch", "mlp", "--arch-arg", "hidden=[256, 128]",
            "--epochs", "200", "--lr", "0.01", "--batch-size", "32", "--out", str(model),
        ]
    )  # fmt: skip
    assert code == 0
    _, index, _ = _training_rows(model)
    ids = [int(i) for i in np.random.default_rng(1).permutation(index)[:60]]
    with pytest.raises(ErasureVerificationError, match="more member-like"):
        erase(
            model, ids=ids, method="approximate", approximate=NegGradPlus(epochs=0), out=tmp_path / "none",
            references=8, fresh=100, device="cpu",
        )  # fmt: skip
    assert not (tmp_path / "none").exists()
    result = erase(
        model, ids=ids, method="exact", out=tmp_path / "exact", references=8, fresh=100, device="cpu"
    )
    assert result.verification is not None and result.verification.verified
    assert result.verification.auc_ci_before[0] > 0.5  # the same test saw the rows before the erasure
