"""`knn_mean_sq_dist` on the CPU compiled by Numba (optional extra `[cpu]`; `knn.py` imports this module only
where Numba is installed): the same exact grid search as `knn.py`, one query at a time in parallel, so no candidate
blocks are materialised. Kernels at module level, so Numba's disk cache serves later processes.

Points are binned into cells of side h (`knn._cell_size`) and sorted by cell key; a query scans the (2R+1)^3 cells
around its own ((2R+1)^2 contiguous runs of the sorted points) keeping its k smallest squared distances, and is
settled when the k-th is nearer than every face of the block that has cells beyond it. R doubles until then; a
query whose block would outgrow the point count (far outliers) scans all points instead.

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


@numba.njit(parallel=True, cache=True)
def search(pts, k, lo, h, out):
    n = pts.shape[0]
    cells = np.empty((n, 3), np.int64)
    for i in range(n):
        for a in range(3):
            cells[i, a] = int(np.floor((pts[i, a] - lo[a]) / h))
    dims = np.empty(3, np.int64)
    for a in range(3):
        dims[a] = cells[:, a].max() + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    order = np.argsort(keys, kind="mergesort")
    sorted_keys = keys[order]
    bound = SAFETY * h * h
    for i in numba.prange(n):
        best = np.full(k, np.inf)
        radius = 1
        while True:
            best[:] = np.inf
            if (2 * radius + 1) ** 2 > n:  # a far outlier: every point
                for j in range(n):
                    if j != i:
                        consider(best, sq_dist(pts, i, j))
                break
            cx, cy, cz = cells[i, 0], cells[i, 1], cells[i, 2]
            z0, z1 = max(cz - radius, 0), min(cz + radius, dims[2] - 1)
            for x in range(max(cx - radius, 0), min(cx + radius, dims[0] - 1) + 1):
                for y in range(max(cy - radius, 0), min(cy + radius, dims[1] - 1) + 1):
                    row = (x * dims[1] + y) * dims[2]
                    start = np.searchsorted(sorted_keys, row + z0)
                    stop = np.searchsorted(sorted_keys, row + z1, side="right")
                    for s in range(start, stop):
                        j = order[s]
                        if j != i:
                            consider(best, sq_dist(pts, i, j))
            # distance to the nearest block face with cells beyond it (in cell units, then squared)
            reach = np.inf
            for a in range(3):
                off = (pts[i, a] - lo[a]) / h - cells[i, a]  # position inside the own cell, [0, 1)
                if cells[i, a] - radius > 0:
                    reach = min(reach, radius + off)
                if cells[i, a] + radius < dims[a] - 1:
                    reach = min(reach, radius + 1 - off)
            if best[k - 1] < reach * reach * bound:
                break
            radius *= 2
        out[i] = best.mean()


def _search(pts: Tensor, k: int, lo: Tensor, extent: float, h: float) -> Tensor:
    out = np.empty(pts.shape[0], np.float64)
    search(pts.double().numpy(), k, lo.numpy(), h, out)
    return torch.from_numpy(out)


@torch.no_grad()
@numba_launch
def knn_mean_sq_dist_numba(points: Tensor, k: int = 3) -> Tensor:
    """As `knn.knn_mean_sq_dist` (exact; duplicates count; NaN for non-finite points), CPU tensors only."""
    if points.ndim == 2:
        return per_sample(points, k, _search)
    return torch.stack([per_sample(p, k, _search) for p in points])
