"""The CPU inference fast paths compute what the plain paths compute: blocked neighbour pairs, per-voxel conv
outputs, row-chunked PTv3 blocks / attention / unpooling (float64, tiny sizes)."""

import pytest
import torch
from test_ptv3 import tiny_net  # the same test net (tests/models is on sys.path under pytest)

from openlsm.models.lsm import ptv3, sparse_conv
from openlsm.models.lsm.ptv3 import PTv3Config, build_root_level, normalize_points
from openlsm.models.lsm.sparse_conv import SubMConv3d, VoxelIndex, submanifold_conv3d

TINY = PTv3Config.tiny()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def pairs_from_table(index: VoxelIndex, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Reference: read the pairs off the full [U, k^3] neighbour table."""
    table = index.neighbours(k)
    out = []
    for o in range(k**3):
        rows = (table[:, o] < index.num_voxels).nonzero().squeeze(1)
        out.append((rows, table[rows, o]))
    return out


def brute_force_pairs(grid: torch.Tensor, batch: torch.Tensor, k: int) -> list[set[tuple[int, int]]]:
    """Per offset, the set of (output voxel, neighbour voxel) by comparing all voxel pairs (float-free)."""
    index = VoxelIndex.build(grid, batch)
    first = torch.empty(index.num_voxels, dtype=torch.long)
    first[index.inverse] = torch.arange(len(grid))  # some point of every voxel
    cells, samples = grid[first].tolist(), batch[first].tolist()
    r = k // 2
    out: list[set[tuple[int, int]]] = [set() for _ in range(k**3)]
    for u, (cu, bu) in enumerate(zip(cells, samples)):
        for v, (cv, bv) in enumerate(zip(cells, samples)):
            d = [cv[i] - cu[i] + r for i in range(3)]
            if bu == bv and all(0 <= x < k for x in d):
                out[(d[0] * k + d[1]) * k + d[2]].add((u, v))
    return out


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("block_elements", [1, 40, 1 << 19])  # one column/offset per block, a few, all at once
@pytest.mark.parametrize("lookup_slots", [0, 1 << 24])  # binary searches / dense key -> voxel table
def test_blocked_pairs_equal_the_neighbour_table_and_brute_force(k, block_elements, lookup_slots, monkeypatch):
    monkeypatch.setattr(sparse_conv, "PAIRS_BLOCK_ELEMENTS", block_elements)
    monkeypatch.setattr(sparse_conv, "DENSE_LOOKUP_SLOTS", lookup_slots)
    gen = torch.Generator().manual_seed(k)
    grid = torch.randint(0, 7, (90, 3), generator=gen)
    grid = torch.cat([grid, grid[:15]])  # duplicates
    batch = (torch.arange(len(grid)) % 2).sort().values  # two samples on one grid
    pairs = VoxelIndex.build(grid, batch).pairs(k)
    expected = pairs_from_table(VoxelIndex.build(grid, batch), k)
    brute = brute_force_pairs(grid, batch, k)
    assert len(pairs) == k**3
    for (rows, sources), (ref_rows, ref_sources), ref_set in zip(pairs, expected, brute):
        assert torch.equal(rows, ref_rows) and torch.equal(sources, ref_sources)
        assert set(zip(rows.tolist(), sources.tolist())) == ref_set
        assert bool((rows[1:] > rows[:-1]).all())  # ascending output voxels per offset


@pytest.mark.parametrize("method", ["pairs", "im2col"])
def test_per_voxel_conv_output_read_per_point_equals_the_conv(method):
    gen = torch.Generator().manual_seed(5)
    grid = torch.randint(0, 5, (50, 3), generator=gen)
    grid = torch.cat([grid, grid[:12]])
    index = VoxelIndex.build(grid, torch.zeros(len(grid), dtype=torch.long))
    conv = SubMConv3d(3, 4, 3, bias=True).double()
    feats = torch.randn(len(grid), 3, generator=gen, dtype=torch.float64)
    voxels = conv.forward_voxels(feats, index, method)
    assert voxels.shape == (index.num_voxels, 4)
    torch.testing.assert_close(voxels.index_select(0, index.inverse), conv(feats, index, method), rtol=0, atol=0)


@pytest.mark.parametrize("lookup_slots", [0, 1 << 24])
def test_pairs_conv_gradients_match_float64_finite_differences_with_blocked_pairs(lookup_slots, monkeypatch):
    monkeypatch.setattr(sparse_conv, "PAIRS_BLOCK_ELEMENTS", 20)
    monkeypatch.setattr(sparse_conv, "DENSE_LOOKUP_SLOTS", lookup_slots)
    gen = torch.Generator().manual_seed(6)
    grid = torch.randint(0, 3, (10, 3), generator=gen)
    index = VoxelIndex.build(grid, torch.zeros(10, dtype=torch.long))
    feats = torch.randn(10, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, 5, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, b: submanifold_conv3d(f, index, w, b, method="pairs"),
                                    (feats, weight, bias))


def cloud_with_duplicates(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n lattice points + copies of the first n // 4 (same voxel, other colours); feats = xyz + rgb."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randperm(30**3, generator=gen)[:n]
    lattice = torch.stack([cells // 900, cells // 30 % 30, cells % 30], -1).double()
    lattice = torch.cat([lattice, lattice[: n // 4]])
    coords = normalize_points(((lattice + 0.5) * 0.03)[None])[0][0]
    rgb = torch.rand(len(coords), 3, generator=gen, dtype=torch.float64) * 2 - 1
    return coords, torch.cat([coords, rgb], -1)


@pytest.mark.parametrize("row_chunk", [16, 48, 1 << 20])
@pytest.mark.parametrize("second", [11, 60])  # 11: one short (masked) patch, plain attention; 60: runs only
def test_chunked_inference_equals_the_autograd_path(row_chunk, second, monkeypatch):
    monkeypatch.setattr(ptv3, "ROW_CHUNK", row_chunk)
    (c0, f0), (c1, f1) = cloud_with_duplicates(140, 1), cloud_with_duplicates(second, 2)
    coords, feats = torch.cat([c0, c1]), torch.cat([f0, f1])
    offsets = torch.tensor([len(c0), len(c0) + len(c1)])
    gen = torch.Generator().manual_seed(3)
    geo = torch.randn(2, 7, TINY.geometry_dim, generator=gen, dtype=torch.float64)
    sem = torch.randn(2, 5, TINY.semantic_dim, generator=gen, dtype=torch.float64)
    net = tiny_net(4)
    assert build_root_level(coords, offsets, TINY).voxels.num_voxels < len(coords)  # duplicates present
    calls, runs = [], []
    monkeypatch.setattr(ptv3.Block, "_forward_chunked",
                        lambda self, *a, f=ptv3.Block._forward_chunked: calls.append(1) or f(self, *a))
    monkeypatch.setattr(ptv3.Block, "_forward_runs",
                        lambda self, *a, f=ptv3.Block._forward_runs: runs.append(1) or f(self, *a))
    expected = net(coords, feats, offsets, geo, sem)  # grad enabled: the plain path
    assert expected.requires_grad and not calls
    with torch.no_grad():
        fast = net(coords, feats, offsets, geo, sem)
    assert calls  # the chunked path ran
    assert bool(runs) == (second > TINY.enc_patch_sizes[0])  # attention over runs of equal rows where no mask
    torch.testing.assert_close(fast, expected.detach(), rtol=1e-12, atol=1e-12)


def test_patch_runs_equal_a_loop_over_the_slots():
    gen = torch.Generator().manual_seed(4)
    values = torch.randint(0, 3, (40, 1), generator=gen).double()  # few distinct rows: many runs of length > 1
    feats = torch.cat([values, values * 2], 1)  # [N, 2]
    slots = torch.randint(0, 40, (6 * 8,), generator=gen)  # 6 patches of 8
    slot_run, heads, lengths, per_patch = ptv3.patch_runs(feats, slots, 8)
    starts = [s % 8 == 0 or not torch.equal(feats[slots[s]], feats[slots[s - 1]]) for s in range(len(slots))]
    expected_heads = [s for s in range(len(slots)) if starts[s]]
    assert heads.tolist() == expected_heads
    assert lengths.tolist() == [b - a for a, b in zip(expected_heads, expected_heads[1:] + [len(slots)])]
    assert slot_run.tolist() == [sum(starts[:s + 1]) - 1 for s in range(len(slots))]
    assert per_patch.tolist() == [sum(starts[p * 8:(p + 1) * 8]) for p in range(6)]
    assert 6 < len(heads) < len(slots)  # both merged and separate runs occurred


def test_embedding_reads_per_voxel_rows_only_in_eval():
    coords, feats = cloud_with_duplicates(60, 7)
    net = tiny_net(8)
    level = build_root_level(coords, torch.tensor([len(coords)]), TINY)
    stem = net.embedding.stem
    expected = stem.act(stem.norm(stem.conv(feats, level.voxels)))  # per point
    torch.testing.assert_close(net.embedding(feats, level), expected, rtol=1e-12, atol=1e-12)
    net.train()  # training BN: statistics over the points (duplicates weigh more than one voxel row)
    before = stem.norm.running_mean.clone()
    with torch.no_grad():
        per_point = stem.conv(feats, level.voxels)
        net.embedding(feats, level)
    m = stem.norm.momentum
    torch.testing.assert_close(stem.norm.running_mean, (1 - m) * before + m * per_point.mean(0))
    per_voxel = stem.conv.forward_voxels(feats, level.voxels).mean(0)
    assert not torch.allclose(per_point.mean(0), per_voxel)  # the check above can tell the two apart


@pytest.mark.parametrize("rgb_residual", [True, False])
def test_gaussian_head_sh_and_its_gradients_equal_the_concatenating_formula(rgb_residual):
    from openlsm.gaussians.gaussians import rgb_to_sh0
    from openlsm.models.lsm.gaussian_head import GaussianHead, GaussianHeadConfig

    torch.manual_seed(9)
    head = GaussianHead(GaussianHeadConfig(in_dim=8, feature_dim=4, rgb_residual=rgb_residual)).double()
    gen = torch.Generator().manual_seed(10)
    feats = torch.randn(2, 30, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    means = torch.randn(2, 30, 3, generator=gen, dtype=torch.float64)
    colors = torch.rand(2, 30, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    sh = head(feats, means, colors).sh

    raw = head.split(head.gaussian_proj(feats))[3]  # [2, 30, 16, 3]
    if rgb_residual:
        raw = torch.cat([raw[..., :1, :] + rgb_to_sh0(colors)[..., None, :], raw[..., 1:, :]], dim=-2)
    expected = raw * head.sh_mask[:, None]
    torch.testing.assert_close(sh, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(sh.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((sh * weights).sum(), [feats, colors], allow_unused=True)
    ref = torch.autograd.grad((expected * weights).sum(), [feats, colors], allow_unused=True)
    for g, r in zip(grads, ref):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
