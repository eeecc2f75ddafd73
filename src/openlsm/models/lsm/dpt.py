"""DPT head (dense prediction from 4 token layers) with DUSt3R's parameter names.

Four hooked token maps (encoder output + three decoder layers) are reassembled into a 4-level pyramid at
x4, x2, x1, x1/2 of the patch grid, projected to `feature_dim`, fused coarse-to-fine by residual conv units and
read out at full image resolution. `PointHead` adds DUSt3R's exp-depth / exp-confidence post-processing.

    head = PointHead(dim_tokens=[1024, 768, 768, 768], hooks=[0, 6, 9, 12])
    pts3d, conf = head(token_layers, h=16, w=16)   # [B, 256, 256, 3], [B, 256, 256]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from openlsm.models.layers import FusionBlock


class Scratch(nn.Module):
    """Per-level 3x3 projections (registered under two names, like the official model) + the 4 fusion blocks."""

    def __init__(self, layer_dims: list[int], feature_dim: int):
        super().__init__()
        convs = [nn.Conv2d(d, feature_dim, 3, padding=1, bias=False) for d in layer_dims]
        # Same modules under `layer{i}_rn` and `layer_rn.{i-1}`: both names land in state_dict, one tensor each.
        for i, conv in enumerate(convs):
            setattr(self, f"layer{i + 1}_rn", conv)
        self.layer_rn = nn.ModuleList(convs)
        self.refinenet1 = FusionBlock(feature_dim)
        self.refinenet2 = FusionBlock(feature_dim)
        self.refinenet3 = FusionBlock(feature_dim)
        self.refinenet4 = FusionBlock(feature_dim)


class DPT(nn.Module):
    """Tokens of 4 layers -> dense map [B, out_channels, 16h, 16w] for a h x w patch grid."""

    def __init__(self, dim_tokens: list[int], hooks: list[int], layer_dims: list[int] = (96, 192, 384, 768),
                 feature_dim: int = 256, last_dim: int = 128, out_channels: int = 4):
        super().__init__()
        self.hooks = list(hooks)
        self.scratch = Scratch(list(layer_dims), feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, out_channels, 1),
        )
        d = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim_tokens[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),  # x4
            nn.Sequential(nn.Conv2d(dim_tokens[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),  # x2
            nn.Sequential(nn.Conv2d(dim_tokens[2], d[2], 1)),  # x1
            nn.Sequential(nn.Conv2d(dim_tokens[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),  # x1/2
        ])

    def forward(self, token_layers: list[Tensor], h: int, w: int) -> Tensor:
        feats = []
        for level, hook in enumerate(self.hooks):
            tokens = token_layers[hook]  # [B, h*w, C]
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
            x = self.act_postprocess[level](x)
            feats.append(self.scratch.layer_rn[level](x))
        s = self.scratch
        path = s.refinenet4(feats[3])[:, :, : feats[2].shape[2], : feats[2].shape[3]]  # odd grids: crop
        path = s.refinenet3(path, feats[2])
        path = s.refinenet2(path, feats[1])
        path = s.refinenet1(path, feats[0])
        return self.head(path)


def postprocess_points(out: Tensor) -> tuple[Tensor, Tensor]:
    """Raw head output [B, 4, H, W] -> points [B, H, W, 3] (exp depth) and confidence [B, H, W] (1 + exp)."""
    out = out.permute(0, 2, 3, 1)
    xyz, c = out[..., :3], out[..., 3]
    d = xyz.contiguous().norm(dim=-1, keepdim=True)  # on the strided view the CPU norm took 20x longer
    pts3d = xyz / d.clamp_min(1e-8) * torch.expm1(d)
    return pts3d, 1.0 + c.exp()


class PointHead(nn.Module):
    """DUSt3R's `PixelwiseTaskWithDPT` layout: the DPT lives under `.dpt`."""

    def __init__(self, dim_tokens: list[int], hooks: list[int], layer_dims: list[int] = (96, 192, 384, 768),
                 feature_dim: int = 256, last_dim: int = 128):
        super().__init__()
        self.dpt = DPT(dim_tokens, hooks, layer_dims, feature_dim, last_dim, out_channels=4)

    def forward(self, token_layers: list[Tensor], h: int, w: int) -> tuple[Tensor, Tensor]:
        return postprocess_points(self.dpt(token_layers, h, w))
