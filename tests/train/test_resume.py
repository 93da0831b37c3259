"""Checkpoints: an interrupted run, started again, ends with the weights of an uninterrupted one."""

import numpy as np
import pytest
import torch

from dlsec.core import Dataset, InputSpec, load_dataset
from dlsec.core.checkpoint import CHECKPOINT_FILE
from dlsec.errors import UsageError
from dlsec.train import DPSGD, FastAT, Standard, TrainConfig, train


def _blobs(n=160):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = np.clip(0.5 + (2 * y[:, None] - 1) * 0.25 + rng.normal(0, 0.05, (n, 4)), 0, 1).astype(np.float32)
    return Dataset(x, y.astype(np.int64), InputSpec(shape=(4,), num_classes=2, kind="tabular"), "blobs")


CASES = {
    # dropout (global RNG), augmentation and early stopping (best weights, patience) all resume.
    "standard": (
        "breast-cancer",
        Standard(),
        TrainConfig(epochs=5, dropout=0.3, augment=True, early_stopping=4, label_smoothing=0.1, seed=3),
    ),
    # Poisson batches, the noise generator and the accountant's history resume.
    "dp-sgd": (
        "breast-cancer",
        DPSGD(epsilon=4.0),
        DPSGD(epsilon=4.0).default_config(epochs=5, batch_size=64),
    ),
    # attack seeds and the overfitting guard's state resume.
    "fast-at": ("blobs", FastAT(eps=0.05, guard_n=32), TrainConfig(epochs=5, lr=0.01, seed=1)),
}


def _data(name):
    return _blobs() if name == "blobs" else load_dataset(f"builtin:{name}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_after_interruption_gives_the_same_weights(case, tmp_path):
    name, recipe, config = CASES[case]
    data = _data(name)
    common = {"recipe": recipe, "config": config, "device": "cpu", "robust_n": 0}
    whole = train(data, checkpoint_dir=tmp_path / "whole", **common)

    def interrupt(epoch, epochs, stats):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, checkpoint_dir=tmp_path / "cut", progress=interrupt, **common)
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file()
    resumed = train(data, checkpoint_dir=tmp_path / "cut", **common)
    assert resumed.training["resumed_from_epoch"] == 2
    for key, value in whole.model.module.state_dict().items():
        assert torch.equal(value, resumed.model.module.state_dict()[key]), key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert resumed.metrics == whole.metrics
    assert resumed.privacy == whole.privacy


def test_a_checkpoint_from_another_configuration_is_refused(tmp_path):
    data = _blobs()
    train(data, config=TrainConfig(epochs=2), checkpoint_dir=tmp_path, device="cpu")
    with pytest.raises(UsageError, match="different training configuration"):
        train(data, config=TrainConfig(epochs=3), checkpoint_dir=tmp_path, device="cpu")


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    from dlsec.errors import UnscannableFileError

    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    # The checkpoint goes through the model-file gate first: an unknown format is never loaded.
    with pytest.raises(UnscannableFileError, match="not loaded"):
        train(_blobs(), config=TrainConfig(epochs=1), checkpoint_dir=tmp_path, device="cpu")
