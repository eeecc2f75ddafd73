"""`render`: RGB, expected depth, alpha and N-d features of Gaussians in one call, on either backend.

    out = render(gaussians, cameras)                 # gaussians [N], cameras [C]
    out.rgb [C, H, W, 3], out.depth [C, H, W], out.alpha [C, H, W], out.features [C, H, W, D] or None

Batched scenes: gaussians [B, N] (see Gaussians.stack) with cameras [B, C] give [B, C, H, W, ...].
`backend="auto"` uses gsplat on CUDA tensors when it is installed and falls back to the PyTorch backend
(with one log line) otherwise; both follow the same conventions, so results agree to float rounding. On the CPU,
the compositing (with its gradients) runs on Numba when it is installed (`numba_backend`, same maths), and so do
the projection and SH colours of renders that need no gradient; OPENLSM_NUMBA=0 keeps the pure-PyTorch path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..cameras import Cameras
from ..gaussians import SH_C0, Gaussians
from . import numba_backend, torch_backend
from .sh import eval_sh

log = logging.getLogger(__name__)
Backend = Literal["auto", "torch", "gsplat"]
GSPLAT_TILE = 16  # pixels per tile side when gradients are needed (gsplat's default)
GSPLAT_TILE_INFERENCE = 8  # without gradients: 11-13 % faster forward on an H200 (docs/benchmarks.md)
GSPLAT_FEATURE_PASS = 64  # feature channels per rasterisation pass with gradients (bench_render.py --feature-pass)
GSPLAT_FEATURE_PASS_INFERENCE = 32  # without gradients: 4–5 % faster than 64 at 256² (bench/gpu_render_latency.py)


@dataclass
class RenderOutput:
    rgb: Tensor  # [..., C, H, W, 3]
    depth: Tensor  # [..., C, H, W] expected depth Σwz/Σw (0 where nothing was hit)
    alpha: Tensor  # [..., C, H, W]
    features: Tensor | None  # [..., C, H, W, D]


_gsplat_state: dict[str, object] = {}


def gsplat_available() -> tuple[bool, str]:
    """(usable, reason). gsplat needs CUDA; its kernels compile on the first call, not at import."""
    if "result" not in _gsplat_state:
        if not torch.cuda.is_available():
            _gsplat_state["result"] = (False, "CUDA is not available")
        else:
            try:
                import gsplat

                _gsplat_state["result"] = (True, f"gsplat {gsplat.__version__}")
            except Exception as e:  # noqa: BLE001  ImportError, or a broken install
                _gsplat_state["result"] = (False, f"gsplat is not importable ({type(e).__name__}: {e})")
    return _gsplat_state["result"]  # type: ignore[return-value]


def pick_backend(backend: Backend, device: torch.device) -> str:
    if backend == "torch":
        return "torch"
    ok, why = gsplat_available() if device.type == "cuda" else (False, f"tensors are on {device.type}")
    if backend == "gsplat" and not ok:
        raise RuntimeError(f"backend='gsplat' requested but {why}")
    if ok:
        return "gsplat"
    if not _gsplat_state.get("warned"):
        log.info("openlsm render: using the PyTorch backend (%s)", why)
        _gsplat_state["warned"] = True
    return "torch"


def view_colors(g: Gaussians, c2w: Tensor, sh_degree: int | None,
                evaluate: Callable[[Tensor, Tensor], Tensor] = eval_sh) -> Tensor:
    """Per-camera RGB of each Gaussian from its SH: [C, N, 3], clamped at 0 like gsplat. `evaluate(sh [C, N, K, 3],
    dirs [C, N, 3])` computes degrees >= 1 (`eval_sh`, or gsplat's kernel in `gsplat_kernels.eval_sh`)."""
    sh = g.sh if sh_degree is None else g.with_sh_degree(sh_degree).sh
    if sh.shape[-2] == 1:  # degree 0 needs no view direction: its basis function is the constant C0
        return (sh[:, 0] * SH_C0 + 0.5).clamp_min(0)[None].expand(c2w.shape[0], -1, -1)
    dirs = g.means[None] - c2w[:, None, :3, 3]  # [C, N, 3]
    return (evaluate(sh[None].expand(len(c2w), -1, -1, -1), dirs) + 0.5).clamp_min(0)


def render(gaussians: Gaussians, cameras: Cameras, width: int | None = None, height: int | None = None,
           backend: Backend = "auto", sh_degree: int | None = None, with_features: bool = True,
           background: Tensor | None = None, near: float = 0.01, far: float = 1e10,
           eps2d: float = 0.3) -> RenderOutput:
    """Render Gaussians [N] from cameras [C] (or scenes [B, N] from cameras [B, C]).

    background: optional RGB [3] composited behind (features and depth get none).
    """
    width, height = width or cameras.width, height or cameras.height
    if (width, height) != (cameras.width, cameras.height):
        cameras = cameras.rescale(width, height)
    if gaussians.means.dim() == 3:  # several scenes: render one after another, stack
        outs = [render(gaussians[b], cameras[b], width, height, backend, sh_degree, with_features, background,
                       near, far, eps2d) for b in range(gaussians.means.shape[0])]
        feats = None if outs[0].features is None else torch.stack([o.features for o in outs])
        return RenderOutput(torch.stack([o.rgb for o in outs]), torch.stack([o.depth for o in outs]),
                            torch.stack([o.alpha for o in outs]), feats)
    single = cameras.c2w.dim() == 2
    cams = cameras.flatten()
    c2w, Ks, viewmats = cams.c2w.to(gaussians.means), cams.Ks.to(gaussians.means), cams.viewmats.to(gaussians.means)
    feats = gaussians.features if with_features else None
    which = pick_backend(backend, gaussians.means.device)
    needs_grad = _needs_grad(gaussians, c2w, Ks)
    if which == "gsplat" and not needs_grad:
        rgb, depth, alpha, out_feats = _render_gsplat_inference(gaussians, feats, c2w, viewmats, Ks, sh_degree, width,
                                                                height, near, far, eps2d)
    else:
        # On the CPU the compositing runs on Numba (forward and backward); the projection and the SH colours too where
        # no gradient is needed (those have no compiled backward)
        compiled = which == "torch" and numba_backend.available(gaussians.means.device)
        fully = compiled and not needs_grad
        colors = view_colors(gaussians, c2w, sh_degree, numba_backend.eval_sh if fully else eval_sh)  # [C, N, 3]
        if which == "gsplat":
            rgb, depth, alpha, out_feats = _render_gsplat(gaussians, colors, feats, viewmats, Ks, width, height, near,
                                                          far, eps2d)
        else:
            rgb, depth, alpha, out_feats = _render_torch(
                gaussians, colors, feats, viewmats, Ks, width, height, near, far, eps2d,
                (numba_backend if fully else torch_backend).project_gaussians,
                (numba_backend if compiled else torch_backend).rasterize)
    if background is not None:
        rgb = rgb + (1 - alpha[..., None]) * background.to(rgb)
    out = RenderOutput(rgb, depth, alpha, out_feats)
    if single:
        out = RenderOutput(rgb[0], depth[0], alpha[0], None if out_feats is None else out_feats[0])
    return out


def _render_torch(g, colors, feats, viewmats, Ks, width, height, near, far, eps2d,
                  project=torch_backend.project_gaussians, rasterize=torch_backend.rasterize):
    """Projection and compositing by torch_backend's functions or numba_backend's (the same maths, compiled)."""
    opac = g.opacities
    means2d, depths, conics, radii = project(g.means, g.quats, g.scales, opac, viewmats, Ks, width, height, near, far,
                                             eps2d)
    rgbs, dps, alphas, fts = [], [], [], []
    for c in range(viewmats.shape[0]):
        parts = [colors[c]] + ([feats] if feats is not None else []) + [depths[c][:, None]]
        acc, alpha = rasterize(means2d[c], conics[c], opac, depths[c], radii[c], torch.cat(parts, -1), width, height)
        rgbs.append(acc[..., :3])
        fts.append(acc[..., 3:-1])
        dps.append(acc[..., -1] / alpha.clamp_min(1e-10))
        alphas.append(alpha)
    return (torch.stack(rgbs), torch.stack(dps), torch.stack(alphas),
            torch.stack(fts) if feats is not None else None)


def _needs_grad(g: Gaussians, c2w: Tensor, Ks: Tensor) -> bool:
    tensors = (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, g.features, c2w, Ks)
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _render_gsplat_inference(g, feats, c2w, viewmats, Ks, sh_degree, width, height, near, far, eps2d):
    """Without gradients: gsplat's forward kernels with little host work (see gsplat_kernels), its fused SH kernel for
    the colours, 8-px tiles, one rasterisation pass for RGB + depth and one per 32 feature channels."""
    from . import gsplat_kernels as gk

    C, N = viewmats.shape[0], g.means.shape[0]
    opacities = g.opacities
    radii, means2d, depths, conics = gk.project(g.means, g.quats, g.scales, opacities, viewmats, Ks, width, height,
                                                eps2d, near, far)
    tile = GSPLAT_TILE_INFERENCE
    flatten_ids, offsets = gk.intersect(means2d, radii, depths, tile, C, width, height)  # waits for the GPU
    opacities = opacities[None].expand(C, N)

    def composite(values):  # [C, N, K] -> [C, H, W, K], alpha [C, H, W, 1]
        return gk.rasterize(means2d, conics, values, opacities, width, height, tile, offsets, flatten_ids)

    # The feature passes go first: while the GPU runs them, the host computes the colours for the last pass.
    fts = None
    if feats is not None:
        fts = [composite(f)[0] for f in feats[None].expand(C, -1, -1).split(GSPLAT_FEATURE_PASS_INFERENCE, -1)]
    colors = view_colors(g, c2w, sh_degree, gk.eval_sh)  # [C, N, 3]
    rgbd, alphas = composite(torch.cat([colors, depths[..., None]], -1))
    fts = torch.cat(fts, -1) if fts is not None else None
    depth = rgbd[..., 3] / alphas[..., 0].clamp_min(1e-10)
    return rgbd[..., :3], depth, alphas[..., 0], fts


def _render_gsplat(g, colors, feats, viewmats, Ks, width, height, near, far, eps2d):
    """With gradients: gsplat's projection and tile sort once, then one rasterisation pass for RGB + depth (4
    channels) and one for the features: channel counts gsplat runs without padding (one 68-channel pass is padded to
    128)."""
    from gsplat import fully_fused_projection, isect_offset_encode, isect_tiles, rasterize_to_pixels

    C, N = viewmats.shape[0], g.means.shape[0]
    radii, means2d, depths, conics, _ = fully_fused_projection(
        g.means, None, g.quats, g.scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near, far_plane=far,
        packed=False, opacities=g.opacities)
    opacities = g.opacities[None].expand(C, N)
    tile = GSPLAT_TILE
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile, tw, th, n_images=C)
    offsets = isect_offset_encode(isect_ids, C, tw, th).reshape(C, th, tw)

    def composite(values):  # [C, N, K] -> [C, H, W, K], alpha [C, H, W, 1]
        return rasterize_to_pixels(means2d, conics, values, opacities, width, height, tile, offsets,
                                   flatten_ids)

    rgbd, alphas = composite(torch.cat([colors, depths[..., None]], -1))
    fts = None
    if feats is not None:
        parts = feats[None].expand(C, -1, -1).split(GSPLAT_FEATURE_PASS, -1)
        fts = torch.cat([composite(f.contiguous())[0] for f in parts], -1)
    depth = rgbd[..., 3] / alphas[..., 0].clamp_min(1e-10)
    return rgbd[..., :3], depth, alphas[..., 0], fts
