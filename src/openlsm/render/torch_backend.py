"""Pure-PyTorch Gaussian rasteriser with gsplat's conventions (runs on CPU and GPU, differentiable).

Projection (EWA, "classic" mode): 2D covariance J W Σ Wᵀ Jᵀ + 0.3·I, the Jacobian evaluated at the mean clamped
to 1.3× the field of view, opacity-aware bounding boxes (extent min(3.33, sqrt(2 ln(255·o))) σ per axis).
Rasterisation: 16×16 pixel tiles, Gaussians sorted by camera depth, front-to-back compositing with
alpha = min(MAX_ALPHA, o·exp(-½ dᵀ Σ⁻¹ d)), alphas under 1/255 skipped, and a pixel stops before the Gaussian
that would bring its transmittance to 1e-4 or below. Pixel (i, j) is sampled at (j + 0.5, i + 0.5).

Instead of gsplat's 16x16 tiles, every (pixel, Gaussian) pair inside each Gaussian's box is evaluated at once
(the box holds every pixel where alpha >= 1/255, so the result is the same); pairs are grouped by pixel in depth
order and the transmittance is a segmented cumulative sum of log(1 - alpha). All of it is plain tensor ops, so
autograd differentiates it and it runs wherever PyTorch does.

    means2d, depths, conics, radii = project_gaussians(means, quats, scales, opacities, viewmats, Ks, W, H)
    out, alpha = rasterize(means2d[0], conics[0], opacities, depths[0], radii[0], values, W, H)
    weights = blend_weights(means2d[0], conics[0], opacities, depths[0], radii[0], W, H)  # sparse [H*W, N]
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ..cameras.cameras import quat_to_rotmat

ALPHA_MIN = 1.0 / 255.0
MAX_ALPHA = 0.999
T_MIN = 1e-4
CHUNK_PAIRS = 1 << 22  # (pixel, Gaussian) pairs per front-to-back chunk: bounds memory, enables early stops
MIN_GROUP = 256  # boxes of a rarer size class are padded to a coarse class (fewer, larger broadcasts)
MAX_INT32_KEY = 2**31 - 1  # (pixel, depth rank) sort keys stay int32 (sorting twice as fast) up to this


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, near: float = 0.01, far: float = 1e10,
                      eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project N Gaussians into C cameras.

    means [N, 3], quats [N, 4], scales [N, 3], opacities [N], viewmats [C, 4, 4], Ks [C, 3, 3]
    -> means2d [C, N, 2], depths [C, N], conics [C, N, 3] (a, b, c of Σ2d⁻¹), radii [C, N, 2] int (0 = culled).
    """
    R, t = viewmats[:, :3, :3], viewmats[:, None, :3, 3]  # [C, 3, 3], [C, 1, 3]
    pc = means[None] @ R.transpose(-1, -2) + t  # [C, N, 3]
    x, y, z = pc.unbind(-1)

    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]
    zs = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)  # culled below anyway; avoid inf in autograd
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.minimum((width - cx) / fx + 0.3 * tan_x, torch.maximum(-(cx / fx + 0.3 * tan_x), x / zs))
    ty = zs * torch.minimum((height - cy) / fy + 0.3 * tan_y, torch.maximum(-(cy / fy + 0.3 * tan_y), y / zs))
    # Σ2d = J W Σ Wᵀ Jᵀ = T Tᵀ with T = J W R S: written out per row (3x3 batched matmuls are slow on the CPU).
    # J's rows times W: (fx/z)·W₀ - (fx·tx/z²)·W₂ and (fy/z)·W₁ - (fy·ty/z²)·W₂   [C, N, 3]
    W0, W1, W2 = R[:, None, 0], R[:, None, 1], R[:, None, 2]  # [C, 1, 3]
    jw0 = (fx / zs)[..., None] * W0 - (fx * tx / zs**2)[..., None] * W2
    jw1 = (fy / zs)[..., None] * W1 - (fy * ty / zs**2)[..., None] * W2
    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] R·S
    T0 = jw0[..., 0:1] * M[:, 0] + jw0[..., 1:2] * M[:, 1] + jw0[..., 2:3] * M[:, 2]  # [C, N, 3]
    T1 = jw1[..., 0:1] * M[:, 0] + jw1[..., 1:2] * M[:, 1] + jw1[..., 2:3] * M[:, 2]
    a = (T0 * T0).sum(-1) + eps2d
    b = (T0 * T1).sum(-1)
    c = (T1 * T1).sum(-1) + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    with torch.no_grad():
        op = opacities.detach()[None].expand_as(z)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)), max=3.33)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        m = means2d.detach()
        keep = (z >= near) & (z <= far) & (det > 0) & (op >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
        keep &= (m[..., 0] + rx > 0) & (m[..., 0] - rx < width) & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height)
        radii = torch.stack([rx, ry], -1).to(torch.int32) * keep[..., None]
    return means2d, z, conics, radii


def _boxes(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel-centre range [x0, x1) x [y0, y1) inside each Gaussian's opacity-aware box, clipped to the image."""
    m, r = means2d.detach(), radii.to(means2d.dtype)
    x0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(0, width).long()
    x1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(-1, width - 1).long() + 1
    y0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(0, height).long()
    y1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(-1, height - 1).long() + 1
    return x0, x1.maximum(x0), y0, y1.maximum(y0)


def _size_classes(n: Tensor) -> Tensor:
    """Box side -> a padded side from a short list (exact up to 8, then steps of 1/4..1/8 of the side), so that
    boxes of one class are evaluated by one broadcast. Padding costs at most 25 % more pairs, all masked out."""
    step = torch.exp2((torch.log2(n.clamp_min(1).double()).floor() - 2).clamp_min(0)).long()
    return torch.where(n <= 8, n, (n + step - 1) // step * step)


def _coarse_size(n: Tensor) -> Tensor:
    """Box side -> the next power of two, at least 8: few classes for the rare box shapes."""
    return torch.exp2(torch.log2(n.clamp_min(8).double()).ceil()).long()


def _class_keys(sx: Tensor, sy: Tensor, span: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(padded width, padded height) classes of M boxes: key sx · span + sy [M], the distinct keys [U] (sorted),
    each box's class index [M] and each class's box count [U]."""
    keys = sx * span + sy
    classes, index, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    return keys, classes, index, counts


def _box_alphas(params: Tensor, ids: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, width: int,
                open_pix: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Every (pixel, Gaussian) pair inside the boxes [x0, x1) x [y0, y1) of Gaussians `ids` whose alpha is >= 1/255
    (and whose pixel is in `open_pix`, when given) -> pix [P], rank [P] (the Gaussian's position in `ids`), alpha [P].

    Boxes are grouped by padded size; a group's pairs are a [G, K] broadcast of per-Gaussian terms and per-offset
    terms, so no per-pair gathers are needed until the kept pairs are picked. The opacity-aware box bounds the whole
    region where alpha >= 1/255, so these are exactly the pairs that gsplat's 16x16 tiles evaluate and do not skip.
    """
    nx, ny = x1 - x0, y1 - y0
    sx, sy = _size_classes(nx), _size_classes(ny)
    span = 2 * int(ny.max()) + 16 if len(ids) else 1  # > any padded height, coarse ones included
    _, _, index, counts = _class_keys(sx, sy, span)
    rare = counts.index_select(0, index) < MIN_GROUP  # each small group costs a loop turn: pad them to coarse sizes
    sx, sy = torch.where(rare, _coarse_size(sx), sx), torch.where(rare, _coarse_size(sy), sy)
    keys, classes, index, counts = _class_keys(sx, sy, span)
    order = torch.argsort(keys, stable=True)
    # One host transfer for the whole loop (on a GPU each .item() is a sync): per class its key, its box count and
    # how many of its boxes are padded (those need the inside-the-box test).
    padded = torch.bincount(index, weights=((sx != nx) | (sy != ny)).to(torch.float64), minlength=len(classes))
    table = torch.stack([classes, counts, padded.long()]).tolist()
    p = params.index_select(0, ids)  # [M, 6] centre, conic, opacity
    dt = p.dtype
    # Per Gaussian: offset of its box's first pixel centre from its mean, half conic, and the exponent above which
    # alpha = o·exp(-σ) falls under 1/255 (so the threshold test needs no exp).
    dx0 = (x0.to(dt) + 0.5) - p[:, 0]
    dy0 = (y0.to(dt) + 0.5) - p[:, 1]
    a2, b, c2, opac = 0.5 * p[:, 2], p[:, 3], 0.5 * p[:, 4], p[:, 5]
    sigma_max = torch.log(opac * 255.0)
    base = y0 * width + x0  # first pixel of each box
    grad = torch.is_grad_enabled() and p.requires_grad
    pixs, ranks, alphas = [], [], []
    for g, key, n_padded in zip(order.split(table[1]), table[0], table[2]):
        SX, SY = key // span, key % span
        if SX == 0 or SY == 0:
            continue
        offs = torch.arange(SX * SY, device=ids.device)
        ox, oy = offs % SX, torch.div(offs, SX, rounding_mode="floor")
        dx = dx0[g, None] + ox.to(dt)  # [G, K]
        dy = dy0[g, None] + oy.to(dt)
        if grad:  # σ = ½a·dx² + b·dx·dy + ½c·dy²
            sigma = (dx * a2[g, None] + dy * b[g, None]) * dx + dy * dy * c2[g, None]
        else:  # the same in place, sparing [G, K] temporaries
            sigma = dx * a2[g, None]
            sigma.addcmul_(dy, b[g, None]).mul_(dx).addcmul_(dy.mul_(dy), c2[g, None])
        keep = (sigma <= sigma_max[g, None]) & (sigma >= 0)
        if n_padded:  # padded boxes: drop offsets past the box
            keep &= (ox < nx[g, None]) & (oy < ny[g, None])
        off_pix = oy * width + ox  # [K]
        if open_pix is not None:
            keep &= open_pix[(base[g, None] + off_pix).clamp_max(len(open_pix) - 1)]
        flat = keep.view(-1).nonzero()[:, 0]
        gi = torch.div(flat, SX * SY, rounding_mode="floor")
        rank = g.index_select(0, gi)
        pixs.append(base.index_select(0, rank) + off_pix.index_select(0, flat - gi * (SX * SY)))
        ranks.append(rank)
        alphas.append(torch.exp(-sigma.view(-1).index_select(0, flat)) * opac.index_select(0, rank))
    if not pixs:
        empty = ids.new_zeros(0)
        return empty, empty, params.new_zeros(0)
    return torch.cat(pixs), torch.cat(ranks), torch.cat(alphas).clamp(max=MAX_ALPHA)


def _any_open(open_pix: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor) -> Tensor:
    """Does each box [x0, x1) x [y0, y1) hold a pixel of the [H, W] bool mask `open_pix`? (summed-area table)"""
    sat = torch.nn.functional.pad(open_pix.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))  # [H+1, W+1]
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) > 0


def _weighted_pairs(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, width: int,
                    height: int, chunk_pairs: int | None = None):
    """Front-to-back chunks of one camera's compositing weights: yields (crow [H*W + 1], pix [P], gid [P], w [P],
    log_t [P]) per chunk, the pairs grouped by pixel (crow: CSR row pointers) and in depth order within a pixel,
    w = alpha x transmittance before the pair and log_t = log(1 - alpha).

    Gaussians go front to back in chunks of about `chunk_pairs` (pixel, Gaussian) pairs, carrying each pixel's
    transmittance. A pixel whose transmittance is already <= 1e-4 takes no more weight (gsplat stops it there), so
    its pairs, and the Gaussians whose whole box is such pixels, are skipped before any work: the same result with
    far fewer pairs in scenes of large, overlapping Gaussians.
    """
    n_pix, chunk_pairs = width * height, chunk_pairs or CHUNK_PAIRS
    ids = (radii > 0).all(-1).nonzero()[:, 0]
    ids = ids[torch.argsort(depths.detach()[ids], stable=True)]  # front to back
    x0, x1, y0, y1 = _boxes(means2d[ids], radii[ids], width, height)
    ends = torch.cumsum((x1 - x0) * (y1 - y0), 0)  # pairs up to and including each Gaussian
    int32_len = MAX_INT32_KEY // n_pix  # Gaussians per chunk whose (pixel, rank) keys fit in int32
    params = torch.cat([means2d, conics, opacities[:, None]], -1)  # [N, 6] centre, conic, opacity
    log_T = means2d.new_zeros(n_pix)  # log transmittance in front of the next chunk, per pixel
    start = 0
    while start < len(ids):
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, before + chunk_pairs, right=True)))
        if int32_len >= 4096:  # else (huge images) int64 keys beat many tiny chunks
            stop = min(stop, start + int32_len)
        sl, start = slice(start, stop), stop
        open_pix = log_T.detach() > math.log(T_MIN)  # [n_pix] pixels that still take weight
        n_open = int(open_pix.sum())
        if n_open == 0:
            break
        if n_open == n_pix:  # nothing saturated yet: no culling to do
            live, open_mask = torch.arange(stop - sl.start, device=ids.device), None
        else:
            live = _any_open(open_pix.view(height, width), x0[sl], x1[sl], y0[sl], y1[sl]).nonzero()[:, 0]
            open_mask = open_pix
        if live.numel() == 0:
            continue
        ids_c = ids[sl].index_select(0, live)  # this chunk's Gaussians, front to back
        pix, rank, alpha = _box_alphas(params, ids_c, x0[sl][live], x1[sl][live], y0[sl][live], y1[sl][live], width,
                                       open_mask)
        # Group by pixel, each pixel's pairs in depth order (rank = position in the depth-sorted chunk).
        n_c = len(ids_c)
        keys = pix.to(torch.int32) * n_c + rank.to(torch.int32) if n_c <= int32_len else pix * n_c + rank
        keys, order = torch.sort(keys, stable=True)
        pix = torch.div(keys, n_c, rounding_mode="floor")  # decoding the sorted keys is cheaper than two gathers
        gid = ids_c.index_select(0, keys - pix * n_c)
        pix, alpha = pix.long(), alpha.index_select(0, order)
        # Transmittance before each pair = the carried one x exp(Σ log(1 - α) of the earlier pairs of its pixel in
        # this chunk): a cumulative sum (float64, so the long sum keeps its precision) minus the sum at the start
        # of the pixel's segment.
        log_t = torch.log1p(-alpha).double()
        csum = torch.cumsum(log_t, 0)
        counts = torch.bincount(pix, minlength=n_pix)
        seg_start = torch.cumsum(counts, 0) - counts
        base = torch.cat([csum.new_zeros(1), csum]).index_select(0, seg_start.index_select(0, pix))
        log_T_before = csum.sub_(log_t).sub_(base).add_(log_T.index_select(0, pix))  # exact sums; exp in float
        T_before = torch.exp(log_T_before.to(alpha.dtype))
        T_after = T_before * (1 - alpha)
        w = torch.where(T_after > T_MIN, alpha * T_before, torch.zeros_like(alpha))  # stop where T would hit 1e-4
        crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        log_t = log_t.to(log_T.dtype)
        yield crow, pix, gid, w, log_t
        if log_t.requires_grad:  # autograd: out of place
            log_T = log_T.index_add(0, pix, log_t)
        else:
            log_T.index_add_(0, pix, log_t)


def rasterize(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, values: Tensor,
              width: int, height: int, chunk_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """Composite one camera's projected Gaussians (see `_weighted_pairs` for the chunking).

    means2d [N, 2], conics [N, 3], opacities [N], depths [N], radii [N, 2], values [N, D]
    -> accumulated values [H, W, D] (Σ wᵢ vᵢ) and alpha [H, W] (Σ wᵢ = 1 - T).
    """
    n_pix = width * height
    out = values.new_zeros(n_pix, values.shape[1])
    alpha_img = values.new_zeros(n_pix)
    for crow, pix, gid, w, _ in _weighted_pairs(means2d, conics, opacities, depths, radii, width, height,
                                                chunk_pairs):
        part = _WeightedPairSum.apply(w, values, crow, pix, gid)
        if part.requires_grad or w.requires_grad:  # autograd: out of place
            out, alpha_img = out + part, alpha_img.index_add(0, pix, w)
        else:  # no graph: accumulate in place (no [pixels, D] temporaries per chunk)
            out.add_(part)
            alpha_img.index_add_(0, pix, w)
    return out.reshape(height, width, -1), alpha_img.reshape(height, width)


def blend_weights(means2d: Tensor, conics: Tensor, opacities: Tensor, depths: Tensor, radii: Tensor, width: int,
                  height: int, min_weight: float = 0.0) -> Tensor:
    """The compositing weights of one camera as a sparse CSR matrix [H*W, N]: rasterize(..., values) equals
    blend_weights(...) @ values. Weights under `min_weight` are dropped (no gradients)."""
    none = means2d.new_zeros(0, dtype=torch.long)
    rows, cols, vals = [none], [none], [means2d.new_zeros(0)]  # (no Gaussian in view: an all-zero matrix)
    with torch.no_grad():
        for _, pix, gid, w, _ in _weighted_pairs(means2d, conics, opacities, depths, radii, width, height):
            if min_weight > 0:
                keep = w > min_weight
                pix, gid, w = pix[keep], gid[keep], w[keep]
            rows.append(pix)
            cols.append(gid)
            vals.append(w)
    return sparse_csr(torch.cat(rows), torch.cat(cols), torch.cat(vals), width * height, means2d.shape[0])


def sparse_csr(rows: Tensor, cols: Tensor, vals: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """COO triplets [P] (duplicates are summed by products) -> a sparse CSR matrix [n_rows, n_cols]."""
    order = torch.argsort(rows.to(torch.int32) if n_rows <= MAX_INT32_KEY else rows, stable=True)  # int32: faster
    crow = torch.cat([rows.new_zeros(1), torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)])
    return _csr(crow, cols.index_select(0, order), vals.index_select(0, order), n_cols)


def _csr(crow: Tensor, cols: Tensor, vals: Tensor, n_cols: int) -> Tensor:
    """A sparse CSR matrix [len(crow) - 1, n_cols] from its row pointers, column indices and values."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are long stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals, size=(len(crow) - 1, n_cols), check_invariants=False)


class _WeightedPairSum(torch.autograd.Function):
    """out[p] = Σ_{pairs (p, g)} w · values[g], as a sparse (CSR) matrix product: [pixels, N] @ [N, D].

    The forward never materialises the [pairs, D] gather; the backward does it only for the gradients asked for.
    """

    @staticmethod
    def forward(ctx, w, values, crow, pix, gid):
        ctx.save_for_backward(w, values, pix, gid)
        return _csr(crow, gid, w, values.shape[0]) @ values

    @staticmethod
    def backward(ctx, grad_out):
        w, values, pix, gid = ctx.saved_tensors
        g_pairs = grad_out[pix]  # [P, D]
        grad_w = (g_pairs * values[gid]).sum(-1) if ctx.needs_input_grad[0] else None
        grad_values = values.new_zeros(values.shape).index_add(0, gid, w[:, None] * g_pairs) \
            if ctx.needs_input_grad[1] else None
        return grad_w, grad_values, None, None, None
