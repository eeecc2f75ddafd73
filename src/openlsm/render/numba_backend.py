"""Forward-only CPU rendering compiled by Numba (optional extra `[cpu]`), with the maths of `torch_backend`: the
projection, SH colours and compositing (same boxes, alpha threshold and clamp, early stop at transmittance 1e-4).

gsplat's tile scheme on the CPU: the Gaussians, front to back, are binned into 16x16-pixel tiles by their
opacity-aware boxes; tiles are composited in parallel, each walking its list in depth order over the pixels of
each Gaussian's ellipse (`numba_kernels.py`). No sort of (pixel, Gaussian) pairs and no per-pair tensors: 2.5x
faster than the pure-PyTorch compositing on thin Gaussians, 6x on a trained model's large, overlapping ones (session
16; more since). The compositing has a compiled backward too (`rasterize` is differentiable in the projected
Gaussians and the values; gradients through the projection are the PyTorch backend's); the blend weights and the
CSR transpose serve the feature fit.

    if numba_backend.available():
        means2d, depths, conics, radii = numba_backend.project_gaussians(means, quats, scales, opacities, viewmats,
                                                                         Ks, W, H)
        out, alpha = numba_backend.rasterize(means2d[0], conics[0], opacities, depths[0], radii[0], values, W, H)
        weights = numba_backend.blend_weights(means2d[0], conics[0], opacities, depths[0], radii[0], W, H)  # [H*W, N]
        weights_t = numba_backend.transpose_csr(weights)  # [N, H*W]
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

import numpy as np
import torch
from torch import Tensor

from .torch_backend import _boxes

TILE = 16  # as numba_kernels.TILE
# One kernel launch at a time: Numba's fallback threading layer (workqueue) aborts on concurrent parallel launches
# from several Python threads (e.g. viewer callbacks).
_LOCK = threading.RLock()


def available(device: torch.device | None = None) -> bool:
    """Numba is installed and not switched off (OPENLSM_NUMBA=0 keeps the pure-PyTorch path), and `device`, if
    given, is the CPU."""
    if device is not None and torch.device(device).type != "cpu":
        return False
    return os.environ.get("OPENLSM_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None


def _compile():
    """The kernel module (Numba compiles each kernel at its first call and caches it on disk)."""
    from . import numba_kernels

    return numba_kernels


def _prepare(means2d, conics, opacities, depths, radii, width, height):
    """Visible Gaussians front to back: their ids [M], boxes, params [M, 8] (centre, conic, opacity, ln(255·opacity),
    exp(-conic a); float64, see `numba_kernels.row_span`), per-tile lists (CSR over the tiles, row-major), the order
    in which the threads take the tiles and their count."""
    import numba

    with torch.no_grad():
        ids = (radii > 0).all(-1).nonzero()[:, 0]
        ids = ids[torch.argsort(depths[ids], stable=True)]  # front to back
        x0, x1, y0, y1 = (b.numpy() for b in _boxes(means2d[ids], radii[ids], width, height))
        conics, opacities = conics[ids].double(), opacities[ids, None].double()
        params = torch.cat([means2d[ids].double(), conics, opacities, torch.log(255.0 * opacities),
                            torch.exp(-conics[:, :1])], -1).numpy()
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    starts, tile_ids = _compile().bin_tiles(x0, x1, y0, y1, tiles_x, tiles_x * tiles_y)
    order = np.argsort(-np.diff(starts), kind="stable")  # longest tile lists first (see `numba_kernels.composite`)
    # the thread count goes in as an argument: numba.get_num_threads() inside a kernel stops Numba caching it
    return ids, (order, numba.get_num_threads(), starts, tile_ids, params, x0, x1, y0, y1), tiles_x


def numba_launch(fn):
    """Run fn as one Numba launch: under the lock, on torch's thread count, which is restored afterwards (Numba's
    OpenMP layer shares libgomp with torch, so setting its threads would change torch's for the rest of the process)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        import numba

        with _LOCK:
            n = torch.get_num_threads()
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
            try:
                return fn(*args, **kwargs)
            finally:
                if torch.get_num_threads() != n:
                    torch.set_num_threads(n)
    return run


@numba_launch
def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, near: float = 0.01, far: float = 1e10,
                      eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """As `torch_backend.project_gaussians` (CPU tensors, no gradients; computed in float64, returned in the dtype of
    `means`): means2d [C, N, 2], depths [C, N], conics [C, N, 3], radii [C, N, 2] int32."""
    C, N = viewmats.shape[0], means.shape[0]
    means2d, depths, conics = np.empty((C, N, 2)), np.empty((C, N)), np.empty((C, N, 3))
    radii = np.empty((C, N, 2), np.int32)
    args = [t.detach().double().contiguous().numpy() for t in (means, quats, scales, opacities)]
    for c in range(C):
        _compile().project(*args, viewmats[c].detach().double().numpy(), Ks[c].detach().double().numpy(),
                           width, height, near, far, eps2d, means2d[c], depths[c], conics[c], radii[c])
    dtype = means.dtype
    return (torch.from_numpy(means2d).to(dtype), torch.from_numpy(depths).to(dtype),
            torch.from_numpy(conics).to(dtype), torch.from_numpy(radii))


@numba_launch
def eval_sh(sh: Tensor, dirs: Tensor) -> Tensor:
    """As `sh.eval_sh` (CPU tensors, no gradients): sh [..., K, 3], dirs [..., 3] -> [..., 3] in the dtype of sh."""
    lead = dirs.shape[:-1]
    sh = sh.detach().expand(*lead, *sh.shape[-2:]).reshape(-1, *sh.shape[-2:])
    out = np.empty((sh.shape[0], 3), np.float64 if sh.dtype == torch.float64 else np.float32)
    _compile().sh_colors(sh.contiguous().numpy(), dirs.detach().to(sh.dtype).reshape(-1, 3).contiguous().numpy(),
                         out)
    return torch.from_numpy(out).reshape(*lead, 3)


def rasterize(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, values: Tensor,
              width: int, height: int) -> tuple[Tensor, Tensor]:
    """As `torch_backend.rasterize` (CPU tensors): means2d [N, 2], conics [N, 3], opacities [N], depths [N],
    radii [N, 2], values [N, D] -> accumulated values [H, W, D] and alpha [H, W]. Differentiable in means2d, conics,
    opacities and values (`numba_kernels.composite_grad`)."""
    return _Rasterize.apply(means2d, conics, opacities, values, depths, radii, width, height)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    @numba_launch
    def forward(ctx, means2d, conics, opacities, values, depths, radii, width, height):
        ids, tiles, tiles_x = _prepare(means2d, conics, opacities, depths, radii, width, height)
        dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
        vals = values.detach().to(dtype).contiguous().numpy()  # read at the Gaussians' rows: no gathered copy
        out = np.empty((width * height, vals.shape[1]), vals.dtype)  # the kernel writes every pixel
        alpha = np.empty(width * height, vals.dtype)
        stops, final_T = np.empty(width * height, np.int64), np.empty(width * height)
        _compile().composite(*tiles, vals, ids.numpy(), width, height, tiles_x, out, alpha, stops, final_T)
        ctx.state = (ids, tiles, tiles_x, vals, stops, final_T, width, height, means2d.shape[0])
        ctx.dtypes = (means2d.dtype, conics.dtype, opacities.dtype, values.dtype)
        return (torch.from_numpy(out).to(values.dtype).reshape(height, width, -1),
                torch.from_numpy(alpha).to(values.dtype).reshape(height, width))

    @staticmethod
    @numba_launch
    def backward(ctx, grad_out, grad_alpha):
        ids, tiles, tiles_x, vals, stops, final_T, width, height, n = ctx.state
        n_threads, params = tiles[1], tiles[4]
        grad_params = np.zeros((n_threads, params.shape[0], 6))
        grad_values = np.zeros((n_threads, *vals.shape))
        _compile().composite_grad(*tiles, vals, ids.numpy(), width, height, tiles_x, stops, final_T,
                                  grad_out.detach().double().reshape(width * height, -1).contiguous().numpy(),
                                  grad_alpha.detach().double().reshape(-1).contiguous().numpy(), grad_params,
                                  grad_values)
        per_gaussian = torch.zeros(n, 6, dtype=torch.float64).index_copy_(0, ids, torch.from_numpy(grad_params.sum(0)))
        d_means, d_conics, d_opacities, d_values = ctx.dtypes
        return (per_gaussian[:, :2].to(d_means), per_gaussian[:, 2:5].to(d_conics), per_gaussian[:, 5].to(d_opacities),
                torch.from_numpy(grad_values.sum(0)).to(d_values), None, None, None, None)


@numba_launch
def blend_weights(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, width: int,
                  height: int, min_weight: float = 0.0) -> Tensor:
    """As `torch_backend.blend_weights` (CPU): the compositing weights as a sparse CSR matrix [H*W, N] with
    rasterize(..., values) == W @ values; weights under `min_weight` dropped."""
    from .torch_backend import _csr

    ids, tiles, tiles_x = _prepare(means2d, conics, opacities, depths, radii, width, height)
    kernel = _compile().weights
    crow = np.zeros(width * height + 1, np.int64)
    kernel(*tiles, width, height, tiles_x, min_weight, crow, np.zeros(0, np.int64), np.zeros(0, np.float32))
    crow = np.cumsum(crow)
    cols = np.empty(crow[-1], np.int64)
    vals = np.empty(crow[-1], np.float64 if means2d.dtype == torch.float64 else np.float32)
    if crow[-1]:
        kernel(*tiles, width, height, tiles_x, min_weight, crow, cols, vals)
    cols = ids.index_select(0, torch.from_numpy(cols))  # depth-order position -> Gaussian index
    return _csr(torch.from_numpy(crow), cols, torch.from_numpy(vals).to(means2d.dtype), means2d.shape[0])


@numba_launch
def transpose_csr(a: Tensor) -> Tensor:
    """A sparse CSR matrix [R, C] (CPU) -> its transpose as a CSR matrix [C, R], by a counting sort."""
    from .torch_backend import _csr

    crow, cols = a.crow_indices(), a.col_indices()
    crow_t, slots = _compile().transpose(crow.numpy(), cols.numpy(), a.shape[1])
    slots = torch.from_numpy(slots)
    rows = torch.repeat_interleave(torch.arange(a.shape[0]), crow.diff())
    return _csr(torch.from_numpy(crow_t), torch.empty_like(rows).index_copy_(0, slots, rows),
                torch.empty_like(a.values()).index_copy_(0, slots, a.values()), a.shape[0])


@numba_launch
def sparse_mm(a: Tensor, x: Tensor) -> Tensor:
    """A sparse CSR matrix [R, C] @ a dense x [C, D] -> [R, D] (CPU, the dtype of the values; no gradients)."""
    values = a.values()
    out = np.empty((a.shape[0], x.shape[1]), values.numpy().dtype)
    _compile().csr_matmul(a.crow_indices().numpy(), a.col_indices().numpy(), values.numpy(),
                          x.detach().to(values.dtype).contiguous().numpy(), out)
    return torch.from_numpy(out)
