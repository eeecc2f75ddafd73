"""Gaussian container and file I/O (PLY in the standard 3DGS layout, antimatter15 .splat)."""

from .gaussians import SH_C0, Gaussians, rgb_to_sh0, sh0_to_rgb
from .ply import load_ply, save_ply

__all__ = ["SH_C0", "Gaussians", "load_ply", "rgb_to_sh0", "save_ply", "sh0_to_rgb"]
