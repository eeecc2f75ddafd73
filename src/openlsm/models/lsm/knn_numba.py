"""`knn_mean_sq_dist` on the CPU compiled by Numba (optional extra `[cpu]`; `knn.py` imports this module only
where Numba is installed): the same exact grid search as `knn.py`, the occupied cells in parallel and each cell's
queries one at a time, so no candidate blocks are materialised. Kernels at module level, so Numba's disk cache
serves later processes.

Points are binned into cells of side h (`knn._cell_size`) and sorted by cell key; a query scans the (2R+1)^3 cells
around its own ((2R+1)^2 contiguous runs of the sorted points, for R = 1 shared by the queries of one cell) keeping
its k smallest squared distances, and is settled when the k-th is nearer than every face of the block that has
cells beyond it. R doubles until then; a query whose block would outgrow the point count (far outliers) scans all
points instead.

    d2 = knn_mean_sq_dist_numba(points, k=3)   # [N, 3] or [B, N, 3] CPU -> [N] / [B, N]
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from openlsm.models.lsm.knn import SAFETY, per_sample
from openlsm.render.numba_backend import numba_launch


@numba.njit(inline="always")
def consider(best, d2):  # keep the k smallest squared distances, ascending
    k = best.shape[0]
    if d2 < best[k - 1]:
        j = k - 1
        while j > 0 and best[j - 1] > d2:
            best[j] = best[j - 1]
            j -= 1
        best[j] = d2


@numba.njit(inline="always")
def sq_dist(pts, i, j):
    dx, dy, dz = pts[j, 0] - pts[i, 0], pts[j, 1] - pts[i, 1], pts[j, 2] - pts[i, 2]
    return dx * dx + dy * dy + dz * dz


@numba.njit
def reach_sq(pts, cells, dims, lo, h, i, radius):
    # squared distance (in cell units) to the nearest face of the block of `radius` that has cells beyond it
    reach = np.inf
    for a in range(3):
        off = (pts[i, a] - lo[a]) / h - cells[i, a]  # position inside the own cell, [0, 1)
        if cells[i, a] - radius > 0:
            reach = min(reach, radius + off)
        if cells[i, a] + radius < dims[a] - 1:
            reach = min(reach, radius + 1 - off)
    return reach * reach


@numba.njit
def column_ranges(sorted_keys, cells, dims, i, radius, starts, stops):
    # the (2R+1)^2 runs of sorted points in the block of `radius` around point i's cell; returns their count
    cx, cy, cz = cells[i, 0], cells[i, 1], cells[i, 2]
    z0, z1 = max(cz - radius, 0), min(cz + radius, dims[2] - 1)
    m = 0
    for x in range(max(cx - radius, 0), min(cx + radius, dims[0] - 1) + 1):
        for y in range(max(cy - radius, 0), min(cy + radius, dims[1] - 1) + 1):
            row = (x * dims[1] + y) * dims[2]
            starts[m] = np.searchsorted(sorted_keys, row + z0)
            stops[m] = np.searchsorted(sorted_keys, row + z1, side="right")
            m += 1
    return m


@numba.njit
def scan(pts, i, starts, stops, m, best):
    best[:] = np.inf
    for c in range(m):
        for j in range(starts[c], stops[c]):
            if j != i:
                consider(best, sq_dist(pts, i, j))


@numba.njit(parallel=True, cache=True)
def search(sp, sc, sorted_keys, run_starts, dims, lo, h, k, out):
    # sp [N, 3] points sorted by cell key, sc [N, 3] their cells, run_starts [C + 1] the first point of each
    # occupied cell, then N. Cells in parallel: a cell's queries share the column runs of their radius-1 block,
    # and candidates are read in memory order. out [N] in sorted order.
    n = sp.shape[0]
    bound = SAFETY * h * h
    for r in numba.prange(run_starts.shape[0] - 1):
        best = np.empty(k)
        starts, stops = np.empty(9, np.int64), np.empty(9, np.int64)
        m = column_ranges(sorted_keys, sc, dims, run_starts[r], 1, starts, stops)
        for q in range(run_starts[r], run_starts[r + 1]):
            scan(sp, q, starts, stops, m, best)
            radius = 1
            while best[k - 1] >= reach_sq(sp, sc, dims, lo, h, q, radius) * bound:  # not settled: wider blocks
                radius *= 2
                if (2 * radius + 1) ** 2 > n:  # a far outlier: every point
                    scan(sp, q, np.zeros(1, np.int64), np.full(1, n, np.int64), 1, best)
                    break
                wide_starts = np.empty((2 * radius + 1) ** 2, np.int64)
                wide_stops = np.empty((2 * radius + 1) ** 2, np.int64)
                scan(sp, q, wide_starts, wide_stops, column_ranges(sorted_keys, sc, dims, q, radius, wide_starts,
                                                                   wide_stops), best)
            out[q] = best.mean()


def _search(pts: Tensor, k: int, lo: Tensor, extent: float, h: float) -> Tensor:
    # Binning and sorting in PyTorch: in the kernel they tripled its compile time (~25 s on first use).
    p = pts.double()
    cells = torch.floor((p - lo) / h).long()  # [N, 3]
    dims = cells.amax(0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    sorted_keys, order = torch.sort(keys, stable=True)
    run_starts = torch.cat([sorted_keys.new_zeros(1), (sorted_keys.diff() != 0).nonzero()[:, 0] + 1,
                            sorted_keys.new_full((1,), len(keys))])
    out = np.empty(len(keys), np.float64)
    search(p[order].numpy(), cells[order].numpy(), sorted_keys.numpy(), run_starts.numpy(), dims.numpy(),
           lo.numpy(), h, k, out)
    return torch.empty_like(p[:, 0]).index_copy_(0, order, torch.from_numpy(out))


@torch.no_grad()
@numba_launch
def knn_mean_sq_dist_numba(points: Tensor, k: int = 3) -> Tensor:
    """As `knn.knn_mean_sq_dist` (exact; duplicates count; NaN for non-finite points), CPU tensors only."""
    if points.ndim == 2:
        return per_sample(points, k, _search)
    return torch.stack([per_sample(p, k, _search) for p in points])
