"""Gradient inversion of single-example updates: the scores' known answers, iDLG's label, and
reconstructions an independent classifier recognises."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlsec.cli import main
from dlsec.core.arch import MLP
from dlsec.errors import UsageError
from dlsec.federated import invert_gradients, psnr, single_example_gradients, ssim, study_inversion
from dlsec.federated._inversion import _label_from_bias


def test_psnr_known_answers():
    truth = np.zeros((1, 8, 8))
    assert psnr(truth, truth) == math.inf
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0)


def test_ssim_is_one_on_identical_images_and_low_on_noise():
    rng = np.random.default_rng(0)
    img = rng.random((1, 8, 8))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(rng.random((1, 8, 8)), img) < 0.3
    with pytest.raises(UsageError, match="shapes differ"):
        ssim(img, img[:, :4])


def test_idlg_reads_the_label_off_the_bias_gradient():
    torch.manual_seed(0)
    model = MLP(in_features=64, num_classes=10, hidden=(32,))
    for label in (0, 3, 9):
        grads = single_example_gradients(model, torch.rand(1, 8, 8), label)
        assert _label_from_bias(grads, 10) == label


def test_mismatched_gradients_are_refused():
    model = MLP(in_features=64, num_classes=10, hidden=(32,))
    with pytest.raises(UsageError, match="do not match"):
        invert_gradients(model, [torch.zeros(3)], shape=(1, 8, 8), num_classes=10)
    with pytest.raises(UsageError, match="unknown inversion"):
        invert_gradients(model, [], shape=(1, 8, 8), num_classes=10, method="magic")


def test_idlg_reconstructs_digits_the_independent_classifier_recognises():
    study = study_inversion(method="idlg", examples=3, steps=150, seed=1)
    summary = study.summary()
    assert summary["label_accuracy"] == 1.0
    assert summary["mean_ssim"] > 0.5
    assert study.recognition_rate >= 2 / 3
    assert study.reconstructions.shape == study.truths.shape == (3, 1, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dlg", "geiping"])
def test_dlg_and_inverting_gradients_reach_the_issues_bar(method):
    study = study_inversion(method=method, examples=10, steps=300, seed=0)
    assert study.recognition_rate >= 0.9


def test_cli_invert(tmp_path, capsys):
    argv = ["fl", "invert", "--method", "idlg", "--examples", "2", "--steps", "50", "--json"]
    assert main([*argv, "--out", str(tmp_path / "inv")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["label_accuracy"] == 1.0
    page = (tmp_path / "inv" / "inversion.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert main(["fl", "invert", "--method", "magic"]) == 2
    assert "unknown inversion 'magic'" in capsys.readouterr().err
