"""Fit pixel-aligned Gaussians' features and colours to their own views through the renderer (inference, no
gradients).

The LSM gives every input pixel a Gaussian carrying that pixel's feature, but a rendered pixel is a blend of many
Gaussians (the trained head makes them wide and faint: ~300 per pixel), so rendering the input views back gives a
blurred, shifted copy of the features they were made from. This solves, per scene and in closed form,

    F = argmin_F  Σ_v |W_v F - T_v|²  +  ridge · |F - F0|²

where W_v [H·W, N] are the compositing weights of input view v (`blend_weights`), T_v [H·W, D] the features of
view v's own Gaussians laid out as its pixels and F0 the Gaussians' features as predicted. Conjugate gradients from
F0; the solution is linear in the targets, channel by channel, so it is the same whatever metric the feature space
is later read in. The ridge keeps the Gaussians near their predictions where the views say little about them and
damps the solve: the cameras it fits through are the recovered ones, and features fitted too tightly to them do
not carry to other cameras.

    features = fit_source_features(gaussians, cameras, ridge=1.0, iters=8)  # gaussians [V*H*W], cameras [V]

Colours the same way (`fit_source_colors`), with the input images as the targets: the DC term of each Gaussian's
SH moves by the C minimising Σ_v |W_v (colors_v + C) - I_v|² + ridge |C|², colors_v the Gaussians' colours seen
from camera v (their view-dependent terms are kept). Rendering the inputs back then gives sharper copies of them,
and novel views nearby gain too (docs/benchmarks.md, session 19).

    sh = fit_source_colors(gaussians, cameras, images, ridge=1.0, iters=8)   # images [V, 3, H, W] in [0, 1]

The W_v enter only as products, through a views operator (`view_operator`): the weights as sparse matrices
(`SparseViews`), or, on CUDA with gsplat and OPENLSM_MATRIX_FREE=1, none formed at all (`GsplatViews`: W x is a
render of x, Wᵀ y its backward). The matrix-free path is opt-in until it has been checked on a GPU (its test and
benchmark are in bench/gpu_session20.sh; docs/benchmarks.md, session 20). Both fits of one scene can share one
operator (`weights=`).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from openlsm.cameras.cameras import Cameras
from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians
from openlsm.render import numba_backend, torch_backend
from openlsm.render.render import gsplat_available, view_colors
from openlsm.render.sh import C0
from openlsm.render.torch_backend import sparse_csr


def view_weights(gaussians: Gaussians, cameras: Cameras, min_weight: float = 0.0) -> list[Tensor]:
    """The compositing weights of each camera [C] as sparse CSR matrices [H*W, N] (any device; compiled by Numba
    on the CPU when it is installed)."""
    g, cams = gaussians, cameras.flatten()
    W, H = cams.width, cams.height
    kernels = numba_backend if numba_backend.available(g.means.device) else torch_backend
    means2d, depths, conics, radii = kernels.project_gaussians(g.means, g.quats, g.scales, g.opacities,
                                                               cams.viewmats.to(g.means), cams.Ks.to(g.means), W, H)
    return [kernels.blend_weights(means2d[c], conics[c], g.opacities, depths[c], radii[c], W, H, min_weight)
            for c in range(len(cams.Ks))]


def transpose_csr(a: Tensor) -> Tensor:
    """A sparse CSR matrix [R, C] -> its transpose as a CSR matrix [C, R] (torch's own conversion is ~10x slower)."""
    if numba_backend.available(a.device):
        return numba_backend.transpose_csr(a)
    crow = a.crow_indices()
    rows = torch.repeat_interleave(torch.arange(a.shape[0], device=crow.device), crow.diff())
    return sparse_csr(a.col_indices(), rows, a.values(), a.shape[1], a.shape[0])


def sparse_mm(a: Tensor, x: Tensor) -> Tensor:
    """A sparse CSR matrix [R, C] @ dense x [C, D] -> [R, D] (compiled by Numba on the CPU when it is installed)."""
    return numba_backend.sparse_mm(a, x) if numba_backend.available(x.device) else torch.matmul(a, x)


class SparseViews:
    """V views' blend weights as sparse CSR matrices [P, N] (`view_weights`), with their transposes as CSR too (row
    products are the fast sparse kernel), built once and shared by every product."""

    def __init__(self, weights: list[Tensor]):
        self.A = [w.to(torch.float32) for w in weights]
        self.At = [transpose_csr(a) for a in self.A]

    def apply(self, x: Tensor) -> Tensor:
        """x [N, D] (or one per view, [V, N, D]) -> the rendered views [V, P, D]."""
        xs = x.float() if x.dim() == 3 else x.float()[None].expand(len(self.A), -1, -1)
        return torch.stack([sparse_mm(a, xv.contiguous()) for a, xv in zip(self.A, xs)])

    def adjoint(self, y: Tensor) -> Tensor:
        """y [V, P, D] -> Σ_v W_vᵀ y_v [N, D]."""
        return sum(sparse_mm(at, yv.contiguous()) for at, yv in zip(self.At, y.float()))

    def normal(self, x: Tensor) -> Tensor:
        """x [N, D] -> Σ_v W_vᵀ W_v x [N, D]."""
        return sum(sparse_mm(at, sparse_mm(a, x)) for a, at in zip(self.A, self.At))


class GsplatViews:
    """The same products without forming the weights (CUDA, gsplat): W_v x renders x as the Gaussians' colours
    through view v, Σ_v W_vᵀ y_v is that render's backward. The projection and tile lists are built once; every
    weight is used (`min_weight` does not apply)."""

    TILE, PASS = 16, 64  # gsplat's tile size with gradients; channels per rasterisation pass (as render.py)

    def __init__(self, gaussians: Gaussians, cameras: Cameras, eps2d: float = 0.3, near: float = 0.01,
                 far: float = 1e10):
        from openlsm.render import gsplat_kernels as gk

        g, cams = gaussians, cameras.flatten()
        self.V, self.W, self.H, self.N = len(cams.Ks), cams.width, cams.height, g.means.shape[0]
        f = torch.float32
        self.radii, self.means2d, depths, self.conics = gk.project(
            g.means.to(f), g.quats.to(f), g.scales.to(f), g.opacities.to(f), cams.viewmats.to(g.means.device, f),
            cams.Ks.to(g.means.device, f), self.W, self.H, eps2d, near, far)
        self.flatten_ids, self.offsets = gk.intersect(self.means2d, self.radii, depths, self.TILE, self.V, self.W,
                                                      self.H)
        self.opacities = g.opacities.to(f)[None].expand(self.V, -1).contiguous()  # [V, N]

    def _render(self, values: Tensor) -> Tensor:
        """values [V, N, D] -> [V, P, D], differentiable in values."""
        from gsplat import rasterize_to_pixels

        parts = [rasterize_to_pixels(self.means2d, self.conics, v.contiguous(), self.opacities, self.W, self.H,
                                     self.TILE, self.offsets, self.flatten_ids)[0]
                 for v in values.split(self.PASS, -1)]
        return torch.cat(parts, -1).reshape(self.V, self.W * self.H, -1)

    def _per_view(self, x: Tensor) -> Tensor:
        return x if x.dim() == 3 else x[None].expand(self.V, -1, -1)

    def apply(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self._render(self._per_view(x.float()))

    def adjoint(self, y: Tensor) -> Tensor:
        with torch.enable_grad():
            x = y.new_zeros(self.N, y.shape[-1], dtype=torch.float32, requires_grad=True)
            return torch.autograd.grad(self._render(self._per_view(x)), x, y.float())[0]

    def normal(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().float().requires_grad_(True)
            rendered = self._render(self._per_view(x))
            return torch.autograd.grad(rendered, x, rendered.detach())[0]


Views = SparseViews | GsplatViews


def view_operator(gaussians: Gaussians, cameras: Cameras, min_weight: float = 0.0) -> Views:
    """The views' blend weights as an operator: `GsplatViews` on CUDA with gsplat when OPENLSM_MATRIX_FREE=1, else
    `SparseViews` of `view_weights` (weights under `min_weight` dropped)."""
    if gaussians.means.is_cuda and os.environ.get("OPENLSM_MATRIX_FREE", "0") == "1" and gsplat_available()[0]:
        return GsplatViews(gaussians, cameras)
    return SparseViews(view_weights(gaussians, cameras, min_weight))


def solve_features(views: Views | list[Tensor], targets: Tensor, init: Tensor, ridge: float, iters: int) -> Tensor:
    """argmin_F Σ_v |W_v F - targets[v]|² + ridge |F - init|² by `iters` conjugate-gradient steps from init.

    views: an operator (`view_operator`) or V sparse matrices [P, N]; targets [V, P, D]; init [N, D] -> [N, D].
    The D columns are independent systems solved side by side (one step size per column)."""
    if ridge <= 0:
        raise OpenLSMError(f"the feature fit needs ridge > 0, got {ridge}")
    views = SparseViews(views) if isinstance(views, list) else views
    dt = init.dtype
    F0 = init.float()
    X = F0.clone()
    r = views.adjoint(targets.float() - views.apply(X))  # the ridge term's gradient is 0 at F0
    p, rs = r.clone(), (r * r).sum(0)
    for _ in range(iters):
        Ap = views.normal(p) + ridge * p
        step = rs / (p * Ap).sum(0).clamp_min(1e-30)
        X.addcmul_(p, step)
        r.addcmul_(Ap, step, value=-1)
        rs_new = (r * r).sum(0)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return X.to(dt)


def check_pixel_aligned(gaussians: Gaussians, cameras: Cameras) -> tuple[int, int, int]:
    """(V, H, W) of the cameras, or OpenLSMError unless there is one Gaussian per pixel of each view."""
    V, H, W = len(cameras.flatten().Ks), cameras.height, cameras.width
    if gaussians.means.shape[0] != V * H * W:
        raise OpenLSMError(f"{gaussians.means.shape[0]} Gaussians are not pixel-aligned with {V} views of {W}x{H}")
    return V, H, W


def fit_source_features(gaussians: Gaussians, cameras: Cameras, ridge: float = 1.0, iters: int = 8,
                        min_weight: float = 0.0, weights: Views | None = None) -> Tensor:
    """New features [N, D] for pixel-aligned Gaussians [N = V*H*W] (view-major, row-major, as the LSM predicts
    them) so that rendering through the V cameras [V] (H x W) gives each view back its own Gaussians' features.
    `weights`: the views' `view_operator`, if already built (then `min_weight` is theirs)."""
    feats = gaussians.features
    if feats is None:
        raise OpenLSMError("the feature fit needs Gaussians with features")
    V, H, W = check_pixel_aligned(gaussians, cameras)
    with torch.no_grad():
        weights = weights if weights is not None else view_operator(gaussians, cameras, min_weight)
        return solve_features(weights, feats.reshape(V, H * W, -1), feats, ridge, iters)


def fit_source_colors(gaussians: Gaussians, cameras: Cameras, images: Tensor, ridge: float = 1.0, iters: int = 8,
                      min_weight: float = 0.0, weights: Views | None = None) -> Tensor:
    """New SH [N, K, 3] for pixel-aligned Gaussians [N = V*H*W] whose DC terms are refitted so that rendering
    through the V cameras gives back images [V, 3, H, W] in [0, 1] (see the module docstring); the other SH
    coefficients are kept. `weights` as in `fit_source_features`."""
    V, H, W = check_pixel_aligned(gaussians, cameras)
    if images.shape != (V, 3, H, W):
        raise OpenLSMError(f"the colour fit needs images [{V}, 3, {H}, {W}], got {tuple(images.shape)}")
    g = gaussians
    with torch.no_grad():
        weights = weights if weights is not None else view_operator(g, cameras, min_weight)
        rendered = weights.apply(view_colors(g, cameras.flatten().c2w.to(g.means), None))  # [V, HW, 3]
        residuals = images.to(rendered).permute(0, 2, 3, 1).reshape(V, H * W, 3) - rendered
        shifts = solve_features(weights, residuals, rendered.new_zeros(g.means.shape[0], 3), ridge, iters)  # [N, 3]
        sh = g.sh.clone()
        sh[:, 0] += (shifts / C0).to(sh.dtype)  # a colour shift c is an SH DC shift c / C0
        return sh
