"""Submanifold sparse conv on the CPU compiled by Numba (optional extra `[cpu]`; inference only; `sparse_conv.py`
imports this module only where Numba is installed). The kernel is at module level, so Numba's disk cache serves
later processes.

One pass over the output voxels in parallel: each voxel finds its neighbours in the sorted keys (one binary search
per kernel column, whose k voxels have consecutive keys) and accumulates neighbour row x kernel slice into its own
output row. Nothing per pair is materialised: for narrow layers (the stem, 6 -> 16 channels, 5^3 offsets) the
PyTorch "pairs" method spends its time building, gathering and scattering pairs, not multiplying.

    out = submanifold_conv3d_numba(voxels, index.keys, index.column_deltas(k), kernels, bias)  # [U, C_in] -> [U, C_out]
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from openlsm.render.numba_backend import numba_launch


@numba.njit(parallel=True, cache=True)
def conv(keys, column_deltas, k, voxels, kernels, out):
    # keys [U] sorted; column_deltas [k^2]: key of a kernel column's first voxel (dz = -r) minus the voxel's key,
    # columns x-major then y; voxels [U, C_in]; kernels [k^3, C_in, C_out] (offsets x, y, z); out [U, C_out] = bias
    u = keys.shape[0]
    cin, cout = kernels.shape[1], kernels.shape[2]
    for i in numba.prange(u):
        row = out[i]
        for c in range(column_deltas.shape[0]):
            first = keys[i] + column_deltas[c]
            s = np.searchsorted(keys, first)
            while s < u and keys[s] < first + k:
                o = c * k + (keys[s] - first)
                for a in range(cin):
                    f = voxels[s, a]
                    for d in range(cout):
                        row[d] += f * kernels[o, a, d]
                s += 1


@torch.no_grad()
@numba_launch
def submanifold_conv3d_numba(voxels: Tensor, keys: Tensor, column_deltas: Tensor, kernels: Tensor,
                             bias: Tensor | None) -> Tensor:
    """voxels [U, C_in] (float32 or float64, CPU) at the sorted voxel `keys` [U], `VoxelIndex.column_deltas(k)`
    [k^2], kernels [k^3, C_in, C_out] (offsets x-major, then y, then z) -> [U, C_out]."""
    k = kernels.shape[0] // column_deltas.shape[0]  # k^3 offsets over k^2 columns
    out = voxels.new_zeros(voxels.shape[0], kernels.shape[2])
    if bias is not None:
        out += bias.to(voxels.dtype)
    conv(keys.numpy(), column_deltas.numpy(), k, voxels.contiguous().numpy(),
         kernels.to(voxels.dtype).contiguous().numpy(), out.numpy())
    return out
