"""Grid kNN: equal to the all-pairs reference on uniform, clustered, surface, duplicate and tiny clouds."""

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.lsm.knn import _plan_chunks, knn_mean_sq_dist, knn_mean_sq_dist_bruteforce


def _ref64(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[N, 3] -> [N] float64 mean squared distance to the k nearest other points (sort of all pairs)."""
    p = points.double()
    out = []
    for start in range(0, len(p), 256):
        d2 = ((p[start:start + 256, None] - p[None]) ** 2).sum(-1)  # [256, N]
        d2[torch.arange(len(d2)), torch.arange(start, start + len(d2))] = float("inf")  # not itself
        out.append(d2.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out)


def _same(got, points, k=3):
    ref = knn_mean_sq_dist_bruteforce(points, k)
    assert got.shape == ref.shape and got.dtype == points.dtype
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def _grid(points, k=3, **kw):
    """The grid search alone: no query goes to the all-pairs fallback."""
    return knn_mean_sq_dist(points, k, fallback_elements=0, method="grid", **kw)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _clustered(seed, n=3000):
    """Gaussian blobs of widths 1e-3 .. 1, a sparse halo and far outliers: density varies by ~10^9."""
    g = _gen(seed)
    centres = torch.randn(6, 3, generator=g) * 5
    widths = torch.tensor([1e-3, 1e-2, 0.1, 0.3, 1.0, 0.05])
    which = torch.randint(0, 6, (n,), generator=g)
    pts = centres[which] + torch.randn(n, 3, generator=g) * widths[which, None]
    pts[:20] = torch.randn(20, 3, generator=g) * 40  # isolated points far away
    return pts


def _plane_point_map(seed, H=48, W=64):
    """Two unprojected depth maps of a tilted plane at z ~ 5 (+ noise): a dense surface far from the origin."""
    g = _gen(seed)
    out = []
    for view in range(2):
        v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        x, y = (u - W / 2) / 60, (v - H / 2) / 60  # normalised image coordinates, f = 60 px
        depth = 5.0 / (1 + 0.3 * x + 0.2 * y) + 0.002 * torch.randn(H, W, generator=g)
        pts = torch.stack([x * depth, y * depth, depth], -1).reshape(-1, 3)
        out.append(pts + 0.01 * view)  # the second view almost coincides
    return torch.cat(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_uniform_cloud_matches_bruteforce(seed):
    pts = torch.rand(4000, 3, generator=_gen(seed)) * torch.tensor([4.0, 1.0, 0.2]) + 3.0
    got = _grid(pts)
    _same(got, pts)
    _same(knn_mean_sq_dist(pts), pts)
    torch.testing.assert_close(got.double(), _ref64(pts), rtol=1e-5, atol=0)


@pytest.mark.parametrize("seed", [2, 3])
def test_clustered_cloud_with_outliers(seed):
    pts = _clustered(seed)
    # No all-pairs fallback: the coarser grid levels alone must settle every point, outliers included.
    _same(_grid(pts), pts)
    _same(knn_mean_sq_dist(pts, fallback_elements=len(pts) * 50), pts)  # the last ~50 go to all pairs
    _same(knn_mean_sq_dist(pts), pts)


def test_dense_point_map_far_from_origin():
    pts = _plane_point_map(4)
    got = _grid(pts)
    _same(got, pts)
    torch.testing.assert_close(got.double(), _ref64(pts), rtol=1e-3, atol=0)


def test_lines_and_lattices_with_ties():
    line = torch.linspace(0, 1, 801)[:, None] * torch.tensor([[1.0, 2.0, -0.5]])  # 1-D: every gap equal
    _same(_grid(line), line, k=3)
    ax = torch.arange(12.0)
    lattice = torch.cartesian_prod(ax, ax, ax) * 0.25 + 1.0  # six neighbours tie at the same distance
    got = _grid(lattice)
    _same(got, lattice)
    assert torch.equal(got, torch.full_like(got, 0.0625))  # every point has >= 3 neighbours at 0.25


def test_duplicates_count_as_neighbours():
    g = _gen(5)
    base = torch.rand(600, 3, generator=g)
    pts = torch.cat([base, base[:200], base[:50], torch.full((12, 3), 0.5)])  # up to triples + a 12-point stack
    got = _grid(pts)
    _same(got, pts)
    assert (got[-12:] == 0).all()  # each of the 12 has 3 zero-distance neighbours
    assert (got[:50] > 0).all()  # a point seen 3 times has 2 zero neighbours, the third is elsewhere
    torch.testing.assert_close(got[:50], got[600:650])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_tiny_sets(n):
    pts = torch.tensor([[0.0, 0, 0], [0.0, 3, 4], [1.0, 0, 0], [0.0, 0, 2]])[:n]
    got = _grid(pts)
    _same(got, pts)
    _same(knn_mean_sq_dist(pts), pts)
    if n == 1:
        assert got.tolist() == [0.0]  # a lone point has no neighbour
    if n == 2:
        assert got.tolist() == [25.0, 25.0]  # fewer than k others: the mean over those there are
    assert _grid(torch.zeros(n, 3)).tolist() == [0.0] * n


def test_float64_and_batches():
    pts = torch.stack([_clustered(6, 1500), _plane_point_map(7, 24, 32)[:1500]]).double()
    got = _grid(pts)
    assert got.dtype == torch.float64 and got.shape == (2, 1500)
    for b in range(2):
        torch.testing.assert_close(got[b], _ref64(pts[b]), rtol=1e-12, atol=0)  # computed in float64
        assert torch.equal(got[b], _grid(pts[b]))  # batching changes nothing


@pytest.mark.parametrize("k", [1, 5])
def test_other_k_and_small_chunks(k):
    pts = _clustered(8, 1200)
    got = _grid(pts, k=k)
    _same(got, pts, k=k)
    assert torch.equal(_grid(pts, k=k, max_elements=64), got)  # many small chunks


@pytest.mark.parametrize("growth", [2.0, 4.0])
def test_gpu_chunking_is_the_same_search(growth):
    """The GPU defaults (wider chunks: more padding, fewer launches) pad with the sentinel only: same result."""
    for pts in (_clustered(10, 2000), _plane_point_map(11)):
        got = _grid(pts, chunk_growth=growth, max_elements=1 << 26)
        _same(got, pts)
        assert torch.equal(got, _grid(pts))
    pts = _clustered(12, 1200)
    assert torch.equal(_grid(pts, chunk_growth=growth, max_elements=64), _grid(pts))  # wide and tiny chunks


@pytest.mark.parametrize("growth, max_elements", [(1.25, 1 << 22), (2.0, 1 << 26), (1.25, 50), (4.0, 300)])
def test_chunk_plan_covers_each_query_once(growth, max_elements):
    """The host-side plan: contiguous chunks covering every query once, each as wide as its widest query, within
    the padding and size bounds (a single query may exceed the size bound), cell ranks of its first and last."""
    g = _gen(13)
    sizes = torch.sort(torch.randint(0, 400, (3000,), generator=g)).values.numpy()
    ranks = torch.sort(torch.randint(0, 700, (3000,), generator=g)).values.numpy()
    k, start = 3, 0
    for i, c, width, first, last in _plan_chunks(sizes, ranks, k, max_elements, growth):
        assert i == start and c >= 1
        members = sizes[i:i + c]
        assert width == max(int(members.max()), k)
        assert width <= max(int(members[0] * growth) + 4, k)
        assert c == 1 or c * max(int(members[0] * growth) + 4, k) <= max_elements
        assert (first, last) == (ranks[i], ranks[i + c - 1])
        start += c
    assert start == len(sizes)


def _non_finite_cloud(seed, n):
    """A clustered cloud with a NaN, an inf and a -inf point (first, middle, last): pts, bad indices, keep mask."""
    pts = _clustered(seed, n)
    bad = torch.tensor([3, n // 2, n - 1])
    pts[bad[0], 1], pts[bad[1]], pts[bad[2], 2] = float("nan"), float("inf"), -float("inf")
    keep = torch.ones(n, dtype=torch.bool)
    keep[bad] = False
    return pts, bad, keep


def test_non_finite_points_get_nan():
    pts, bad, keep = _non_finite_cloud(9, 1000)
    got = _grid(pts)
    assert got[bad].isnan().all()
    _same(got[keep], pts[keep])  # the others, as if the bad points were absent


def test_bad_inputs():
    for bad in (torch.zeros(4, 2), torch.zeros(2, 3, 4, 3)):
        with pytest.raises(OpenLSMError):
            knn_mean_sq_dist(bad)
        with pytest.raises(OpenLSMError):
            knn_mean_sq_dist_bruteforce(bad)
    with pytest.raises(OpenLSMError):
        knn_mean_sq_dist(torch.zeros(4, 3), k=0)


@pytest.mark.parametrize("quantile", [1.0, 0.99, 0.5, 0.0])
def test_capped_search_is_exact(quantile):
    """The GPU's search (blocks cut to a quantile of their sizes; cut queries go on to the next passes) gives the
    all-pairs result, and for quantile 1 (nothing cut) the same floats as the grouped search."""
    for pts in (_clustered(14, 2000), _plane_point_map(15), torch.rand(3000, 3, generator=_gen(16))):
        got = _grid(pts, capped=quantile)
        _same(got, pts)
        if quantile == 1.0:
            assert torch.equal(got, _grid(pts, capped=None))
    dup = torch.cat([torch.full((40, 3), 0.5), torch.rand(500, 3, generator=_gen(17))])  # one 40-point stack
    _same(_grid(dup, capped=quantile), dup)
    _same(_grid(dup[None].double(), capped=quantile)[0], dup.double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_defaults_match_the_cpu():
    """On a GPU (capped search) the result equals the all-pairs reference (computed on the GPU too: it is fast
    there) and the CPU's grouped search."""
    for pts in (_clustered(18, 20000), _plane_point_map(19, 192, 256), torch.rand(50000, 3, generator=_gen(20))):
        got = knn_mean_sq_dist(pts.cuda())
        _same(got, pts.cuda())
        torch.testing.assert_close(got.cpu(), knn_mean_sq_dist(pts), rtol=1e-6, atol=0)


def test_auto_falls_back_to_the_grid_when_the_tile_kernel_fails(monkeypatch):
    """Where the Triton kernel cannot run (e.g. an older Triton), "auto" warns once and gives the grid's answer."""
    from openlsm.models.lsm import knn_tiles

    calls = []

    def broken(points, k):
        calls.append(1)
        raise RuntimeError("no such Triton feature")

    monkeypatch.setattr(knn_tiles, "_failures", [])
    monkeypatch.setattr(knn_tiles, "tiles_available", lambda device: not knn_tiles._failures)  # as on a GPU
    monkeypatch.setattr(knn_tiles, "knn_mean_sq_dist_tiles", broken)
    monkeypatch.setenv("OPENLSM_NUMBA", "0")  # as on a GPU: no compiled CPU search after the failure
    pts = _clustered(21, 800)
    with pytest.warns(RuntimeWarning, match="grid search"):
        first = knn_mean_sq_dist(pts)
    second = knn_mean_sq_dist(pts)  # no second try, no second warning
    assert len(calls) == 1 and len(knn_tiles._failures) == 1
    _same(first, pts)
    assert torch.equal(first, second)


def test_numba_search_matches_bruteforce():
    """The compiled search (what "auto" runs on the CPU with Numba) on every cloud above."""
    pytest.importorskip("numba")

    def numba(points, k=3):
        return knn_mean_sq_dist(points, k, method="numba")

    ax = torch.arange(12.0)
    base = torch.rand(600, 3, generator=_gen(5))
    clouds = [torch.rand(4000, 3, generator=_gen(0)) * torch.tensor([4.0, 1.0, 0.2]) + 3.0, _clustered(2),
              _clustered(3), _plane_point_map(4), torch.linspace(0, 1, 801)[:, None] * torch.tensor([[1.0, 2.0, -0.5]]),
              torch.cartesian_prod(ax, ax, ax) * 0.25 + 1.0,
              torch.cat([base, base[:200], base[:50], torch.full((12, 3), 0.5)])]
    for pts in clouds:
        _same(numba(pts), pts)
    for k in (1, 5):
        _same(numba(clouds[1][:1200], k), clouds[1][:1200], k)
    for n in (1, 2, 3, 4):
        pts = torch.tensor([[0.0, 0, 0], [0.0, 3, 4], [1.0, 0, 0], [0.0, 0, 2]])[:n]
        _same(numba(pts), pts)
        assert numba(torch.zeros(n, 3)).tolist() == [0.0] * n
    batch = torch.stack([_clustered(6, 1500), _plane_point_map(7, 24, 32)[:1500]]).double()
    got = numba(batch)
    assert got.dtype == torch.float64 and got.shape == (2, 1500)
    for b in range(2):
        torch.testing.assert_close(got[b], _ref64(batch[b]), rtol=1e-12, atol=0)
    pts, bad, keep = _non_finite_cloud(9, 1000)
    got = numba(pts)
    assert got[bad].isnan().all()
    _same(got[keep], pts[keep])
