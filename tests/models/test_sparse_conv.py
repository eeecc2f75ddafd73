"""Submanifold sparse conv == dense conv3d restricted to the active sites (float64)."""

import pytest
import torch
import torch.nn.functional as F

from openlsm.errors import OpenLSMError
from openlsm.models.lsm import sparse_conv
from openlsm.models.lsm.sparse_conv import SubMConv3d, VoxelIndex, submanifold_conv3d
from openlsm.render import numba_backend


def dense_reference(grid, feats, weight, side):
    """Scatter point features (summing duplicates) into a dense [C, X, Y, Z] grid, run conv3d, read sites."""
    c_in, k = weight.shape[-1], weight.shape[1]
    dense = torch.zeros(side, side, side, c_in, dtype=feats.dtype)
    dense.index_put_((grid[:, 0], grid[:, 1], grid[:, 2]), feats, accumulate=True)
    dense = dense.permute(3, 0, 1, 2)[None]  # [1, C_in, X, Y, Z]
    out = F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=k // 2)[0]  # [C_out, X, Y, Z]
    return out[:, grid[:, 0], grid[:, 1], grid[:, 2]].T


def random_weight(c_out, k, c_in, gen):
    return torch.randn(c_out, k, k, k, c_in, generator=gen, dtype=torch.float64)


GRAD_METHODS = ["im2col", "pairs"]
METHODS = GRAD_METHODS + (["numba"] if numba_backend.available() else [])  # numba: forward only


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [3, 5])
def test_full_grid_equals_dense_conv3d(k, method):
    gen = torch.Generator().manual_seed(0)
    side = 5
    axes = torch.arange(side)
    grid = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[torch.randperm(len(grid), generator=gen)]  # site order must not matter
    feats = torch.randn(len(grid), 3, generator=gen, dtype=torch.float64)
    weight = random_weight(4, k, 3, gen)
    index = VoxelIndex.build(grid, torch.zeros(len(grid), dtype=torch.long))
    out = submanifold_conv3d(feats, index, weight, method=method)
    torch.testing.assert_close(out, dense_reference(grid, feats, weight, side), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_random_sparse_subset_equals_dense_conv3d_at_active_sites(method):
    gen = torch.Generator().manual_seed(1)
    side = 9
    grid = torch.randperm(side**3, generator=gen)[:150]
    grid = torch.stack([grid // side**2, grid // side % side, grid % side], -1)
    feats = torch.randn(150, 5, generator=gen, dtype=torch.float64)
    conv = SubMConv3d(5, 6, 3, bias=True).double()
    index = VoxelIndex.build(grid, torch.zeros(150, dtype=torch.long))
    expected = dense_reference(grid, feats, conv.weight.detach(), side) + conv.bias.detach()
    torch.testing.assert_close(conv(feats, index, method).detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_samples_in_a_batch_do_not_see_each_other(method):
    gen = torch.Generator().manual_seed(2)
    side = 6
    grid = torch.randint(0, side, (60, 3), generator=gen).unique(dim=0)
    n = len(grid)
    feats = torch.randn(2 * n, 2, generator=gen, dtype=torch.float64)
    weight = random_weight(3, 3, 2, gen)
    batch = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    out = submanifold_conv3d(feats, VoxelIndex.build(torch.cat([grid, grid]), batch), weight, method=method)
    torch.testing.assert_close(out[:n], dense_reference(grid, feats[:n], weight, side))
    torch.testing.assert_close(out[n:], dense_reference(grid, feats[n:], weight, side))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_points_are_summed_and_share_their_output(method):
    gen = torch.Generator().manual_seed(3)
    side = 5
    grid = torch.randint(0, side, (40, 3), generator=gen)
    grid = torch.cat([grid, grid[:10]])  # 10 exact duplicates (plus any accidental ones)
    feats = torch.randn(len(grid), 2, generator=gen, dtype=torch.float64)
    weight = random_weight(3, 3, 2, gen)
    index = VoxelIndex.build(grid, torch.zeros(len(grid), dtype=torch.long))
    assert index.num_voxels < len(grid)
    out = submanifold_conv3d(feats, index, weight, method=method)
    torch.testing.assert_close(out, dense_reference(grid, feats, weight, side))
    torch.testing.assert_close(out[:10], out[40:])


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_gradients_match_finite_differences(method):
    gen = torch.Generator().manual_seed(4)
    grid = torch.randint(0, 4, (12, 3), generator=gen)
    index = VoxelIndex.build(grid, torch.zeros(12, dtype=torch.long))
    feats = torch.randn(12, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = random_weight(2, 3, 2, gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda f, w: submanifold_conv3d(f, index, w, method=method), (feats, weight))


def test_bad_shapes_are_user_errors():
    index = VoxelIndex.build(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(OpenLSMError):
        submanifold_conv3d(torch.zeros(3, 4), index, torch.zeros(2, 3, 3, 3, 5))
    with pytest.raises(OpenLSMError):
        VoxelIndex.build(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.skipif(not numba_backend.available(), reason="needs the [cpu] extra (numba)")
def test_auto_uses_numba_for_narrow_layers_without_gradients(monkeypatch):
    import openlsm.models.lsm.sparse_conv_numba as numba_conv

    calls = []
    monkeypatch.setattr(numba_conv, "submanifold_conv3d_numba",
                        lambda *a, f=numba_conv.submanifold_conv3d_numba: calls.append(1) or f(*a))
    gen = torch.Generator().manual_seed(6)
    grid = torch.randint(0, 6, (40, 3), generator=gen)
    index = VoxelIndex.build(grid, torch.zeros(40, dtype=torch.long))
    narrow = random_weight(4, 5, 3, gen)  # 12 weights per offset
    wide = random_weight(16, 3, 16, gen)  # 256 > NUMBA_MAX_WEIGHTS
    assert 3 * 4 <= sparse_conv.NUMBA_MAX_WEIGHTS < 16 * 16
    feats3, feats16 = (torch.randn(40, c, generator=gen, dtype=torch.float64) for c in (3, 16))
    with torch.no_grad():
        fast = submanifold_conv3d(feats3, index, narrow)
        assert len(calls) == 1
        submanifold_conv3d(feats16, index, wide)
        assert len(calls) == 1  # wide: pairs
    slow = submanifold_conv3d(feats3.requires_grad_(), index, narrow)  # gradients needed: pairs
    assert len(calls) == 1 and slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-12)
    monkeypatch.setenv("OPENLSM_NUMBA", "0")
    with torch.no_grad():
        submanifold_conv3d(feats3, index, narrow)
    assert len(calls) == 1
