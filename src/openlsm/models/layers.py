"""Layers shared by the models; attribute names follow the official checkpoints (fc1/fc2, DPT refinenets)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, back to the input width."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convs; with `batch_norm` (LSeg) the convs lose their bias and each is
    followed by BatchNorm (bn1, bn2), registered after the convs as in the official state dicts."""

    def __init__(self, dim: int, batch_norm: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=not batch_norm)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(F.relu(x))))))


class FusionBlock(nn.Module):
    """Fuse the coarser path with a skip feature, refine, upsample x2 (bilinear, align_corners) and mix 1x1.

    `out_conv` is registered before the residual units to keep the official state-dict order.
    """

    def __init__(self, dim: int, batch_norm: bool = False):
        super().__init__()
        self.out_conv = nn.Conv2d(dim, dim, 1)
        self.resConfUnit1 = ResidualConvUnit(dim, batch_norm)
        self.resConfUnit2 = ResidualConvUnit(dim, batch_norm)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)
