"""Architectures of real size: a CIFAR-style ResNet-18 and a ViT-tiny, in plain PyTorch.

Both take 3x32x32 images by default and register with :func:`~dlsec.core.arch.register_architecture`
(``resnet18``, ``vit-tiny``), so a safetensors file saved from one loads like any built-in
model. Neither needs torchvision.

* ``resnet18``: the CIFAR variant of He et al. (2016): a 3x3 stem with stride 1 and no
  max-pooling, four stages of two BasicBlocks (64, 128, 256, 512 channels; stride 2 from the
  second stage on, with a 1x1 projection shortcut where the shape changes), global average
  pooling and a linear head. 11,173,962 parameters for 10 classes.
* ``vit-tiny``: the ViT-Ti/DeiT-tiny encoder (Dosovitskiy et al. 2021; Touvron et al. 2021)
  with 4x4 patches for 32x32 inputs: 64 patch tokens plus a class token, width 192, depth 12,
  3 heads, MLP ratio 4, pre-norm blocks. 5,362,762 parameters for 10 classes.

Example:
    >>> from dlsec.core.arch import build_architecture
    >>> net = build_architecture("resnet18", {"num_classes": 10})
    >>> sum(p.numel() for p in net.parameters())
    11173962
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlsec.core.arch import register_architecture
from dlsec.errors import ModelLoadError

__all__ = ["BasicBlock", "ResNet18", "ViTTiny"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (ResNet's basic block).

    Args:
        in_channels: channels in.
        out_channels: channels out.
        stride: stride of the first convolution (2 halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_architecture("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 for small images (the CIFAR variant: 3x3 stem, no max-pool).

    Args:
        in_channels: input channels (3 for colour images).
        num_classes: output classes.
        width: channels of the stem and the first stage (64 in the paper); the stages have
            ``width``, ``2 width``, ``4 width``, ``8 width`` channels. A smaller width keeps the
            topology for quick tests.
        blocks: BasicBlocks per stage, ``(2, 2, 2, 2)`` for ResNet-18.

    Works on any input of at least 8x8 pixels (global average pooling before the head).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if int(width) < 1 or len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ModelLoadError(
                f"resnet18 needs width >= 1 and four stages of >= 1 block; got {width}, {blocks}"
            )
        width = int(width)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages: list[nn.Module] = []
        channels = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            layers = [BasicBlock(channels, out, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(out, out) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _Block(nn.Module):
    """A pre-norm transformer encoder block: multi-head self-attention, then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@register_architecture("vit-tiny")
class ViTTiny(nn.Module):
    """A Vision Transformer of the ViT-Ti size (width 192, depth 12, 3 heads) for small images.

    The image is cut into ``patch x patch`` patches (a strided convolution embeds each), a
    learned class token and learned position embeddings are added, ``depth`` pre-norm encoder
    blocks follow, and the class token's final layer-normed state feeds the linear head.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        image_size: input height and width (square), a multiple of ``patch``.
        patch: patch side (4 gives 64 tokens on 32x32 images).
        dim: token width.
        depth: encoder blocks.
        heads: attention heads; ``dim`` must be a multiple.
        mlp_ratio: hidden width of each block's MLP over ``dim``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        patch: int = 4,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if patch < 1 or image_size % patch:
            raise ModelLoadError(f"vit-tiny: image_size {image_size} is not a multiple of patch {patch}")
        if heads < 1 or dim % heads:
            raise ModelLoadError(f"vit-tiny: dim {dim} is not a multiple of heads {heads}")
        if depth < 1:
            raise ModelLoadError(f"vit-tiny: depth must be >= 1, got {depth}")
        tokens = (image_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        out = self.blocks(torch.cat([cls, tokens], dim=1) + self.pos)
        return self.head(self.norm(out[:, 0]))
