"""The Gaussian container shared by every model and renderer.

Parameters are stored pre-activation, exactly as in a 3DGS PLY file:

    means          [..., N, 3]     world positions
    quats          [..., N, 4]     rotations, wxyz, any norm
    log_scales     [..., N, 3]     log of the per-axis standard deviations
    opacity_logits [..., N]        logit of the opacity
    sh             [..., N, K, 3]  spherical-harmonic colour coefficients, K = (degree + 1)^2
    features       [..., N, D]     optional language-aligned features (None if absent)

A leading batch dimension holds several scenes padded to one N (`stack`): padded Gaussians have an
opacity logit of -30, so they fall under the compositing cut-off and contribute nothing.

    g = Gaussians.random(1000, sh_degree=0, feature_dim=16, seed=0)
    g.opacities, g.scales          # activated views
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
PAD_OPACITY_LOGIT = -30.0  # sigmoid(-30) ~ 1e-13: far below the 1/255 compositing cut-off


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def sh_degree_from_k(k: int) -> int:
    d = round(math.sqrt(k)) - 1
    if (d + 1) ** 2 != k or d < 0 or d > 3:
        raise ValueError(f"{k} SH coefficients per channel is not (degree+1)^2 for a degree in 0..3")
    return d


@dataclass
class Gaussians:
    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor
    features: Tensor | None = None

    def __post_init__(self):
        n = self.means.shape[:-1]
        checks = [("means", self.means, (*n, 3)), ("quats", self.quats, (*n, 4)),
                  ("log_scales", self.log_scales, (*n, 3)), ("opacity_logits", self.opacity_logits, n)]
        for name, t, shape in checks:
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"Gaussians.{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if self.sh.shape[:-2] != n or self.sh.shape[-1] != 3:
            raise ValueError(f"Gaussians.sh has shape {tuple(self.sh.shape)}, expected {(*n, 'K', 3)}")
        sh_degree_from_k(self.sh.shape[-2])
        if self.features is not None and self.features.shape[:-1] != n:
            raise ValueError(f"Gaussians.features has shape {tuple(self.features.shape)}, expected {(*n, 'D')}")

    # --- activated views ---
    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_k(self.sh.shape[-2])

    @property
    def feature_dim(self) -> int:
        return 0 if self.features is None else self.features.shape[-1]

    @property
    def colors_dc(self) -> Tensor:
        """View-independent RGB from the degree-0 coefficient, clamped to [0, 1]  [..., N, 3]."""
        return sh0_to_rgb(self.sh[..., 0, :]).clamp(0, 1)

    def __len__(self) -> int:
        return self.means.shape[-2]

    def _map(self, fn) -> Gaussians:
        return Gaussians(**{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
                            for f in fields(self)})

    def to(self, *args, **kwargs) -> Gaussians:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def __getitem__(self, idx) -> Gaussians:
        """Index the leading (scene) dimension of a batch, or select Gaussians of a single scene."""
        return self._map(lambda t: t[idx])

    def select(self, mask: Tensor) -> Gaussians:
        """Keep Gaussians of a single scene where mask [N] is true (or at given indices)."""
        return self._map(lambda t: t[mask])

    def with_sh_degree(self, degree: int) -> Gaussians:
        """Truncate or zero-pad the SH coefficients to another degree."""
        k = (degree + 1) ** 2
        sh = self.sh[..., :k, :]
        if sh.shape[-2] < k:
            pad = sh.new_zeros(*sh.shape[:-2], k - sh.shape[-2], 3)
            sh = torch.cat([sh, pad], -2)
        return replace(self, sh=sh)

    @staticmethod
    def cat(items: list[Gaussians]) -> Gaussians:
        """Concatenate the Gaussians of several single scenes into one."""
        return _combine(items, pad=False)

    @staticmethod
    def stack(items: list[Gaussians]) -> Gaussians:
        """Batch several scenes [N_i] into [B, max N]; padding Gaussians are invisible."""
        return _combine(items, pad=True)

    @staticmethod
    def random(n: int, sh_degree: int = 0, feature_dim: int = 0, seed: int = 0, extent: float = 1.0,
               dtype=torch.float32) -> Gaussians:
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
        k = (sh_degree + 1) ** 2
        sh = r(n, k, 3) * 0.3
        sh[:, 0] = rgb_to_sh0(torch.rand(n, 3, generator=g, dtype=dtype))
        return Gaussians(means=(torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * extent, quats=r(n, 4),
                         log_scales=math.log(0.05 * extent) + 0.3 * r(n, 3),
                         opacity_logits=r(n) + 1.0, sh=sh,
                         features=r(n, feature_dim) if feature_dim else None)


def _combine(items: list[Gaussians], pad: bool) -> Gaussians:
    if not items:
        raise ValueError("need at least one Gaussians")
    has_feat = {it.features is not None for it in items}
    if len(has_feat) > 1:
        raise ValueError("cannot combine Gaussians with and without features")
    k = max(it.sh.shape[-2] for it in items)
    items = [it.with_sh_degree(sh_degree_from_k(k)) for it in items]
    if not pad:
        return Gaussians(**{f.name: (None if getattr(items[0], f.name) is None
                                     else torch.cat([getattr(it, f.name) for it in items], 0))
                            for f in fields(Gaussians)})
    n = max(len(it) for it in items)
    out = {}
    for f in fields(Gaussians):
        ts = [getattr(it, f.name) for it in items]
        if ts[0] is None:
            out[f.name] = None
            continue
        padded = []
        for t in ts:
            extra = n - t.shape[0]
            fill = PAD_OPACITY_LOGIT if f.name == "opacity_logits" else (1.0 if f.name == "quats" else 0.0)
            padded.append(torch.cat([t, t.new_full((extra, *t.shape[1:]), fill)], 0))
        out[f.name] = torch.stack(padded, 0)
    return Gaussians(**out)
