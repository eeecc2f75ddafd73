"""2D rotary position embedding (RoPE) as used by the CroCo/DUSt3R ViT: the head dim is split in two halves,
the first half rotates with the token's row (y), the second with its column (x).

Each half is a 1-D rotary embedding with `inv_freq = 1 / base**(arange(0, D, 2) / D)` (D = half of the head dim)
and the non-interleaved "rotate half" layout, so q.k after rotation depends only on the position difference.

    pos = patch_positions(h, w, device)        # [h*w, 2] integer (y, x)
    q = apply_rope_2d(q, pos, base=100.0)      # q: [B, heads, N, D]
"""

from __future__ import annotations

import torch
from torch import Tensor


def patch_positions(h: int, w: int, device=None) -> Tensor:
    """Row-major (y, x) integer grid of a h x w token map -> [h*w, 2]."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _rope_1d(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """x [..., N, D] rotated by angles pos [..., N] * inv_freq; computed in float32 for accuracy."""
    D = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)  # [D/2]
    angles = pos.to(torch.float32)[..., None] * inv_freq  # [..., N, D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [..., N, D]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


def apply_rope_2d(x: Tensor, pos: Tensor, base: float = 100.0) -> Tensor:
    """Rotate tokens x [B, heads, N, D] by positions pos [N, 2] or [B, N, 2] (y, x); D must be a multiple of 4."""
    D = x.shape[-1]
    if D % 4 != 0:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {D}")
    if pos.dim() == 3:  # per-sample positions broadcast over heads
        pos = pos[:, None]
    y, xh = x.split(D // 2, dim=-1)
    return torch.cat([_rope_1d(y, pos[..., 0], base), _rope_1d(xh, pos[..., 1], base)], dim=-1)
