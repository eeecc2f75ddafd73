import importlib.util
import itertools
import math

import pytest
import torch

from openlsm.cameras import Cameras, look_at, make_K, unproject_depth
from openlsm.errors import OpenLSMError
from openlsm.gaussians import Gaussians, rgb_to_sh0
from openlsm.models.lsm.feature_fit import (
    GsplatViews,
    SparseViews,
    fit_source_colors,
    fit_source_features,
    solve_features,
    transpose_csr,
    view_operator,
    view_weights,
)
from openlsm.models.lsm.refine import refine_gaussians
from openlsm.render import render
from openlsm.render.torch_backend import sparse_csr


def random_sparse(n_rows, n_cols, density, seed):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n_rows, n_cols, generator=g, dtype=torch.float64)
    dense = dense * (torch.rand(n_rows, n_cols, generator=g, dtype=torch.float64) < density)
    rows, cols = dense.nonzero().unbind(1)
    return dense, sparse_csr(rows, cols, dense[rows, cols], n_rows, n_cols)


def objective(As, T, F, F0, ridge):
    return sum(float(((a.to_dense() @ F - t) ** 2).sum()) for a, t in zip(As, T)) + ridge * float(((F - F0) ** 2).sum())


@pytest.mark.parametrize("numba", ["0", "1"], ids=["pytorch", "numba"])
def test_transpose_csr_is_the_dense_transpose(numba, monkeypatch):
    if numba == "1":
        pytest.importorskip("numba")
    monkeypatch.setenv("OPENLSM_NUMBA", numba)
    dense, A = random_sparse(37, 23, 0.2, 0)
    dense[5] = 0  # an empty row and an empty column
    dense[:, 7] = 0
    rows, cols = dense.nonzero().unbind(1)
    A = sparse_csr(rows, cols, dense[rows, cols], 37, 23)
    At = transpose_csr(A)
    assert At.layout == torch.sparse_csr and At.shape == (23, 37)
    assert torch.equal(At.to_dense(), dense.t())


def test_sparse_csr_sums_duplicates_in_products():
    rows, cols, vals = torch.tensor([2, 0, 2, 2]), torch.tensor([1, 1, 1, 0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    A = sparse_csr(rows, cols, vals, 3, 2)
    x = torch.tensor([[10.0], [100.0]])
    assert torch.equal(A @ x, torch.tensor([[200.0], [0.0], [440.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_sparse_product_is_the_dense_product(dtype):
    pytest.importorskip("numba")
    from openlsm.render import numba_backend

    dense, _ = random_sparse(37, 23, 0.2, 7)
    dense[4] = 0  # an empty row
    rows, cols = dense.nonzero().unbind(1)
    rows, cols = torch.cat([rows, rows[:5]]), torch.cat([cols, cols[:5]])  # duplicate entries add up
    vals = torch.cat([dense[dense != 0], dense[dense != 0][:5]])
    dense[rows[:5], cols[:5]] *= 2
    A = sparse_csr(rows, cols, vals.to(dtype), 37, 23)
    x = torch.randn(23, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    got = numba_backend.sparse_mm(A, x)
    assert got.dtype == dtype and got.shape == (37, 5)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), dense @ x, rtol=tol, atol=tol)


@pytest.mark.parametrize("numba", ["0", "1"], ids=["pytorch", "numba"])
def test_solve_matches_a_dense_float64_solve(numba, monkeypatch):
    if numba == "1":
        pytest.importorskip("numba")
    monkeypatch.setenv("OPENLSM_NUMBA", numba)
    (d1, a1), (d2, a2) = random_sparse(50, 30, 0.15, 1), random_sparse(50, 30, 0.15, 2)
    g = torch.Generator().manual_seed(3)
    T = torch.randn(2, 50, 4, generator=g, dtype=torch.float64)
    F0 = torch.randn(30, 4, generator=g, dtype=torch.float64)
    ridge = 0.5
    lhs = d1.t() @ d1 + d2.t() @ d2 + ridge * torch.eye(30, dtype=torch.float64)
    expected = torch.linalg.solve(lhs, d1.t() @ T[0] + d2.t() @ T[1] + ridge * F0)
    got = solve_features([a1, a2], T, F0, ridge, iters=60)
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(F0, expected, atol=0.1)  # the solve moved it


def test_sparse_views_products_are_the_dense_products():
    (d1, a1), (d2, a2) = random_sparse(40, 25, 0.2, 11), random_sparse(40, 25, 0.2, 12)
    views = SparseViews([a1, a2])
    g = torch.Generator().manual_seed(13)
    x, xs, y = torch.randn(25, 3, generator=g), torch.randn(2, 25, 3, generator=g), torch.randn(2, 40, 3, generator=g)
    d1, d2 = d1.float(), d2.float()
    torch.testing.assert_close(views.apply(x), torch.stack([d1 @ x, d2 @ x]))
    torch.testing.assert_close(views.apply(xs), torch.stack([d1 @ xs[0], d2 @ xs[1]]))  # one input per view
    torch.testing.assert_close(views.adjoint(y), d1.t() @ y[0] + d2.t() @ y[1])
    torch.testing.assert_close(views.normal(x), d1.t() @ (d1 @ x) + d2.t() @ (d2 @ x))


def test_view_operator_uses_sparse_weights_off_cuda():
    gs, cams = pixel_aligned_scene()
    views = view_operator(gs, cams)
    assert isinstance(views, SparseViews) and len(views.A) == 2
    assert views.A[0].shape == (cams.height * cams.width, gs.means.shape[0])


def test_each_step_lowers_the_objective_and_a_huge_ridge_keeps_the_init():
    (_, a1), (_, a2) = random_sparse(60, 40, 0.1, 4), random_sparse(60, 40, 0.1, 5)
    g = torch.Generator().manual_seed(6)
    T = torch.randn(2, 60, 3, generator=g, dtype=torch.float64)
    F0 = torch.randn(40, 3, generator=g, dtype=torch.float64)
    values = [objective([a1, a2], T, solve_features([a1, a2], T, F0, 0.1, k), F0, 0.1) for k in range(6)]
    assert all(b < a for a, b in itertools.pairwise(values)), values
    assert torch.allclose(solve_features([a1, a2], T, F0, 0.1, 0), F0, atol=1e-6)  # (solved in float32)
    assert torch.allclose(solve_features([a1, a2], T, F0, 1e9, 10), F0, atol=1e-6)
    with pytest.raises(OpenLSMError, match="ridge > 0"):
        solve_features([a1, a2], T, F0, 0.0, 3)


def pixel_aligned_scene(W=12, H=9, D=5):
    """Two cameras looking at a bumpy surface; one Gaussian per input pixel (view-major), as the LSM makes them,
    wide enough that each rendered pixel blends several. Features are a function of the surface point, so the two
    views agree on them (as the LSM's do, roughly)."""
    g = torch.Generator().manual_seed(7)
    c2w = torch.stack([look_at(torch.tensor([x, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0, -1.0, 0]))
                       for x in (-0.2, 0.2)])
    cams = Cameras(make_K(14.0, 14.0, W / 2, H / 2).expand(2, 3, 3), c2w, W, H)
    depth = 3.0 + 0.2 * torch.rand(2, H, W, generator=g)
    means = unproject_depth(depth, cams.Ks, cams.c2w).reshape(-1, 3)
    n = means.shape[0]
    feats = torch.sin(means @ torch.randn(3, D, generator=g) * 4)  # [n, D], varying over a few pixels
    return Gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), torch.full((n, 3), math.log(0.25)),
                     torch.full((n,), 0.0), rgb_to_sh0(torch.rand(n, 1, 3, generator=g)), feats), cams


def test_fit_source_features_brings_the_rendered_views_closer_to_their_own_gaussians():
    gs, cams = pixel_aligned_scene()
    W, H = cams.width, cams.height
    target = gs.features.reshape(2, H, W, -1)

    def render_error(features):
        g = Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits, gs.sh, features)
        return float((render(g, cams, backend="torch").features - target).norm() / target.norm())

    predicted = gs.features.clone()
    before = render_error(gs.features)
    fitted = fit_source_features(gs, cams, ridge=0.01, iters=30)
    assert fitted.shape == gs.features.shape and torch.equal(gs.features, predicted)  # the input is untouched
    after = render_error(fitted)
    assert after < 0.7 * before, (before, after)
    # a stronger ridge stays closer to the prediction and fits the views less tightly
    damped = fit_source_features(gs, cams, ridge=10.0, iters=30)
    assert (damped - gs.features).norm() < (fitted - gs.features).norm()
    assert after < render_error(damped) < before


def test_fit_source_features_rejects_gaussians_that_are_not_pixel_aligned():
    gs, cams = pixel_aligned_scene()
    with pytest.raises(OpenLSMError, match="not pixel-aligned"):
        fit_source_features(gs[:-1], cams)
    with pytest.raises(OpenLSMError, match="features"):
        fit_source_features(Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits, gs.sh), cams)


def test_fit_source_colors_recovers_colours_that_render_the_images():
    """Images rendered from the scene with other DC colours (and view-dependent terms): starting from wrong colours,
    the fit brings the renders back to the images, changes only the DC terms, and a strong ridge moves less."""
    gs, cams = pixel_aligned_scene()
    g = torch.Generator().manual_seed(3)
    n = gs.means.shape[0]
    higher = 0.05 * torch.randn(n, 3, 3, generator=g)  # degree-1 terms, kept by the fit
    true_sh = torch.cat([rgb_to_sh0(0.2 + 0.6 * torch.rand(n, 1, 3, generator=g)), higher], 1)
    truth = Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits, true_sh)
    images = render(truth, cams, backend="torch").rgb.permute(0, 3, 1, 2)  # [2, 3, H, W]
    start = Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits,
                      torch.cat([rgb_to_sh0(torch.full((n, 1, 3), 0.5)), higher], 1))

    def render_error(sh):
        g = Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits, sh)
        return float((render(g, cams, backend="torch").rgb.permute(0, 3, 1, 2) - images).norm() / images.norm())

    before_sh = start.sh.clone()
    fitted = fit_source_colors(start, cams, images, ridge=1e-4, iters=60)
    assert torch.equal(start.sh, before_sh)  # the input is untouched
    assert torch.equal(fitted[:, 1:], higher)  # only the DC terms move
    before, after = render_error(start.sh), render_error(fitted)
    assert after < 0.05 * before, (before, after)
    damped = fit_source_colors(start, cams, images, ridge=10.0, iters=60)
    assert after < render_error(damped) < before
    assert (damped - start.sh).norm() < (fitted - start.sh).norm()


def test_fit_source_colors_rejects_images_of_another_size():
    gs, cams = pixel_aligned_scene()
    with pytest.raises(OpenLSMError, match="images"):
        fit_source_colors(gs, cams, torch.rand(2, 3, cams.height + 1, cams.width))
    with pytest.raises(OpenLSMError, match="not pixel-aligned"):
        fit_source_colors(gs[:-1], cams, torch.rand(2, 3, cams.height, cams.width))


def test_refine_gaussians_fits_opacities_scales_and_colours_to_the_images():
    """Images rendered from the scene with other opacities, scales and colours: Adam steps from the wrong ones bring
    the renders towards the images and leave positions, rotations and features alone; 0 steps change nothing."""
    gs, cams = pixel_aligned_scene()
    g = torch.Generator().manual_seed(5)
    n = gs.means.shape[0]
    truth = Gaussians(gs.means, gs.quats, gs.log_scales + 0.3 * torch.randn(n, 3, generator=g),
                      torch.randn(n, generator=g), rgb_to_sh0(0.2 + 0.6 * torch.rand(n, 1, 3, generator=g)))
    images = render(truth, cams, backend="torch").rgb.permute(0, 3, 1, 2)  # [2, 3, H, W]

    def render_error(h):
        return float((render(h, cams, backend="torch").rgb.permute(0, 3, 1, 2) - images).norm() / images.norm())

    before = [t.clone() for t in (gs.log_scales, gs.opacity_logits, gs.sh)]
    refined = refine_gaussians(gs, cams, images, steps=40, lr=0.05, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(before, (gs.log_scales, gs.opacity_logits, gs.sh)))  # untouched
    assert render_error(refined) < 0.5 * render_error(gs), (render_error(gs), render_error(refined))
    for name in ("means", "quats", "features"):
        assert torch.equal(getattr(refined, name), getattr(gs, name))
    for name in ("log_scales", "opacity_logits"):
        assert not torch.equal(getattr(refined, name), getattr(gs, name))
    assert not torch.equal(refined.sh[:, 0], gs.sh[:, 0])
    same = refine_gaussians(gs, cams, images, steps=0)
    assert all(torch.equal(getattr(same, k), getattr(gs, k)) for k in ("log_scales", "opacity_logits", "sh"))
    behind = Gaussians(gs.means * torch.tensor([1.0, 1.0, -1.0]), gs.quats, gs.log_scales, gs.opacity_logits, gs.sh)
    unseen = refine_gaussians(behind, cams, images, steps=3)  # nothing in view: nothing to fit, no error
    assert torch.equal(unseen.opacity_logits, behind.opacity_logits)
    with pytest.raises(OpenLSMError, match="images"):
        refine_gaussians(gs, cams, images[:1], steps=1)


# The matrix-free views operator (products through gsplat's rasteriser) against the sparse weights of the PyTorch
# backend. GPU only (run on the device by bench/gpu_session20.sh).
needs_gsplat = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("gsplat") is None,
                                  reason="needs CUDA and gsplat")


def cuda_scene(D=70):
    gs, cams = pixel_aligned_scene(W=40, H=30, D=D)  # 70 channels: a 64-channel pass and a padded 6-channel one
    return gs.to("cuda"), cams.to("cuda")


def rel(a, b):
    return float((a - b).norm() / b.norm())


@needs_gsplat
def test_gsplat_views_match_the_sparse_weights():
    gs, cams = cuda_scene()
    fast, ref = GsplatViews(gs, cams), SparseViews(view_weights(gs, cams))
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(gs.means.shape[0], 70, device="cuda", generator=g)
    y = torch.randn(2, cams.height * cams.width, 70, device="cuda", generator=g)
    assert rel(fast.apply(x), ref.apply(x)) < 1e-4
    assert rel(fast.adjoint(y), ref.adjoint(y)) < 1e-4
    assert rel(fast.normal(x), ref.normal(x)) < 1e-4
    per_view = torch.randn(2, gs.means.shape[0], 3, device="cuda", generator=g)
    assert rel(fast.apply(per_view), ref.apply(per_view)) < 1e-4
    # the adjoint is the transpose of apply: <W x, y> = <x, Wᵀ y>
    lhs, rhs = float((fast.apply(x) * y).sum()), float((x * fast.adjoint(y)).sum())
    assert abs(lhs - rhs) < 1e-4 * abs(lhs)


@needs_gsplat
def test_fits_through_gsplat_match_the_sparse_path(monkeypatch):
    gs, cams = cuda_scene(D=5)
    monkeypatch.setenv("OPENLSM_MATRIX_FREE", "1")
    assert isinstance(view_operator(gs, cams), GsplatViews)
    images = torch.rand(2, 3, cams.height, cams.width, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    fast_f = fit_source_features(gs, cams, ridge=0.1, iters=10)
    fast_c = fit_source_colors(gs, cams, images, ridge=0.1, iters=10)
    monkeypatch.setenv("OPENLSM_MATRIX_FREE", "0")
    assert isinstance(view_operator(gs, cams), SparseViews)
    ref_f = fit_source_features(gs, cams, ridge=0.1, iters=10)
    ref_c = fit_source_colors(gs, cams, images, ridge=0.1, iters=10)
    assert rel(fast_f - gs.features, ref_f - gs.features) < 1e-3
    assert rel(fast_c - gs.sh, ref_c - gs.sh) < 1e-3
