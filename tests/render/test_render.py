import math

import pytest
import torch

from openlsm.cameras import Cameras, look_at, make_K
from openlsm.gaussians import Gaussians, rgb_to_sh0
from openlsm.render import render
from openlsm.render.sh import sh_basis
from openlsm.render.torch_backend import MAX_ALPHA

from .reference import reference_render


def one_gaussian(opacity=0.8, sigma=0.05, z=2.0, dtype=torch.float32):
    logit = math.log(opacity / (1 - opacity))
    return Gaussians(means=torch.tensor([[0.0, 0.0, z]], dtype=dtype), quats=torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
                     log_scales=torch.full((1, 3), math.log(sigma), dtype=dtype),
                     opacity_logits=torch.tensor([logit], dtype=dtype),
                     sh=rgb_to_sh0(torch.tensor([[[1.0, 0.5, 0.25]]], dtype=dtype)),
                     features=torch.tensor([[2.0, -1.0]], dtype=dtype))


def test_isotropic_gaussian_at_principal_point_analytic():
    f, z, s, o = 100.0, 2.0, 0.05, 0.8
    cam = Cameras(make_K(f, f, 32.5, 32.5), torch.eye(4), 64, 64)  # principal point on the centre of pixel (32, 32)
    out = render(one_gaussian(o, s, z, torch.float64), cam.to(torch.float64), backend="torch")
    var = (f * s / z) ** 2 + 0.3  # EWA footprint plus the 0.3 px low-pass
    assert out.alpha[32, 32].item() == pytest.approx(o, rel=1e-9)  # peak alpha = opacity
    assert torch.allclose(out.alpha, out.alpha.flip(0).roll(1, 0), atol=1e-12)  # symmetric about row 32
    assert torch.allclose(out.alpha, out.alpha.T, atol=1e-12)
    r = torch.arange(-6, 7, dtype=torch.float64)
    expected = o * torch.exp(-0.5 * r**2 / var)
    expected[expected < 1 / 255] = 0
    assert torch.allclose(out.alpha[32, 26:39], expected, atol=1e-9)
    # radius: nothing beyond the 1/255 cut-off
    cut = math.sqrt(2 * var * math.log(o * 255))
    d = torch.cdist(torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij"), -1)
                    .reshape(-1, 2), torch.tensor([[32.0, 32.0]])).reshape(64, 64).double()
    assert (out.alpha[d > cut + 1e-6] == 0).all() and (out.alpha[d < cut - 1e-6] > 0).all()
    assert torch.allclose(out.rgb[32, 32], o * torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))
    assert out.depth[32, 32].item() == pytest.approx(z)
    assert torch.allclose(out.features[32, 32], o * torch.tensor([2.0, -1.0], dtype=torch.float64))


def test_occlusion_follows_depth_not_input_order():
    near, far = one_gaussian(0.99, 0.3, 2.0), one_gaussian(0.99, 0.3, 4.0)
    near.sh = rgb_to_sh0(torch.tensor([[[1.0, 0.0, 0.0]]]))
    far.sh = rgb_to_sh0(torch.tensor([[[0.0, 0.0, 1.0]]]))
    cam = Cameras(make_K(50.0, 50.0, 16.0, 16.0), torch.eye(4), 32, 32)
    for order in ([near, far], [far, near]):
        out = render(Gaussians.cat(order), cam, backend="torch")
        c = out.rgb[16, 16]
        assert c[0] > 0.95 and c[2] < 0.05  # red Gaussian in front hides the blue one
        assert out.depth[16, 16].item() == pytest.approx(2.0, abs=0.05)


def random_scene(n, seed, feat=3, dtype=torch.float64, degree=2):
    g = Gaussians.random(n, sh_degree=degree, feature_dim=feat, seed=seed, dtype=dtype)
    g.means = g.means * torch.tensor([1.0, 0.8, 0.5], dtype=dtype) + torch.tensor([0, 0, 3.0], dtype=dtype)
    return g


@pytest.fixture(params=[None, 97, "int64", "fine"], ids=["one-chunk", "many-chunks", "int64-keys", "fine-groups"])
def chunks(request, monkeypatch):
    """Rasterise in one chunk, in chunks of ~97 pairs (carried transmittance, saturated pixels skipped), with
    int64 sort keys (what images too large for int32 (pixel, rank) keys use), or with one broadcast per exact box
    size class (small test scenes otherwise pad every class to a coarse one)."""
    from openlsm.render import torch_backend

    if request.param == "int64":
        monkeypatch.setattr(torch_backend, "MAX_INT32_KEY", 1000)
    elif request.param == "fine":
        monkeypatch.setattr(torch_backend, "MIN_GROUP", 1)
    elif request.param:
        monkeypatch.setattr(torch_backend, "CHUNK_PAIRS", request.param)
    return request.param


def reference_case(seed):
    """Scene `seed` (seed 2 nearly opaque: early termination matters) at a 70x45 camera (not a multiple of the tile
    size) -> (gaussians, camera, brute-force values [H, W, 3 + D], alpha [H, W], depth-weighted sum [H, W])."""
    from openlsm.render.render import view_colors

    g = random_scene(300, seed)
    g.opacity_logits = g.opacity_logits + 1.5 * seed
    W, H = 70, 45
    c2w = look_at(torch.tensor([0.3, -0.2, -0.5], dtype=torch.float64), torch.tensor([0, 0, 3.0], dtype=torch.float64),
                  torch.tensor([0, -1.0, 0], dtype=torch.float64))
    cam = Cameras(make_K(60.0, 55.0, 33.0, 24.0).double(), c2w, W, H)
    values = torch.cat([view_colors(g, c2w[None], None)[0], g.features], -1)
    acc, alpha, dep = reference_render(g.means, g.quats, g.scales, g.opacities, values, cam.viewmats, cam.Ks, W, H,
                                       MAX_ALPHA)
    return g, cam, acc, alpha, dep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_renderer_matches_brute_force_reference(seed, chunks):
    g, cam, acc, alpha, dep = reference_case(seed)
    out = render(g, cam, backend="torch")
    assert torch.allclose(out.alpha, alpha, atol=1e-9)
    assert torch.allclose(out.rgb, acc[..., :3], atol=1e-9)
    assert torch.allclose(out.features, acc[..., 3:], atol=1e-9)
    hit = alpha > 1e-3
    assert torch.allclose(out.depth[hit], (dep / alpha)[hit], atol=1e-8)
    assert alpha.max() > 0.9 and (alpha == 0).any() is not None


def walls_case():
    """Two opaque ~400 px walls in front of 198 small Gaussians at a 40x30 camera -> (gaussians, camera, brute-force
    values [H, W, 3 + D], alpha [H, W])."""
    from openlsm.render.render import view_colors

    g = random_scene(200, seed=4)
    g.means[:2] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.2]], dtype=torch.float64)  # two walls in front
    g.log_scales[:2] = math.log(10.0)  # ~400 px wide: alpha ~ 0.999 over the whole view
    g.opacity_logits[:2] = 8.0
    W, H = 40, 30
    cam = Cameras(make_K(40.0, 40.0, 20.0, 15.0).double(), torch.eye(4, dtype=torch.float64), W, H)
    values = torch.cat([view_colors(g, torch.eye(4, dtype=torch.float64)[None], None)[0], g.features], -1)
    acc, alpha, _ = reference_render(g.means, g.quats, g.scales, g.opacities, values, cam.viewmats, cam.Ks, W, H,
                                     MAX_ALPHA)
    return g, cam, acc, alpha


def test_gaussians_behind_saturated_pixels_are_skipped_with_the_same_result(monkeypatch):
    """Two opaque layers cover the view: every pixel saturates there, so the chunks behind them are never paired,
    and the image still equals the brute-force reference."""
    from openlsm.render import torch_backend

    g, cam, acc, alpha = walls_case()
    W, H = cam.width, cam.height
    paired = []
    pairs = torch_backend._box_alphas
    monkeypatch.setattr(torch_backend, "_box_alphas", lambda p, ids, *a: paired.append(len(ids)) or pairs(p, ids, *a))
    monkeypatch.setattr(torch_backend, "CHUNK_PAIRS", 3 * W * H)
    out = render(g, cam, backend="torch")
    # only the first chunk (3 W H pairs: the walls' 2 W H and ~20 small Gaussians) was paired; the ~180 behind
    # the walls, in later chunks, never were
    assert len(paired) == 1 and sum(paired) < 40
    assert torch.allclose(out.rgb, acc[..., :3], atol=1e-9) and torch.allclose(out.alpha, alpha, atol=1e-9)
    assert alpha.min() > 0.99  # the first wall; each pixel stops before the second


def test_gradcheck_float64_all_parameters(chunks):
    g = random_scene(6, seed=3, feat=2, degree=1)
    g.log_scales = g.log_scales + 1.0  # large, smooth footprints
    g.opacity_logits = torch.full_like(g.opacity_logits, -0.5)
    cam = Cameras(make_K(12.0, 12.0, 6.0, 5.0).double(), torch.eye(4, dtype=torch.float64), 12, 10)
    params = [t.clone().requires_grad_() for t in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, g.features)]

    def fn(means, quats, log_scales, opacity_logits, sh, features):
        out = render(Gaussians(means, quats, log_scales, opacity_logits, sh, features), cam, backend="torch")
        return out.rgb, out.alpha, out.features, out.depth

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_pose_gradient_flows():
    g = random_scene(20, seed=4, feat=0, degree=0)
    c2w = torch.eye(4, dtype=torch.float64).requires_grad_()
    cam = Cameras(make_K(20.0, 20.0, 10.0, 10.0).double(), c2w, 20, 20)
    render(g, cam, backend="torch").rgb.sum().backward()
    assert c2w.grad is not None and c2w.grad[:3].abs().sum() > 0


def test_batched_scenes_with_padding_match_individual_renders():
    a, b = random_scene(40, 5, dtype=torch.float32), random_scene(25, 6, dtype=torch.float32, degree=1)
    cam = Cameras(make_K(40.0, 40.0, 16.0, 16.0), torch.eye(4).repeat(2, 2, 1, 1), 32, 32)  # [B=2, C=2]
    batched = render(Gaussians.stack([a, b]), cam, backend="torch")
    assert batched.rgb.shape == (2, 2, 32, 32, 3) and batched.features.shape == (2, 2, 32, 32, 3)
    for i, g in enumerate([a, b]):
        single = render(g, cam[i], backend="torch")
        assert torch.allclose(batched.rgb[i], single.rgb, atol=1e-5)
        assert torch.allclose(batched.depth[i], single.depth, atol=1e-4)


def test_background_fills_transmittance():
    g = one_gaussian(0.5, 0.05)
    cam = Cameras(make_K(100.0, 100.0, 16.0, 16.0), torch.eye(4), 32, 32)
    bg = torch.tensor([0.0, 1.0, 0.0])
    out = render(g, cam, backend="torch", background=bg)
    assert torch.allclose(out.rgb[0, 0], bg) and out.features[0, 0].abs().sum() == 0
    assert torch.allclose(out.rgb[..., 1], render(g, cam, backend="torch").rgb[..., 1] + 1 - out.alpha, atol=1e-6)


def test_behind_camera_and_offscreen_are_culled():
    g = one_gaussian(0.9, 0.05, z=-2.0)
    cam = Cameras(make_K(100.0, 100.0, 16.0, 16.0), torch.eye(4), 32, 32)
    assert render(g, cam, backend="torch").alpha.abs().sum() == 0
    g.means = torch.tensor([[50.0, 0.0, 2.0]])
    assert render(g, cam, backend="torch").alpha.abs().sum() == 0


def test_sh_basis_is_orthonormal_on_the_sphere():
    n = 200_000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z**2).sqrt()
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)  # Fibonacci sphere, uniform area
    Y = sh_basis(3, dirs)
    gram = 4 * math.pi * (Y.T @ Y) / n
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)


def test_box_size_classes_cover_each_side_with_little_padding():
    from openlsm.render.torch_backend import _size_classes

    n = torch.arange(0, 2000)
    s = _size_classes(n)
    assert torch.equal(s[:9], n[:9])  # exact up to 8
    assert (s >= n).all() and (s[1:] <= 1.25 * n[1:] + 1e-9).all()  # never smaller, at most 25 % larger
    assert len(torch.unique(s)) < 60  # few classes, so few broadcasts


@pytest.mark.parametrize("min_group", [1, 10_000])
def test_boxes_clipped_at_the_image_border_do_not_wrap_into_the_next_row(min_group, monkeypatch):
    """Gaussians straddling the right and bottom borders: their boxes are clipped, then padded to a size class;
    the padding must not spill into pixels of the next row (flat pixel indices wrap there)."""
    from openlsm.render import torch_backend
    from openlsm.render.render import view_colors

    monkeypatch.setattr(torch_backend, "MIN_GROUP", min_group)
    W, H = 21, 13
    cam = Cameras(make_K(20.0, 20.0, W / 2, H / 2).double(), torch.eye(4, dtype=torch.float64), W, H)
    g = random_scene(12, seed=5, feat=2)
    z = 2.0
    px = torch.tensor([[20.6, 3.5], [20.9, 7.2], [12.5, 12.8], [20.7, 12.6]] * 3, dtype=torch.float64)
    g.means = torch.cat([(px - torch.tensor([W / 2, H / 2], dtype=torch.float64)) * z / 20.0,
                         torch.full((12, 1), z, dtype=torch.float64)], -1)
    g.log_scales = torch.log(torch.rand(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                             * 0.15 + 0.1)  # 1 to 2.5 px
    g.opacity_logits = torch.full((12,), 3.0, dtype=torch.float64)
    out = render(g, cam, backend="torch")
    values = torch.cat([view_colors(g, torch.eye(4, dtype=torch.float64)[None], None)[0], g.features], -1)
    acc, alpha, _ = reference_render(g.means, g.quats, g.scales, g.opacities, values, cam.viewmats, cam.Ks, W, H,
                                     MAX_ALPHA)
    assert torch.allclose(out.alpha, alpha, atol=1e-9) and torch.allclose(out.rgb, acc[..., :3], atol=1e-9)
    assert alpha[:, 0].max() < 1e-3  # the left column is far from every Gaussian


@pytest.mark.parametrize("seed", [0, 2])
def test_blend_weights_times_values_is_the_render(seed, chunks):
    from openlsm.render.torch_backend import blend_weights, project_gaussians

    g = random_scene(300, seed)
    g.opacity_logits = g.opacity_logits + 1.5 * seed  # seed 2: early termination inside the chunks
    W, H = 70, 45
    c2w = look_at(torch.tensor([0.3, -0.2, -0.5], dtype=torch.float64), torch.tensor([0, 0, 3.0], dtype=torch.float64),
                  torch.tensor([0, -1.0, 0], dtype=torch.float64))
    cam = Cameras(make_K(60.0, 55.0, 33.0, 24.0).double(), c2w, W, H)
    out = render(g, cam, backend="torch")
    means2d, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, cam.viewmats[None],
                                                       cam.Ks[None], W, H)
    A = blend_weights(means2d[0], conics[0], g.opacities, depths[0], radii[0], W, H)  # [H*W, N]
    assert A.layout == torch.sparse_csr and A.shape == (W * H, 300)
    assert torch.allclose((A @ g.features).reshape(H, W, -1), out.features, atol=1e-12)
    dense = A.to_dense()
    assert torch.allclose(dense.sum(1).reshape(H, W), out.alpha, atol=1e-12)
    kept = blend_weights(means2d[0], conics[0], g.opacities, depths[0], radii[0], W, H, min_weight=0.05).to_dense()
    assert (kept[kept != 0] > 0.05).all()  # only the small weights go, the others stay as they were
    assert torch.equal(kept, torch.where(dense > 0.05, dense, torch.zeros_like(dense)))
    assert (dense > 0.05).any() and ((dense > 0) & (dense <= 0.05)).any()
