"""Forward-only CPU compositing compiled by Numba (optional: `pip install numba`), with the maths of
`torch_backend.rasterize` (same boxes, alpha threshold and clamp, early stop at transmittance 1e-4).

gsplat's tile scheme on the CPU: the Gaussians, front to back, are binned into 16x16-pixel tiles by their
opacity-aware boxes; tiles are composited in parallel, each walking its list in depth order over the
box pixels of each Gaussian. No sort of
(pixel, Gaussian) pairs and no per-pair tensors, so it is several times faster than the pure-PyTorch compositing on
scenes of large, overlapping Gaussians. No autograd: `render` uses it only where no gradient is needed.

    if numba_backend.available():
        out, alpha = numba_backend.rasterize(means2d, conics, opacities, depths, radii, values, W, H)
        weights = numba_backend.blend_weights(means2d, conics, opacities, depths, radii, W, H)  # sparse [H*W, N]
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

import numpy as np
import torch
from torch import Tensor

from .torch_backend import ALPHA_MIN, MAX_ALPHA, T_MIN, _boxes

TILE = 16
_kernels: dict = {}
# One kernel launch at a time: Numba's fallback threading layer (workqueue) aborts on concurrent parallel launches
# from several Python threads (e.g. viewer callbacks).
_LOCK = threading.RLock()


def available() -> bool:
    """Numba is installed and not switched off (OPENLSM_NUMBA=0 keeps the pure-PyTorch path)."""
    return os.environ.get("OPENLSM_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None


def _compile() -> dict:
    """The kernels, compiled at their first call (Numba caches them on disk; a later process loads them)."""
    with _LOCK:
        if not _kernels:
            _define()
    return _kernels


def _define() -> None:
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

    @numba.njit(inline="always")
    def pair_alpha(params, g, px, py):  # alpha of Gaussian g at pixel (px, py); 0 under the 1/255 cut-off
        dx, dy = px + 0.5 - params[g, 0], py + 0.5 - params[g, 1]
        sigma = 0.5 * params[g, 2] * dx * dx + params[g, 3] * dx * dy + 0.5 * params[g, 4] * dy * dy
        a = params[g, 5] * np.exp(-sigma) if sigma >= 0.0 else 0.0
        return min(a, MAX_ALPHA) if a >= ALPHA_MIN else 0.0

    # Both kernels walk a tile Gaussian-major (its list is in depth order, so every pixel still composites front to
    # back), visiting only the pixels of each Gaussian's box; a pixel stops before the Gaussian that would bring its
    # transmittance to 1e-4 or below (as gsplat), and a tile stops when all its pixels have.

    @numba.njit(parallel=True, cache=True)
    def composite(starts, ids, params, x0, x1, y0, y1, values, width, height, tiles_x, out, alpha):
        n_values = values.shape[1]
        for t in numba.prange(starts.shape[0] - 1):
            tile_x0, tile_y0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            trans = np.ones((TILE, TILE))  # 0 once the pixel has stopped
            acc = np.zeros((TILE, TILE, n_values))
            acc_alpha = np.zeros((TILE, TILE))
            open_pixels = min(TILE, height - tile_y0) * min(TILE, width - tile_x0)
            for k in range(starts[t], starts[t + 1]):
                g = ids[k]
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    for px in range(max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)):
                        T = trans[py - tile_y0, px - tile_x0]
                        a = pair_alpha(params, g, px, py) if T > 0.0 else 0.0
                        if a == 0.0:
                            continue
                        if T * (1.0 - a) <= T_MIN:
                            trans[py - tile_y0, px - tile_x0] = 0.0
                            open_pixels -= 1
                            continue
                        for d in range(n_values):
                            acc[py - tile_y0, px - tile_x0, d] += a * T * values[g, d]
                        acc_alpha[py - tile_y0, px - tile_x0] += a * T
                        trans[py - tile_y0, px - tile_x0] = T * (1.0 - a)
                if open_pixels == 0:
                    break
            for py in range(tile_y0, min(height, tile_y0 + TILE)):
                for px in range(tile_x0, min(width, tile_x0 + TILE)):
                    for d in range(n_values):
                        out[py * width + px, d] = acc[py - tile_y0, px - tile_x0, d]
                    alpha[py * width + px] = acc_alpha[py - tile_y0, px - tile_x0]

    @numba.njit(parallel=True, cache=True)
    def weights(starts, ids, params, x0, x1, y0, y1, width, height, tiles_x, min_weight, crow, cols, vals):
        """With empty cols: counts each pixel's weights above min_weight into crow[p + 1]. Else writes them (the
        Gaussian's position k in depth order, the weight) from crow[p] on: CSR rows, each in depth order."""
        fill = cols.shape[0] > 0
        for t in numba.prange(starts.shape[0] - 1):
            tile_x0, tile_y0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            trans = np.ones((TILE, TILE))
            cursor = np.zeros((TILE, TILE), np.int64)
            if fill:
                for py in range(tile_y0, min(height, tile_y0 + TILE)):
                    for px in range(tile_x0, min(width, tile_x0 + TILE)):
                        cursor[py - tile_y0, px - tile_x0] = crow[py * width + px]
            open_pixels = min(TILE, height - tile_y0) * min(TILE, width - tile_x0)
            for k in range(starts[t], starts[t + 1]):
                g = ids[k]
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    for px in range(max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)):
                        T = trans[py - tile_y0, px - tile_x0]
                        a = pair_alpha(params, g, px, py) if T > 0.0 else 0.0
                        if a == 0.0:
                            continue
                        if T * (1.0 - a) <= T_MIN:
                            trans[py - tile_y0, px - tile_x0] = 0.0
                            open_pixels -= 1
                            continue
                        if a * T > min_weight:
                            if fill:
                                c = cursor[py - tile_y0, px - tile_x0]
                                cols[c], vals[c] = g, a * T
                                cursor[py - tile_y0, px - tile_x0] = c + 1
                            else:
                                crow[py * width + px + 1] += 1
                        trans[py - tile_y0, px - tile_x0] = T * (1.0 - a)
                if open_pixels == 0:
                    break

    @numba.njit(cache=True)
    def transpose(crow, cols, n_cols):  # CSR structure -> the transpose's row pointers and, per entry, its slot
        crow_t = np.zeros(n_cols + 1, np.int64)
        for c in cols:
            crow_t[c + 1] += 1
        crow_t = np.cumsum(crow_t)
        fill = crow_t[:-1].copy()
        slots = np.empty(cols.shape[0], np.int64)
        for r in range(crow.shape[0] - 1):  # rows in order: each row of the transpose stays sorted
            for k in range(crow[r], crow[r + 1]):
                slots[k] = fill[cols[k]]
                fill[cols[k]] += 1
        return crow_t, slots

    _kernels.update(bin_tiles=bin_tiles, composite=composite, weights=weights, transpose=transpose)


def _prepare(means2d, conics, opacities, depths, radii, width, height):
    """Visible Gaussians front to back: their ids [M], boxes, params [M, 6] (centre, conic, opacity; float64) and
    per-tile lists (CSR over the tiles, row-major)."""
    with torch.no_grad():
        ids = (radii > 0).all(-1).nonzero()[:, 0]
        ids = ids[torch.argsort(depths[ids], stable=True)]  # front to back
        x0, x1, y0, y1 = (b.numpy() for b in _boxes(means2d[ids], radii[ids], width, height))
        params = torch.cat([means2d[ids], conics[ids], opacities[ids, None]], -1).double().numpy()
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    starts, tile_ids = _compile()["bin_tiles"](x0, x1, y0, y1, tiles_x, tiles_x * tiles_y)
    return ids, (starts, tile_ids, params, x0, x1, y0, y1), tiles_x


def _locked(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _LOCK:
            return fn(*args, **kwargs)
    return run


def _set_threads():
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@_locked
def rasterize(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, values: Tensor,
              width: int, height: int) -> tuple[Tensor, Tensor]:
    """As `torch_backend.rasterize` (CPU tensors, no gradients): means2d [N, 2], conics [N, 3], opacities [N],
    depths [N], radii [N, 2], values [N, D] -> accumulated values [H, W, D] and alpha [H, W]."""
    _set_threads()
    ids, tiles, tiles_x = _prepare(means2d, conics, opacities, depths, radii, width, height)
    dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.no_grad():
        vals = values[ids].to(dtype).contiguous().numpy()
    out = np.zeros((width * height, vals.shape[1]), vals.dtype)
    alpha = np.zeros(width * height, vals.dtype)
    _compile()["composite"](*tiles, vals, width, height, tiles_x, out, alpha)
    return (torch.from_numpy(out).to(values.dtype).reshape(height, width, -1),
            torch.from_numpy(alpha).to(values.dtype).reshape(height, width))


@_locked
def blend_weights(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, width: int,
                  height: int, min_weight: float = 0.0) -> Tensor:
    """As `torch_backend.blend_weights` (CPU): the compositing weights as a sparse CSR matrix [H*W, N] with
    rasterize(..., values) == W @ values; weights under `min_weight` dropped."""
    from .torch_backend import _csr

    _set_threads()
    ids, tiles, tiles_x = _prepare(means2d, conics, opacities, depths, radii, width, height)
    kernel = _compile()["weights"]
    crow = np.zeros(width * height + 1, np.int64)
    kernel(*tiles, width, height, tiles_x, min_weight, crow, np.zeros(0, np.int64), np.zeros(0, np.float32))
    crow = np.cumsum(crow)
    cols = np.empty(crow[-1], np.int64)
    vals = np.empty(crow[-1], np.float64 if means2d.dtype == torch.float64 else np.float32)
    if crow[-1]:
        kernel(*tiles, width, height, tiles_x, min_weight, crow, cols, vals)
    cols = ids.index_select(0, torch.from_numpy(cols))  # depth-order position -> Gaussian index
    return _csr(torch.from_numpy(crow), cols, torch.from_numpy(vals).to(means2d.dtype), means2d.shape[0])


@_locked
def transpose_csr(a: Tensor) -> Tensor:
    """A sparse CSR matrix [R, C] (CPU) -> its transpose as a CSR matrix [C, R], by a counting sort."""
    from .torch_backend import _csr

    crow, cols = a.crow_indices(), a.col_indices()
    crow_t, slots = _compile()["transpose"](crow.numpy(), cols.numpy(), a.shape[1])
    slots = torch.from_numpy(slots)
    rows = torch.repeat_interleave(torch.arange(a.shape[0]), crow.diff())
    return _csr(torch.from_numpy(crow_t), torch.empty_like(rows).index_copy_(0, slots, rows),
                torch.empty_like(a.values()).index_copy_(0, slots, a.values()), a.shape[0])
