"""Forward-only CPU compositing compiled by Numba (optional: `pip install numba`), with the maths of
`torch_backend.rasterize` (same boxes, alpha threshold and clamp, early stop at transmittance 1e-4).

gsplat's tile scheme on the CPU: the Gaussians, front to back, are binned into 16x16-pixel tiles by their
opacity-aware boxes; tiles are composited in parallel, each walking its list in depth order over the
box pixels of each Gaussian. No sort of
(pixel, Gaussian) pairs and no per-pair tensors, so it is several times faster than the pure-PyTorch compositing on
scenes of large, overlapping Gaussians. No autograd: `render` uses it only where no gradient is needed.

    if numba_backend.available():
        out, alpha = numba_backend.rasterize(means2d, conics, opacities, depths, radii, values, W, H)
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
from torch import Tensor

from .torch_backend import ALPHA_MIN, MAX_ALPHA, T_MIN, _boxes

TILE = 16
_kernels: dict = {}


def available() -> bool:
    """Numba is installed and not switched off (OPENLSM_NUMBA=0 keeps the pure-PyTorch path)."""
    return os.environ.get("OPENLSM_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None


def _compile() -> dict:
    """JIT-compile the two kernels once per process (cached on disk by Numba after the first run)."""
    if _kernels:
        return _kernels
    import numba

    @numba.njit(cache=True)
    def bin_tiles(x0, x1, y0, y1, tiles_x, n_tiles):  # boxes [M] in depth order -> CSR lists per tile
        starts = np.zeros(n_tiles + 1, np.int64)
        for i in range(x0.shape[0]):
            for ty in range(y0[i] // TILE, (y1[i] - 1) // TILE + 1):
                for tx in range(x0[i] // TILE, (x1[i] - 1) // TILE + 1):
                    starts[ty * tiles_x + tx + 1] += 1
        starts = np.cumsum(starts)
        fill = starts[:-1].copy()
        ids = np.empty(starts[-1], np.int64)
        for i in range(x0.shape[0]):  # ascending i: every tile's list stays in depth order
            for ty in range(y0[i] // TILE, (y1[i] - 1) // TILE + 1):
                for tx in range(x0[i] // TILE, (x1[i] - 1) // TILE + 1):
                    t = ty * tiles_x + tx
                    ids[fill[t]] = i
                    fill[t] += 1
        return starts, ids

    @numba.njit(parallel=True, cache=True)
    def composite(starts, ids, params, x0, x1, y0, y1, values, width, height, tiles_x, out, alpha):
        n_values = values.shape[1]
        for t in numba.prange(starts.shape[0] - 1):
            s, e = starts[t], starts[t + 1]
            if s == e:
                continue
            ty, tx = t // tiles_x, t % tiles_x
            tile_x0, tile_y0 = tx * TILE, ty * TILE
            trans = np.ones((TILE, TILE))  # per pixel of the tile; 0 once it has stopped
            acc = np.zeros((TILE, TILE, n_values))
            acc_alpha = np.zeros((TILE, TILE))
            open_pixels = min(TILE, height - tile_y0) * min(TILE, width - tile_x0)
            # Gaussian-major inside the tile (the list is in depth order, so every pixel still composites front to
            # back): only the pixels of each Gaussian's box are visited.
            for k in range(s, e):
                g = ids[k]
                mx, my, ca, cb, cc, op = params[g, 0], params[g, 1], params[g, 2], params[g, 3], params[g, 4], params[g, 5]
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    dy = py + 0.5 - my
                    for px in range(max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)):
                        T = trans[py - tile_y0, px - tile_x0]
                        if T == 0.0:
                            continue
                        dx = px + 0.5 - mx
                        sigma = 0.5 * ca * dx * dx + cb * dx * dy + 0.5 * cc * dy * dy
                        if sigma < 0.0:
                            continue
                        a = op * np.exp(-sigma)
                        if a < ALPHA_MIN:
                            continue
                        a = min(a, MAX_ALPHA)
                        t_next = T * (1.0 - a)
                        if t_next <= T_MIN:  # gsplat stops before the Gaussian that would saturate the pixel
                            trans[py - tile_y0, px - tile_x0] = 0.0
                            open_pixels -= 1
                            continue
                        w = a * T
                        for d in range(n_values):
                            acc[py - tile_y0, px - tile_x0, d] += w * values[g, d]
                        acc_alpha[py - tile_y0, px - tile_x0] += w
                        trans[py - tile_y0, px - tile_x0] = t_next
                if open_pixels == 0:
                    break
            for py in range(tile_y0, min(height, tile_y0 + TILE)):
                for px in range(tile_x0, min(width, tile_x0 + TILE)):
                    for d in range(n_values):
                        out[py * width + px, d] = acc[py - tile_y0, px - tile_x0, d]
                    alpha[py * width + px] = acc_alpha[py - tile_y0, px - tile_x0]

    _kernels.update(bin_tiles=bin_tiles, composite=composite)
    return _kernels


def rasterize(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, values: Tensor,
              width: int, height: int) -> tuple[Tensor, Tensor]:
    """As `torch_backend.rasterize` (CPU tensors, no gradients): means2d [N, 2], conics [N, 3], opacities [N],
    depths [N], radii [N, 2], values [N, D] -> accumulated values [H, W, D] and alpha [H, W]."""
    import numba

    k = _compile()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    with torch.no_grad():
        ids = (radii > 0).all(-1).nonzero()[:, 0]
        ids = ids[torch.argsort(depths[ids], stable=True)]  # front to back
        x0, x1, y0, y1 = (b.numpy() for b in _boxes(means2d[ids], radii[ids], width, height))
        params = torch.cat([means2d[ids], conics[ids], opacities[ids, None]], -1).double().numpy()
        dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
        vals = values[ids].to(dtype).contiguous().numpy()
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    starts, tile_ids = k["bin_tiles"](x0, x1, y0, y1, tiles_x, tiles_x * tiles_y)
    out = np.zeros((width * height, vals.shape[1]), vals.dtype)
    alpha = np.zeros(width * height, vals.dtype)
    k["composite"](starts, tile_ids, params, x0, x1, y0, y1, vals, width, height, tiles_x, out, alpha)
    return (torch.from_numpy(out).to(values.dtype).reshape(height, width, -1),
            torch.from_numpy(alpha).to(values.dtype).reshape(height, width))
