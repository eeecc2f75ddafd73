"""Real spherical harmonics up to degree 3, in the basis and sign convention of 3DGS viewers.

    rgb = eval_sh(sh, dirs)     # sh [..., K, 3], dirs [..., 3] (any norm) -> [..., 3], before the +0.5 offset
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
C1 = 0.4886025119029199  # sqrt(3) / (2 sqrt(pi))
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Basis functions at unit directions [..., 3] -> [..., (degree+1)^2]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def eval_sh(sh: Tensor, dirs: Tensor) -> Tensor:
    """Colour from SH coefficients sh [..., K, 3] seen along dirs [..., 3] -> [..., 3] (no +0.5, no clamp)."""
    degree = round(math.sqrt(sh.shape[-2])) - 1
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, dirs)  # [..., K]
    return (basis[..., :, None] * sh).sum(-2)
