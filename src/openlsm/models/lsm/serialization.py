"""Space-filling-curve serialisation of integer voxel grids (Point Transformer V3 style).

Four orders are used: "z" (Morton), "hilbert", and their "-trans" variants, which encode the grid with the
x and y columns swapped. Codes interleave the bits of (x, y, z) with x most significant in every triple, so a
code of depth d has 3·d bits; the batch index goes above them (`sort_codes`).

    grid = torch.randint(0, 200, (1000, 3))
    depth = bit_length(grid.max())                       # 8
    codes = encode(grid, depth, "hilbert")               # [1000] int64, < 2**24
    orders, inverses = sort_codes(codes[None], batch=torch.zeros(1000, dtype=torch.long), shift=24)

Hilbert codes follow Skilling's "transpose" construction (AIP Conf. Proc. 707, 2004): undo the excess work
from the top bit down, then read the Gray-coded transpose as one bit string and Gray-decode it. Both curves are
nested: `encode(g, d, o) >> 3 == encode(g >> 1, d - 1, o)`, which is what serialized pooling relies on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from openlsm.errors import OpenLSMError

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16  # 48 code bits + batch bits stay inside int64


def bit_length(values: Tensor) -> Tensor:
    """Elementwise Python-style `int.bit_length` of non-negative integers (0 -> 0)."""
    values = values.long()
    powers = 1 << torch.arange(63, device=values.device)  # [63]
    return (values.unsqueeze(-1) >= powers).sum(-1)


def interleave_bits(grid: Tensor, depth: int) -> Tensor:
    """[N, 3] int -> [N] int64 with bit i of x, y, z at positions 3i+2, 3i+1, 3i (Morton code)."""
    grid = grid.long()
    codes = torch.zeros(grid.shape[0], dtype=torch.long, device=grid.device)
    for i in range(depth):
        bits = (grid >> i) & 1  # [N, 3]
        codes |= (bits[:, 0] << (3 * i + 2)) | (bits[:, 1] << (3 * i + 1)) | (bits[:, 2] << (3 * i))
    return codes


def z_order_encode(grid: Tensor, depth: int | Tensor) -> Tensor:
    """Morton code of non-negative integer coordinates [N, 3] below 2**depth."""
    max_depth = int(depth.max()) if isinstance(depth, Tensor) and depth.numel() else int(depth)
    return interleave_bits(grid, max_depth)


def gray_decode(codes: Tensor) -> Tensor:
    """Inverse Gray code: every bit becomes the XOR of itself and all more significant bits."""
    for shift in (1, 2, 4, 8, 16, 32):
        codes = codes ^ (codes >> shift)
    return codes


def hilbert_encode(grid: Tensor, depth: int | Tensor) -> Tensor:
    """Hilbert code of non-negative integer coordinates [N, 3] below 2**depth.

    `depth` may be an int or a per-point tensor [N] (several samples, each with its own cube side 2**depth).
    """
    grid = grid.long()
    n = grid.shape[0]
    depths = torch.as_tensor(depth, dtype=torch.long, device=grid.device).expand(n)
    max_depth = int(depths.max()) if n else 0
    # int32 halves the memory traffic of the transform (coordinates have at most MAX_DEPTH = 16 bits)
    dtype = torch.int32 if max_depth <= MAX_DEPTH else torch.long
    xs = [grid[:, 0].to(dtype), grid[:, 1].to(dtype), grid[:, 2].to(dtype)]
    # Undo excess work, top level first. Level `level` only touches the bits below it, and only for points
    # whose curve has that level (leading zero bits would otherwise swap axes).
    for level in range(max_depth - 1, 0, -1):
        q, p = 1 << level, (1 << level) - 1
        active = depths > level  # [N]
        for i in range(3):
            bit_set = (xs[i] & q) != 0
            xs[0] = torch.where(active & bit_set, xs[0] ^ p, xs[0])  # invert low bits of x0
            swap = torch.where(active & ~bit_set, (xs[0] ^ xs[i]) & p, 0)  # exchange low bits of x0, xi
            xs[0] = xs[0] ^ swap
            xs[i] = xs[i] ^ swap
    return gray_decode(interleave_bits(torch.stack(xs, dim=1), max_depth))


def encode(grid: Tensor, depth: int | Tensor, order: str) -> Tensor:
    """Code of one order in ORDERS for grid [N, 3]; "-trans" swaps the x and y columns first."""
    if order not in ORDERS:
        raise OpenLSMError(f"unknown serialization order {order!r}; expected one of {ORDERS}")
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
    if order.startswith("z"):
        return z_order_encode(grid, depth)
    return hilbert_encode(grid, depth)


def sort_codes(codes: Tensor, batch: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """Sort points by (batch, code) for each order.

    codes [O, N] (< 2**shift), batch [N] -> orders [O, N] (sorted position -> point index) and
    inverses [O, N] (point index -> sorted position). The sort is stable, so ties keep input order.
    """
    keys = (batch.long() << shift) | codes  # [O, N]
    orders = torch.argsort(keys, dim=1, stable=True)
    positions = torch.arange(codes.shape[1], device=codes.device).expand_as(orders)
    inverses = torch.empty_like(orders).scatter_(1, orders, positions)
    return orders, inverses
