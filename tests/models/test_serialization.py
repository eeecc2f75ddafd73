"""Space-filling curves: bijections, Hilbert adjacency, brute-force Morton codes, pooling nesting."""

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.lsm.serialization import (
    ORDERS,
    bit_length,
    encode,
    encode_orders,
    hilbert_encode,
    hilbert_encode_reference,
    sort_codes,
)


def full_grid(side: int) -> torch.Tensor:
    axes = torch.arange(side)
    return torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)


def brute_morton(x: int, y: int, z: int, depth: int) -> int:
    code = 0
    for level in reversed(range(depth)):  # most significant triple first, x before y before z
        for v in (x, y, z):
            code = (code << 1) | ((v >> level) & 1)
    return code


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_each_order_is_a_bijection_of_the_full_grid(order, depth):
    side = 1 << depth
    codes = encode(full_grid(side), depth, order)
    assert sorted(codes.tolist()) == list(range(side**3))


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans"])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_hilbert_neighbours_in_code_order_are_face_adjacent(order, depth):
    grid = full_grid(1 << depth)
    walk = grid[torch.argsort(encode(grid, depth, order))]
    steps = (walk[1:] - walk[:-1]).abs().sum(1)
    assert (steps == 1).all()
    assert walk[0].tolist() == [0, 0, 0]  # the curve starts at the origin


def test_z_order_matches_brute_force_bit_interleaving():
    gen = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 200, (300, 3), generator=gen)
    codes = encode(grid, 8, "z")
    assert codes.tolist() == [brute_morton(*g, 8) for g in grid.tolist()]
    trans = encode(grid, 8, "z-trans")
    assert trans.tolist() == [brute_morton(y, x, z, 8) for x, y, z in grid.tolist()]
    assert not torch.equal(codes, trans)


def test_trans_variant_swaps_x_and_y():
    grid = full_grid(4)
    h, ht = encode(grid, 2, "hilbert"), encode(grid, 2, "hilbert-trans")
    swapped = grid[:, [1, 0, 2]]
    assert torch.equal(ht, encode(swapped, 2, "hilbert"))
    assert not torch.equal(h, ht)


@pytest.mark.parametrize("order", ORDERS)
def test_codes_nest_under_stride_two_pooling(order):
    grid = full_grid(16)
    assert torch.equal(encode(grid, 4, order) >> 3, encode(grid >> 1, 3, order))


def test_per_point_depth_equals_separate_encodings():
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 100, (50, 3), generator=gen)  # depth 7
    b = torch.randint(0, 30, (40, 3), generator=gen)  # depth 5
    depths = torch.cat([torch.full((50,), 7), torch.full((40,), 5)])
    joint = encode(torch.cat([a, b]), depths, "hilbert")
    assert torch.equal(joint, torch.cat([encode(a, 7, "hilbert"), encode(b, 5, "hilbert")]))
    # leading zero bits are not neutral for Hilbert codes, so the depth matters
    assert not torch.equal(encode(b, 5, "hilbert"), encode(b, 7, "hilbert"))


@pytest.mark.parametrize("depth", [1, 2, 5, 9, 16])
def test_table_driven_hilbert_equals_skillings_transform(depth):
    """The lookup-table encoder against the direct transform, at one depth and with per-point depths (points
    whose curve starts lower must keep the identity state above their top level)."""
    gen = torch.Generator().manual_seed(depth)
    grid = torch.randint(0, 1 << depth, (4000, 3), generator=gen)
    assert torch.equal(hilbert_encode(grid, depth), hilbert_encode_reference(grid, depth))
    depths = torch.randint(1, depth + 1, (4000,), generator=gen)
    small = grid % (1 << depths[:, None])  # each point inside its own cube
    assert torch.equal(hilbert_encode(small, depths), hilbert_encode_reference(small, depths))


def test_encode_orders_equals_encoding_each_order():
    """All orders at once (what the point transformer calls), with per-point depths and any order subset or
    permutation, equals `encode` order by order; coordinates up to the deepest allowed grid (16 bits)."""
    gen = torch.Generator().manual_seed(2)
    grid = torch.cat([torch.randint(0, 100, (60, 3), generator=gen), torch.randint(0, 1 << 16, (40, 3), generator=gen)])
    depths = torch.cat([torch.full((60,), 7), torch.full((40,), 16)])

    def want(order):
        if order.startswith("z"):  # Morton codes have no depth-dependent transform: leading zeros are neutral
            return encode(grid, 16, order)
        return torch.cat([encode(grid[:60], 7, order), encode(grid[60:], 16, order)])

    for orders in (ORDERS, ORDERS[::-1], ("hilbert-trans", "z"), ("z-trans",), ()):
        got = encode_orders(grid, depths, orders)
        assert got.shape == (len(orders), 100)
        for i, order in enumerate(orders):
            assert torch.equal(got[i], want(order))
    assert encode(grid[60:], 16, "z").tolist() == [brute_morton(*g, 16) for g in grid[60:].tolist()]
    with pytest.raises(OpenLSMError):
        encode_orders(grid, 7, ("z", "peano"))


def test_bit_length_matches_python():
    values = [0, 1, 2, 3, 7, 8, 199, 200, 255, 256, 65535]
    assert bit_length(torch.tensor(values)).tolist() == [v.bit_length() for v in values]


def test_sort_codes_is_batch_major_and_inverse_is_the_inverse_permutation():
    codes = torch.tensor([[5, 1, 7, 0, 3]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    orders, inverses = sort_codes(codes, batch, shift=3)
    assert orders[0].tolist() == [1, 0, 2, 3, 4]
    assert torch.equal(orders[0][inverses[0]], torch.arange(5))


def test_unknown_order_is_a_user_error():
    with pytest.raises(OpenLSMError):
        encode(full_grid(2), 1, "peano")
