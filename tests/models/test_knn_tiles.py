"""Triton tile kNN (the GPU's default): equal to the all-pairs reference. Runs on CUDA, or without a GPU in
Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py) where Triton is installed (the dev extra has it)."""

import importlib.util

import pytest
import torch
from test_knn import _clustered, _gen, _non_finite_cloud, _plane_point_map

from openlsm.models.lsm import knn_tiles
from openlsm.models.lsm.knn import knn_mean_sq_dist, knn_mean_sq_dist_bruteforce

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"


def _tiles(points, k=3, **blocks):
    return knn_tiles.knn_mean_sq_dist_tiles(points.to(DEVICE), k, **blocks).cpu()


def _same(got, points, k=3):
    ref = knn_mean_sq_dist_bruteforce(points.double(), k).float()  # float64 reference of float32 inputs
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=2e-6, atol=0)


def _n(gpu_n, cpu_n):
    return gpu_n if GPU else cpu_n  # the interpreter runs each program in numpy: small clouds there


@pytest.mark.parametrize("k", [1, 3, 5])
def test_clouds_match_the_reference(k):
    clouds = [torch.rand(_n(20000, 700), 3, generator=_gen(30)), _clustered(31, _n(20000, 600)),
              _plane_point_map(32, *((96, 128) if GPU else (16, 24)))]
    for pts in clouds:
        _same(_tiles(pts, k), pts, k)
    _same(_tiles(clouds[1], k, block_queries=16, block_keys=32, box_chunk=1), clouds[1], k)  # query tiles < key tiles


def test_duplicates_tiny_sets_and_batches():
    g = _gen(33)
    stack = torch.cat([torch.full((70, 3), 0.25), torch.rand(300, 3, generator=g)])  # a stack wider than a tile
    _same(_tiles(stack), stack)
    for n in range(1, 6):  # fewer than k other points: the mean over those there are; a lone point gets 0
        pts = torch.rand(n, 3, generator=g)
        _same(_tiles(pts), pts)
    batch = torch.rand(3, 200, 3, generator=g) * torch.tensor([1.0, 10.0, 1e-3])[:, None, None]
    got = _tiles(batch, block_queries=32, block_keys=16, box_chunk=4)  # several key tiles per query tile
    assert got.shape == (3, 200)
    for b in range(3):  # samples do not see each other
        _same(got[b], batch[b])
    assert _tiles(torch.zeros(0, 3)).shape == (0,) and torch.equal(_tiles(torch.zeros(5, 3)), torch.zeros(5))


def test_non_finite_points_get_nan_and_are_nobodys_neighbour():
    pts, bad, keep = _non_finite_cloud(34, 500)
    got = _tiles(pts)
    assert got[bad].isnan().all()
    _same(got[keep], pts[keep])


@pytest.mark.skipif(not GPU, reason="needs CUDA")
def test_gpu_default_is_the_tile_kernel():
    pts = _plane_point_map(35, 192, 256).cuda()
    assert knn_tiles.tiles_available(pts.device)
    assert torch.equal(knn_mean_sq_dist(pts), knn_mean_sq_dist(pts, method="tiles"))
    torch.testing.assert_close(knn_mean_sq_dist(pts, method="grid"), knn_mean_sq_dist(pts), rtol=2e-6, atol=0)
