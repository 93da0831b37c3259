"""The attack engine streams the evaluation set in batches: batched results equal one big batch."""

from __future__ import annotations

import pytest
import torch

from dlsec.attacks import FGSM, PGD, Attack
from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.core.arch import SmallCNN


@pytest.fixture(scope="module")
def cnn() -> WhiteBoxModel:
    torch.manual_seed(0)
    return WhiteBoxModel(
        SmallCNN(in_channels=3, image_size=8, width=4, hidden=16),
        InputSpec(shape=(3, 8, 8), num_classes=10),
        device="cpu",
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda b: PGD(eps=0.05, steps=5, seed=7, batch_size=b),
        lambda b: PGD(eps=0.5, steps=5, norm="l2", seed=7, batch_size=b),
        lambda b: PGD(eps=0.05, steps=3, restarts=2, seed=7, batch_size=b),
        lambda b: FGSM(eps=0.05, batch_size=b),
    ],
)
def test_batched_equals_unbatched(cnn: WhiteBoxModel, make: type[Attack]) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 3, 8, 8, generator=gen), torch.randint(0, 10, (50,), generator=gen)
    whole = make(64)(cnn, x, y)
    seen: list[int] = []
    streamed = make(16)(cnn, x, y, progress=lambda done, total, _: seen.append(done))
    assert seen == [16, 32, 48, 50]  # four batches, the last one short
    torch.testing.assert_close(streamed.x_adv, whole.x_adv, rtol=0, atol=1e-6)
    assert torch.equal(streamed.adv_pred, whole.adv_pred)
    torch.testing.assert_close(streamed.norms, whole.norms)
    assert streamed.queries == whole.queries and streamed.robust_accuracy == whole.robust_accuracy
    assert streamed.robust_accuracy < streamed.clean_accuracy or streamed.clean_accuracy == 0


def test_the_output_is_the_input_when_nothing_is_attacked(cnn: WhiteBoxModel) -> None:
    x = torch.rand(0, 3, 8, 8)
    result = PGD(eps=0.1, steps=2, batch_size=4)(cnn, x, torch.zeros(0, dtype=torch.long))
    assert result.x_adv.shape == (0, 3, 8, 8) and result.norms.shape == (0,)
