"""The gradient-masking checklist flags what it should, and only that."""

from __future__ import annotations

import torch
from torch import nn

from dlsec.attacks import PGD, check_gradient_masking
from dlsec.core import WhiteBoxModel


class _Quantise(nn.Module):
    """Rounds inputs to 4 levels: the classic obfuscated-gradient defence (zero gradients)."""

    def forward(self, x):
        return torch.round(x * 4) / 4


class _Noisy(nn.Module):
    def forward(self, x):
        return x + 0.2 * torch.randn_like(x)


def _wrap(front: nn.Module, model: WhiteBoxModel) -> WhiteBoxModel:
    # The zoo model's own normalisation is applied after the front-end.
    inner = model

    class Composite(nn.Module):
        def __init__(self):
            super().__init__()
            self.front, self.inner = front, inner

        def forward(self, x):
            return self.inner(self.front(x))

    return WhiteBoxModel(Composite(), model.spec, device="cpu")


def test_undefended_model_raises_no_flags(digits_cnn, digits_batch):
    x, y = digits_batch
    report = check_gradient_masking(digits_cnn, x[:32], y[:32], eps=0.1, white_box=PGD(eps=0.1, steps=20))
    assert report.findings == [], [f.code for f in report.findings]
    curve = report.measurements["eps_curve"]["robust_accuracy"]
    assert curve[-1] == 0.0 and curve == sorted(curve, reverse=True)


def test_quantised_model_is_flagged(digits_cnn, digits_batch):
    x, y = digits_batch
    masked = _wrap(_Quantise(), digits_cnn)
    report = check_gradient_masking(masked, x[:32], y[:32], eps=0.1, white_box=PGD(eps=0.1, steps=20))
    codes = {f.code for f in report.findings}
    assert "vanishing-gradients" in codes
    assert report.measurements["zero_gradient_fraction"] > 0.9
    assert all(f.owasp.startswith("ML01") and f.atlas.startswith("AML.T0043") for f in report.findings)


def test_random_forward_pass_is_flagged(digits_cnn, digits_batch):
    x, y = digits_batch
    report = check_gradient_masking(
        _wrap(_Noisy(), digits_cnn), x[:16], y[:16], eps=0.1, white_box=PGD(eps=0.1, steps=5)
    )
    assert "stochastic-forward" in {f.code for f in report.findings}


def test_black_box_access_cannot_pass_silently(digits_cnn, digits_batch):
    x, y = digits_batch
    report = check_gradient_masking(digits_cnn.as_score(), x[:8], y[:8], eps=0.1)
    assert [f.code for f in report.findings] == ["checks-not-run"]
    assert report.masked
