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
"""

from __future__ import annotations

import torch
from torch import Tensor

from openlsm.cameras.cameras import Cameras
from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians
from openlsm.render import numba_backend, torch_backend
from openlsm.render.render import view_colors
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


def solve_features(weights: list[Tensor], targets: Tensor, init: Tensor, ridge: float, iters: int) -> Tensor:
    """argmin_F Σ_v |weights[v] @ F - targets[v]|² + ridge |F - init|² by `iters` conjugate-gradient steps from init.

    weights: V sparse [P, N]; targets [V, P, D]; init [N, D] -> [N, D]. The D columns are independent systems
    solved side by side (one step size per column)."""
    if ridge <= 0:
        raise OpenLSMError(f"the feature fit needs ridge > 0, got {ridge}")
    dt = init.dtype
    A = [w.to(torch.float32) for w in weights]
    At = [transpose_csr(a) for a in A]  # Aᵀ as its own CSR: row products are the fast sparse kernel
    F0, T = init.float(), targets.float()

    def normal(F: Tensor) -> Tensor:  # (Σ AᵀA + ridge I) F
        return sum(sparse_mm(at, sparse_mm(a, F)) for a, at in zip(A, At)) + ridge * F

    X = F0.clone()
    r = sum(sparse_mm(at, T[v] - sparse_mm(a, X)) for v, (a, at) in enumerate(zip(A, At)))  # the ridge term is 0 at F0
    p, rs = r.clone(), (r * r).sum(0)
    for _ in range(iters):
        Ap = normal(p)
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
                        min_weight: float = 0.0, weights: list[Tensor] | None = None) -> Tensor:
    """New features [N, D] for pixel-aligned Gaussians [N = V*H*W] (view-major, row-major, as the LSM predicts
    them) so that rendering through the V cameras [V] (H x W) gives each view back its own Gaussians' features.
    `weights`: the views' `view_weights`, if already built (then `min_weight` is theirs)."""
    feats = gaussians.features
    if feats is None:
        raise OpenLSMError("the feature fit needs Gaussians with features")
    V, H, W = check_pixel_aligned(gaussians, cameras)
    with torch.no_grad():
        weights = weights if weights is not None else view_weights(gaussians, cameras, min_weight)
        return solve_features(weights, feats.reshape(V, H * W, -1), feats, ridge, iters)


def fit_source_colors(gaussians: Gaussians, cameras: Cameras, images: Tensor, ridge: float = 1.0, iters: int = 8,
                      min_weight: float = 0.0, weights: list[Tensor] | None = None) -> Tensor:
    """New SH [N, K, 3] for pixel-aligned Gaussians [N = V*H*W] whose DC terms are refitted so that rendering
    through the V cameras gives back images [V, 3, H, W] in [0, 1] (see the module docstring); the other SH
    coefficients are kept. `weights` as in `fit_source_features`."""
    V, H, W = check_pixel_aligned(gaussians, cameras)
    if images.shape != (V, 3, H, W):
        raise OpenLSMError(f"the colour fit needs images [{V}, 3, {H}, {W}], got {tuple(images.shape)}")
    g = gaussians
    with torch.no_grad():
        weights = weights if weights is not None else view_weights(g, cameras, min_weight)
        colors = view_colors(g, cameras.flatten().c2w.to(g.means), None)  # [V, N, 3]
        rendered = torch.stack([sparse_mm(w.float(), c.float().contiguous())  # [V, HW, 3]
                                for w, c in zip(weights, colors)])
        residuals = images.to(rendered).permute(0, 2, 3, 1).reshape(V, H * W, 3) - rendered
        shifts = solve_features(weights, residuals, rendered.new_zeros(g.means.shape[0], 3), ridge, iters)  # [N, 3]
        sh = g.sh.clone()
        sh[:, 0] += (shifts / C0).to(sh.dtype)  # a colour shift c is an SH DC shift c / C0
        return sh
