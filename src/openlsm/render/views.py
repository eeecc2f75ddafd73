"""Key cameras and camera paths for rendering a scene that may come without cameras."""

from __future__ import annotations

from pathlib import Path

import torch

from ..cameras import Cameras, look_at
from ..cameras.io import read_cameras_json, read_colmap_text, read_transforms_json
from ..cameras.paths import ellipse_path, interpolate_poses, spiral_path
from ..errors import OpenLSMError
from ..gaussians import Gaussians


def load_key_cameras(path: Path) -> Cameras:
    path = Path(path)
    if path.is_dir():
        return read_colmap_text(path)[0]
    if not path.exists():
        raise OpenLSMError(f"camera file not found: {path}")
    import json

    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenLSMError(f"{path} is not valid JSON") from None
    return (read_transforms_json if "frames" in doc else read_cameras_json)(path)[0]


def default_cameras(g: Gaussians, fov_deg: float, width: int, height: int) -> Cameras:
    """Two cameras looking at the scene's robust centre from where its extent fits the view (OpenCV -y is up)."""
    means = g.means.detach().float().cpu()
    w = g.opacities.detach().float().cpu() > 0.05
    pts = means[w] if w.sum() > 10 else means
    lo, hi = pts.quantile(0.05, 0), pts.quantile(0.95, 0)
    centre, extent = (lo + hi) / 2, (hi - lo).norm().clamp_min(1e-3)
    dist = 0.5 * float(extent) / torch.tan(torch.deg2rad(torch.tensor(fov_deg / 2))) + 0.5 * float(extent)
    up = torch.tensor([0.0, -1.0, 0.0])
    eyes = centre + torch.tensor([[-0.15, -0.1, -1.0], [0.15, -0.1, -1.0]]) * dist
    c2w = look_at(eyes, centre.expand(2, 3), up)
    return Cameras.from_fov(fov_deg, width, height, c2w)


def make_path(c2ws: torch.Tensor, kind: str, frames: int) -> torch.Tensor:
    if kind == "interpolate":
        return interpolate_poses(c2ws, frames) if len(c2ws) > 1 else c2ws.expand(frames, 4, 4)
    if kind == "spiral":
        return spiral_path(c2ws, frames)
    return ellipse_path(c2ws, frames)
