"""Gaussian head and kNN: float64 brute-force references, exact layout of the 120 outputs, activations."""

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import SH_C0
from openlsm.models.lsm.gaussian_head import GaussianHead, GaussianHeadConfig, make_sh_mask
from openlsm.models.lsm.knn import knn_mean_sq_dist


def brute_knn(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[N, 3] -> [N] mean squared distance to the k nearest other points, float64, all pairs."""
    p = points.double()
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    d2.fill_diagonal_(float("inf"))
    return d2.sort(dim=1).values[:, :k].mean(1)


def _inputs(B=2, M=300, in_dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, M, in_dim, generator=g)
    means = torch.randn(B, M, 3, generator=g) * torch.tensor([3.0, 1.0, 0.5]) + 10.0  # off-origin, anisotropic
    colors = torch.rand(B, M, 3, generator=g)
    return feats, means, colors


def test_knn_matches_brute_force_float64():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(2, 500, 3, generator=g) * 2 + 5
    pts[0, 10] = pts[0, 11]  # a duplicate counts as a zero-distance neighbour (not as "itself")
    got = knn_mean_sq_dist(pts)
    ref = torch.stack([brute_knn(p) for p in pts])
    assert got.shape == (2, 500) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-9)
    assert ref[0, 10] > 0 and got[0, 10] > 0  # only one of the 3 neighbours is the duplicate


def test_knn_exact_for_dense_points_far_from_origin():
    """NN spacing ~3e-3 at |p| ~ 50: an uncentred |q|^2 + |p|^2 - 2 q.p expansion would be off by ~100 %."""
    g = torch.Generator().manual_seed(4)
    pts = torch.rand(400, 3, generator=g) * 0.02 + 50.0
    torch.testing.assert_close(knn_mean_sq_dist(pts).double(), brute_knn(pts), rtol=1e-3, atol=0)


def test_knn_chunking_and_small_sets():
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(777, 3, generator=g)
    full = knn_mean_sq_dist(pts)  # 777^2 pairs: the all-pairs path
    grid = knn_mean_sq_dist(pts, fallback_elements=0)  # the grid search alone
    tiny_chunks = knn_mean_sq_dist(pts, max_elements=64, fallback_elements=0)  # many small chunks
    torch.testing.assert_close(full, grid, rtol=1e-6, atol=0)
    torch.testing.assert_close(grid, tiny_chunks, rtol=0, atol=0)
    torch.testing.assert_close(knn_mean_sq_dist(pts, k=1).double(), brute_knn(pts, 1), rtol=1e-5, atol=1e-9)
    two = torch.tensor([[0.0, 0, 0], [0.0, 3, 4]])
    torch.testing.assert_close(knn_mean_sq_dist(two), torch.tensor([25.0, 25.0]))  # fewer than k neighbours
    assert knn_mean_sq_dist(torch.zeros(1, 3)).tolist() == [0.0]
    with pytest.raises(OpenLSMError):
        knn_mean_sq_dist(torch.zeros(4, 2))


def test_sh_mask_and_state_dict():
    head = GaussianHead(GaussianHeadConfig())
    expected = [1.0] + [0.125] * 3 + [0.03125] * 5 + [0.0078125] * 7
    assert head.sh_mask.tolist() == expected
    assert make_sh_mask(0).tolist() == [1.0]
    sd = head.state_dict()
    assert list(sd) == ["gaussian_proj.weight", "gaussian_proj.bias"]  # sh_mask is non-persistent
    assert sd["gaussian_proj.weight"].shape == (120, 64) and sum(p.numel() for p in head.parameters()) == 7800


def test_output_layout_and_rgb_residual():
    """Zero weights and bias = arange: every output slot is identifiable."""
    head = GaussianHead(GaussianHeadConfig())
    with torch.no_grad():
        head.gaussian_proj.weight.zero_()
        head.gaussian_proj.bias.copy_(torch.arange(120.0) / 100)
    feats, means, colors = _inputs(M=50)
    residual = torch.randn(2, 50, 64, generator=torch.Generator().manual_seed(3))
    g = head(feats, means, colors, residual)
    b = torch.arange(120.0) / 100
    torch.testing.assert_close(g.quats, (b[3:7] / b[3:7].norm()).expand(2, 50, 4))
    torch.testing.assert_close(g.opacity_logits, b[7].expand(2, 50))
    mask = head.sh_mask[:, None]
    torch.testing.assert_close(g.sh[..., 1:, :], (b[8:56].view(16, 3) * mask)[1:].expand(2, 50, 15, 3))
    torch.testing.assert_close(g.sh[..., 0, :], b[8:11] + (colors - 0.5) / SH_C0)
    torch.testing.assert_close(g.features, b[56:] + residual)
    assert torch.equal(g.means, means)


def test_given_features_replace_the_heads_own():
    head = GaussianHead(GaussianHeadConfig())
    feats, means, colors = _inputs(M=50)
    given = torch.randn(2, 50, 64, generator=torch.Generator().manual_seed(4))
    own, replaced = head(feats, means, colors), head(feats, means, colors, features=given)
    assert torch.equal(replaced.features, given)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):  # from the projection's other columns
        torch.testing.assert_close(getattr(replaced, name), getattr(own, name), rtol=1e-6, atol=1e-6)
    with pytest.raises(OpenLSMError, match="features must be"):
        head(feats, means, colors, features=given[..., :8])


def test_rgb_residual_reproduces_input_colour():
    head = GaussianHead(GaussianHeadConfig(in_dim=16, feature_dim=8))
    with torch.no_grad():
        head.gaussian_proj.weight[8:11].zero_()  # raw DC = 0 for every input
        head.gaussian_proj.bias[8:11].zero_()
    feats, means, colors = _inputs(M=64, in_dim=16)
    g = head(feats, means, colors)
    torch.testing.assert_close(g.sh[..., 0, :] * SH_C0 + 0.5, colors, rtol=0, atol=1e-6)
    torch.testing.assert_close(g.colors_dc, colors, rtol=0, atol=1e-6)
    no_res = GaussianHead(GaussianHeadConfig(in_dim=16, feature_dim=8, rgb_residual=False))
    no_res.load_state_dict(head.state_dict())
    assert no_res(feats, means).sh[..., 0, :].abs().max() == 0


def test_scales_follow_knn_and_clamp():
    torch.manual_seed(0)
    head = GaussianHead(GaussianHeadConfig(in_dim=8, feature_dim=4))
    with torch.no_grad():
        head.gaussian_proj.weight.mul_(8.0)  # raw log-scales of several units: both clamps are hit
    feats, means, colors = _inputs(M=400, in_dim=8)
    g = head(feats, means, colors)
    raw = head.gaussian_proj(feats)[..., :3].double()
    nn_d = torch.stack([brute_knn(m) for m in means]).clamp_min(1e-7).sqrt()  # [B, M]
    med = nn_d.median(dim=1, keepdim=True).values[..., None]
    ref = (raw.exp() * nn_d[..., None]).clamp(min=0.1 * med, max=3.0 * med)
    torch.testing.assert_close(g.scales.double(), ref, rtol=1e-4, atol=0)
    rel = g.scales.double() / med
    assert rel.min() >= 0.1 - 1e-6 and rel.max() <= 3.0 + 1e-6
    assert (rel < 0.1 + 1e-6).any() and (rel > 3.0 - 1e-6).any() and ((rel > 0.2) & (rel < 2.5)).any()


def test_rotations_normalised_and_no_grad_to_means():
    head = GaussianHead(GaussianHeadConfig(in_dim=8, feature_dim=4))
    feats, means, colors = _inputs(M=40, in_dim=8)
    means.requires_grad_(True)
    feats.requires_grad_(True)
    g = head(feats, means, colors)
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(2, 40))
    raw = head.gaussian_proj(feats)[..., 3:7]
    torch.testing.assert_close(g.quats * raw.norm(dim=-1, keepdim=True), raw)  # same direction
    assert not g.means.requires_grad
    (g.log_scales.sum() + g.features.sum()).backward()
    assert means.grad is None and feats.grad.abs().sum() > 0


def test_bad_inputs():
    head = GaussianHead(GaussianHeadConfig(in_dim=8, feature_dim=4))
    feats, means, colors = _inputs(M=10, in_dim=8)
    with pytest.raises(OpenLSMError):
        head(feats[..., :4], means, colors)
    with pytest.raises(OpenLSMError):
        head(feats, means[:, :5], colors)
    with pytest.raises(OpenLSMError):
        head(feats, means)  # rgb_residual needs colours
    with pytest.raises(OpenLSMError):
        GaussianHeadConfig(sh_degree=4)
