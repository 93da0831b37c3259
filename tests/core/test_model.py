import numpy as np
import pytest
import torch
from torch import nn

from dlsec.core import Access, DecisionModel, InputSpec, ScoreModel, WhiteBoxModel, inference_mode
from dlsec.errors import SpecError, UsageError


def _dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))


def test_normalisation_is_folded_into_the_wrapper():
    module = nn.Linear(3, 2)
    spec = InputSpec(shape=(3,), num_classes=2, kind="tabular", mean=(0.5, 0.2, 0.1), std=(2.0, 4.0, 0.5))
    model = WhiteBoxModel(module, spec, device="cpu")
    x = torch.rand(5, 3)
    expected = module((x - torch.tensor([0.5, 0.2, 0.1])) / torch.tensor([2.0, 4.0, 0.5]))
    torch.testing.assert_close(model(x), expected)


def test_inference_is_eval_mode_and_caller_flags_are_restored():
    module = _dropout_net()
    module.train()
    module[1].eval()  # a mixed state the caller chose
    model = WhiteBoxModel(module, InputSpec(shape=(4,), num_classes=3, kind="tabular"), device="cpu")
    x = torch.rand(16, 4)
    a, b = model(x), model(x)
    torch.testing.assert_close(a, b)  # dropout off: deterministic
    assert module.training and not module[1].training and module[0].training


def test_inference_mode_restores_flags_even_on_error():
    module = _dropout_net().train()
    with pytest.raises(RuntimeError), inference_mode(module):
        assert not module.training
        raise RuntimeError("boom")
    assert all(m.training for m in module.modules())


def test_gradients_flow_to_inputs_without_touching_parameter_grads(linear_model):
    x = torch.tensor([[0.2, 0.7]], requires_grad=True)
    (g,) = torch.autograd.grad(linear_model(x)[0, 0], x)
    torch.testing.assert_close(g, torch.tensor([[1.0, -1.0]]))
    assert all(p.grad is None for p in linear_model.module.parameters())


def test_access_levels_agree_on_labels(linear_model):
    x = torch.rand(50, 2)
    expected = linear_model.predict(x)
    score, decision = linear_model.as_score(), linear_model.as_decision()
    assert score.access is Access.SCORE and decision.access is Access.DECISION
    assert torch.equal(score.predict(x), expected)
    assert torch.equal(decision.predict(x), expected)
    assert torch.equal(score.as_decision().predict(x), expected)
    torch.testing.assert_close(score.probs(x).sum(1), torch.ones(50))
    assert Access.DECISION < Access.SCORE < Access.WHITE_BOX


def test_batched_predict_matches_one_shot():
    module = _dropout_net()
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular")
    x = torch.rand(23, 4)
    small = WhiteBoxModel(module, spec, device="cpu", batch_size=5)
    big = WhiteBoxModel(module, spec, device="cpu", batch_size=100)
    torch.testing.assert_close(small.logits(x), big.logits(x))


def test_score_model_rejects_non_probabilities():
    spec = InputSpec(shape=(2,), num_classes=2, kind="tabular")
    with pytest.raises(UsageError, match="probabilities"):
        ScoreModel(lambda x: x * 3, spec).probs(torch.ones(1, 2))
    with pytest.raises(UsageError, match="shape"):
        ScoreModel(lambda x: np.ones((len(x), 3)) / 3, spec).probs(torch.ones(2, 2))


def test_decision_model_rejects_bad_labels():
    spec = InputSpec(shape=(2,), num_classes=2, kind="tabular")
    with pytest.raises(UsageError, match="outside"):
        DecisionModel(lambda x: np.full(len(x), 5), spec).predict(torch.ones(2, 2))
    with pytest.raises(UsageError, match="integer"):
        DecisionModel(lambda x: np.zeros(len(x)), spec).predict(torch.ones(2, 2))


def test_wrong_batch_shape_is_refused(linear_model):
    with pytest.raises(SpecError, match="shape"):
        linear_model.predict(torch.ones(3, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    module = _dropout_net().cuda()
    model = WhiteBoxModel(module, InputSpec(shape=(4,), num_classes=3, kind="tabular"))
    assert model.device.type == "cuda"
    assert model.predict(torch.rand(4, 4)).device.type == "cpu"


def test_an_explicit_device_moves_the_module_there():
    # A CPU module wrapped for another device must run there (found on a GPU: the inputs went to
    # CUDA while the weights stayed on the CPU). The meta device stands in for CUDA here.
    module = _dropout_net()
    model = WhiteBoxModel(module, InputSpec(shape=(4,), num_classes=3, kind="tabular"), device="meta")
    assert model.device.type == "meta"
    assert all(p.device.type == "meta" for p in model.module.parameters())
