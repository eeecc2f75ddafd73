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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from openlsm.errors import OpenLSMError

MARGIN = 8  # coordinate margin inside the key space: kernels up to 17^3
CHUNK_ELEMENTS = 1 << 24  # im2col block size (elements) per matmul


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
        if kernel_size % 2 != 1 or kernel_size // 2 > MARGIN:
            raise OpenLSMError(f"kernel size must be odd and at most {2 * MARGIN + 1}, got {kernel_size}")
        if kernel_size not in self._neighbours:
            k, r, u = kernel_size, kernel_size // 2, self.num_voxels
            steps = torch.arange(-r, r + 1, device=self.keys.device)
            dxy = torch.cartesian_prod(steps, steps)  # [k^2, 2] columns (x, y offsets)
            # The k voxels (x+dx, y+dy, z-r .. z+r) of a column have consecutive keys: one binary search for
            # the column's first key, then its occupied voxels are the next <= k sorted keys.
            firsts = self.keys[:, None] + (dxy[:, 0] * self.side + dxy[:, 1]) * self.side - r  # [U, k^2]
            found = torch.searchsorted(self.keys, firsts)
            padded = torch.cat([self.keys, self.keys.new_full((k,), torch.iinfo(self.keys.dtype).max)])
            # Stored offset-major [k^2, k, U] (flattened; offsets x-major, then y, then z), which `pairs` reads
            # without a transpose, + one slot that takes the misses.
            table = torch.full((k**3 * u + 1,), u, dtype=torch.long, device=self.keys.device)
            slots = (torch.arange(k * k, device=self.keys.device) * (k * u))[None, :] + torch.arange(
                u, device=self.keys.device)[:, None]  # [U, k^2] slot of (column, dz = 0)
            for j in range(k):
                dz = padded[found + j] - firsts  # z offset + r of the j-th key from the column start
                table.scatter_(0, torch.where(dz < k, slots + dz * u, len(table) - 1).flatten(),
                               (found + j).flatten())
            self._neighbours[kernel_size] = table[:-1].view(k**3, u).t()
        return self._neighbours[kernel_size]

    def pairs(self, kernel_size: int) -> list[tuple[Tensor, Tensor]]:
        """Per kernel offset: (output voxels, their neighbour voxels) for the neighbours that exist."""
        if kernel_size not in self._pairs:
            neighbours = self.neighbours(kernel_size)
            # One pass over all offsets: pairs come out grouped by offset, output voxels ascending in each.
            by_offset = neighbours.t().contiguous()  # [k^3, U], already stored so (no copy)
            hits = by_offset < self.num_voxels
            found = hits.view(-1).nonzero().squeeze(1)
            counts = hits.sum(1)  # [k^3]
            starts = torch.arange(len(counts), device=found.device) * self.num_voxels
            rows = found - torch.repeat_interleave(starts, counts, output_size=len(found))
            sources = by_offset.view(-1)[found]
            counts = counts.tolist()
            self._pairs[kernel_size] = list(zip(rows.split(counts), sources.split(counts)))
        return self._pairs[kernel_size]


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
    surfaces: CPU); "auto" picks by device.
    """
    c_out, k = weight.shape[0], weight.shape[1]
    c_in = weight.shape[-1]
    if feats.ndim != 2 or feats.shape[1] != c_in:
        raise OpenLSMError(f"sparse conv expects features [N,{c_in}], got {tuple(feats.shape)}")
    if method == "auto":
        method = "pairs" if feats.device.type == "cpu" else "im2col"
    voxels = voxel_features(feats, index)  # [U, C_in]
    kernels = weight.permute(1, 2, 3, 4, 0).reshape(k**3, c_in, c_out)  # offsets ordered (kx, ky, kz)
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
    out = out.index_select(0, index.inverse)  # [N, C_out]
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

    def extra_repr(self) -> str:
        c_out, k, c_in = self.weight.shape[0], self.kernel_size, self.weight.shape[-1]
        return f"{c_in}, {c_out}, kernel_size={k}, bias={self.bias is not None}"
