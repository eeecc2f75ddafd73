"""Camera paths for novel-view videos, all returning OpenCV c2w [F, 4, 4].

    c2ws = interpolate_poses(cams.c2w, frames=60)           # through the given poses, slerp + linear
    c2ws = ellipse_path(cams.c2w, frames=90)                # around the cameras, looking at their focus
    c2ws = pull_back(cams.c2w[0], distance=0.5, frames=30)  # dolly backwards along the view direction
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cameras import look_at, quat_to_rotmat, rotmat_to_quat


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions q0, q1 [4] at times t [F] -> [F, 4] (shortest arc)."""
    q0, q1 = q0 / q0.norm(), q1 / q1.norm()
    dot = (q0 * q1).sum()
    if dot < 0:
        q1, dot = -q1, -dot
    t = t[:, None]
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact to float precision
        q = q0 + t * (q1 - q0)
    else:
        theta = torch.acos(dot.clamp(-1, 1))
        q = (torch.sin((1 - t) * theta) * q0 + torch.sin(t * theta) * q1) / torch.sin(theta)
    return q / q.norm(dim=-1, keepdim=True)


def interpolate_poses(c2ws: Tensor, frames: int) -> Tensor:
    """Piecewise path through key poses [K, 4, 4]: rotations slerped, positions linear. Returns [frames, 4, 4]."""
    if c2ws.shape[0] < 2:
        raise ValueError("interpolate_poses needs at least two poses")
    s = torch.linspace(0, c2ws.shape[0] - 1, frames, dtype=c2ws.dtype)
    seg = s.floor().long().clamp(max=c2ws.shape[0] - 2)
    t = s - seg
    quats = rotmat_to_quat(c2ws[:, :3, :3])
    out = torch.zeros(frames, 4, 4, dtype=c2ws.dtype)
    out[:, 3, 3] = 1
    for k in range(c2ws.shape[0] - 1):
        m = seg == k
        if m.any():
            out[m, :3, :3] = quat_to_rotmat(slerp(quats[k], quats[k + 1], t[m]))
            out[m, :3, 3] = (1 - t[m, None]) * c2ws[k, :3, 3] + t[m, None] * c2ws[k + 1, :3, 3]
    return out


def focus_point(c2ws: Tensor) -> Tensor:
    """Point closest (least squares) to all optical axes [3]; falls back to 1 unit ahead of the mean camera."""
    o, d = c2ws[:, :3, 3], c2ws[:, :3, 2]
    A = torch.eye(3, dtype=c2ws.dtype)[None] - d[:, :, None] * d[:, None, :]  # projector orthogonal to each axis
    M, b = A.sum(0), (A @ o[:, :, None]).sum(0)[:, 0]
    if torch.linalg.matrix_rank(M) < 3 or c2ws.shape[0] < 2:
        return o.mean(0) + d.mean(0)
    p = torch.linalg.solve(M, b)
    # Parallel-ish axes put the solution far away or behind: keep it in front at a sane distance.
    if ((p - o) * d).sum(-1).min() <= 0:
        return o.mean(0) + d.mean(0)
    return p


def ellipse_path(c2ws: Tensor, frames: int, radius_scale: float = 1.0, up: Tensor | None = None) -> Tensor:
    """Cameras on an ellipse through the spread of the input centres (a small circle for two), looking at their
    common focus point; `up` defaults to the mean camera's -y axis."""
    centres = c2ws[:, :3, 3]
    mean = centres.mean(0)
    target = focus_point(c2ws)
    up = -c2ws[:, :3, 1].mean(0) if up is None else up.to(c2ws)
    up = up / up.norm()
    fwd = target - mean
    fwd = fwd / fwd.norm().clamp_min(1e-9)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm().clamp_min(1e-9)
    true_up = torch.linalg.cross(right, fwd)
    spread = centres - mean
    ax = (spread @ right).abs().max().clamp_min(0.05 * (target - mean).norm()) * radius_scale
    ay = (spread @ true_up).abs().max().clamp_min(0.5 * ax / radius_scale) * radius_scale
    theta = torch.linspace(0, 2 * torch.pi, frames + 1, dtype=c2ws.dtype)[:-1]
    eyes = mean + ax * torch.cos(theta)[:, None] * right + ay * torch.sin(theta)[:, None] * true_up
    return look_at(eyes, target.expand_as(eyes), up)


def spiral_path(c2ws: Tensor, frames: int, rotations: float = 2.0, depth_scale: float = 0.3) -> Tensor:
    """An ellipse whose eyes also move forward and back along the viewing direction."""
    path = ellipse_path(c2ws, frames)
    mean, target = c2ws[:, :3, 3].mean(0), focus_point(c2ws)
    fwd = target - mean
    phase = torch.linspace(0, 2 * torch.pi * rotations, frames, dtype=c2ws.dtype)
    path[:, :3, 3] += depth_scale * torch.sin(phase)[:, None] * fwd
    return path


def pull_back(c2w: Tensor, distance: float, frames: int) -> Tensor:
    """Move one camera [4, 4] backwards along its optical axis by up to `distance` (same rotation)."""
    s = torch.linspace(0, distance, frames, dtype=c2w.dtype)
    out = c2w[None].repeat(frames, 1, 1)
    out[:, :3, 3] -= s[:, None] * c2w[:3, 2]
    return out
