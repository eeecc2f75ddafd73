"""Tiny synthetic scenes for the loader tests, written in each dataset layout by the tests themselves.

The scene is the inside of a box room (x, y in [-3, 3], z in [0, 2.5], z up) seen by pinhole cameras (OpenCV
c2w, pixel centres at +0.5). Because the room is convex and the cameras are inside it, every surface point seen
by one camera is seen by any other unoccluded, so depth reprojection between views must agree everywhere.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from openlsm.cameras import invert_rigid, look_at, make_K, project, unproject_depth

ROOM_LO, ROOM_HI = np.array([-3.0, -3.0, 0.0]), np.array([3.0, 3.0, 2.5])
# face order: x-, x+, y-, y+, z- (floor), z+ (ceiling)
FACE_NAMES = ["wall", "chair", "bookshelf", "table", "floor", "ceiling"]


def true_K(W: int, H: int, f_scale: float = 0.9) -> np.ndarray:
    """openlsm-convention K (principal point slightly off-centre so half-pixel mistakes would show)."""
    f = f_scale * W
    return np.array([[f, 0, W / 2 + 0.7], [0, f * 1.02, H / 2 - 0.4], [0, 0, 1]], dtype=np.float64)


def camera_path(n: int, seed: int = 0) -> np.ndarray:
    """n OpenCV c2w [n, 4, 4] float64 along a smooth path inside the room."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        eye = np.array([-1.5 + 0.08 * k, -1.0 + 0.04 * k, 1.3 + 0.05 * np.sin(k)])  # stays inside for k < 50
        a = 0.3 + 0.03 * k + 0.02 * rng.standard_normal()
        target = eye + np.array([np.cos(a), np.sin(a), -0.15 + 0.005 * k])
        out.append(look_at(torch.tensor(eye), torch.tensor(target), torch.tensor([0.0, 0.0, 1.0])).numpy())
    return np.stack(out)


def render(K: np.ndarray, c2w: np.ndarray, H: int, W: int) -> dict:
    """Exact z-depth [H,W], face index [H,W] and a textured RGB uint8 [H,W,3] of the box room."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    dirs = dirs_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    ts = []
    for axis in range(3):
        d = dirs[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            for bound in (ROOM_LO[axis], ROOM_HI[axis]):
                t = (bound - o[axis]) / d
                ts.append(np.where(t > 1e-9, t, np.inf))
    ts = np.stack(ts, -1)  # [H, W, 6]: x-, x+, y-, y+, z-, z+
    face = ts.argmin(-1)
    depth = ts.min(-1)  # dirs_cam has z = 1, so the ray parameter is the z-depth
    pts = o + dirs * depth[..., None]
    checker = (np.floor(pts[..., 0] * 2) + np.floor(pts[..., 1] * 2) + np.floor(pts[..., 2] * 2)) % 2
    palette = np.array([[200, 80, 60], [60, 160, 90], [70, 90, 200], [210, 190, 60], [150, 150, 150], [240, 240, 240]])
    rgb = (palette[face] * (0.6 + 0.4 * checker[..., None])).astype(np.uint8)
    return {"depth": depth, "face": face, "rgb": rgb}


def scene_frames(n: int, H: int, W: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    K = true_K(W, H)
    c2ws = camera_path(n, seed)
    return K, c2ws, [render(K, c, H, W) for c in c2ws]


# --- writers ------------------------------------------------------------------------------------------------------

def save_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(rgb).save(path, format=fmt, quality=95) if fmt == "JPEG" else Image.fromarray(rgb).save(path)


def save_u16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.round(values), 0, 65535).astype(np.uint16)
    Image.fromarray(arr).save(path)


def save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def integer_centre_K(K: np.ndarray) -> np.ndarray:
    """The same camera written in the integer-pixel-centre convention (Open3D, NICE-SLAM, DUSt3R)."""
    K = K.copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


# --- checks -------------------------------------------------------------------------------------------------------

def reprojection_errors(sample: dict, a: int = 0, b: int = 1) -> torch.Tensor:
    """Relative z errors of view a's valid depth reprojected into view b.

    View b's depth is sampled bilinearly at the projected point (pixel centres at +0.5), where its 4 neighbours
    are valid; nearest sampling would add discretisation errors of several % on slanted walls at tiny sizes.
    """
    D = sample["depths"].double()
    Ks, c2w, valid = sample["Ks"].double(), sample["c2w"].double(), sample["valid"]
    H, W = D.shape[-2:]
    pts = unproject_depth(D[a], Ks[a], c2w[a])[valid[a]]  # [N, 3]
    uv, z = project(pts, Ks[b], invert_rigid(c2w[b]))
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5  # continuous pixel-index coordinates
    j0, i0 = torch.floor(x).long(), torch.floor(y).long()
    inside = (j0 >= 0) & (j0 < W - 1) & (i0 >= 0) & (i0 < H - 1) & (z > 0)
    x, y, j0, i0, z = x[inside], y[inside], j0[inside], i0[inside], z[inside]
    fx, fy = x - j0, y - i0
    corners = [(i0, j0, (1 - fx) * (1 - fy)), (i0, j0 + 1, fx * (1 - fy)), (i0 + 1, j0, (1 - fx) * fy),
               (i0 + 1, j0 + 1, fx * fy)]
    ok = torch.stack([valid[b][i, j] for i, j, _ in corners]).all(0)
    d = sum(D[b][i, j] * w for i, j, w in corners)
    return (z[ok] - d[ok]).abs() / d[ok]


def assert_reprojects(sample: dict, a: int = 0, b: int = 1, tol: float = 0.02, frac: float = 0.9,
                      min_points: int = 50) -> None:
    err = reprojection_errors(sample, a, b)
    assert err.numel() >= min_points, f"only {err.numel()} points of view {a} land on valid pixels of view {b}"
    good = float((err < tol).double().mean())
    assert good >= frac, f"only {good:.3f} of reprojected depths agree within {tol:.0%}"


def as_K_tensor(K: np.ndarray) -> torch.Tensor:
    return make_K(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
