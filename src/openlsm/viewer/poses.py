"""OpenCV cameras -> viser poses.

viser documents its camera frustums and browser cameras in the OpenCV convention (+z forward, +x right, +y down,
pose = camera-to-world), the same as openlsm's, so a c2w maps over unchanged: wxyz is the quaternion of its
rotation and position its translation. tests/viewer checks this in a real browser.

    wxyz, position = c2w_to_wxyz_position(cams.c2w)          # [V, 4], [V, 3]
    position, look_at, up = initial_view(cams.c2w[0], gaussians.means, cams.Ks[0], cams.width, cams.height)
    fov_y, aspect = frustum_fov_aspect(cams.Ks[0], cams.width, cams.height)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..cameras import rotmat_to_quat


def c2w_to_wxyz_position(c2w: Tensor) -> tuple[Tensor, Tensor]:
    """OpenCV camera-to-world [..., 4, 4] -> viser (wxyz [..., 4], position [..., 3])."""
    c2w = c2w.double()
    return rotmat_to_quat(c2w[..., :3, :3]), c2w[..., :3, 3]


def frustum_fov_aspect(K: Tensor, width: int, height: int) -> tuple[float, float]:
    """Vertical field of view (radians) and width/height aspect of a pinhole K [3, 3]."""
    return 2 * math.atan(height / (2 * float(K[1, 1]))), width / height


def scene_extent(points: Tensor) -> float:
    """Robust scene size: diagonal of the 2-98 % box of `points` [N, 3] (at least 1e-3)."""
    lo, hi = torch.quantile(points.float(), torch.tensor([0.02, 0.98]), dim=0)
    return max(float((hi - lo).norm()), 1e-3)


def initial_view(c2w: Tensor, points: Tensor, K: Tensor | None = None, width: int = 0, height: int = 0,
                 pull_back: float = 0.5, min_visible: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """Orbit-camera form (position, look_at, up) [3] each of an OpenCV c2w [4, 4] for the viewer's first view.

    Looks along the camera's +z at the median depth d of the points it sees, from d * pull_back behind it (so its
    frustum shows); image up is -y. If under `min_visible` of `points` [N, 3] fall inside the image (K [3, 3],
    width, height; without K: in front), it looks at their median from 1.5 scene extents back instead."""
    c2w = c2w.double()
    R, t = c2w[:3, :3], c2w[:3, 3]
    local = (points.double() - t) @ R  # [N, 3] camera frame
    z = local[:, 2]
    seen = z > 1e-9
    if K is not None:
        uv = local[:, :2] / z.clamp_min(1e-9)[:, None] @ K.double()[:2, :2].T + K.double()[:2, 2]  # [N, 2]
        seen &= (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    forward, up = R[:, 2], -R[:, 1]
    if seen.double().mean() >= min_visible:
        d = float(z[seen].median())
        return t - pull_back * d * forward, t + d * forward, up
    centre = points.double().median(0).values
    return centre - 1.5 * scene_extent(points) * forward, centre, up
