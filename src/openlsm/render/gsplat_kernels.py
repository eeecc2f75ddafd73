"""gsplat's forward kernels for renders without gradients (viewer, videos, evaluation).

At 256² one frame's kernels take ~0.7 ms on an H200, but gsplat's Python layer (autograd functions, checks,
channel padding) and our per-call tensor work added as much host time again. Here, when the installed gsplat
is the pinned 1.5.3, its compiled functions are called directly (same kernels, same results); any other version
goes through its public functions. Measured in docs/benchmarks.md (bench/gpu_render_latency.py).

    radii, means2d, depths, conics = project(means, quats, scales, opacities, viewmats, Ks, W, H, 0.3, 0.01, 1e10)
    flatten_ids, offsets = intersect(means2d, radii, depths, tile=8, n_images=C, width=W, height=H)
    values, alphas = rasterize(means2d, conics, colors_and_depths, opacities[None], W, H, 8, offsets, flatten_ids)
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

PINNED_VERSION = "1.5.3"  # the compiled functions' signatures are those of this release
CHANNELS = frozenset((1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513))  # unpadded

_state: dict[str, Any] = {}


def compiled() -> Any | None:
    """gsplat's compiled extension when the installed gsplat is the pinned release, else None."""
    if "C" not in _state:
        import gsplat

        _state["C"] = None
        if gsplat.__version__ == PINNED_VERSION:
            from gsplat.cuda._backend import _C

            _state["C"] = _C
    return _state["C"]


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
            width: int, height: int, eps2d: float, near: float, far: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """means [N, 3], quats [N, 4], scales [N, 3], opacities [N], viewmats [C, 4, 4], Ks [C, 3, 3]
    -> radii [C, N, 2], means2d [C, N, 2], depths [C, N], conics [C, N, 3]."""
    C = compiled()
    if C is not None:
        means, quats, scales, opacities, viewmats, Ks = (
            t.contiguous() for t in (means, quats, scales, opacities, viewmats, Ks))
        radii, means2d, depths, conics, _ = C.projection_ewa_3dgs_fused_fwd(
            means, None, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far, 0.0, False,
            C.CameraModelType.PINHOLE)
    else:
        from gsplat import fully_fused_projection

        radii, means2d, depths, conics, _ = fully_fused_projection(
            means, None, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near, far_plane=far,
            packed=False, opacities=opacities)
    return radii, means2d, depths, conics


def intersect(means2d: Tensor, radii: Tensor, depths: Tensor, tile: int, n_images: int, width: int,
              height: int) -> tuple[Tensor, Tensor]:
    """Depth-sorted (tile, Gaussian) intersections -> flatten_ids [I], tile offsets [C, tiles_y, tiles_x]."""
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    C = compiled()
    if C is not None:
        _, isect_ids, flatten_ids = C.intersect_tile(means2d, radii, depths, None, None, n_images, tile, tw, th,
                                                     True, False)
        offsets = C.intersect_offset(isect_ids, n_images, tw, th)
    else:
        from gsplat import isect_offset_encode, isect_tiles

        _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile, tw, th, n_images=n_images)
        offsets = isect_offset_encode(isect_ids, n_images, tw, th)
    return flatten_ids, offsets.reshape(n_images, th, tw)


def rasterize(means2d: Tensor, conics: Tensor, values: Tensor, opacities: Tensor, width: int, height: int,
              tile: int, offsets: Tensor, flatten_ids: Tensor) -> tuple[Tensor, Tensor]:
    """values [C, N, K], opacities [C, N] -> composited values [C, H, W, K], alpha [C, H, W, 1]."""
    C = compiled()
    if C is not None and values.shape[-1] in CHANNELS:
        out, alphas, _ = C.rasterize_to_pixels_3dgs_fwd(means2d, conics, values.contiguous(), opacities.contiguous(),
                                                        None, None, width, height, tile, offsets, flatten_ids)
        return out, alphas
    from gsplat import rasterize_to_pixels  # pads other channel counts

    return rasterize_to_pixels(means2d, conics, values, opacities, width, height, tile, offsets, flatten_ids)


def eval_sh(sh: Tensor, dirs: Tensor) -> Tensor:
    """As `openlsm.render.sh.eval_sh` with gsplat's fused kernel: sh [..., K, 3], dirs [..., 3] (any norm, same
    leading shape) -> colour before the +0.5 offset [..., 3]."""
    degree = math.isqrt(sh.shape[-2]) - 1
    C = compiled()
    if C is not None:
        return C.spherical_harmonics_fwd(degree, dirs.contiguous(), sh.contiguous(), None)
    from gsplat import spherical_harmonics

    return spherical_harmonics(degree, dirs, sh)
