"""The attack engine halves its batch when device memory runs out (an injected OOM, never a real one)."""

from __future__ import annotations

import logging

import pytest
import torch

from dlsec.attacks import FGSM, PGD
from dlsec.attacks.evasion.autoattack import AutoAttack
from dlsec.attacks.evasion.base import Attack
from dlsec.attacks.evasion.wrappers import EOT, Restarts, Targeted
from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.core.model import is_out_of_memory
from dlsec.errors import UsageError


class OOMAbove(torch.nn.Module):
    """A linear classifier whose forward raises an out-of-memory error above ``limit`` rows."""

    def __init__(self, limit: int, error: type[Exception] = torch.OutOfMemoryError) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.limit = limit
        self.error = error
        self.linear = torch.nn.Linear(12, 4)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {x.shape[0]})")
        return self.linear(x)


SPEC = InputSpec(shape=(12,), num_classes=4, kind="tabular")


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def test_an_injected_oom_halves_the_batch_and_reports_it(caplog: pytest.LogCaptureFixture) -> None:
    x, y = _data()
    net = OOMAbove(limit=10)
    with caplog.at_level(logging.WARNING, logger="dlsec.attacks.evasion.base"):
        result = PGD(eps=0.2, steps=5, seed=3, batch_size=32)(WhiteBoxModel(net, SPEC, device="cpu"), x, y)
    assert result.extras["batch_size"] == 8  # 32 -> 16 -> 8: the first size that fits
    assert max(s for s in net.sizes[net.sizes.index(8) :]) <= 10
    assert any("retrying with 16" in r.getMessage() for r in caplog.records)
    # The same as asking for that batch size in the first place, random starts included.
    fits = PGD(eps=0.2, steps=5, seed=3, batch_size=8)(
        WhiteBoxModel(OOMAbove(limit=10), SPEC, device="cpu"), x, y
    )
    assert torch.equal(result.x_adv, fits.x_adv) and torch.equal(result.adv_pred, fits.adv_pred)
    assert "batch_size" not in fits.extras


def test_a_plain_runtime_error_saying_out_of_memory_also_adapts() -> None:
    x, y = _data(12)
    net = OOMAbove(limit=3, error=RuntimeError)
    result = FGSM(eps=0.1, batch_size=12)(WhiteBoxModel(net, SPEC, device="cpu"), x, y)
    assert result.extras["batch_size"] == 3 and len(result.x_adv) == 12


def test_when_one_example_does_not_fit_the_error_says_so() -> None:
    x, y = _data(4)
    with pytest.raises(UsageError, match="one example does not fit in cpu memory"):
        PGD(eps=0.1, steps=2, batch_size=4)(WhiteBoxModel(OOMAbove(limit=0), SPEC, device="cpu"), x, y)


def test_other_runtime_errors_are_not_retried() -> None:
    class Broken(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Broken.calls += 1
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    x, y = _data(8)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        PGD(eps=0.1, steps=2, batch_size=8)(WhiteBoxModel(Broken(), SPEC, device="cpu"), x, y)
    assert Broken.calls == 1


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (
            RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GiB: Out of memory"
            ),
            True,
        ),
        (RuntimeError("expected scalar type Float"), False),
        (MemoryError(), False),
    ],
)
def test_is_out_of_memory(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected


class CountingOOM(OOMAbove):
    """:class:`OOMAbove` that counts the batches it refused."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            self.refused += 1
        return super().forward(x)


def _composites(batch_size: int) -> dict[str, Attack]:
    return {
        "autoattack": AutoAttack(eps=0.1, version="standard", seed=2, batch_size=batch_size),
        "restarts": Restarts(PGD(eps=0.1, steps=3, seed=2, batch_size=batch_size), restarts=2),
        "eot": EOT(PGD(eps=0.1, steps=3, seed=2, batch_size=batch_size), samples=2),
    }


@pytest.mark.parametrize("name", ["autoattack", "restarts", "eot"])
def test_composite_attacks_meet_an_oom_once_and_keep_the_size_that_fits(name: str) -> None:
    x, y = _data()
    net = CountingOOM(limit=10)
    result = _composites(32)[name](WhiteBoxModel(net, SPEC, device="cpu"), x, y)
    # EOT stacks 2 passes per example, so 5 examples is what fits in 10 rows: 32 -> 16 -> 8 -> 4.
    fits = 4 if name == "eot" else 8
    assert result.extras["batch_size"] == fits
    # Every stage (AutoAttack's four attacks, each restart, the scoring) starts at the size
    # found to fit: the model refuses only the halvings of the first stage, never again.
    assert net.refused == {8: 2, 4: 3}[fits]
    # And the result is the one asked for at that size in the first place.
    again = _composites(fits)[name](WhiteBoxModel(OOMAbove(limit=10), SPEC, device="cpu"), x, y)
    assert torch.equal(result.x_adv, again.x_adv) and torch.equal(result.adv_pred, again.adv_pred)
    assert "batch_size" not in again.extras


def test_least_likely_targets_are_chosen_in_batches_that_fit() -> None:
    x, y = _data()
    attack = Targeted(PGD(eps=0.1, steps=2, batch_size=32), policy="least-likely")
    small = attack.choose_targets(WhiteBoxModel(OOMAbove(limit=10), SPEC, device="cpu"), x, y)
    whole = attack.choose_targets(WhiteBoxModel(OOMAbove(limit=1000), SPEC, device="cpu"), x, y)
    assert torch.equal(small, whole) and not bool((small == y).any())
