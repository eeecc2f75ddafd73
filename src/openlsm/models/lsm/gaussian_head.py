"""LSM's Gaussian head: one linear layer maps every point feature to one pixel-aligned Gaussian.

`gaussian_proj = Linear(in_dim, 3 + 4 + 1 + 3 (deg+1)^2 + feature_dim)` (paper: 64 -> 120), split in that order
into scale, rotation (wxyz), opacity, SH (coefficient-major, RGB inner) and the semantic feature.

    head = GaussianHead(GaussianHeadConfig())
    g = head(feats, means, colors, sem_residual)   # feats [B, M, 64], means [B, M, 3] (detached points),
                                                   # colors [B, M, 3] in [0, 1], sem_residual [B, M, 64]
    g.means, g.log_scales, g.quats, g.sh, g.features   # Gaussians with leading dims [B, M]

Activations (official `gaussian_head.py`): means = the points themselves (no offsets); scales = exp(raw) *
sqrt(3-NN mean squared distance), clamped to [0.1, 3] x the sample's median NN distance; quats normalised;
opacity = sigmoid(raw) (stored as the logit raw); SH DC += RGB2SH(colour), all SH times `sh_mask`;
features = raw + per-pixel semantic residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians, rgb_to_sh0
from openlsm.models.lsm.knn import knn_mean_sq_dist


@dataclass(frozen=True)
class GaussianHeadConfig:
    in_dim: int = 64  # point-transformer output width
    feature_dim: int = 64  # semantic feature per Gaussian (official `d_gs_feats`, rasterizer constant 64)
    sh_degree: int = 3
    rgb_residual: bool = True
    scale_min: float = 0.1  # x median NN distance of the sample
    scale_max: float = 3.0
    knn_k: int = 3

    @property
    def out_dim(self) -> int:
        return 3 + 4 + 1 + 3 * (self.sh_degree + 1) ** 2 + self.feature_dim

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise OpenLSMError(f"sh_degree must be in 0..3, got {self.sh_degree}")
        if not 0 < self.scale_min <= self.scale_max:
            raise OpenLSMError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")


def make_sh_mask(degree: int) -> Tensor:
    """[(degree+1)^2]: 1 for the DC, 0.5 * 0.25^l for band l (damps high-frequency SH at start)."""
    return torch.cat([torch.full((2 * lvl + 1,), 1.0 if lvl == 0 else 0.5 * 0.25 ** lvl) for lvl in range(degree + 1)])


def clamp_scales(raw_scales: Tensor, means: Tensor, cfg: GaussianHeadConfig) -> Tensor:
    """raw [B, M, 3], means [B, M, 3] -> scales [B, M, 3] = exp(raw) * nn_dist, clamped per sample by its median."""
    nn_dists = knn_mean_sq_dist(means.detach(), cfg.knn_k).clamp_min(1e-7).sqrt().to(raw_scales.dtype)  # [B, M]
    medians = nn_dists.median(dim=1, keepdim=True).values[..., None]  # [B, 1, 1]
    scales = raw_scales.exp() * nn_dists[..., None]
    return torch.maximum(torch.minimum(scales, cfg.scale_max * medians), cfg.scale_min * medians)


class GaussianHead(nn.Module):
    def __init__(self, config: GaussianHeadConfig | None = None):
        super().__init__()
        cfg = self.config = config or GaussianHeadConfig()
        self.gaussian_proj = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.register_buffer("sh_mask", make_sh_mask(cfg.sh_degree), persistent=False)

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """raw [..., out_dim] -> scales [..., 3], quats [..., 4], opacity [...], sh [..., K, 3], feats [..., D]
        (D = 0 for raw without the feature columns)."""
        k = (self.config.sh_degree + 1) ** 2
        scales, quats, opacity, sh, feats = raw.split([3, 4, 1, 3 * k, raw.shape[-1] - 8 - 3 * k], dim=-1)
        return scales, quats, opacity[..., 0], sh.unflatten(-1, (k, 3)), feats

    def forward(self, feats: Tensor, means: Tensor, colors: Tensor | None = None,
                sem_residual: Tensor | None = None, features: Tensor | None = None) -> Gaussians:
        """feats [B, M, in_dim], means [B, M, 3], colors [B, M, 3] in [0, 1], sem_residual [B, M, D] -> Gaussians [B, M].
        `features` [B, M, D], if given, are the Gaussians' features instead of the head's own (whose projection
        columns are then skipped; LSM's semantic lift)."""
        cfg = self.config
        if feats.ndim != 3 or feats.shape[-1] != cfg.in_dim:
            raise OpenLSMError(f"feats must be [B, M, {cfg.in_dim}], got {tuple(feats.shape)}")
        if means.shape != (*feats.shape[:2], 3):
            raise OpenLSMError(f"means must be {(*feats.shape[:2], 3)}, got {tuple(means.shape)}")
        if cfg.rgb_residual and (colors is None or colors.shape != means.shape):
            raise OpenLSMError(f"colors must be {tuple(means.shape)} when rgb_residual is on")
        if features is None:
            raw_scales, raw_quats, raw_opacity, sh, features = self.split(self.gaussian_proj(feats))
            if sem_residual is not None:
                features = features + sem_residual
        elif features.shape != (*feats.shape[:2], cfg.feature_dim):
            raise OpenLSMError(f"features must be {(*feats.shape[:2], cfg.feature_dim)}, got {tuple(features.shape)}")
        else:  # the projection's other columns only
            n = cfg.out_dim - cfg.feature_dim
            raw = F.linear(feats, self.gaussian_proj.weight[:n], self.gaussian_proj.bias[:n])
            raw_scales, raw_quats, raw_opacity, sh, _ = self.split(raw)
        means = means.detach()  # no rendering gradient flows into the geometry network
        scales = clamp_scales(raw_scales, means, cfg)
        mask = self.sh_mask[:, None].to(sh.dtype)  # [K, 1]
        masked = sh * mask
        if cfg.rgb_residual:  # DC: (raw + RGB) * mask_0, written over the masked raw DC (no concatenated copy)
            masked[..., 0, :] = (sh[..., 0, :] + rgb_to_sh0(colors)) * mask[0]
        sh = masked
        return Gaussians(means=means, quats=F.normalize(raw_quats, dim=-1), log_scales=scales.log(),
                         opacity_logits=raw_opacity, sh=sh, features=features)
