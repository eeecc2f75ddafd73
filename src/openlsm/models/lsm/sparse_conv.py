"""Submanifold sparse 3D convolution in pure PyTorch (spconv-compatible weights).

Active sites are the points themselves: the output has one row per input point and a point only sees the
neighbours that exist. Neighbours are found by hashing voxel keys (a sorted key array + `searchsorted`), then
features are either gathered into an im2col block and multiplied with the kernel in row chunks (GPU), or
multiplied per kernel offset over the existing neighbour pairs only (CPU, see `submanifold_conv3d`).

Weights use the spconv 2.x layout `[C_out, k, k, k, C_in]`, the kernel axes following grid x, y, z, so that
official checkpoints load. The kernel is centred (offsets -k//2..k//2) and computes a cross-correlation,
like `torch.nn.functional.conv3d`.

Duplicate voxel coordinates are allowed (the official model does not deduplicate). Here every point is a site
and a voxel's value is the SUM of the features of all points in it; points sharing a voxel get the same
output. (spconv instead keeps one arbitrary point per voxel in its hash table.)

    index = VoxelIndex.build(grid, batch)            # grid [N, 3] int, batch [N]
    conv = SubMConv3d(6, 32, kernel_size=5, bias=False)
    out = conv(feats, index)                         # [N, 32]
    out = conv.forward_voxels(feats, index)[index.inverse]   # the same: one row per voxel, then per point
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.render import numba_backend

MARGIN = 8  # coordinate margin inside the key space: kernels up to 17^3
CHUNK_ELEMENTS = 1 << 24  # im2col block size (elements) per matmul
PAIRS_BLOCK_ELEMENTS = 1 << 19  # neighbour-table slots built at once by `pairs` (4 MB: stays in cache)
# "auto" uses the Numba kernel up to this many weights per offset: the stem (6 x 16) 2x faster than "pairs"; at
# 16 x 16 both ran alike, wider layers ran slower (2-core CPU, docs/benchmarks.md session 17)
NUMBA_MAX_WEIGHTS = 128
DENSE_LOOKUP_SLOTS = 1 << 24  # `pairs` uses a dense key -> voxel table (int32) up to this key range, else
# binary searches (one 0.01-voxelised sample in [-1, 1]: ~10 M slots)


class VoxelIndex:
    """Hash of the occupied voxels of a (batched) point set; caches neighbour tables per kernel size."""

    def __init__(self, keys: Tensor, inverse: Tensor, first: Tensor | None, side: int):
        self.keys = keys  # [U] sorted unique voxel keys
        self.inverse = inverse  # [N] point -> voxel
        self.first = first  # [U] one point per voxel when there are no duplicates (a permutation), else None
        self.side = side  # key-space side length per axis
        self._neighbours: dict[int, Tensor] = {}
        self._pairs: dict[int, list[tuple[Tensor, Tensor]]] = {}

    @property
    def num_voxels(self) -> int:
        return self.keys.shape[0]

    def column_deltas(self, kernel_size: int) -> Tensor:
        """[k^2] key of each kernel column's first voxel (dz = -k//2) minus the centre voxel's key, columns x-major
        then y: a column's k voxels have consecutive keys."""
        r = kernel_size // 2
        steps = torch.arange(-r, r + 1, device=self.keys.device)
        dxy = torch.cartesian_prod(steps, steps)  # [k^2, 2] (x, y offsets)
        return (dxy[:, 0] * self.side + dxy[:, 1]) * self.side - r

    @staticmethod
    def build(grid: Tensor, batch: Tensor) -> VoxelIndex:
        """grid [N, 3] non-negative ints, batch [N] sample index."""
        if grid.ndim != 2 or grid.shape[1] != 3 or batch.shape != grid.shape[:1]:
            raise OpenLSMError(f"VoxelIndex expects grid [N,3] and batch [N], got {tuple(grid.shape)}, "
                               f"{tuple(batch.shape)}")
        grid = grid.long()
        side = int(grid.max()) + 2 * MARGIN + 1 if grid.numel() else 2 * MARGIN + 1
        point_keys = _keys(batch.long(), grid + MARGIN, side)
        keys, inverse = torch.unique(point_keys, sorted=True, return_inverse=True)
        first = None
        if keys.shape[0] == grid.shape[0]:  # no duplicates: voxels are a permutation of the points
            first = torch.empty_like(inverse).scatter_(0, inverse, torch.arange(len(inverse), device=grid.device))
        return VoxelIndex(keys, inverse, first, side)

    def neighbours(self, kernel_size: int) -> Tensor:
        """[U, k^3] voxel index of each kernel offset (x-major, then y, then z), U where the voxel is empty."""
        _check_kernel(kernel_size)
        if kernel_size not in self._neighbours:
            k, u = kernel_size, self.num_voxels
            # The k voxels (x+dx, y+dy, z-r .. z+r) of a column have consecutive keys: one binary search for
            # the column's first key, then its occupied voxels are the next <= k sorted keys.
            firsts = self.keys[:, None] + self.column_deltas(k)  # [U, k^2]
            nexts = torch.arange(k, device=self.keys.device)
            found = torch.searchsorted(self.keys, firsts)[..., None] + nexts  # [U, k^2, k] the next k sorted keys
            padded = torch.cat([self.keys, self.keys.new_full((k,), torch.iinfo(self.keys.dtype).max)])
            dz = padded[found] - firsts[..., None]  # z offset + r of each of the next k keys from the column start
            # Stored offset-major [k^2, k, U] (flattened; offsets x-major, then y, then z), + one slot that
            # takes the misses. One scatter for all k candidates of every column (fewer launches on a GPU).
            table = torch.full((k**3 * u + 1,), u, dtype=torch.long, device=self.keys.device)
            slots = (torch.arange(k * k, device=self.keys.device) * (k * u))[None, :] + torch.arange(
                u, device=self.keys.device)[:, None]  # [U, k^2] slot of (column, dz = 0)
            table.scatter_(0, torch.where(dz < k, slots[..., None] + dz * u, len(table) - 1).flatten(),
                           found.flatten())
            self._neighbours[kernel_size] = table[:-1].view(k**3, u).t()
        return self._neighbours[kernel_size]

    def pairs(self, kernel_size: int) -> list[tuple[Tensor, Tensor]]:
        """Per kernel offset (x-major, then y, then z): (output voxels ascending, their neighbour voxels)
        for the neighbours that exist."""
        _check_kernel(kernel_size)
        if kernel_size not in self._pairs:
            self._pairs[kernel_size] = self._build_pairs(kernel_size)
        return self._pairs[kernel_size]

    def _build_pairs(self, k: int) -> list[tuple[Tensor, Tensor]]:
        span = (k // 2) * (self.side**2 + self.side + 1)  # largest |key offset| of the kernel
        if self.num_voxels and int(self.keys[-1]) - int(self.keys[0]) + 2 * span + 1 <= DENSE_LOOKUP_SLOTS:
            return self._pairs_by_lookup(k, int(self.keys[0]) - span, int(self.keys[-1]) + span + 1)
        return self._pairs_by_search(k)

    def _pairs_by_lookup(self, k: int, lo: int, hi: int) -> list[tuple[Tensor, Tensor]]:
        # A dense table over the key range [lo, hi) holds voxel + 1 (0 = empty): one gather per offset, at
        # ascending addresses (the keys are sorted), instead of binary searches.
        r, u, dev = k // 2, self.num_voxels, self.keys.device
        lookup = torch.zeros(hi - lo, dtype=torch.int32, device=dev)
        lookup[self.keys - lo] = torch.arange(1, u + 1, dtype=torch.int32, device=dev)
        steps = torch.arange(-r, r + 1, device=dev)
        dxyz = torch.cartesian_prod(steps, steps, steps)  # [k^3, 3] offsets x-major, then y, then z
        deltas = (dxyz[:, 0] * self.side + dxyz[:, 1]) * self.side + dxyz[:, 2]  # [k^3] key offsets
        per_block = max(1, PAIRS_BLOCK_ELEMENTS // max(u, 1))  # offsets per block
        local = self.keys - lo
        out: list[tuple[Tensor, Tensor]] = []
        for o0 in range(0, k**3, per_block):
            queries = local[None, :] + deltas[o0:o0 + per_block, None]  # [no, U]
            # [no * U] neighbour + 1 or 0; index_select is several times faster than advanced indexing on CPU
            found = lookup.index_select(0, queries.view(-1))
            hits = found.nonzero().squeeze(1)
            counts = (found.view(len(queries), u) != 0).sum(1).tolist()
            rows, sources = torch.remainder(hits, u), found.index_select(0, hits).long() - 1
            out.extend(zip(rows.split(counts), sources.split(counts)))
        return out

    def _pairs_by_search(self, k: int) -> list[tuple[Tensor, Tensor]]:
        # As `neighbours`, but a few kernel columns at a time: the [k^3, U] table is never materialised,
        # each block's table stays cache-sized (on CPU the whole table cost more than the conv itself).
        u, dev = self.num_voxels, self.keys.device
        deltas = self.column_deltas(k)  # [k^2]
        padded = torch.cat([self.keys, self.keys.new_full((k,), torch.iinfo(self.keys.dtype).max)])
        ids = torch.arange(u, device=dev)
        per_block = max(1, PAIRS_BLOCK_ELEMENTS // max(k * u, 1))  # kernel columns per block
        out: list[tuple[Tensor, Tensor]] = []
        for c0 in range(0, k * k, per_block):
            nc = min(per_block, k * k - c0)
            firsts = self.keys[None, :] + deltas[c0:c0 + nc, None]  # [nc, U]
            found = torch.searchsorted(self.keys, firsts)  # first voxel at or after each column start
            slots = (torch.arange(nc, device=dev) * (k * u))[:, None] + ids  # [nc, U] slot of (column, dz = 0)
            table = torch.full((nc * k * u + 1,), u, dtype=torch.long, device=dev)  # + one slot for the misses
            for j in range(k):  # a column's occupied voxels are the next <= k sorted keys
                dz = padded.index_select(0, (found + j).view(-1)).view(nc, u) - firsts  # [nc, U] z offset + r
                table.scatter_(0, torch.where(dz < k, slots + dz * u, len(table) - 1).view(-1),
                               (found + j).view(-1))
            hits = table[:-1] < u  # [nc * k * U], offset-major
            positions = hits.nonzero().squeeze(1)
            counts = hits.view(nc * k, u).sum(1).tolist()
            rows, sources = torch.remainder(positions, u), table.index_select(0, positions)
            out.extend(zip(rows.split(counts), sources.split(counts)))
        return out


def _check_kernel(kernel_size: int) -> None:
    if kernel_size % 2 != 1 or kernel_size // 2 > MARGIN:
        raise OpenLSMError(f"kernel size must be odd and at most {2 * MARGIN + 1}, got {kernel_size}")


def _keys(batch: Tensor, grid: Tensor, side: int) -> Tensor:
    return ((batch * side + grid[:, 0]) * side + grid[:, 1]) * side + grid[:, 2]


def voxel_features(feats: Tensor, index: VoxelIndex) -> Tensor:
    """[N, C] point features -> [U, C] voxel features (sum over duplicate points)."""
    if index.first is not None:
        return feats.index_select(0, index.first)
    out = feats.new_zeros(index.num_voxels, feats.shape[1])
    return out.index_add(0, index.inverse, feats)


def submanifold_conv3d(feats: Tensor, index: VoxelIndex, weight: Tensor, bias: Tensor | None = None,
                       method: str = "auto") -> Tensor:
    """feats [N, C_in], weight [C_out, k, k, k, C_in] -> [N, C_out] at the point sites.

    method "im2col": one gather of all k^3 neighbours + one GEMM per row chunk (few kernels: GPU);
    "pairs": per kernel offset, only the existing neighbour pairs (less memory traffic on sparse
    surfaces: CPU); "numba": one compiled pass over the voxels (CPU, no autograd, the `[cpu]` extra);
    "auto": im2col off the CPU; on the CPU numba for narrow layers (C_in x C_out <= NUMBA_MAX_WEIGHTS) where
    no gradient is needed and Numba is installed, else pairs.
    """
    return submanifold_conv3d_voxels(feats, index, weight, bias, method).index_select(0, index.inverse)


def submanifold_conv3d_voxels(feats: Tensor, index: VoxelIndex, weight: Tensor, bias: Tensor | None = None,
                              method: str = "auto") -> Tensor:
    """As `submanifold_conv3d`, but one row per voxel [U, C_out] (points read theirs at `index.inverse`):
    row-wise layers that follow can run on the U voxels instead of the N >= U points."""
    c_out, k = weight.shape[0], weight.shape[1]
    c_in = weight.shape[-1]
    if feats.ndim != 2 or feats.shape[1] != c_in:
        raise OpenLSMError(f"sparse conv expects features [N,{c_in}], got {tuple(feats.shape)}")
    if method == "auto":
        method = "im2col" if feats.device.type != "cpu" else "pairs"
        if method == "pairs" and c_in * c_out <= NUMBA_MAX_WEIGHTS and not torch.is_grad_enabled() \
                and numba_backend.available():
            method = "numba"
    voxels = voxel_features(feats, index)  # [U, C_in]
    kernels = weight.permute(1, 2, 3, 4, 0).reshape(k**3, c_in, c_out)  # offsets ordered (kx, ky, kz)
    if method == "numba":
        from openlsm.models.lsm.sparse_conv_numba import submanifold_conv3d_numba

        return submanifold_conv3d_numba(voxels, index.keys, index.column_deltas(k), kernels, bias)
    if method == "pairs":
        centre = k**3 // 2
        out = voxels @ kernels[centre]  # the centre offset always hits the site itself
        for o, (rows, sources) in enumerate(index.pairs(k)):
            if o != centre and rows.numel():  # in place: no copy of the output per offset
                out.index_add_(0, rows, voxels.index_select(0, sources) @ kernels[o])
    elif method == "im2col":
        neighbours = index.neighbours(k)  # [U, k^3]
        voxels = torch.cat([voxels, voxels.new_zeros(1, c_in)])  # row U is the empty voxel
        kernel = kernels.reshape(k**3 * c_in, c_out)
        rows = max(1, CHUNK_ELEMENTS // (k**3 * c_in))
        # index_select, not voxels[idx]: its backward is an index_add_, not the sort-based index_put_
        # that took 68 % of a GPU training step
        outs = [voxels.index_select(0, neighbours[i : i + rows].reshape(-1)).reshape(-1, k**3 * c_in) @ kernel
                for i in range(0, neighbours.shape[0], rows)]
        out = torch.cat(outs) if outs else feats.new_zeros(0, c_out)
    else:
        raise OpenLSMError(f"unknown sparse conv method {method!r}")
    return out + bias if bias is not None else out


class SubMConv3d(nn.Module):
    """Submanifold conv with parameters `weight` [C_out, k, k, k, C_in] and optional `bias` [C_out]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        fan_in = self.weight[0].numel()
        nn.init.uniform_(self.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, feats: Tensor, index: VoxelIndex, method: str = "auto") -> Tensor:
        return submanifold_conv3d(feats, index, self.weight, self.bias, method)

    def forward_voxels(self, feats: Tensor, index: VoxelIndex, method: str = "auto") -> Tensor:
        """[N, C_in] -> [U, C_out], one row per voxel (see `submanifold_conv3d_voxels`)."""
        return submanifold_conv3d_voxels(feats, index, self.weight, self.bias, method)

    def extra_repr(self) -> str:
        c_out, k, c_in = self.weight.shape[0], self.kernel_size, self.weight.shape[-1]
        return f"{c_in}, {c_out}, kernel_size={k}, bias={self.bias is not None}"
