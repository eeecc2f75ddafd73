"""Cameras of an image pair from its two point maps (both in view 1's camera frame, as the geometry net gives them).

1. Focal length per view: robust (Weiszfeld / IRLS) fit of f in `f * (x/z, y/z) = (u - cx, v - cy)` with the
   principal point at the image centre, minimising the sum of pixel distances (not squared) so outliers barely pull.
2. Pose of view 2: seeded PnP-RANSAC: linear DLT on random 6-point subsets of (view-2 points, view-2 pixels),
   inliers by reprojection error, then Levenberg-Marquardt refinement on the inliers (twice). Alternative
   (`method="procrustes"`, also fine for planar scenes): a seeded RANSAC similarity (Umeyama) between view 2's
   points in its own frame (swapped pair) and in view 1's frame.

    rec = recover_cameras(out.pts3d_1, out.pts3d_2, out.conf_1, out.conf_2)
    rec.cameras.c2w    # [B, 2, 4, 4]; view 1 = identity, view 2 in view 1's frame and the point maps' scale
    rec.confidence     # [B, 2] inlier fractions in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from openlsm.cameras.cameras import Cameras, make_K, pixel_grid
from openlsm.errors import OpenLSMError


@dataclass
class RansacConfig:
    iterations: int = 256  # hypotheses (evaluated in one batch)
    sample_size: int = 6  # points per hypothesis; 6 is the DLT minimum
    threshold_px: float | None = None  # inlier reprojection error; None = max(1, 0.01 * max(H, W))
    max_points: int = 4096  # points scored per hypothesis (random subset)
    refine_points: int = 8192  # at most this many inliers in the final refinement
    threshold_rel: float = 0.02  # "procrustes": inlier 3D distance as a fraction of the median point depth
    seed: int = 0


@dataclass
class CameraRecovery:
    cameras: Cameras  # batch shape [B, 2]
    focals: Tensor  # [B, 2] pixels
    confidence: Tensor  # [B, 2] inlier fraction of the focal fit (view 1) and of PnP (view 2)


def estimate_focal(pts3d: Tensor, weights: Tensor | None = None, iters: int = 20, max_points: int = 16384) -> Tensor:
    """Focal [B] from camera-frame point maps [B, H, W, 3], principal point at the centre, Weiszfeld IRLS
    (on a regular subsample of at most `max_points` pixels)."""
    B, H, W, _ = pts3d.shape
    step = max(1, -(-H * W // max_points))
    pts = pts3d.reshape(B, -1, 3)[:, ::step].double()
    uv = pixel_grid(W, H, pts.device, torch.float64).reshape(1, -1, 2)[:, ::step]
    r = uv - torch.tensor([W / 2, H / 2], dtype=torch.float64, device=pts.device)  # [1, N, 2]
    z = pts[..., 2:]
    valid = (z[..., 0] > 1e-8) & torch.isfinite(pts).all(-1)
    p = torch.where(valid[..., None], pts[..., :2] / z.clamp_min(1e-8), torch.zeros_like(pts[..., :2]))
    w = valid.double() if weights is None else weights.reshape(B, -1)[:, ::step].double() * valid
    pr, pp = (p * r).sum(-1), (p * p).sum(-1)  # [B, N]
    # Start at the median of per-pixel focals (a least-squares start is ruined by outliers with tiny z).
    f_pix = torch.where(w > 0, pr / pp.clamp_min(1e-12), torch.full_like(pr, float("nan")))
    f = f_pix.nanmedian(-1).values
    for _ in range(iters):
        res = (f[:, None, None] * p - r).norm(dim=-1)  # [B, N] pixels
        # Weiszfeld weights 1/res, truncated far out: a point with tiny z has a huge lever |p| on f, and even
        # the L1 objective would follow it, so residuals beyond 5x the median (or 2 px) get no weight.
        med = torch.where(w > 0, res, torch.full_like(res, float("nan"))).nanmedian(-1).values
        keep = res < (5 * med).clamp_min(2.0)[:, None]
        a = w * keep / res.clamp_min(1e-6)
        f = (a * pr).sum(-1) / (a * pp).sum(-1).clamp_min(1e-12)
    return f.to(pts3d.dtype)


def _so3_exp(w: Tensor) -> Tensor:
    """Axis-angle [3] -> rotation [3, 3] (Rodrigues)."""
    theta = w.norm()
    K = torch.zeros(3, 3, dtype=w.dtype, device=w.device)
    K[0, 1], K[0, 2], K[1, 0], K[1, 2], K[2, 0], K[2, 1] = -w[2], w[1], w[2], -w[0], -w[1], w[0]
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    if theta < 1e-12:
        return eye + K
    return eye + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta**2 * (K @ K)


def rotation_angle_deg(R1: Tensor, R2: Tensor) -> Tensor:
    """Geodesic angle between rotations [..., 3, 3] in degrees."""
    cos = (((R1.transpose(-1, -2) @ R2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def solve_pnp_dlt(X: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Batched linear PnP. World points X [K, M, 3] and normalised image points x [K, M, 2] (M >= 6)
    -> R [K, 3, 3], t [K, 3] with x ~ pi(R X + t)."""
    m = X.mean(1, keepdim=True)
    s = (3.0**0.5) / (X - m).norm(dim=-1).mean(1, keepdim=True).clamp_min(1e-12)  # [K, 1]
    Xn = (X - m) * s[..., None]  # conditioning: centred, mean distance sqrt(3)
    Xh = torch.cat([Xn, torch.ones_like(Xn[..., :1])], -1)  # [K, M, 4]
    zeros = torch.zeros_like(Xh)
    u, v = x[..., :1], x[..., 1:]
    rows_u = torch.cat([Xh, zeros, -u * Xh], -1)  # [K, M, 12]
    rows_v = torch.cat([zeros, Xh, -v * Xh], -1)
    A = torch.cat([rows_u, rows_v], 1)  # [K, 2M, 12]
    P = torch.linalg.svd(A.transpose(1, 2) @ A).U[..., -1].reshape(-1, 3, 4)  # null vector of A
    # Undo the conditioning: P_world = P_n @ [[s I, -s m], [0, 1]].
    T = torch.zeros(X.shape[0], 4, 4, dtype=X.dtype, device=X.device)
    T[:, :3, :3] = s[..., None] * torch.eye(3, dtype=X.dtype, device=X.device)
    T[:, :3, 3] = -s * m[:, 0]
    T[:, 3, 3] = 1
    P = P @ T
    M = P[:, :, :3]
    lam = torch.sign(torch.linalg.det(M))[:, None, None]  # P = lam * [R | t] up to scale: fix the sign
    P = P * lam
    U, S, Vh = torch.linalg.svd(P[:, :, :3])
    R = U @ Vh
    R = torch.where(torch.linalg.det(R)[:, None, None] < 0, -R, R)
    t = P[:, :, 3] / S.mean(-1, keepdim=True).clamp_min(1e-12)
    return R, t


def _reproj_errors(R: Tensor, t: Tensor, X: Tensor, uv: Tensor, f: Tensor, c: Tensor) -> Tensor:
    """Pixel errors [K, N] of hypotheses R [K,3,3], t [K,3] on X [N,3] vs uv [N,2]; inf behind the camera."""
    pc = X[None] @ R.transpose(-1, -2) + t[:, None]  # [K, N, 3]
    z = pc[..., 2]
    proj = f * pc[..., :2] / z.clamp_min(1e-12)[..., None] + c
    err = (proj - uv[None]).norm(dim=-1)
    return torch.where(z > 1e-8, err, torch.full_like(err, float("inf")))


def _skew(v: Tensor) -> Tensor:
    """[N, 3] -> cross-product matrices [N, 3, 3]."""
    z = torch.zeros_like(v[:, 0])
    return torch.stack([z, -v[:, 2], v[:, 1], v[:, 2], z, -v[:, 0], -v[:, 1], v[:, 0], z], -1).reshape(-1, 3, 3)


def _refine_pose(R: Tensor, t: Tensor, X: Tensor, xn: Tensor, iters: int = 10) -> tuple[Tensor, Tensor]:
    """Levenberg-Marquardt on normalised reprojection error; update R <- exp(w) R, t <- t + dt (analytic J)."""
    def residuals(R, t):
        pc = X @ R.T + t
        return pc, (pc[:, :2] / pc[:, 2:].clamp_min(1e-12) - xn).reshape(-1)

    lam = 1e-3
    for _ in range(iters):
        pc, r = residuals(R, t)
        Y = pc - t  # rotated points: d pc / d w = -[Y]x, d pc / d t = I
        z = pc[:, 2].clamp_min(1e-12)
        dproj = torch.zeros(X.shape[0], 2, 3, dtype=X.dtype, device=X.device)  # d(x/z, y/z) / d pc
        dproj[:, 0, 0], dproj[:, 1, 1] = 1 / z, 1 / z
        dproj[:, 0, 2], dproj[:, 1, 2] = -pc[:, 0] / z**2, -pc[:, 1] / z**2
        J = torch.cat([dproj @ -_skew(Y), dproj], -1).reshape(-1, 6)  # [2N, 6]
        H, g = J.T @ J, J.T @ r
        step = torch.linalg.solve(H + lam * torch.diag(H.diagonal()) + 1e-12 * torch.eye(6, dtype=H.dtype, device=H.device), -g)
        R_new, t_new = _so3_exp(step[:3]) @ R, t + step[3:]
        if residuals(R_new, t_new)[1].square().sum() < r.square().sum():
            R, t, lam = R_new, t_new, lam * 0.3
        else:
            lam *= 10
        if step.norm() < 1e-12:
            break
    return R, t


def solve_pnp_ransac(X: Tensor, uv: Tensor, focal: float | Tensor, center: Tensor, cfg: RansacConfig,
                     threshold_px: float, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Robust pose (R [3,3], t [3]: x_cam = R X + t) from points X [N,3] and pixels uv [N,2].
    Returns R, t and the inlier mask [N]. Deterministic for a given cfg.seed."""
    X, uv = X.double(), uv.double()
    c = center.double()
    f = torch.as_tensor(focal, dtype=torch.float64, device=X.device)
    N = X.shape[0]
    if N < cfg.sample_size:
        raise OpenLSMError(f"PnP needs at least {cfg.sample_size} valid points, got {N}")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    xn = (uv - c) / f
    score_idx = torch.randperm(N, generator=gen)[: cfg.max_points]  # [M] scoring subset, also the sample pool
    # Sample hypotheses from the pool, confidence-weighted when weights are given.
    M = score_idx.numel()
    probs = torch.ones(M, dtype=torch.float64) if weights is None else \
        weights.double().cpu()[score_idx].clamp_min(0) + 1e-12
    # Gumbel top-k = weighted sampling without replacement, for all hypotheses at once.
    u = torch.rand(cfg.iterations, M, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    keys = probs.log() - (-u.log()).log()
    idx = score_idx[keys.topk(cfg.sample_size, dim=-1).indices].to(X.device)  # [K, S]
    score_idx = score_idx.to(X.device)
    R, t = solve_pnp_dlt(X[idx], xn[idx])
    err = _reproj_errors(R, t, X[score_idx], uv[score_idx], f, c)  # [K, M]
    best = (err < threshold_px).sum(-1).argmax()
    R, t = R[best], t[best]
    for _ in range(2):  # re-fit on all inliers, then re-select inliers
        inl = _reproj_errors(R[None], t[None], X, uv, f, c)[0] < threshold_px
        if inl.sum() < cfg.sample_size:
            break
        sel = inl.nonzero()[:, 0]
        sel = sel[torch.randperm(sel.numel(), generator=gen)[: cfg.refine_points].to(X.device)]
        R, t = _refine_pose(R, t, X[sel], xn[sel])
    inl = _reproj_errors(R[None], t[None], X, uv, f, c)[0] < threshold_px
    return R, t, inl


def fit_similarity(src: Tensor, dst: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Batched weighted Umeyama: s [K], R [K, 3, 3], t [K, 3] minimising sum w |s R src + t - dst|^2.
    src, dst [K, M, 3]; weights [K, M] or None."""
    w = torch.ones_like(src[..., 0]) if weights is None else weights
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_s, mu_d = (w[..., None] * src).sum(1), (w[..., None] * dst).sum(1)  # [K, 3]
    a, b = src - mu_s[:, None], dst - mu_d[:, None]
    cov = (w[..., None, None] * b[..., :, None] * a[..., None, :]).sum(1)  # [K, 3, 3] = sum w b a^T
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vh))  # reflection guard
    D = torch.ones_like(S)
    D[:, 2] = d
    R = U @ torch.diag_embed(D) @ Vh
    var = (w * a.square().sum(-1)).sum(-1).clamp_min(1e-12)
    s = (S * D).sum(-1) / var
    t = mu_d - s[:, None] * (R @ mu_s[..., None])[..., 0]
    return s, R, t


def solve_similarity_ransac(src: Tensor, dst: Tensor, cfg: RansacConfig, threshold: float,
                            weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Robust similarity dst ~ s R src + t from corresponding points [N, 3] (3-point samples, seeded).
    Returns s, R [3, 3], t [3] and the inlier mask [N]."""
    src, dst = src.double(), dst.double()
    N = src.shape[0]
    if N < 3:
        raise OpenLSMError(f"a similarity fit needs at least 3 valid points, got {N}")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    pool = torch.randperm(N, generator=gen)[: cfg.max_points]
    u = torch.rand(cfg.iterations, pool.numel(), generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    idx = pool[(-(-u.log()).log()).topk(3, dim=-1).indices].to(src.device)  # [K, 3]
    s, R, t = fit_similarity(src[idx], dst[idx])
    pool = pool.to(src.device)
    err = (s[:, None, None] * src[pool] @ R.transpose(-1, -2) + t[:, None] - dst[pool]).norm(dim=-1)  # [K, M]
    best = (err < threshold).sum(-1).argmax()
    s, R, t = s[best], R[best], t[best]
    w_all = torch.ones(N, dtype=torch.float64, device=src.device) if weights is None else weights.double()
    for _ in range(3):  # weighted re-fit on inliers
        inl = (s * src @ R.T + t - dst).norm(dim=-1) < threshold
        if inl.sum() < 3:
            break
        s, R, t = (v[0] for v in fit_similarity(src[inl][None], dst[inl][None], w_all[inl][None]))
    inl = (s * src @ R.T + t - dst).norm(dim=-1) < threshold
    return s, R, t, inl


def recover_cameras(pts3d_1: Tensor, pts3d_2: Tensor, conf_1: Tensor | None = None, conf_2: Tensor | None = None,
                    pts3d_2_own: Tensor | None = None, focal_2: Tensor | float | None = None,
                    ransac: RansacConfig | None = None, method: str = "pnp") -> CameraRecovery:
    """Cameras of both views from point maps [B, H, W, 3] (or [H, W, 3]) in view 1's frame.

    View 2's focal: `focal_2` if given, else fitted on `pts3d_2_own` (view 2's points in its own frame, e.g.
    `net(img2, img1).pts3d_1`) if given, else assumed equal to view 1's (same camera).
    method "pnp": PnP-RANSAC of view 2's points against its pixel grid (needs a non-planar scene).
    method "procrustes": robust similarity between `pts3d_2_own` and `pts3d_2` (works for planar scenes too;
    the two runs may differ in scale, which the similarity absorbs).
    """
    cfg = ransac or RansacConfig()
    if method not in ("pnp", "procrustes"):
        raise OpenLSMError(f"unknown camera recovery method {method!r}; use 'pnp' or 'procrustes'")
    if method == "procrustes" and pts3d_2_own is None:
        raise OpenLSMError("method 'procrustes' needs pts3d_2_own (view 2's points in its own frame)")
    if pts3d_1.dim() == 3:
        def sq(a):
            return None if a is None else a[None]

        rec = recover_cameras(pts3d_1[None], pts3d_2[None], sq(conf_1), sq(conf_2), sq(pts3d_2_own),
                              focal_2, cfg, method)
        return CameraRecovery(rec.cameras[0], rec.focals[0], rec.confidence[0])
    if pts3d_1.dim() != 4 or pts3d_1.shape[-1] != 3 or pts3d_2.shape != pts3d_1.shape:
        raise OpenLSMError(f"point maps must both be [B, H, W, 3], got {tuple(pts3d_1.shape)} "
                           f"and {tuple(pts3d_2.shape)}")
    B, H, W, _ = pts3d_1.shape
    thr = cfg.threshold_px if cfg.threshold_px is not None else max(1.0, 0.01 * max(H, W))
    f1 = estimate_focal(pts3d_1, conf_1).double()
    if focal_2 is not None:
        f2 = torch.as_tensor(focal_2, dtype=torch.float64, device=pts3d_1.device).expand(B)
    elif pts3d_2_own is not None:
        f2 = estimate_focal(pts3d_2_own, conf_2).double()
    else:
        f2 = f1
    center = torch.tensor([W / 2, H / 2], dtype=torch.float64, device=pts3d_1.device)
    uv = pixel_grid(W, H, pts3d_1.device, torch.float64).reshape(-1, 2)
    c2ws = torch.eye(4, dtype=torch.float64, device=pts3d_1.device).repeat(B, 2, 1, 1)
    confidence = torch.zeros(B, 2, dtype=torch.float64, device=pts3d_1.device)
    for b in range(B):
        # View 1: how many pixels the fitted focal reprojects within the threshold.
        p1 = pts3d_1[b].reshape(-1, 3).double()
        eye = torch.eye(3, dtype=torch.float64, device=p1.device)
        err1 = _reproj_errors(eye[None], torch.zeros(1, 3, dtype=torch.float64, device=p1.device), p1, uv,
                              f1[b], center)[0]
        confidence[b, 0] = (err1 < thr).double().mean()
        X = pts3d_2[b].reshape(-1, 3).double()
        valid = torch.isfinite(X).all(-1)
        w = None if conf_2 is None else conf_2[b].reshape(-1)[valid]
        if method == "pnp":
            R, t, inl = solve_pnp_ransac(X[valid], uv[valid], f2[b], center, cfg, thr, w)
            w2c = torch.eye(4, dtype=torch.float64, device=X.device)
            w2c[:3, :3], w2c[:3, 3] = R, t
            c2ws[b, 1] = torch.linalg.inv(w2c)
        else:  # view-2 frame -> view-1 frame similarity; its rotation and translation are view 2's c2w
            own = pts3d_2_own[b].reshape(-1, 3).double()
            valid = valid & torch.isfinite(own).all(-1)
            w = None if conf_2 is None else conf_2[b].reshape(-1)[valid]
            thr3d = cfg.threshold_rel * X[valid][:, 2].abs().median()
            _, R, t, inl = solve_similarity_ransac(own[valid], X[valid], cfg, thr3d.item(), w)
            c2ws[b, 1, :3, :3], c2ws[b, 1, :3, 3] = R, t
        confidence[b, 1] = inl.double().sum() / X.shape[0]
    dtype = pts3d_1.dtype
    Ks = make_K(torch.stack([f1, f2], -1), torch.stack([f1, f2], -1), W / 2, H / 2).to(pts3d_1.device, dtype)
    return CameraRecovery(Cameras(Ks, c2ws.to(dtype), W, H), torch.stack([f1, f2], -1).to(dtype),
                          confidence.to(dtype))
