"""The architectures of real size: output shapes, parameter counts worked out by hand, bad input."""

from __future__ import annotations

import pytest
import torch

from dlsec.core.arch import ARCHITECTURES, build_architecture
from dlsec.errors import ModelLoadError


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # no bias: batch norm follows


def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def _resnet18_cifar_params(num_classes: int) -> int:
    """He et al.'s ResNet-18 with the CIFAR stem, from its layer shapes."""
    total = _conv(3, 64, 3) + _bn(64)
    cin = 64
    for cout in (64, 128, 256, 512):
        for block in range(2):
            first = block == 0
            total += _conv(cin if first else cout, cout, 3) + _bn(cout)
            total += _conv(cout, cout, 3) + _bn(cout)
            if first and cin != cout:
                total += _conv(cin, cout, 1) + _bn(cout)  # projection shortcut
        cin = cout
    return total + 512 * num_classes + num_classes


def _linear(i: int, o: int) -> int:
    return i * o + o


def _vit_tiny_params(num_classes: int, dim: int = 192, depth: int = 12, patch: int = 4) -> int:
    tokens = (32 // patch) ** 2
    embed = 3 * patch * patch * dim + dim
    block = (
        2 * (2 * dim)
        + _linear(dim, 3 * dim)
        + _linear(dim, dim)
        + _linear(dim, 4 * dim)
        + _linear(4 * dim, dim)
    )
    return embed + dim + (tokens + 1) * dim + depth * block + 2 * dim + _linear(dim, num_classes)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_parameter_count_matches_the_paper_shapes() -> None:
    assert _resnet18_cifar_params(10) == 11_173_962  # the count usually quoted for CIFAR ResNet-18
    assert _count(build_architecture("resnet18", {"num_classes": 10})) == _resnet18_cifar_params(10)
    assert _count(build_architecture("resnet18", {"num_classes": 100})) == _resnet18_cifar_params(100)


def test_vit_tiny_parameter_count() -> None:
    assert _count(build_architecture("vit-tiny", {"num_classes": 10})) == _vit_tiny_params(10)
    small = build_architecture("vit-tiny", {"num_classes": 10, "dim": 48, "depth": 2, "heads": 3, "patch": 8})
    assert _count(small) == _vit_tiny_params(10, dim=48, depth=2, patch=8)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("resnet18", {"num_classes": 10}),
        ("resnet18", {"num_classes": 7, "width": 8}),
        ("vit-tiny", {"num_classes": 10}),
        ("vit-tiny", {"num_classes": 3, "dim": 24, "depth": 1, "heads": 2, "patch": 8}),
    ],
)
def test_output_shapes_and_input_gradients(arch: str, kwargs: dict[str, int]) -> None:
    torch.manual_seed(0)
    net = build_architecture(arch, kwargs).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, kwargs["num_classes"])
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert grad.shape == x.shape and bool(grad.abs().sum() > 0)


def test_resnet18_keeps_the_resolution_through_the_stem() -> None:
    net = build_architecture("resnet18", {"width": 4})
    stem = net.bn1(net.conv1(torch.rand(1, 3, 32, 32)))
    assert stem.shape == (1, 4, 32, 32)  # 3x3, stride 1, no max-pool: the CIFAR stem
    assert net.layer4(net.layer3(net.layer2(net.layer1(stem)))).shape == (1, 32, 4, 4)


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("vit-tiny", {"patch": 5}, "multiple of patch"),
        ("vit-tiny", {"dim": 100, "heads": 3}, "multiple of heads"),
        ("resnet18", {"blocks": [2, 2]}, "four stages"),
        ("resnet18", {"depth": 3}, "rejected its arguments"),
    ],
)
def test_bad_arguments_raise_model_load_errors(arch: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        build_architecture(arch, kwargs)


def test_registered_by_name() -> None:
    assert {"resnet18", "vit-tiny"} <= set(ARCHITECTURES)
