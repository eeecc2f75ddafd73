"""Pure-PyTorch Gaussian rasteriser with gsplat's conventions (runs on CPU and GPU, differentiable).

Projection (EWA, "classic" mode): 2D covariance J W Σ Wᵀ Jᵀ + 0.3·I, the Jacobian evaluated at the mean clamped
to 1.3× the field of view, opacity-aware bounding boxes (extent min(3.33, sqrt(2 ln(255·o))) σ per axis).
Rasterisation: 16×16 pixel tiles, Gaussians sorted by camera depth, front-to-back compositing with
alpha = min(MAX_ALPHA, o·exp(-½ dᵀ Σ⁻¹ d)), alphas under 1/255 skipped, and a pixel stops before the Gaussian
that would bring its transmittance to 1e-4 or below. Pixel (i, j) is sampled at (j + 0.5, i + 0.5).

Instead of a per-pixel loop, each tile's depth-sorted list is processed in chunks of `chunk` Gaussians at
once: alphas [tiles, 256, chunk], an exclusive cumulative product for the transmittance, and one batched matmul
to accumulate all channels. Tiles whose pixels are all saturated leave the active set early.

    means2d, depths, conics, radii = project_gaussians(means, quats, scales, opacities, viewmats, Ks, W, H)
    out, alpha = rasterize(means2d[0], conics[0], opacities, depths[0], radii[0], values, W, H)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..cameras.cameras import quat_to_rotmat

TILE = 16
ALPHA_MIN = 1.0 / 255.0
MAX_ALPHA = 0.999
T_MIN = 1e-4


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """Σ = R S Sᵀ Rᵀ  [..., N, 3, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, near: float = 0.01, far: float = 1e10,
                      eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project N Gaussians into C cameras.

    means [N, 3], quats [N, 4], scales [N, 3], opacities [N], viewmats [C, 4, 4], Ks [C, 3, 3]
    -> means2d [C, N, 2], depths [C, N], conics [C, N, 3] (a, b, c of Σ2d⁻¹), radii [C, N, 2] int (0 = culled).
    """
    R, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]  # [C, 1, 3, 3], [C, 1, 3]
    pc = (R @ means[None, :, :, None])[..., 0] + t  # [C, N, 3]
    x, y, z = pc.unbind(-1)
    covar_c = R @ quat_scale_to_covar(quats, scales)[None] @ R.transpose(-1, -2)  # [C, N, 3, 3]

    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]
    zs = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)  # culled below anyway; avoid inf in autograd
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.minimum((width - cx) / fx + 0.3 * tan_x, torch.maximum(-(cx / fx + 0.3 * tan_x), x / zs))
    ty = zs * torch.minimum((height - cy) / fy + 0.3 * tan_y, torch.maximum(-(cy / fy + 0.3 * tan_y), y / zs))
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], -1).reshape(*zs.shape, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    with torch.no_grad():
        op = opacities.detach()[None].expand_as(z)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)), max=3.33)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        m = means2d.detach()
        keep = (z >= near) & (z <= far) & (det > 0) & (op >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
        keep &= (m[..., 0] + rx > 0) & (m[..., 0] - rx < width) & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height)
        radii = torch.stack([rx, ry], -1).to(torch.int32) * keep[..., None]
    return means2d, z, conics, radii


def _tile_lists(means2d: Tensor, depths: Tensor, radii: Tensor, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor]:
    """Depth-sorted Gaussian ids per tile, padded with -1: [tiles, max_count], and counts [tiles]."""
    device = means2d.device
    visible = (radii > 0).all(-1)
    ids = visible.nonzero()[:, 0]
    m = means2d.detach()[ids]
    r = radii[ids].to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / TILE).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / TILE).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / TILE).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / TILE).clamp(0, tiles_y).long()
    nx, ny = x1 - x0, y1 - y0
    counts = nx * ny
    n_tiles = tiles_x * tiles_y
    if counts.sum() == 0:
        return torch.full((n_tiles, 0), -1, dtype=torch.long, device=device), torch.zeros(n_tiles, dtype=torch.long,
                                                                                            device=device)
    owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)  # [I]
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(owner), device=device) - start[owner]
    tx = x0[owner] + local % nx[owner]
    ty = y0[owner] + local // nx[owner]
    tile_ids = ty * tiles_x + tx
    rank = torch.empty_like(ids)
    rank[torch.argsort(depths.detach()[ids], stable=True)] = torch.arange(len(ids), device=device)
    order = torch.argsort(tile_ids * len(ids) + rank[owner])
    tile_ids, gids = tile_ids[order], ids[owner[order]]
    tile_counts = torch.bincount(tile_ids, minlength=n_tiles)
    tile_start = torch.cumsum(tile_counts, 0) - tile_counts
    pos = torch.arange(len(gids), device=device) - tile_start[tile_ids]
    table = torch.full((n_tiles, int(tile_counts.max())), -1, dtype=torch.long, device=device)
    table[tile_ids, pos] = gids
    return table, tile_counts


def rasterize(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, values: Tensor,
              width: int, height: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Composite one camera's projected Gaussians.

    means2d [N, 2], conics [N, 3], opacities [N], depths [N], radii [N, 2], values [N, D]
    -> accumulated values [H, W, D] (Σ wᵢ vᵢ) and alpha [H, W] (Σ wᵢ = 1 - T).
    """
    device, dtype = values.device, values.dtype
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    table, counts = _tile_lists(means2d, depths, radii, tiles_x, tiles_y)
    n_tiles, D = tiles_x * tiles_y, values.shape[-1]

    # pixel centres of every tile [tiles, 256, 2]
    local = torch.stack(torch.meshgrid(torch.arange(TILE, device=device), torch.arange(TILE, device=device),
                                       indexing="xy"), -1).reshape(-1, 2).to(dtype) + 0.5
    tid = torch.arange(n_tiles, device=device)
    origin = torch.stack([tid % tiles_x, tid // tiles_x], -1).to(dtype) * TILE
    pix = origin[:, None, :] + local[None]

    acc = values.new_zeros(n_tiles, TILE * TILE, D)
    T = torch.ones(n_tiles, TILE * TILE, dtype=dtype, device=device)
    done = torch.zeros(n_tiles, TILE * TILE, dtype=torch.bool, device=device)
    # Gaussian parameters gathered by table entries; index N is a padding row that yields alpha = 0.
    pad = lambda t: torch.cat([t, t.new_zeros(1, *t.shape[1:])], 0)  # noqa: E731
    m_p, c_p, o_p, v_p = pad(means2d), pad(conics), pad(opacities), pad(values)
    table = torch.where(table < 0, torch.full_like(table, len(means2d)), table)

    for s in range(0, table.shape[1], chunk):
        active = ((counts > s) & ~done.all(1)).nonzero()[:, 0]
        if len(active) == 0:
            break
        g = table[active, s:s + chunk]  # [A, k]
        d = pix[active][:, :, None, :] - m_p[g][:, None, :, :]  # [A, P, k, 2]
        con = c_p[g][:, None]  # [A, 1, k, 3]
        sigma = 0.5 * (con[..., 0] * d[..., 0] ** 2 + con[..., 2] * d[..., 1] ** 2) + con[..., 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp(o_p[g][:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        T0, dn = T[active], done[active]
        T_after = T0[..., None] * torch.cumprod(1 - alpha, -1)  # [A, P, k]
        include = (T_after > T_MIN) & ~dn[..., None]
        T_before = torch.cat([T0[..., None], T_after[..., :-1]], -1)
        w = torch.where(include, alpha * T_before, torch.zeros_like(alpha))
        contrib = w @ v_p[g]  # [A, P, D]
        acc = acc.index_add(0, active, contrib)
        T = T.index_put((active,), T0 - w.sum(-1))
        done = done.index_put((active,), dn | (T_after[..., -1] <= T_MIN))

    alpha_img = 1 - T
    img = acc.reshape(tiles_y, tiles_x, TILE, TILE, D).permute(0, 2, 1, 3, 4).reshape(tiles_y * TILE, tiles_x * TILE, D)
    a_img = alpha_img.reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3).reshape(tiles_y * TILE, tiles_x * TILE)
    return img[:height, :width], a_img[:height, :width]
