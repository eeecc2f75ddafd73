"""Exact k-nearest-neighbour distances in pure PyTorch (no CUDA extension), on a hashed voxel grid.

`knn_mean_sq_dist` is what 3DGS / LSM take from simple-knn's `distCUDA2`: the mean squared distance of every
point to its k (3) nearest other points, used to initialise Gaussian scales. simple-knn is approximate (Morton
boxes); this is exact (equal to the all-pairs reference up to float rounding of ties).

    d2 = knn_mean_sq_dist(points)               # points [N, 3] -> [N];  [B, N, 3] -> [B, N]
    scales = d2.clamp_min(1e-7).sqrt()
    ref = knn_mean_sq_dist_bruteforce(points)   # all pairs, chunked: the reference, O(N^2)

Grid search: points are binned into cubic cells of side h (chosen so a point shares its cell with a few others)
and sorted by cell key. Cells (x, y, z-R .. z+R) have consecutive keys, so the (2R+1)^3 cells around a query
are (2R+1)^2 contiguous runs of the sorted points, found by `searchsorted`. Every point outside that block is
farther than the query's distance to the block's faces (>= R h), so a query whose k-th candidate is nearer
has its exact answer. Unsettled queries are searched with R = 2, then on grids 4x coarser (sparse regions,
outliers), and the last few go to the all-pairs path. 131,072 points of a point map take ~0.1-0.3 s on 2 CPU
cores (the all-pairs path: ~60 s). On a CUDA device with Triton, `knn_tiles` (one kernel) is used instead.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from openlsm.errors import OpenLSMError
from openlsm.models.lsm import knn_tiles
from openlsm.render import numba_backend

TARGET_OCCUPANCY = 6.0  # points a point shares its cell with, on average (sets the cell size; 6 settles more
# queries in the first 27-cell pass than 4 on trained point maps)
SAFETY = 1 - 1e-4  # accept k-th d2 < SAFETY * h^2: covers float rounding of distances and cell indices
CAPPED_QUANTILE = 0.99  # the GPU's capped search cuts ~1 % of the queries' blocks (they go on to the next pass)
MAX_CELLS = (1 << 20) - 4  # cells per axis, so three axes fit one int64 key


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16 distances of dense point maps underflow; float64 stays float64
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(points: Tensor, k: int) -> None:
    if points.shape[-1] != 3 or points.ndim not in (2, 3):
        raise OpenLSMError(f"points must be [N, 3] or [B, N, 3], got {tuple(points.shape)}")
    if k < 1:
        raise OpenLSMError(f"k must be >= 1, got {k}")


# --- all pairs (reference, and fallback for the few queries the grid cannot settle) ------------------------------

def _knn_bruteforce(pts: Tensor, queries: Tensor, k: int, max_elements: int) -> Tensor:
    """pts [N, 3], queries [Q] point indices -> [Q, k] ascending squared distances to the k nearest others."""
    n = pts.shape[0]
    chunk = max(1, max_elements // n)
    out = []
    for start in range(0, queries.shape[0], chunk):
        rows = queries[start:start + chunk]  # [C]
        q = pts[rows]  # [C, 3]
        # Direct differences, not |q|^2 + |p|^2 - 2 q.p: that expansion loses ~eps |p|^2, which is of the
        # order of the NN distances of dense point maps and would pick wrong neighbours.
        dists = torch.cdist(q, pts, compute_mode="donot_use_mm_for_euclid_dist")  # [C, N]
        dists[torch.arange(q.shape[0], device=pts.device), rows] = float("inf")  # not itself (duplicates count)
        idx = dists.topk(k, dim=1, largest=False).indices  # [C, k]
        diff = q[:, None, :] - pts[idx]  # [C, k, 3]
        out.append((diff * diff).sum(-1))
    return torch.cat(out) if out else pts.new_zeros(0, k)


def _bruteforce_one(points: Tensor, k: int, max_elements: int) -> Tensor:
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:  # a lone point has no neighbour
        return points.new_zeros(n)
    pts = points.to(_compute_dtype(points.dtype))
    d2 = _knn_bruteforce(pts, torch.arange(n, device=points.device), k, max_elements)
    return d2.mean(-1).to(points.dtype)


@torch.no_grad()
def knn_mean_sq_dist_bruteforce(points: Tensor, k: int = 3, max_elements: int = 1 << 25) -> Tensor:
    """All-pairs version of `knn_mean_sq_dist` (O(N^2)); `max_elements` bounds one query-chunk x points block."""
    _check(points, k)
    if points.ndim == 2:
        return _bruteforce_one(points, k, max_elements)
    return torch.stack([_bruteforce_one(p, k, max_elements) for p in points])


# --- hashed grid ----------------------------------------------------------------------------------------------

class _Grid:
    """Points sorted by the key of their cell of side h; searches the (2R+1)^3 cells around a query's cell."""

    def __init__(self, pts: Tensor, lo: Tensor, h: float):
        n = pts.shape[0]
        self.h = h
        scaled = (pts.double() - lo) / h  # [N, 3], float64: exact cells and margins for fp32 points
        cells = torch.floor(scaled)
        frac = scaled - cells
        self.margin = torch.minimum(frac, 1 - frac).amin(1)  # [N] distance to the own cell's faces / h
        cells = cells.long() + 1  # from 1, so that the cell at -1 has a valid key
        self.dims = (cells.amax(0) + 2).tolist()
        keys, self.order = torch.sort(self.key(cells))  # [N]
        self.position = torch.empty_like(self.order).scatter_(0, self.order, torch.arange(n, device=pts.device))
        # sorted coordinates, one column each, + a sentinel at infinity for padding
        inf = pts.new_full((1,), float("inf"))
        self.columns = [torch.cat([pts[self.order, i], inf]) for i in range(3)]
        self.cell_keys, counts = torch.unique_consecutive(keys, return_counts=True)  # occupied cells [U]
        self.cell_start = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # [U + 1] first sorted position
        self.cell_of = torch.repeat_interleave(torch.arange(len(self.cell_keys), device=pts.device), counts,
                                               output_size=n)  # [N] sorted position -> cell

    def key(self, cells: Tensor) -> Tensor:
        _, dy, dz = self.dims
        return (cells[..., 0] * dy + cells[..., 1]) * dz + cells[..., 2]

    def reach(self, ids: Tensor, radius: int) -> Tensor:
        """[Q] original indices -> distance beyond which every point lies outside the searched block [Q]."""
        return (radius + self.margin[ids]) * self.h

    def runs(self, cells: Tensor, radius: int) -> tuple[Tensor, Tensor]:
        """cells [U'] -> starts, lengths [U', (2R+1)^2]: the cells (x+i, y+j, z-R .. z+R) have consecutive keys,
        so the block is (2R+1)^2 runs of the sorted points; the centre run is number (2R+1)^2 // 2. Keys that
        wrap past an axis end only add points."""
        steps = torch.arange(-radius, radius + 1, device=cells.device)
        dxy = torch.cartesian_prod(steps, steps)  # [(2R+1)^2, 2]
        _, dy, dz = self.dims
        firsts = self.cell_keys[cells][:, None] + (dxy[:, 0] * dy + dxy[:, 1]) * dz - radius  # [U', R2]
        # First occupied cell of each run by binary search, then at most 2R+1 consecutive occupied cells.
        first_cells = torch.searchsorted(self.cell_keys, firsts)
        big = torch.iinfo(self.cell_keys.dtype).max
        padded = torch.cat([self.cell_keys, self.cell_keys.new_full((2 * radius + 1,), big)])
        last = firsts + 2 * radius
        count = sum((_take(padded, first_cells + j) <= last).long() for j in range(2 * radius + 1))
        starts = _take(self.cell_start, first_cells)
        return starts, _take(self.cell_start, first_cells + count) - starts

    def query_cells(self, queries: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [Q] sorted positions (None: all) -> the queries, their distinct cells [U'] and each query's row
        in those cells [Q]."""
        if queries is None:
            device = self.order.device
            everyone = torch.arange(len(self.cell_of), device=device)
            return everyone, torch.arange(len(self.cell_keys), device=device), self.cell_of
        cells, cell_index = torch.unique(self.cell_of[queries], return_inverse=True)
        return queries, cells, cell_index

    def candidates(self, starts: Tensor, lengths: Tensor, width: int) -> tuple[Tensor, Tensor]:
        """Runs [U', R2] -> [U', width] sorted positions of the points in each block, padded with N (the
        sentinel), and the first column of each run [U', R2]. Run r fills columns [f_r, f_r + l_r) with
        position = column + shift_r; a cumulative sum of the shift steps, scattered at the runs' first
        columns, gives every column its shift."""
        ends = lengths.cumsum(1)
        firsts = ends - lengths
        shifts = starts - firsts
        steps = torch.diff(shifts, dim=1, prepend=shifts.new_zeros(len(shifts), 1))
        jumps = torch.zeros(len(shifts), width + 1, dtype=shifts.dtype, device=shifts.device)
        jumps.scatter_add_(1, firsts.clamp(max=width), steps)  # runs starting past the width are cut
        cols = torch.arange(width, device=shifts.device)
        idx = torch.where(cols < ends[:, -1:], cols + jumps[:, :width].cumsum(1), self.order.shape[0])
        return idx, firsts

    def search(self, queries: Tensor | None, radius: int, k: int, max_elements: int,
               growth: float = 1.25) -> tuple[Tensor, Tensor]:
        """queries [Q] sorted positions (None: all) -> (the queries reordered [Q], [Q, k] ascending d2 to their
        nearest other points in the block, inf where fewer than k). Queries are processed grouped by cell, cells
        by ascending candidate count: chunks carry little padding (a chunk's widest query has at most `growth`
        times the candidates of its first), and the candidates' coordinates are gathered once per cell, then
        copied row-wise to the cell's queries."""
        queries, cells, cell_index = self.query_cells(queries)
        starts, lengths = self.runs(cells, radius)
        centre = lengths.shape[1] // 2
        sizes, by_size = torch.sort(lengths.sum(1))  # [U'] candidates per cell, ascending
        rank = torch.empty_like(by_size).scatter_(0, by_size, torch.arange(len(cells), device=cells.device))
        ranks, grouped = torch.sort(rank[cell_index])  # queries grouped by cell, cells by size
        queries, query_sizes = queries[grouped], sizes[ranks]  # [Q], ascending
        out = torch.empty(len(queries), k, dtype=self.columns[0].dtype, device=queries.device)
        # The chunks are planned on the host from one copy of the sizes: on a GPU, reading them chunk by chunk
        # would cost several host syncs per chunk.
        for i, c, width, first, last in _plan_chunks(query_sizes.cpu().numpy(), ranks.cpu().numpy(), k,
                                                     max_elements, growth):
            rows = queries[i:i + c]
            chunk_cells = by_size[first:last + 1]
            block, run_firsts = self.candidates(starts[chunk_cells], lengths[chunk_cells], width)  # [Uc, W]
            local = ranks[i:i + c] - first  # [C] query -> row of its cell in the chunk
            d2 = None
            for col in self.columns:
                d = _take(col, block).index_select(0, local)  # [C, W]
                d = d.sub_(col.index_select(0, rows)[:, None])
                d2 = d.square_() if d2 is None else d2.add_(d.square_())  # as (diff * diff).sum(-1) rounds
            # not itself (duplicates count): its column in the centre run, which holds its own cell
            own = run_firsts[local, centre] + rows - starts[chunk_cells[local], centre]
            d2.scatter_(1, own[:, None], float("inf"))
            out[i:i + c] = _smallest(d2, k)
        return queries, out

    def search_capped(self, queries: Tensor | None, radius: int, k: int, max_elements: int,
                      quantile: float) -> tuple[Tensor, Tensor]:
        """As `search`, with every query's block cut to one common width: (2R+1)^3 cells of candidates in a few
        large fixed-shape launches, inf at the k-th where a block was cut (such queries are not settled). The
        GPU's search, where `search`'s per-chunk launches cost more than this padding. The width is the
        `quantile` of the queries' candidate counts, so only the queries of the densest blocks are cut."""
        queries, cells, cell_index = self.query_cells(queries)
        starts, lengths = self.runs(cells, radius)  # [U', (2R+1)^2]
        sizes = lengths.sum(1)  # [U'] candidates per cell
        counts = torch.sort(sizes[cell_index]).values  # [Q] per query, ascending
        width = max(int(counts[round(quantile * (len(counts) - 1))]), k)  # the one host read
        block, _ = self.candidates(starts, lengths, width)  # [U', W] sorted positions, sentinel N
        cut = sizes > width  # [U']
        out = self.columns[0].new_empty(len(queries), k)
        chunk = max(1, max_elements // width)
        for i in range(0, len(queries), chunk):
            rows, local = queries[i:i + chunk], cell_index[i:i + chunk]  # [C] sorted positions, their cells
            cand = block.index_select(0, local)  # [C, W]
            d2 = None
            for col in self.columns:
                d = _take(col, cand).sub_(col.index_select(0, rows)[:, None])
                d2 = d.square_() if d2 is None else d2.add_(d.square_())  # as (diff * diff).sum(-1) rounds
            d2.masked_fill_(cand == rows[:, None], float("inf"))  # not itself (duplicates count)
            best = _smallest(d2, k)
            best[:, -1].masked_fill_(cut[local], float("inf"))
            out[i:i + chunk] = best
        return queries, out


def _plan_chunks(query_sizes: np.ndarray, ranks: np.ndarray, k: int, max_elements: int,
                 growth: float) -> list[tuple[int, int, int, int, int]]:
    """Queries sorted by candidate count [Q] and their cells' ranks [Q] -> chunks (first query, queries, width,
    first and last cell rank). A chunk holds queries whose candidate count is within `growth` x its first one's
    (little padding), at most `max_elements` candidates in all; its last query is its widest."""
    chunks, i, total = [], 0, len(query_sizes)
    while i < total:
        limit = max(int(int(query_sizes[i]) * growth) + 4, k)
        end = int(np.searchsorted(query_sizes, limit, side="right"))
        c = max(1, min(end - i, max_elements // limit))
        chunks.append((i, c, max(int(query_sizes[i + c - 1]), k), int(ranks[i]), int(ranks[i + c - 1])))
        i += c
    return chunks


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] for 1-D values: index_select is several times faster than advanced indexing on CPU."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


def _smallest(values: Tensor, k: int) -> Tensor:
    """[C, W] -> the k smallest of each row, ascending [C, k]. For small k, k passes of min are ~2x faster than
    topk on CPU; `values` is overwritten."""
    if k > 4:
        return values.topk(k, dim=1, largest=False).values
    out = []
    for j in range(k):
        v, i = values.min(1)
        out.append(v)
        if j < k - 1:
            values.scatter_(1, i[:, None], float("inf"))
    return torch.stack(out, 1)


def _cell_size(pts: Tensor, lo: Tensor, extent: float) -> float:
    """A cell side where a point shares its cell with about TARGET_OCCUPANCY points.

    Starts from the volumetric guess and corrects by the measured occupancy (point maps are surfaces, where
    the volumetric guess is several times too coarse); a few sorts of N keys."""
    n = pts.shape[0]
    h = max(extent / n ** (1 / 3), extent / MAX_CELLS)
    for _ in range(6):
        cells = torch.floor((pts.double() - lo) / h).long()
        d = (cells.amax(0) + 1).tolist()
        _, counts = torch.unique((cells[:, 0] * d[1] + cells[:, 1]) * d[2] + cells[:, 2], return_counts=True)
        occupancy = float((counts.double() ** 2).sum()) / n  # cell size seen by an average point
        if TARGET_OCCUPANCY / 2 <= occupancy <= 2 * TARGET_OCCUPANCY:
            break
        h_new = max(h * (TARGET_OCCUPANCY / occupancy) ** 0.5, extent / MAX_CELLS)  # surface-like scaling
        if h_new == h:
            break
        h = h_new
    return h


def per_sample(points: Tensor, k: int, search) -> Tensor:
    """One sample's points [N, 3] -> [N], around a search(pts [M, 3] finite, k, lo [3] float64, extent, h) -> [M]:
    k clamped to the other points there are, NaN for non-finite points (the others among themselves), zeros
    when all points coincide. Shared by the PyTorch grid search and the Numba one (`knn_numba`)."""
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return points.new_zeros(n)
    pts = points.to(_compute_dtype(points.dtype)).contiguous()
    finite = torch.isfinite(pts).all(1)
    if not finite.all():
        out = pts.new_full((n,), float("nan"))
        out[finite] = per_sample(pts[finite], k, search).to(pts.dtype)
        return out.to(points.dtype)
    lo = pts.double().amin(0)
    extent = float((pts.double().amax(0) - lo).max())
    if extent == 0:  # all points equal
        return points.new_zeros(n)
    return search(pts, k, lo, extent, _cell_size(pts, lo, extent)).to(points.dtype)


def _grid_search(pts: Tensor, k: int, lo: Tensor, extent: float, h: float, max_elements: int,
                 fallback_elements: int, growth: float, capped_quantile: float | None) -> Tensor:
    n = pts.shape[0]
    result = pts.new_empty(n)
    pending = torch.arange(n, device=pts.device)  # original indices of the queries not settled yet
    while pending.numel() * n > fallback_elements:
        grid = _Grid(pts, lo, h)
        for radius in (1, 2):  # a point just outside its 27 cells is usually inside the 125
            queries = None if pending.numel() == n else grid.position[pending]  # sorted positions
            if capped_quantile is None:
                queries, d2 = grid.search(queries, radius, k, max_elements, growth)  # [Q], [Q, k]
            else:
                queries, d2 = grid.search_capped(queries, radius, k, max_elements, capped_quantile)
            ids = grid.order[queries]
            # Settled when the k-th candidate is nearer than any point outside the block. Cells wider than
            # the cloud hold every point in any block: exhaustive, hence exact.
            bound = (grid.reach(ids, radius) ** 2 * SAFETY).to(d2.dtype) if h <= extent else float("inf")
            done = d2[:, -1] < bound
            result[ids[done]] = d2[done].mean(-1)
            pending = ids[~done]
            if pending.numel() * n <= fallback_elements:
                break
        h *= 4  # sparse regions: coarser cells reach further
    if pending.numel():
        result[pending] = _knn_bruteforce(pts, pending, k, max_elements).mean(-1)
    return result


@torch.no_grad()
def knn_mean_sq_dist(points: Tensor, k: int = 3, max_elements: int | None = None,
                     fallback_elements: int = 1 << 20, chunk_growth: float | None = None,
                     capped: float | None | str = "auto", method: str = "auto") -> Tensor:
    """Mean squared distance to the k nearest other points within each sample (exact; duplicates count).

    points [N, 3] or [B, N, 3] -> [N] or [B, N], computed in fp32 (fp64 for fp64 input), no gradient (as
    distCUDA2). Non-finite points get NaN and are nobody's neighbour. `max_elements` bounds one chunk of
    candidate distances; queries the grid cannot settle go to the all-pairs path once (their number x N)
    <= `fallback_elements`. `chunk_growth` trades padding for fewer chunks. `capped` (a quantile, or None)
    searches with blocks cut to that quantile of their sizes (`_Grid.search_capped`) instead. The defaults
    depend on the device: on a GPU each chunk costs host-side launches and syncs, not arithmetic, so the
    search is capped and the chunks are larger there. `method`: "grid" (this search), "tiles" (one Triton
    kernel, `knn_tiles`, no host syncs; float32), "numba" (the same grid search compiled, `knn_numba`; CPU) or
    "auto": tiles on a CUDA device with Triton for non-float64 input (falling back to grid, with one warning,
    should the kernel fail there), numba on the CPU where it is installed, else grid.
    """
    _check(points, k)
    if method == "auto":
        if knn_tiles.tiles_available(points.device) and points.dtype != torch.float64:
            try:
                return knn_tiles.knn_mean_sq_dist_tiles(points, k)
            except Exception as err:  # noqa: BLE001 - e.g. an older Triton: the grid search still gives the answer
                knn_tiles.disable_tiles(err)
            method = "grid"
        else:
            method = "numba" if numba_backend.available(points.device) else "grid"
    if method == "numba":
        from openlsm.models.lsm.knn_numba import knn_mean_sq_dist_numba

        return knn_mean_sq_dist_numba(points, k)
    if method == "tiles":
        return knn_tiles.knn_mean_sq_dist_tiles(points, k)
    if method != "grid":
        raise OpenLSMError(f"method must be auto, grid, tiles or numba, got {method!r}")
    gpu = points.device.type != "cpu"
    max_elements = max_elements or (1 << 26 if gpu else 1 << 22)
    growth = chunk_growth or (2.0 if gpu else 1.25)
    if capped == "auto":
        capped = CAPPED_QUANTILE if gpu else None
    search = functools.partial(_grid_search, max_elements=max_elements, fallback_elements=fallback_elements,
                               growth=growth, capped_quantile=capped)
    if points.ndim == 2:
        return per_sample(points, k, search)
    return torch.stack([per_sample(p, k, search) for p in points])
