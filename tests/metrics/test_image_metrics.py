import math

import numpy as np
import torch

from openlsm.metrics import psnr, ssim


def _ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    """float64 SSIM with an explicit 11x11 Gaussian window and zero padding, one channel."""
    r = np.arange(11) - 5.0
    g = np.exp(-r**2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    H, W = x.shape
    xp, yp = np.pad(x, 5), np.pad(y, 5)
    out = np.zeros_like(x)
    for i in range(H):
        for j in range(W):
            a, b = xp[i:i + 11, j:j + 11], yp[i:i + 11, j:j + 11]
            mx, my = (w * a).sum(), (w * b).sum()
            vx, vy = (w * a * a).sum() - mx**2, (w * b * b).sum() - my**2
            cxy = (w * a * b).sum() - mx * my
            c1, c2 = 0.01**2, 0.03**2
            out[i, j] = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return out.mean()


def test_ssim_matches_bruteforce_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 17, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(1, 1, 20, 17, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert math.isclose(ssim(x, y).item(), _ssim_bruteforce(x[0, 0].numpy(), y[0, 0].numpy()), rel_tol=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(1, dtype=torch.float64))
    assert ssim(x, y).item() < 0.99


def test_psnr_analytic():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 20 dB
    p = psnr(y, x)
    assert math.isclose(p[0].item(), 20.0, rel_tol=1e-5)
    assert math.isinf(p[1].item())
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    y[0, :, 2:] += 0.9  # outside the mask: ignored
    assert math.isclose(psnr(y, x, mask=mask)[0].item(), 20.0, rel_tol=1e-5)


def test_weiszfeld_scale_recovers_scale_with_outliers():
    from openlsm.metrics.align import weiszfeld_scale
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, 500, 3, generator=g)
    pred = gt * torch.tensor([0.37, 4.2])[:, None, None]
    pred[:, :100] += 20 * torch.randn(2, 100, 3, generator=g)  # 20 % gross outliers
    s = weiszfeld_scale(pred, gt)
    assert torch.allclose(s, torch.tensor([0.37, 4.2]), rtol=1e-3)
    ls = (pred * gt).sum((1, 2)) / (gt * gt).sum((1, 2))  # least squares is pulled away by the outliers
    assert (ls - torch.tensor([0.37, 4.2])).abs().max() > 1e-2


def test_relative_to_first_and_scale():
    from openlsm.cameras.cameras import look_at
    from openlsm.metrics.align import relative_to_first, scale_translations
    c2w = torch.stack([look_at(torch.tensor([1.0, 2, 3]), torch.zeros(3)),
                       look_at(torch.tensor([-2.0, 1, 0.5]), torch.zeros(3))])[None]  # [1, 2, 4, 4]
    rel = relative_to_first(c2w)
    assert torch.allclose(rel[0, 0], torch.eye(4), atol=1e-6)
    # distance between the cameras is preserved, then scaled
    d = (c2w[0, 0, :3, 3] - c2w[0, 1, :3, 3]).norm()
    assert torch.allclose(rel[0, 1, :3, 3].norm(), d, atol=1e-5)
    assert torch.allclose(scale_translations(rel, torch.tensor([2.0]))[0, 1, :3, 3].norm(), 2 * d, atol=1e-5)
