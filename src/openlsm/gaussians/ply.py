"""3DGS PLY files, read and written by property name.

Written layout (binary little-endian, one `vertex` element, all float32), the order 3DGS viewers expect:
    x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3 semantic_0..D-1
`f_rest` is channel-major (all R coefficients, then G, then B); opacity is a logit, scales are logs,
rotations are wxyz. Reading accepts any property order, with or without normals, any SH degree.

    save_ply("scene.ply", gaussians)
    g = load_ply("scene.ply")
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..errors import OpenLSMError
from .gaussians import Gaussians, sh_degree_from_k


def ply_property_names(sh_degree: int, feature_dim: int, normals: bool = True) -> list[str]:
    k = (sh_degree + 1) ** 2
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else [])
    names += [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    names += [f"semantic_{i}" for i in range(feature_dim)]
    return names


def gaussians_to_array(g: Gaussians, normals: bool = True) -> np.ndarray:
    """One scene -> float32 array [N, P] in `ply_property_names` order."""
    if g.means.dim() != 2:
        raise ValueError("save_ply takes one scene (means [N, 3]); index a batch first")
    g = g.detach().to("cpu", torch.float32)
    n = len(g)
    cols = [g.means]
    if normals:
        cols.append(torch.zeros(n, 3))
    cols += [g.sh[:, 0, :], g.sh[:, 1:, :].transpose(1, 2).reshape(n, -1),  # channel-major rest
             g.opacity_logits[:, None], g.log_scales, g.quats]
    if g.features is not None:
        cols.append(g.features)
    return torch.cat(cols, 1).numpy()


def save_ply(path: str | os.PathLike, g: Gaussians, normals: bool = True) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written PLY."""
    path = Path(path)
    arr = gaussians_to_array(g, normals)
    names = ply_property_names(g.sh_degree, g.feature_dim, normals)
    vertex = np.empty(arr.shape[0], dtype=[(nm, "f4") for nm in names])
    for i, nm in enumerate(names):
        vertex[nm] = arr[:, i]
    fd, tmp = tempfile.mkstemp(suffix=".ply.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _indexed(names: set[str], prefix: str) -> list[str]:
    found = sorted((int(m.group(1)), n) for n in names if (m := re.fullmatch(rf"{prefix}_(\d+)", n)))
    idx = [i for i, _ in found]
    if idx != list(range(len(idx))):
        raise OpenLSMError(f"PLY properties {prefix}_* are not numbered 0..{len(idx) - 1} without gaps")
    return [n for _, n in found]


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY written by any tool; raise OpenLSMError with a one-line reason if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise OpenLSMError(f"PLY file not found: {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # noqa: BLE001  plyfile raises several types for malformed headers/bodies
        raise OpenLSMError(f"{path} is not a readable PLY file ({type(e).__name__}: {e})".splitlines()[0]) from None
    if "vertex" not in [el.name for el in ply.elements]:
        raise OpenLSMError(f"{path} has no 'vertex' element, so it holds no Gaussians")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [n for n in required if n not in names]
    if missing:
        raise OpenLSMError(f"{path} is not a 3DGS PLY: missing properties {', '.join(missing)}")
    rest = _indexed(names, "f_rest")
    if len(rest) % 3:
        raise OpenLSMError(f"{path}: {len(rest)} f_rest properties is not a multiple of 3")
    k = len(rest) // 3 + 1
    try:
        sh_degree_from_k(k)
    except ValueError as e:
        raise OpenLSMError(f"{path}: {e}") from None
    sem = _indexed(names, "semantic")

    def col(ns: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(v[n], dtype=np.float32) for n in ns], 1)) \
            if ns else torch.zeros(len(v), 0)

    n = len(v)
    dc = col(["f_dc_0", "f_dc_1", "f_dc_2"])
    sh_rest = col(rest).reshape(n, 3, k - 1).transpose(1, 2)
    g = Gaussians(means=col(["x", "y", "z"]), quats=col([f"rot_{i}" for i in range(4)]),
                  log_scales=col([f"scale_{i}" for i in range(3)]), opacity_logits=col(["opacity"])[:, 0],
                  sh=torch.cat([dc[:, None, :], sh_rest], 1).contiguous(), features=col(sem) if sem else None)
    bad = ~torch.isfinite(torch.cat([g.means, g.quats, g.log_scales, g.opacity_logits[:, None]], 1)).all(1)
    if bad.any():
        raise OpenLSMError(f"{path}: {int(bad.sum())} of {n} Gaussians have NaN or infinite parameters")
    return g
