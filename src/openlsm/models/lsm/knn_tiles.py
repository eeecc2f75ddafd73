"""Exact kNN mean squared distances in one Triton kernel: Morton-sorted tiles, culled by their bounding boxes.

The GPU path of `knn.knn_mean_sq_dist` (same contract, float32 arithmetic). The grid search there launches
hundreds of small ops and reads sizes back to the host each pass; this is a sort, a few tensor ops and one
kernel, with no host synchronisation.

    d2 = knn_mean_sq_dist_tiles(points)         # CUDA points [N, 3] -> [N];  [B, N, 3] -> [B, N]

Each sample's points are sorted along a Morton curve and cut into key tiles with their bounding boxes. One
program per (query tile, sample) keeps every query's k smallest squared distances and visits the key tiles
outward from its own along the curve, in chunks of tiles (near tiles first, so the k-th distances drop fast).
A key tile is skipped when the gap between its box and the query tile's box is at least the largest k-th
distance of the tile's queries (tested for a whole chunk of boxes at once, then per tile), or else when no query
is nearer to its box than to its own k-th candidate: every point of the tile is at least that far, so it cannot
enter the k smallest and the result stays exact. Ties in distance do not change the k smallest values.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import warnings

import torch
from torch import Tensor

from openlsm.models.lsm.serialization import interleave_bits

MORTON_BITS = 16  # per axis: fine enough that a tile of a dense cluster stays compact (ties cost only that)
# Tuned on an H100 (bench/tune_knn_tiles.py; docs/benchmarks.md, session 12): small tiles have tight boxes
BLOCK_QUERIES = 32  # queries per program
BLOCK_KEYS = 32  # points per key tile (and box)
NUM_WARPS = 1
BOX_CHUNK = 32  # key tiles whose boxes are tested at once before any is visited


_failures: list[str] = []  # the kernel's first error in this process (then "auto" stops choosing it)


def tiles_available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices where Triton is installed (it ships with CUDA builds of torch), unless
    it failed before in this process."""
    return device.type == "cuda" and not _failures and importlib.util.find_spec("triton") is not None


def disable_tiles(err: Exception) -> None:
    """Record a failure of the kernel (e.g. a Triton too old for it) and warn once."""
    if not _failures:
        warnings.warn(f"Triton kNN kernel failed ({type(err).__name__}: {err}); using the grid search instead",
                      RuntimeWarning, stacklevel=3)
    _failures.append(f"{type(err).__name__}: {err}")


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def knn_tiles_kernel(pts_ptr, boxes_ptr, n_valid_ptr, out_ptr, n_pad, n_tiles,
                         K: tl.constexpr, KP: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr,
                         BC: tl.constexpr):
        inf = float("inf")
        tile = tl.program_id(0)
        b = tl.program_id(1)
        n_valid = tl.load(n_valid_ptr + b)
        base = pts_ptr + b * n_pad * 3
        rows = tile * BQ + tl.arange(0, BQ)
        q_ok = rows < n_valid
        qx = tl.load(base + rows * 3 + 0, mask=q_ok, other=0.0)
        qy = tl.load(base + rows * 3 + 1, mask=q_ok, other=0.0)
        qz = tl.load(base + rows * 3 + 2, mask=q_ok, other=0.0)
        q_lo_x, q_hi_x = tl.min(tl.where(q_ok, qx, inf)), tl.max(tl.where(q_ok, qx, -inf))
        q_lo_y, q_hi_y = tl.min(tl.where(q_ok, qy, inf)), tl.max(tl.where(q_ok, qy, -inf))
        q_lo_z, q_hi_z = tl.min(tl.where(q_ok, qz, inf)), tl.max(tl.where(q_ok, qz, -inf))
        cols = tl.arange(0, KP)
        lanes = tl.arange(0, BK)
        # k kept distances per query (an unordered set); slots >= K hold -inf so that max() ignores them
        best = tl.where(cols[None, :] < K, inf, -inf) + tl.zeros([BQ, KP], tl.float32)
        worst = tl.where(q_ok, tl.max(best, 1), -inf)  # [BQ]; padded queries never ask for a tile
        bound = tl.max(worst)  # the tile's largest k-th distance: inf, or -inf when no query is valid
        boxes = boxes_ptr + b * 6 * n_tiles  # [6, T]: lo x, y, z, hi x, y, z of each key tile
        home = tile * BQ // BK // BC  # the chunk of BC key tiles holding the first query
        n_chunks = tl.cdiv(n_tiles, BC)
        for t in range(2 * n_chunks - 1):
            step = (t + 1) // 2
            chunk = home + step * (2 * (t % 2) - 1)  # home, home + 1, home - 1, home + 2, ...
            if (chunk >= 0) & (chunk < n_chunks):
                # box-to-box gaps of the chunk's tiles at once (vectors of BC); most chunks stop here
                ids = chunk * BC + tl.arange(0, BC)
                ok = ids < n_tiles
                gx = tl.maximum(tl.maximum(tl.load(boxes + ids, mask=ok, other=inf) - q_hi_x,
                                           q_lo_x - tl.load(boxes + 3 * n_tiles + ids, mask=ok, other=-inf)), 0.0)
                gy = tl.maximum(tl.maximum(tl.load(boxes + n_tiles + ids, mask=ok, other=inf) - q_hi_y,
                                           q_lo_y - tl.load(boxes + 4 * n_tiles + ids, mask=ok, other=-inf)), 0.0)
                gz = tl.maximum(tl.maximum(tl.load(boxes + 2 * n_tiles + ids, mask=ok, other=inf) - q_hi_z,
                                           q_lo_z - tl.load(boxes + 5 * n_tiles + ids, mask=ok, other=-inf)), 0.0)
                if tl.min(gx * gx + gy * gy + gz * gz) < bound:
                    for c in range(BC):
                        j = chunk * BC + c
                        if j < n_tiles:
                            k_lo_x, k_lo_y = tl.load(boxes + j), tl.load(boxes + n_tiles + j)
                            k_lo_z, k_hi_x = tl.load(boxes + 2 * n_tiles + j), tl.load(boxes + 3 * n_tiles + j)
                            k_hi_y, k_hi_z = tl.load(boxes + 4 * n_tiles + j), tl.load(boxes + 5 * n_tiles + j)
                            # the tile's gap again (the bound may have dropped), then each query's distance
                            hx = tl.maximum(tl.maximum(k_lo_x - q_hi_x, q_lo_x - k_hi_x), 0.0)
                            hy = tl.maximum(tl.maximum(k_lo_y - q_hi_y, q_lo_y - k_hi_y), 0.0)
                            hz = tl.maximum(tl.maximum(k_lo_z - q_hi_z, q_lo_z - k_hi_z), 0.0)
                            if hx * hx + hy * hy + hz * hz < bound:
                                dx = tl.maximum(tl.maximum(k_lo_x - qx, qx - k_hi_x), 0.0)
                                dy = tl.maximum(tl.maximum(k_lo_y - qy, qy - k_hi_y), 0.0)
                                dz = tl.maximum(tl.maximum(k_lo_z - qz, qz - k_hi_z), 0.0)
                                near = (dx * dx + dy * dy + dz * dz) < worst
                                if tl.max(near.to(tl.int32), 0) > 0:
                                    keys = j * BK + lanes
                                    k_ok = keys < n_valid
                                    kx = tl.load(base + keys * 3 + 0, mask=k_ok, other=0.0)
                                    ky = tl.load(base + keys * 3 + 1, mask=k_ok, other=0.0)
                                    kz = tl.load(base + keys * 3 + 2, mask=k_ok, other=0.0)
                                    ex = qx[:, None] - kx[None, :]
                                    ey = qy[:, None] - ky[None, :]
                                    ez = qz[:, None] - kz[None, :]
                                    d = ex * ex + ey * ey + ez * ez  # [BQ, BK]
                                    d = tl.where(k_ok[None, :] & (rows[:, None] != keys[None, :]), d, inf)
                                    for _ in tl.static_range(K):  # the tile's k smallest, each replacing the worst
                                        m, at = tl.min(d, 1, return_indices=True)
                                        slot = tl.argmax(best, 1)
                                        best = tl.where((cols[None, :] == slot[:, None]) & (m < worst)[:, None],
                                                        m[:, None], best)
                                        worst = tl.where(q_ok, tl.max(best, 1), -inf)
                                        d = tl.where(lanes[None, :] == at[:, None], inf, d)
                                    bound = tl.max(worst)
        kept = (cols[None, :] < K) & (best < inf)  # fewer than k other points: mean over those found
        total = tl.sum(tl.where(kept, best, 0.0), 1)
        count = tl.sum(kept.to(tl.float32), 1)
        tl.store(out_ptr + b * n_pad + rows, tl.where(count > 0, total / tl.maximum(count, 1.0), 0.0), mask=q_ok)

    return knn_tiles_kernel


@torch.no_grad()
def knn_mean_sq_dist_tiles(points: Tensor, k: int = 3, block_queries: int = BLOCK_QUERIES,
                           block_keys: int = BLOCK_KEYS, num_warps: int = NUM_WARPS,
                           box_chunk: int = BOX_CHUNK) -> Tensor:
    """Mean squared distance to the k nearest other points within each sample, as `knn_mean_sq_dist` (exact,
    duplicates count, non-finite points get NaN and are nobody's neighbour), computed in float32."""
    squeeze = points.ndim == 2
    pts = (points[None] if squeeze else points).float()  # [B, N, 3]
    b, n, _ = pts.shape
    if b == 0 or n == 0:
        return points.new_zeros(points.shape[:-1])
    finite = torch.isfinite(pts).all(-1)  # [B, N]
    n_valid = finite.sum(-1, dtype=torch.int32)  # [B]

    # Sort each sample along a Morton curve over its finite points' box; non-finite points go last.
    inf = float("inf")
    lo = torch.where(finite[..., None], pts, inf).amin(1, keepdim=True)  # [B, 1, 3]
    hi = torch.where(finite[..., None], pts, -inf).amax(1, keepdim=True)
    scale = (2 ** MORTON_BITS - 1) / (hi - lo).amax(-1, keepdim=True).clamp_min(1e-30)  # [B, 1, 1]
    cells = ((torch.where(finite[..., None], pts, lo) - lo) * scale).clamp(0, 2 ** MORTON_BITS - 1).long()
    codes = interleave_bits(cells.view(-1, 3), MORTON_BITS).view(b, n)
    codes = torch.where(finite, codes, 1 << (3 * MORTON_BITS))
    order = codes.argsort(-1)  # [B, N]

    block = max(block_queries, block_keys)
    n_pad = -(-n // block) * block
    tiles = n_pad // block_keys
    sorted_pts = pts.new_zeros(b, n_pad, 3)
    sorted_pts[:, :n] = torch.gather(pts, 1, order[..., None].expand(-1, -1, 3))
    valid = torch.arange(n_pad, device=pts.device) < n_valid[:, None]  # [B, N_pad]
    per_tile = sorted_pts.view(b, tiles, block_keys, 3)
    valid = valid.view(b, tiles, block_keys, 1)
    boxes = torch.cat([torch.where(valid, per_tile, inf).amin(2),
                       torch.where(valid, per_tile, -inf).amax(2)], -1).transpose(1, 2).contiguous()  # [B, 6, T]

    out = pts.new_empty(b, n_pad)
    kp = max(2, 1 << (k - 1).bit_length())
    # Triton launches on the current CUDA device: make it the points' (e.g. cuda:1 without set_device)
    with torch.cuda.device(pts.device) if pts.is_cuda else contextlib.nullcontext():
        _kernel()[(n_pad // block_queries, b)](sorted_pts, boxes, n_valid, out, n_pad, tiles, K=k, KP=kp,
                                               BQ=block_queries, BK=block_keys, BC=box_chunk, num_warps=num_warps)
    result = torch.full((b, n), float("nan"), device=pts.device).scatter_(
        1, order, torch.where(valid.view(b, n_pad)[:, :n], out[:, :n], float("nan")))
    result = result.to(points.dtype)
    return result[0] if squeeze else result
