"""The `.splat` format of the antimatter15 WebGL viewer (also read by SuperSplat, gsplat.js, Luma viewers).

32 bytes per Gaussian, little-endian, no header:
    position f32 x3 | scale f32 x3 (linear, not log) | RGBA u8 x4 | rotation u8 x4 (wxyz, q * 128 + 128)
Colour is the SH DC term as RGB, alpha the activated opacity; higher SH degrees and semantic features are
dropped. Gaussians are sorted by importance (opacity x volume, largest first), which viewers that stream the
file rely on to show the big picture first.

    save_splat("scene.splat", gaussians)
    g = load_splat("scene.splat")          # lossy: 8-bit colour/rotation, SH degree 0, no features
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import OpenLSMError
from ..io.atomic import write_bytes_atomic
from .gaussians import Gaussians, rgb_to_sh0, sh0_to_rgb

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert SPLAT_DTYPE.itemsize == 32


def splat_order(g: Gaussians) -> torch.Tensor:
    """Indices [N] sorting Gaussians by opacity x volume, descending (ties keep file order)."""
    importance = g.opacities * g.log_scales.sum(-1).exp()  # sigmoid(o) * sx * sy * sz
    return torch.sort(-importance.double(), stable=True).indices


def gaussians_to_splat(g: Gaussians) -> np.ndarray:
    """One scene [N] -> structured array [N] of SPLAT_DTYPE (sorted by importance)."""
    if g.means.dim() != 2:
        raise ValueError("gaussians_to_splat takes one scene (means [N, 3])")
    g = g.detach().to("cpu", torch.float32)
    order = splat_order(g)
    g = g.select(order)
    rgb = sh0_to_rgb(g.sh[:, 0, :]).clamp(0, 1)
    rgba = torch.cat([rgb, g.opacities[:, None]], -1)
    quats = g.quats / g.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = np.empty(len(g), dtype=SPLAT_DTYPE)
    out["position"] = g.means.numpy()
    out["scale"] = g.scales.numpy()
    out["rgba"] = (rgba * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    out["rot"] = (quats * 128 + 128).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def save_splat(path: str | os.PathLike, g: Gaussians) -> Path:
    """Write atomically (temp file + rename)."""
    path = Path(path)
    return write_bytes_atomic(path, gaussians_to_splat(g).tobytes())


def load_splat(path: str | os.PathLike) -> Gaussians:
    """Read a .splat file back (SH degree 0, no features)."""
    raw = Path(path).read_bytes()
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise OpenLSMError(f"{path}: {len(raw)} bytes is not a whole number of 32-byte splats")
    a = np.frombuffer(raw, dtype=SPLAT_DTYPE)
    rgba = torch.from_numpy(a["rgba"].astype(np.float32)) / 255
    alpha = rgba[:, 3].clamp(1e-6, 1 - 1e-6)
    return Gaussians(means=torch.from_numpy(a["position"].copy()),
                     quats=(torch.from_numpy(a["rot"].astype(np.float32)) - 128) / 128,
                     log_scales=torch.from_numpy(a["scale"].copy()).clamp_min(1e-12).log(),
                     opacity_logits=torch.log(alpha / (1 - alpha)),
                     sh=rgb_to_sh0(rgba[:, None, :3]))
