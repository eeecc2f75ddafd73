"""SSIM and PSNR on image batches (differentiable; used by the photometric loss and by evaluation).

SSIM follows Wang et al. 2004 as the 3DGS/LSM evaluations compute it: 11x11 Gaussian window (sigma 1.5),
C1 = (0.01 L)^2, C2 = (0.03 L)^2, 'valid' borders are avoided by zero padding ("same" size, like 3DGS).

    s = ssim(pred, gt)        # [B, C, H, W] in [0, 1] -> [B]
    p = psnr(pred, gt)        # [B]; inf for identical images
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype)  # [size]


def ssim_map(pred: Tensor, gt: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Per-pixel SSIM [B, C, H, W] of two [B, C, H, W] images (separable Gaussian filtering per channel)."""
    c = pred.shape[1]
    g = gaussian_window(window, sigma, pred.dtype, pred.device)
    kx = g.view(1, 1, 1, window).expand(c, 1, 1, window)
    ky = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    pad = window // 2

    def blur(x: Tensor) -> Tensor:
        x = F.conv2d(x, kx, padding=(0, pad), groups=c)
        return F.conv2d(x, ky, padding=(pad, 0), groups=c)

    mu_x, mu_y = blur(pred), blur(gt)
    var_x = blur(pred * pred) - mu_x * mu_x
    var_y = blur(gt * gt) - mu_y * mu_y
    cov = blur(pred * gt) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


def ssim(pred: Tensor, gt: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM per image: [B, C, H, W] x2 -> [B]."""
    return ssim_map(pred, gt, window, sigma, data_range).flatten(1).mean(1)


def psnr(pred: Tensor, gt: Tensor, data_range: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB per image: [B, C, H, W] x2 -> [B] (inf where the images are equal). mask [B, 1|C, H, W]."""
    err = (pred.double() - gt.double()) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.to(err.dtype).expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return (10 * torch.log10(data_range**2 / mse)).to(pred.dtype)
