"""Trigger localisation: occlusion finds the BadNets patch; it agrees with Neural Cleanse's mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlsec.attacks.backdoor import BadNets
from dlsec.core.model import WhiteBoxModel
from dlsec.core.spec import InputSpec
from dlsec.defend import NeuralCleanse
from dlsec.defend.localise import iou, localise_scan, localise_trigger
from dlsec.errors import UsageError


def test_iou_by_hand():
    a = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    b = np.array([[0, 1, 1], [0, 0, 0]], dtype=bool)
    assert iou(a, b) == pytest.approx(1 / 3) and iou(a, a) == 1.0
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(UsageError, match="different shapes"):
        iou(a, a.ravel())


def test_on_a_linear_table_model_the_feature_that_decides_is_the_region():
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, -3.0], [0.0, 0.0, 0.0, 3.0]]))
        layer.bias.zero_()
    model = WhiteBoxModel(layer, InputSpec(shape=(4,), num_classes=2, kind="tabular"), device="cpu")
    x = np.tile(np.array([[0.5, 0.2, 0.7, 1.0]], dtype=np.float32), (5, 1))
    region = localise_trigger(model, x, 1, k=1, window=1, reference=np.array([0, 0, 0, 1], bool))
    assert region.mask.tolist() == [False, False, False, True] and region.reference_iou == 1.0
    assert region.bbox is None  # tables have no box


def test_occlusion_finds_the_badnets_patch_per_input(digits_split, badnets, badnets_model):
    test = digits_split[1]
    trigger = BadNets(rate=0.1, target=0, seed=0).trigger(test)
    mask, _ = trigger.mask_and_pattern()
    truth = np.asarray(mask).max(0) > 0  # the 3x3 patch, bottom-right
    x = trigger.apply(test.x[test.y != 0][:48])
    region = localise_trigger(badnets_model, x, 0, reference=truth)
    assert region.k == 9 and region.reference_iou >= 0.5  # the target; 1.0 measured
    assert region.per_example_iou(truth).mean() >= 0.5
    assert region.bbox == [5, 7, 5, 7]
    with pytest.raises(UsageError, match="target 12"):
        localise_trigger(badnets_model, x, 12)


def test_the_region_agrees_with_the_neural_cleanse_mask(digits_split, badnets_model):
    test = digits_split[1]
    report = NeuralCleanse(max_examples=96).scan(badnets_model, test)
    region = localise_scan(badnets_model, test.x[:48], report)
    assert region is not None and region.target == 0
    assert region.reference_iou is not None and region.reference_iou >= 0.3
    r0, _, c0, _ = region.bbox
    assert r0 >= 4 and c0 >= 4  # in the bottom-right quarter, where the patch is
