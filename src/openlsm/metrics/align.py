"""Aligning a prediction made in view 1's frame (unknown scale) with ground truth.

The model predicts points and cameras in view 1's camera frame, at its own scale. Losses and metrics that
compare with ground truth re-express GT in view 1's frame and fit one scale per sample robustly (Weiszfeld
iterations for the L1 / geometric-median-style objective  min_s sum_i w_i |p_i - s g_i|).

    s = weiszfeld_scale(pred_pts, gt_pts, valid)                 # [B, N, 3] x2, [B, N] -> [B]
    c2w = relative_to_first(gt_c2w)                               # [B, V, 4, 4], view 0 becomes identity
    c2w_scaled = scale_translations(c2w, s)                      # GT cameras at the prediction's scale
"""

from __future__ import annotations

import torch
from torch import Tensor

from openlsm.cameras.cameras import invert_rigid


@torch.no_grad()
def weiszfeld_scale(pred: Tensor, gt: Tensor, weights: Tensor | None = None, iters: int = 20,
                    eps: float = 1e-8) -> Tensor:
    """Scale s per sample minimising sum_i w_i |pred_i - s gt_i| (robust to outliers). [B, N, 3] -> [B]."""
    pred, gt = pred.double(), gt.double()
    w = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device) if weights is None else weights.double()
    gg = (gt * gt).sum(-1)  # [B, N]
    pg = (pred * gt).sum(-1)
    s = (w * pg).sum(-1) / (w * gg).sum(-1).clamp_min(eps)  # least-squares start
    for _ in range(iters):
        r = (pred - s[:, None, None] * gt).norm(dim=-1).clamp_min(eps)  # [B, N]
        ww = w / r
        s = (ww * pg).sum(-1) / (ww * gg).sum(-1).clamp_min(eps)
    return s.to(torch.float32)


def relative_to_first(c2w: Tensor) -> Tensor:
    """[..., V, 4, 4] camera-to-world -> the same cameras expressed in view 0's camera frame."""
    return invert_rigid(c2w[..., :1, :, :]) @ c2w


def scale_translations(c2w: Tensor, scale: Tensor) -> Tensor:
    """Multiply camera positions of [B, V, 4, 4] by scale [B] (rotations unchanged)."""
    out = c2w.clone()
    out[..., :3, 3] = out[..., :3, 3] * scale.to(c2w.dtype)[:, None, None]
    return out
