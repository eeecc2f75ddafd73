"""2D rotary position embedding (RoPE) as used by the CroCo/DUSt3R ViT: the head dim is split in two halves,
the first half rotates with the token's row (y), the second with its column (x).

Each half is a 1-D rotary embedding with `inv_freq = 1 / base**(arange(0, D, 2) / D)` (D = half of the head dim)
and the non-interleaved "rotate half" layout, so q.k after rotation depends only on the position difference.

    pos = patch_positions(h, w, device)        # [h*w, 2] integer (y, x)
    q = apply_rope_2d(q, pos, base=100.0)      # q: [B, heads, N, D]
    pos = RopePositions(pos)                   # the same, with the cos/sin tables built once and reused
    q, k = apply_rope_2d(q, pos), apply_rope_2d(k, pos)
"""

from __future__ import annotations

import torch
from torch import Tensor


def patch_positions(h: int, w: int, device=None) -> Tensor:
    """Row-major (y, x) integer grid of a h x w token map -> [h*w, 2]."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)


def rope_tables(pos: Tensor, head_dim: int, dtype: torch.dtype, base: float) -> tuple[Tensor, Tensor]:
    """Positions [N, 2] or [B, N, 2] -> cos, signed sin [N, D] or [B, 1, N, D] such that the rotation is
    x * cos + swap(x) * sin, with swap exchanging the quarters of the head dim within each half (y1 y2 x1 x2 ->
    y2 y1 x2 x1). Angles are computed in float32 for accuracy, then cast to `dtype`."""
    if pos.dim() == 3:  # per-sample positions broadcast over heads
        pos = pos[:, None]
    half = head_dim // 2
    inv_freq = 1.0 / base ** (torch.arange(0, half, 2, device=pos.device, dtype=torch.float32) / half)  # [D/4]
    angles = pos.to(torch.float32)[..., None] * inv_freq  # [..., N, 2, D/4]
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    cos = torch.cat([cos, cos], -1).flatten(-2)  # [..., N, D]: y half, then x half
    sin = torch.cat([-sin, sin], -1).flatten(-2)  # the sign of rotate-half: (a, b) -> (-b, a)
    return cos, sin


class RopePositions:
    """Token positions [N, 2] (y, x) with their rotation tables, built on first use per (head dim, dtype, base)
    and reused by every attention layer of a forward (each would otherwise rebuild them: ~20 small ops per q or
    k, thousands per forward of the 36-block network)."""

    def __init__(self, pos: Tensor):
        self.pos = pos
        self._tables: dict = {}

    def tables(self, head_dim: int, dtype: torch.dtype, base: float) -> tuple[Tensor, Tensor]:
        key = (head_dim, dtype, base)
        if key not in self._tables:
            self._tables[key] = rope_tables(self.pos, head_dim, dtype, base)
        return self._tables[key]


def apply_rope_2d(x: Tensor, pos: Tensor | RopePositions, base: float = 100.0) -> Tensor:
    """Rotate tokens x [B, heads, N, D] by positions pos [N, 2] or [B, N, 2] (y, x); D must be a multiple of 4."""
    D = x.shape[-1]
    if D % 4 != 0:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {D}")
    if isinstance(pos, RopePositions):
        cos, sin = pos.tables(D, x.dtype, base)
    else:
        cos, sin = rope_tables(pos, D, x.dtype, base)
    swapped = x.unflatten(-1, (2, 2, D // 4)).flip(-2).flatten(-3)  # quarters y2 y1 x2 x1
    return x * cos + swapped * sin
