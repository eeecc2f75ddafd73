"""The Numba compositing (CPU) and its backward against the brute-force reference and the PyTorch compositing."""


import pytest
import torch

from openlsm.cameras import Cameras, make_K
from openlsm.render import numba_backend, render, torch_backend
from openlsm.render.render import view_colors
from openlsm.render.torch_backend import project_gaussians, rasterize

from .test_render import random_scene, reference_case, walls_case

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def compiled_compositing(monkeypatch):
    monkeypatch.setenv("OPENLSM_NUMBA", "1")


def test_switch():
    assert numba_backend.available()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_reference(seed):
    g, cam, acc, alpha, dep = reference_case(seed)
    out = render(g, cam, backend="torch")
    assert out.rgb.dtype == torch.float64
    assert torch.allclose(out.alpha, alpha, atol=1e-9)
    assert torch.allclose(out.rgb, acc[..., :3], atol=1e-9)
    assert torch.allclose(out.features, acc[..., 3:], atol=1e-9)
    hit = alpha > 1e-3
    assert torch.allclose(out.depth[hit], (dep / alpha)[hit], atol=1e-8)
    assert alpha.max() > 0.9


def test_pixels_stop_behind_opaque_walls():
    g, cam, acc, alpha = walls_case()
    out = render(g, cam, backend="torch")
    assert torch.allclose(out.rgb, acc[..., :3], atol=1e-9) and torch.allclose(out.alpha, alpha, atol=1e-9)
    assert alpha.min() > 0.99


def test_float32_dense_scene_equals_pytorch_compositing():
    """Large overlapping Gaussians (most pixels saturate), float32 as in inference."""
    g = random_scene(3000, seed=5, feat=8, dtype=torch.float32)
    g.log_scales = g.log_scales + 1.0
    W, H = 96, 80
    c2w = torch.eye(4)
    cam = Cameras(make_K(80.0, 80.0, 48.0, 40.0), c2w, W, H)
    means2d, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, cam.viewmats[None],
                                                       cam.Ks[None], W, H)
    values = torch.cat([view_colors(g, c2w[None], None)[0], g.features, depths[0][:, None]], -1)
    args = (means2d[0], conics[0], g.opacities, depths[0], radii[0], values, W, H)
    fast, fast_alpha = numba_backend.rasterize(*args)
    slow, slow_alpha = rasterize(*args)
    assert fast.dtype == torch.float32 and fast.shape == (H, W, values.shape[1])
    assert (slow_alpha > 0.999).float().mean() > 0.5  # early stops are exercised
    torch.testing.assert_close(fast_alpha, slow_alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_nothing_visible_gives_an_empty_image():
    g = random_scene(50, seed=6)
    g.means[:, 2] = -3.0  # all behind the camera
    cam = Cameras(make_K(40.0, 40.0, 20.0, 15.0).double(), torch.eye(4, dtype=torch.float64), 40, 30)
    out = render(g, cam, backend="torch")
    assert out.alpha.abs().max() == 0 and out.rgb.abs().max() == 0


@pytest.mark.parametrize("seed,opacity_shift,scale_shift", [(0, 0.0, 0.0), (1, 3.0, 0.0), (2, 14.0, 1.2)],
                         ids=["sparse", "opaque", "saturated-and-clamped"])
def test_compositing_gradients_equal_the_pytorch_ones(seed, opacity_shift, scale_shift):
    """The compiled backward against autograd through the PyTorch compositing (float64), for a random loss on the
    values and the alpha; the last case has most pixels stopping early and most alphas clamped at MAX_ALPHA."""
    g = random_scene(500, seed=seed, feat=4)
    g.opacity_logits = g.opacity_logits + opacity_shift
    g.log_scales = g.log_scales + scale_shift
    W, H = 50, 37
    cam = Cameras(make_K(50.0, 50.0, 25.0, 18.0).double(), torch.eye(4, dtype=torch.float64), W, H)
    means2d, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, cam.viewmats[None],
                                                       cam.Ks[None], W, H)
    values = torch.cat([view_colors(g, cam.c2w[None], None)[0], g.features, depths[0][:, None]], -1)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(H, W, values.shape[1], generator=gen, dtype=torch.float64)
    w_alpha = torch.randn(H, W, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (rasterize, numba_backend.rasterize):
        inputs = [t.detach().clone().requires_grad_(True) for t in (means2d[0], conics[0], g.opacities, values)]
        out, alpha = fn(inputs[0], inputs[1], inputs[2], depths[0], radii[0], inputs[3], W, H)
        ((out * w_out).sum() + (alpha * w_alpha).sum()).backward()
        grads.append([t.grad for t in inputs])
    if scale_shift:
        assert (alpha > 0.999).float().mean() > 0.3 and (g.opacities > 0.999).float().mean() > 0.9
    for fast, slow in zip(grads[1], grads[0]):
        assert slow.abs().max() > 0
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9 * float(slow.abs().max()))
    # deterministic: the threads' per-Gaussian sums are added in a fixed order
    inputs = [t.detach().clone().requires_grad_(True) for t in (means2d[0], conics[0], g.opacities, values)]
    out, alpha = numba_backend.rasterize(inputs[0], inputs[1], inputs[2], depths[0], radii[0], inputs[3], W, H)
    ((out * w_out).sum() + (alpha * w_alpha).sum()).backward()
    assert all(torch.equal(t.grad, first) for t, first in zip(inputs, grads[1]))


def test_render_with_gradients_composites_on_numba(monkeypatch):
    calls = []
    real = numba_backend.rasterize
    monkeypatch.setattr(numba_backend, "rasterize", lambda *a: calls.append(1) or real(*a))
    g = random_scene(100, seed=7)
    cam = Cameras(make_K(40.0, 40.0, 20.0, 15.0).double(), torch.eye(4, dtype=torch.float64), 40, 30)
    params = (g.means, g.log_scales, g.opacity_logits, g.sh)
    for t in params:
        t.requires_grad_(True)
    fast = render(g, cam, backend="torch")
    assert calls == [1]
    (fast.rgb.square().sum() + fast.depth.sum()).backward()
    fast_grads = [t.grad.clone() for t in params]
    for t in params:
        t.grad = None
    monkeypatch.setenv("OPENLSM_NUMBA", "0")  # the switch: the PyTorch compositing
    slow = render(g, cam, backend="torch")
    assert calls == [1]
    (slow.rgb.square().sum() + slow.depth.sum()).backward()
    torch.testing.assert_close(fast.rgb, slow.rgb, rtol=0, atol=1e-9)
    for a, b in zip(fast_grads, (t.grad for t in params)):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("min_weight", [0.0, 1e-2])
def test_blend_weights_equal_the_pytorch_ones_and_give_the_render(min_weight):
    g = random_scene(400, seed=8, feat=4)
    g.opacity_logits = g.opacity_logits + 2.0  # early stops matter
    W, H = 50, 37
    cam = Cameras(make_K(50.0, 50.0, 25.0, 18.0).double(), torch.eye(4, dtype=torch.float64), W, H)
    means2d, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, cam.viewmats[None],
                                                       cam.Ks[None], W, H)
    args = (means2d[0], conics[0], g.opacities, depths[0], radii[0], W, H)
    fast = numba_backend.blend_weights(*args, min_weight=min_weight)
    slow = torch_backend.blend_weights(*args, min_weight=min_weight)
    assert fast.layout == torch.sparse_csr and fast.shape == (W * H, 400) and fast.dtype == torch.float64
    # the same non-zeros (the PyTorch path also stores zero weights of pairs behind a pixel's stop)
    assert fast._nnz() == int((slow.values() != 0).sum()) > 0 and (fast.values() > min_weight).all()
    torch.testing.assert_close(fast.to_dense(), slow.to_dense(), rtol=0, atol=1e-12)
    if min_weight == 0:
        acc, alpha = numba_backend.rasterize(*args[:5], g.features, W, H)
        torch.testing.assert_close(fast @ g.features, acc.reshape(W * H, -1), rtol=0, atol=1e-9)
        torch.testing.assert_close(fast @ torch.ones(400, dtype=torch.float64), alpha.reshape(-1), rtol=0, atol=1e-9)


def test_concurrent_renders_from_threads_agree():
    import threading

    g = random_scene(300, seed=9, dtype=torch.float32)
    cam = Cameras(make_K(40.0, 40.0, 20.0, 15.0), torch.eye(4), 40, 30)
    ref = render(g, cam, backend="torch").rgb
    outs = []
    threads = [threading.Thread(target=lambda: outs.append(render(g, cam, backend="torch").rgb)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 4 and all(torch.equal(o, ref) for o in outs) and ref.abs().sum() > 0


def test_torch_thread_count_is_left_alone():
    """Numba's OpenMP layer shares libgomp with torch: a launch must not change torch's thread count."""
    from openlsm.models.lsm.knn import knn_mean_sq_dist

    before = torch.get_num_threads()
    g = random_scene(100, seed=10, dtype=torch.float32)
    cam = Cameras(make_K(40.0, 40.0, 20.0, 15.0), torch.eye(4), 40, 30)
    try:
        for n in (1, before):
            torch.set_num_threads(n)
            render(g, cam, backend="torch")
            knn_mean_sq_dist(g.means, method="numba")
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_projection_and_sh_equal_the_pytorch_ones():
    """Compiled projection and SH (used by `render` without gradients) against the PyTorch ones, float64: a turned
    camera, Gaussians behind it, off screen and near the clamp of the Jacobian."""
    from openlsm.cameras.cameras import look_at
    from openlsm.render.sh import eval_sh

    g = random_scene(3000, seed=11, degree=3)
    g.means = g.means * torch.tensor([3.0, 3.0, 2.0], dtype=torch.float64) - torch.tensor([0.0, 0.0, 5.5],
        dtype=torch.float64)  # some behind the camera, some outside the view
    c2w = look_at(torch.tensor([[0.4, -0.3, -0.5]], dtype=torch.float64), torch.tensor([[0.0, 0.1, 3.0]],
                  dtype=torch.float64), torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    cam = Cameras(make_K(60.0, 55.0, 31.0, 22.0).double(), c2w, 64, 48)
    args = (g.means, g.quats, g.scales, g.opacities, cam.viewmats, cam.Ks, 64, 48)
    slow, fast = project_gaussians(*args), numba_backend.project_gaussians(*args)
    visible = (slow[3] > 0).all(-1)
    assert 200 < int(visible.sum()) < 1000 and int((slow[1] < 0.01).sum()) > 50  # culled for both reasons
    assert torch.equal(fast[3], slow[3])
    for a, b in zip(fast[:3], slow[:3]):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
    dirs = g.means[None] - c2w[:, None, :3, 3]  # [1, N, 3]
    for degree in range(4):
        sh = g.with_sh_degree(degree).sh[None]  # [1, N, K, 3]
        torch.testing.assert_close(numba_backend.eval_sh(sh, dirs), eval_sh(sh, dirs), rtol=1e-12, atol=1e-12)
    f32 = numba_backend.project_gaussians(*(t.float() if torch.is_tensor(t) else t for t in args))
    assert f32[0].dtype == torch.float32 and f32[3].dtype == torch.int32


def test_thin_turned_gaussians_and_thread_counts():
    """Needle-like Gaussians at every angle (the row spans of `numba_kernels.row_span` are narrow and slanted) equal
    the PyTorch compositing; one thread and two give the same image (tiles only change hands)."""
    g = random_scene(600, seed=12, feat=2)
    g.log_scales = torch.log(torch.tensor([0.3, 0.002, 0.002], dtype=torch.float64)).expand(600, 3).clone()
    W, H = 80, 60
    cam = Cameras(make_K(70.0, 70.0, 40.0, 30.0).double(), torch.eye(4, dtype=torch.float64), W, H)
    means2d, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, cam.viewmats[None],
                                                       cam.Ks[None], W, H)
    args = (means2d[0], conics[0], g.opacities, depths[0], radii[0], g.features, W, H)
    slow, slow_alpha = rasterize(*args)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(numba_backend.rasterize(*args))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert slow_alpha.max() > 0.5 and (slow_alpha > 0).float().mean() > 0.2
    torch.testing.assert_close(outs[0][1], slow_alpha, rtol=0, atol=1e-10)  # alpha stepped along rows
    torch.testing.assert_close(outs[0][0], slow, rtol=0, atol=1e-10)
