"""Speed options of the model contract: mixed precision, channels-last, torch.compile."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import torch

from dlsec.attacks import PGD
from dlsec.core import InputSpec, WhiteBoxModel, load_dataset, load_model
from dlsec.core.arch import SmallCNN
from dlsec.errors import UsageError


@pytest.fixture(scope="module")
def digits() -> tuple[WhiteBoxModel, torch.Tensor, torch.Tensor]:
    model = load_model("zoo:digits-cnn", device="cpu")
    assert isinstance(model, WhiteBoxModel)
    _, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    return model, torch.from_numpy(test.x[:96]), torch.from_numpy(test.y[:96])


#: bf16 keeps 8 bits of mantissa: logits move in the third digit, and a few gradient signs near
#: zero flip. PGD's robust accuracy under bf16 must stay within this of float32's.
AMP_TOLERANCE = 0.08


def test_bf16_pgd_robust_accuracy_matches_fp32(
    digits: tuple[WhiteBoxModel, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    fast = model.tuned(amp="bf16")
    attack = PGD(eps=0.1, steps=10, seed=0)
    full, half = attack(model, x, y), attack(fast, x, y)
    assert 0.1 < full.robust_accuracy < 0.9  # a budget where the comparison means something
    assert abs(half.robust_accuracy - full.robust_accuracy) <= AMP_TOLERANCE
    assert abs(half.clean_accuracy - full.clean_accuracy) <= 0.03
    # It really ran in bf16: the logits differ from float32's, by bf16's rounding only.
    with torch.no_grad():
        a, b = model(x), fast(x)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert float((a - b).abs().max()) < 0.1 * float(a.abs().max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast is for CUDA; the CPU path is bf16")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_pgd_robust_accuracy_matches_fp32(
    digits: tuple[WhiteBoxModel, torch.Tensor, torch.Tensor], amp: str
) -> None:
    cpu_model, x, y = digits
    model = WhiteBoxModel(copy.deepcopy(cpu_model.module), cpu_model.spec, device="cuda")
    attack = PGD(eps=0.1, steps=10, seed=0)
    full, half = attack(model, x, y), attack(model.tuned(amp=amp), x, y)  # type: ignore[arg-type]
    assert half.x_adv.device == x.device and half.x_adv.dtype == torch.float32
    assert abs(half.robust_accuracy - full.robust_accuracy) <= AMP_TOLERANCE


def test_channels_last_changes_layout_not_results(
    digits: tuple[WhiteBoxModel, torch.Tensor, torch.Tensor],
) -> None:
    model, x, _ = digits
    tuned = model.tuned(channels_last=True)
    conv = tuned.module.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(tuned(x), model(x), rtol=1e-4, atol=1e-4)
    model.module.to(memory_format=torch.contiguous_format)  # the module is shared: put it back


def test_compile_failure_falls_back_to_eager_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_compile(module: torch.nn.Module, **_: Any) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C compiler found\nlong backend trace")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    spec = InputSpec(shape=(1, 8, 8), num_classes=10)
    module = SmallCNN(width=4, hidden=8)
    model = WhiteBoxModel(module, spec, device="cpu", compiled=True)
    x = torch.rand(3, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="dlsec.core.model"):
        out, again = model(x), model(x)
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "no C compiler found" in warnings[0].getMessage()
    assert "long backend trace" not in warnings[0].getMessage()  # one line
    torch.testing.assert_close(out, module.eval()(x))
    torch.testing.assert_close(again, out)


def test_compile_does_not_duplicate_the_weights_in_the_state_dict() -> None:
    spec = InputSpec(shape=(1, 8, 8), num_classes=10)
    model = WhiteBoxModel(SmallCNN(width=4, hidden=8), spec, device="cpu", compiled=True)
    assert all(key.startswith("module.") for key in model.state_dict())


@pytest.mark.parametrize("amp", ["fp8", "float16", ""])
def test_unknown_amp_mode_is_a_usage_error(amp: str) -> None:
    spec = InputSpec(shape=(1, 8, 8), num_classes=10)
    with pytest.raises(UsageError, match="amp must be one of bf16, fp16"):
        WhiteBoxModel(SmallCNN(), spec, amp=amp)  # type: ignore[arg-type]
