"""Numba kernels of `numba_backend` (imported only where Numba is installed). Module-level functions, so that
Numba's on-disk cache serves later processes (kernels nested in a function are compiled again in every process)."""

import numba
import numpy as np

from .torch_backend import ALPHA_MIN, MAX_ALPHA, T_MIN

TILE = 16


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


@numba.njit(inline="always")
def blend(trans, params, g, px, py, tile_x0, tile_y0):
    """Front-to-back step of pixel (px, py) through Gaussian g: its weight alpha x T (0 if alpha is under the
    cut-off or the pixel has stopped), updating the tile's transmittances `trans`; -1 where the pixel stops here."""
    T = trans[py - tile_y0, px - tile_x0]
    a = pair_alpha(params, g, px, py) if T > 0.0 else 0.0
    if a == 0.0:
        return 0.0
    if T * (1.0 - a) <= T_MIN:
        trans[py - tile_y0, px - tile_x0] = 0.0
        return -1.0
    trans[py - tile_y0, px - tile_x0] = T * (1.0 - a)
    return a * T


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
                    w = blend(trans, params, g, px, py, tile_x0, tile_y0)
                    if w < 0.0:
                        open_pixels -= 1
                    elif w > 0.0:
                        for d in range(n_values):
                            acc[py - tile_y0, px - tile_x0, d] += w * values[g, d]
                        acc_alpha[py - tile_y0, px - tile_x0] += w
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
                    w = blend(trans, params, g, px, py, tile_x0, tile_y0)
                    if w < 0.0:
                        open_pixels -= 1
                    elif w > min_weight and fill:
                        c = cursor[py - tile_y0, px - tile_x0]
                        cols[c], vals[c] = g, w
                        cursor[py - tile_y0, px - tile_x0] = c + 1
                    elif w > min_weight:
                        crow[py * width + px + 1] += 1
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


@numba.njit(parallel=True, cache=True)
def csr_matmul(crow, cols, vals, x, out):  # out [R, D] = CSR [R, C] @ x [C, D], rows in parallel
    for r in numba.prange(crow.shape[0] - 1):
        row = out[r]
        row[:] = 0
        for k in range(crow[r], crow[r + 1]):
            v, xr = vals[k], x[cols[k]]
            for j in range(x.shape[1]):
                row[j] += v * xr[j]
