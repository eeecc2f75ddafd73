"""Pinhole cameras in one convention: OpenCV axes (x right, y down, z forward).

`c2w` is camera-to-world, `viewmats` is world-to-camera (as gsplat), and pixel (i, j) of an image is
sampled at (j + 0.5, i + 0.5), so a COLMAP K is used as-is.

    cams = Cameras.from_fov(fov_x_deg=60, width=256, height=192, c2w=torch.eye(4))
    origins, dirs = cams.rays()            # [1, 192, 256, 3] each
    uv, z = project(points, cams.Ks, cams.viewmats)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def make_K(fx, fy, cx, cy) -> Tensor:
    """Intrinsics from scalars or tensors of equal shape -> [..., 3, 3]."""
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=torch.float32) for v in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    K = torch.zeros(*fx.shape, 3, 3, dtype=fx.dtype)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = fx, fy, cx, cy, 1.0
    return K


def invert_rigid(T: Tensor) -> Tensor:
    """Inverse of rigid transforms [..., 4, 4] (exact, no general matrix inverse)."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Ks:  [..., 3, 3] pixel intrinsics.
    c2w: [..., 4, 4] camera-to-world, OpenCV axes.
    """

    Ks: Tensor
    c2w: Tensor
    width: int
    height: int

    def __post_init__(self):
        if self.Ks.shape[-2:] != (3, 3) or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras need Ks [...,3,3] and c2w [...,4,4], got {tuple(self.Ks.shape)} "
                             f"and {tuple(self.c2w.shape)}")
        if self.Ks.shape[:-2] != self.c2w.shape[:-2]:
            shape = torch.broadcast_shapes(self.Ks.shape[:-2], self.c2w.shape[:-2])
            self.Ks, self.c2w = self.Ks.expand(*shape, 3, 3), self.c2w.expand(*shape, 4, 4)
        self.width, self.height = int(self.width), int(self.height)

    @classmethod
    def from_fov(cls, fov_x_deg: float, width: int, height: int, c2w: Tensor) -> Cameras:
        """Centred principal point, square pixels, horizontal field of view in degrees."""
        f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
        K = make_K(f, f, width / 2, height / 2).to(c2w)
        return cls(K.expand(*c2w.shape[:-2], 3, 3).clone(), c2w, width, height)

    @property
    def viewmats(self) -> Tensor:
        """World-to-camera [..., 4, 4]."""
        return invert_rigid(self.c2w)

    @property
    def batch_shape(self) -> torch.Size:
        return self.c2w.shape[:-2]

    @property
    def centers(self) -> Tensor:
        return self.c2w[..., :3, 3]

    @property
    def fov_x(self) -> Tensor:
        """Horizontal field of view in radians [...]."""
        return 2 * torch.atan(0.5 * self.width / self.Ks[..., 0, 0])

    def __len__(self) -> int:
        return self.c2w.shape[0] if self.c2w.dim() > 2 else 1

    def __getitem__(self, idx) -> Cameras:
        return Cameras(self.Ks[idx], self.c2w[idx], self.width, self.height)

    def to(self, *args, **kwargs) -> Cameras:
        return Cameras(self.Ks.to(*args, **kwargs), self.c2w.to(*args, **kwargs), self.width, self.height)

    def flatten(self) -> Cameras:
        return Cameras(self.Ks.reshape(-1, 3, 3), self.c2w.reshape(-1, 4, 4), self.width, self.height)

    def rescale(self, width: int, height: int) -> Cameras:
        """Same cameras for another image size (intrinsics scaled about the image corner)."""
        sx, sy = width / self.width, height / self.height
        K = self.Ks.clone()
        K[..., 0, :] *= sx
        K[..., 1, :] *= sy
        return Cameras(K, self.c2w, width, height)

    def crop(self, left: int, top: int, width: int, height: int) -> Cameras:
        K = self.Ks.clone()
        K[..., 0, 2] -= left
        K[..., 1, 2] -= top
        return Cameras(K, self.c2w, width, height)

    def rays(self) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres, [..., H, W, 3] each."""
        dirs_cam = pixel_directions(self.Ks, self.width, self.height)  # [..., H, W, 3], z = 1
        R = self.c2w[..., None, None, :3, :3]
        dirs = (R @ dirs_cam[..., None])[..., 0]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.c2w[..., None, None, :3, 3].expand_as(dirs)
        return origins, dirs


def pixel_grid(width: int, height: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel-centre coordinates (u, v) = (j + 0.5, i + 0.5) -> [H, W, 2]."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u, v], -1)


def pixel_directions(Ks: Tensor, width: int, height: int) -> Tensor:
    """Camera-frame directions with z = 1 through each pixel centre -> [..., H, W, 3]."""
    uv = pixel_grid(width, height, Ks.device, Ks.dtype)
    K = Ks[..., None, None, :, :]
    x = (uv[..., 0] - K[..., 0, 2]) / K[..., 0, 0]
    y = (uv[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], -1)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply [..., 4, 4] to points [..., N, 3]."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def project(points: Tensor, Ks: Tensor, viewmats: Tensor) -> tuple[Tensor, Tensor]:
    """World points [..., N, 3] -> pixel coords [..., N, 2] and camera z [..., N]."""
    pc = transform_points(viewmats, points)
    z = pc[..., 2]
    uv_h = pc @ Ks.transpose(-1, -2)
    return uv_h[..., :2] / z[..., None], z


def unproject_depth(depth: Tensor, Ks: Tensor, c2w: Tensor) -> Tensor:
    """z-depth maps [..., H, W] -> world points [..., H, W, 3]."""
    H, W = depth.shape[-2:]
    pts_cam = pixel_directions(Ks, W, H) * depth[..., None]
    R, t = c2w[..., None, None, :3, :3], c2w[..., None, None, :3, 3]
    return (R @ pts_cam[..., None])[..., 0] + t


# --- conventions -------------------------------------------------------------------------------------------------

_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_to_opencv(c2w_gl: Tensor) -> Tensor:
    """nerfstudio/Blender/OpenGL camera-to-world (x right, y up, z back) -> OpenCV c2w."""
    return c2w_gl @ _FLIP_YZ.to(c2w_gl)


def opencv_to_opengl(c2w_cv: Tensor) -> Tensor:
    return c2w_cv @ _FLIP_YZ.to(c2w_cv)


# --- rotations ---------------------------------------------------------------------------------------------------

def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Quaternions wxyz [..., 4] (any norm) -> rotation matrices [..., 3, 3]."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions wxyz [..., 4] with w >= 0."""
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate formulas; pick the numerically largest denominator per element.
    cands = torch.stack([
        torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [..., 4, 4]
    diag = torch.stack([1 + t, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """OpenCV c2w [..., 4, 4] at `eye` looking at `target`; `up` is the world up (image y points against it)."""
    eye = torch.as_tensor(eye)
    eye = eye if eye.is_floating_point() else eye.float()
    target = torch.as_tensor(target, dtype=eye.dtype)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype) if up is None else torch.as_tensor(up, dtype=eye.dtype)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up.expand_as(z), dim=-1)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    y = torch.linalg.cross(z, x, dim=-1)
    c2w = torch.zeros(*z.shape[:-1], 4, 4, dtype=eye.dtype)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1
    return c2w
