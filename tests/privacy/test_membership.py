"""Membership inference: a memorising model is caught, a model that never saw the rows is not."""

import numpy as np
import pytest
import torch

from dlsec.attacks.privacy import (
    MIA_ATTACKS,
    ShadowTrainer,
    audit_membership,
    half_inclusion,
    logit_confidence,
    members_mask,
)
from dlsec.core import Dataset, InputSpec, WhiteBoxModel
from dlsec.core.arch import build_architecture
from dlsec.errors import DataError, UsageError
from dlsec.train import TrainConfig, fit

ARCH = {"in_features": 32, "num_classes": 10, "hidden": [128]}
CONFIG = TrainConfig(epochs=200, batch_size=20, lr=3e-3)


@pytest.fixture(scope="module")
def pool() -> Dataset:
    """Random rows with random labels: nothing to generalise, so any signal is memorisation."""
    rng = np.random.default_rng(0)
    x = rng.random((360, 32), dtype=np.float32)
    y = rng.integers(0, 10, 360).astype(np.int64)
    return Dataset(x, y, InputSpec(shape=(32,), num_classes=10, kind="tabular"), "random")


def _train(rows: Dataset, seed: int = 0) -> WhiteBoxModel:
    torch.manual_seed(seed)
    model = WhiteBoxModel(build_architecture("mlp", ARCH), rows.spec, device="cpu")
    fit(model, rows, CONFIG)
    return model


@pytest.fixture(scope="module")
def memoriser(pool: Dataset) -> WhiteBoxModel:
    return _train(pool.subset(np.arange(120)))


def test_memorised_members_are_found_and_unseen_rows_are_not(pool, memoriser):
    candidates = pool.subset(np.arange(240))
    labels = members_mask(240, np.arange(120))
    audit = audit_membership(memoriser, candidates, labels, attacks=["loss", "confidence", "label-only"])
    assert audit.metrics["loss"].auc > 0.97
    assert audit.metrics["confidence"].auc > 0.97
    assert audit.metrics["label-only"].auc > 0.7  # decision access only
    # A model trained on other rows never saw these "members": a coin.
    stranger = _train(pool.subset(np.arange(240, 360)), seed=1)
    blind = audit_membership(stranger, candidates, labels, attacks=["loss"], bootstrap=200)
    lo, hi = blind.metrics["loss"].auc_ci
    assert 0.35 < blind.metrics["loss"].auc < 0.65 and lo < 0.5 < hi


def test_reference_attacks_on_a_memoriser(pool, memoriser, tmp_path):
    candidates = pool.subset(np.arange(240))
    labels = members_mask(240, np.arange(120))
    trainer = ShadowTrainer(arch="mlp", arch_kwargs=ARCH, config=CONFIG, group_size=8)
    audit = audit_membership(
        memoriser,
        candidates,
        labels,
        attacks=["lira-online", "lira-offline", "rmia", "shadow"],
        trainer=trainer,
        n_references=8,
        references_dir=tmp_path / "refs",
        bootstrap=20,
    )
    assert audit.references == 8
    for name in ("lira-online", "lira-offline", "rmia", "shadow"):
        assert audit.metrics[name].auc > 0.85, name
    # The reference models were saved as safetensors, and a second run reuses them unchanged.
    files = sorted((tmp_path / "refs").glob("model-*.safetensors"))
    assert len(files) == 8 and not list((tmp_path / "refs").glob("*.pt"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = audit_membership(
        memoriser,
        candidates,
        labels,
        attacks=["lira-online"],
        trainer=trainer,
        n_references=8,
        references_dir=tmp_path / "refs",
        bootstrap=20,
    )
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again.metrics["lira-online"].auc == audit.metrics["lira-online"].auc


def test_vectorised_training_equals_one_model_at_a_time(pool):
    rows = pool.subset(np.arange(120))
    inclusion = np.zeros((3, 120), dtype=bool)
    rng = np.random.default_rng(3)
    for k in range(3):
        inclusion[k, rng.permutation(120)[:60]] = True
    trainer = ShadowTrainer(arch="mlp", arch_kwargs=ARCH, config=TrainConfig(epochs=2, batch_size=20), seed=5)
    stacked = trainer.train(rows, inclusion).logits(rows.x)
    for k, module in enumerate(trainer.train_sequential(rows, inclusion)):
        module.eval()
        with torch.no_grad():
            alone = module(torch.from_numpy(rows.x))
        torch.testing.assert_close(stacked[k], alone, atol=1e-4, rtol=1e-4)


def test_half_inclusion_and_logit_confidence():
    inc = half_inclusion(8, 50, seed=1)
    assert inc.shape == (8, 50) and (inc.sum(axis=0) == 4).all()
    logp = np.log(np.array([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]]))
    np.testing.assert_allclose(logit_confidence(logp, np.array([0, 2])), np.log([0.9 / 0.1, 0.3 / 0.7]))


def test_bad_inputs_are_refused(pool, memoriser):
    with pytest.raises(DataError, match="not a subset"):
        members_mask(10, np.array([3, 12]))
    with pytest.raises(DataError, match="repeat"):
        members_mask(10, np.array([3, 3]))
    with pytest.raises(DataError, match="non-member"):
        members_mask(3, np.array([0, 1, 2]))
    labels = members_mask(240, np.arange(120))
    with pytest.raises(UsageError, match="at least 1000 non-members"):
        audit_membership(memoriser, pool.subset(np.arange(240)), labels, attacks=["loss"], fprs=(0.001,))
    with pytest.raises(UsageError, match="reference models"):
        audit_membership(memoriser, pool.subset(np.arange(240)), labels, attacks=["lira-online"])
    with pytest.raises(UsageError, match="unknown membership attack"):
        audit_membership(memoriser, pool.subset(np.arange(240)), labels, attacks=["nope"])
    names = {"loss", "confidence", "shadow", "lira-online", "lira-offline", "rmia", "label-only"}
    assert names <= set(MIA_ATTACKS)
