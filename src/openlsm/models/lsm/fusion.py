"""Cross-modal fusion block of LSM: point features attend to themselves, then to external image tokens.

Points of several samples arrive in the merged PTv3 layout (rows grouped by sample); they are padded to
[B, maxN, C] with a key-padding mask, run through the block, and unpadded again.

    block = CrossModalBlock(512, num_heads=8)
    feats = block.forward_points(feats, counts, tokens)   # feats [N, 512], counts [B], tokens [B, L, 512]

Parameter names follow LSM's `DecoderBlock`: norm1, attn, cross_attn, norm2, norm3, mlp.fc1/fc2, norm_y;
the two attentions are `nn.MultiheadAttention(bias=False)` (only `in_proj_weight` and `out_proj.weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.models.layers import Mlp


def pad_points(feats: Tensor, counts: Tensor, max_count: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """feats [N, C] grouped by sample, counts [B] -> padded [B, maxN, C], pad_mask [B, maxN] (True = padding),
    and flat [N] positions of the points inside the padded tensor (for `unpad`)."""
    counts = counts.long()
    b = counts.shape[0]
    max_count = int(counts.max()) if max_count is None else max_count
    batch = torch.repeat_interleave(torch.arange(b, device=feats.device), counts, output_size=feats.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(feats.shape[0], device=feats.device) - starts[batch]
    flat = batch * max_count + local  # [N]
    padded = feats.new_zeros(b * max_count, feats.shape[1]).index_copy(0, flat, feats)
    pad_mask = torch.arange(max_count, device=feats.device)[None, :] >= counts[:, None]
    return padded.view(b, max_count, -1), pad_mask, flat


def attend(mha: nn.MultiheadAttention, x: Tensor, mem: Tensor, pad_mask: Tensor | None = None) -> Tensor:
    """`mha(x, mem, mem, key_padding_mask=pad_mask)[0]` for a batch-first, bias-free, dropout-free module, with its
    weights: the projections and one SDPA call, a fraction of the module's generic path's launches.
    x [B, L, C], mem [B, T, C], pad_mask [B, T] (True = padding) -> [B, L, C]."""
    b, length, c = x.shape
    h = mha.num_heads
    if x is mem:
        q, k, v = F.linear(x, mha.in_proj_weight).view(b, length, 3, h, c // h).permute(2, 0, 3, 1, 4)
    else:
        w_q, w_kv = mha.in_proj_weight.split([c, 2 * c])
        q = F.linear(x, w_q).view(b, length, h, c // h).transpose(1, 2)
        k, v = F.linear(mem, w_kv).view(b, mem.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
    mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # [B, 1, 1, T], True = attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, D]
    return F.linear(out.transpose(1, 2).reshape(b, length, c), mha.out_proj.weight)


class CrossModalBlock(nn.Module):
    """Self-attention over a sample's points, cross-attention to its tokens, then an MLP (all pre-norm)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise OpenLSMError(f"fusion dim {dim} is not divisible by {num_heads} heads")
        # registration order = official state-dict order
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pad_mask: Tensor | None, tokens: Tensor) -> Tensor:
        """x [B, L, C] points, pad_mask [B, L] (True = padding), tokens [B, T, C] -> [B, L, C]."""
        if tokens.ndim != 3 or tokens.shape[0] != x.shape[0] or tokens.shape[2] != x.shape[2]:
            raise OpenLSMError(f"fusion tokens must be [{x.shape[0]}, T, {x.shape[2]}], got {tuple(tokens.shape)}")
        h = self.norm1(x)
        x = x + attend(self.attn, h, h, pad_mask)
        x = x + attend(self.cross_attn, self.norm2(x), self.norm_y(tokens))
        return x + self.mlp(self.norm3(x))

    def forward_points(self, feats: Tensor, counts: Tensor, tokens: Tensor, max_count: int | None = None) -> Tensor:
        """feats [N, C] in the merged layout (grouped by sample), counts [B], tokens [B, T, C] -> [N, C]."""
        padded, pad_mask, flat = pad_points(feats, counts, max_count)
        out = self(padded, pad_mask, tokens)  # [B, maxN, C]
        return out.reshape(-1, out.shape[-1]).index_select(0, flat)
