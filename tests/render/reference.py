"""Brute-force float64 reference renderer written independently of openlsm.render: every pixel against every
Gaussian, one Gaussian at a time in depth order. Shares only the documented conventions (gsplat's)."""

import math

import torch

TILE = 16


def quat_to_R(q):
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.empty(*q.shape[:-1], 3, 3, dtype=q.dtype)
    R[..., 0, 0], R[..., 0, 1], R[..., 0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
    R[..., 1, 0], R[..., 1, 1], R[..., 1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
    R[..., 2, 0], R[..., 2, 1], R[..., 2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    return R


def reference_render(means, quats, scales, opacities, values, viewmat, K, W, H, max_alpha, near=0.01):
    """values [N, D] -> (accumulated [H, W, D], alpha [H, W], depth-weighted sum [H, W])."""
    means, quats, scales, opacities, values = (t.double() for t in (means, quats, scales, opacities, values))
    viewmat, K = viewmat.double(), K.double()
    fx, fy, cx, cy = K[0, 0].item(), K[1, 1].item(), K[0, 2].item(), K[1, 2].item()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pix_tile = torch.stack([torch.div(u, TILE, rounding_mode="floor"), torch.div(v, TILE, rounding_mode="floor")], -1)
    acc = torch.zeros(H, W, values.shape[1], dtype=torch.float64)
    dep = torch.zeros(H, W, dtype=torch.float64)
    T = torch.ones(H, W, dtype=torch.float64)
    alive = torch.ones(H, W, dtype=torch.bool)
    pc = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    order = torch.argsort(pc[:, 2], stable=True)
    for i in order.tolist():
        x, y, z = pc[i].tolist()
        if z < near:
            continue
        R = quat_to_R(quats[i])
        S = torch.diag(scales[i])
        cov = viewmat[:3, :3] @ R @ S @ S @ R.T @ viewmat[:3, :3].T
        limx, limy = 1.3 * 0.5 * W / fx, 1.3 * 0.5 * H / fy
        tx = z * min((W - cx) / fx + 0.3 * 0.5 * W / fx, max(-(cx / fx + 0.3 * 0.5 * W / fx), x / z))
        ty = z * min((H - cy) / fy + 0.3 * 0.5 * H / fy, max(-(cy / fy + 0.3 * 0.5 * H / fy), y / z))
        del limx, limy
        J = torch.tensor([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]], dtype=torch.float64)
        c2 = J @ cov @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        if torch.det(c2) <= 0:
            continue
        conic = torch.linalg.inv(c2)
        mx, my = fx * x / z + cx, fy * y / z + cy
        o = opacities[i].item()
        if o < 1 / 255:
            continue
        ext = min(3.33, math.sqrt(2 * math.log(o * 255)))
        rx, ry = math.ceil(ext * math.sqrt(c2[0, 0])), math.ceil(ext * math.sqrt(c2[1, 1]))
        if mx + rx <= 0 or mx - rx >= W or my + ry <= 0 or my - ry >= H:
            continue
        t0x, t1x = math.floor((mx - rx) / TILE), math.ceil((mx + rx) / TILE)
        t0y, t1y = math.floor((my - ry) / TILE), math.ceil((my + ry) / TILE)
        in_tiles = (pix_tile[..., 0] >= t0x) & (pix_tile[..., 0] < t1x) & (pix_tile[..., 1] >= t0y) & \
            (pix_tile[..., 1] < t1y)
        dx, dy = u - mx, v - my
        sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
        alpha = torch.clamp(o * torch.exp(-sigma), max=max_alpha)
        use = in_tiles & alive & (sigma >= 0) & (alpha >= 1 / 255)
        T_next = T * (1 - alpha)
        stop = use & (T_next <= 1e-4)
        alive &= ~stop
        use &= ~stop
        w = torch.where(use, alpha * T, torch.zeros_like(T))
        acc += w[..., None] * values[i]
        dep += w * z
        T = torch.where(use, T_next, T)
    return acc, 1 - T, dep
