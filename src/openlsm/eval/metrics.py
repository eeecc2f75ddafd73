"""Evaluation metrics of the LSM protocol (lsm.md §7): segmentation, depth, images, camera poses.

    cm = confusion_matrix(pred_labels, gt_labels, num_classes=K, ignore_index=-1)   # [K, K] int64
    seg = segmentation_scores(cm)              # {"miou", "acc", "macc", "iou": [K] (nan = absent)}
    d = depth_metrics(pred_depth, gt_depth, valid)      # per image: {"abs_rel": [V], "inlier": [V]}
    im = image_metrics(pred_rgb, gt_rgb)       # {"psnr": [V] (inf if identical), "ssim": [V]}
    rot, trans = relative_pose_errors(pred_c2w, gt_c2w) # degrees, views 1.. relative to view 0
    clean, flags = json_safe(record)           # inf / nan -> null, flags {"a.b[0]": "inf"}

Segmentation: rows of the confusion matrix are ground truth, columns predictions; classes absent from both
are excluded from the mean IoU; summing matrices accumulates over scenes. Depth: per-image median scaling
(prediction * median(gt) / median(pred) over valid pixels), then AbsRel and the inlier ratio
max(d / gt, gt / d) < 1.03 (RobustMVD / DUSt3R style). All reductions are in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from openlsm.errors import OpenLSMError
from openlsm.metrics import psnr, ssim

INLIER_THRESHOLD = 1.03


# --- segmentation ----------------------------------------------------------------------------------------------

def confusion_matrix(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = -1) -> Tensor:
    """[K, K] int64 counts (row = ground truth, column = prediction) over pixels whose gt is in [0, K)
    and is not `ignore_index`. Predictions must lie in [0, K)."""
    if pred.shape != gt.shape:
        raise OpenLSMError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    pred, gt = pred.reshape(-1).long(), gt.reshape(-1).long()
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    pred, gt = pred[keep], gt[keep]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise OpenLSMError(f"predicted labels must be in [0, {num_classes}), got "
                           f"[{int(pred.min())}, {int(pred.max())}]")
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def segmentation_scores(cm: Tensor) -> dict:
    """mIoU, pixel accuracy and mean class accuracy from a confusion matrix [K, K].

    IoU_c = TP / (TP + FP + FN); a class with no gt and no predicted pixel has IoU nan and is left out of the
    mean. Class accuracy is TP / gt pixels over classes present in the gt. nan when nothing was labelled."""
    cm = cm.double()
    tp = cm.diagonal()
    gt_count, pred_count = cm.sum(1), cm.sum(0)
    union = gt_count + pred_count - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    cls_acc = torch.where(gt_count > 0, tp / gt_count.clamp_min(1), torch.full_like(tp, math.nan))
    total = cm.sum()
    return {
        "miou": _nanmean(iou),
        "acc": float(tp.sum() / total) if total > 0 else math.nan,
        "macc": _nanmean(cls_acc),
        "iou": iou.tolist(),
    }


def _nanmean(x: Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if ok.any() else math.nan


# --- depth -----------------------------------------------------------------------------------------------------

def median(x: Tensor) -> Tensor:
    """Median of a 1-D tensor, averaging the two middle values for even sizes (numpy's convention)."""
    s = x.sort().values
    n = s.numel()
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def depth_metrics(pred: Tensor, gt: Tensor, valid: Tensor | None = None,
                  threshold: float = INLIER_THRESHOLD) -> dict[str, Tensor]:
    """Per-image AbsRel and inlier ratio after median scaling. pred, gt, valid [V, H, W] (or [H, W]).

    Pixels count where gt > 0, pred > 0, both finite and `valid`. Returns {"abs_rel": [V], "inlier": [V],
    "scale": [V]} in float64 (nan for an image without valid pixels)."""
    if pred.shape != gt.shape:
        raise OpenLSMError(f"depth prediction {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    pred, gt = pred.double().reshape(-1, *pred.shape[-2:]), gt.double().reshape(-1, *gt.shape[-2:])
    mask = (gt > 0) & (pred > 0) & torch.isfinite(gt) & torch.isfinite(pred)
    if valid is not None:
        mask &= valid.reshape(mask.shape).bool()
    out = {k: torch.full((pred.shape[0],), math.nan, dtype=torch.float64) for k in ("abs_rel", "inlier", "scale")}
    for v in range(pred.shape[0]):
        p, g = pred[v][mask[v]], gt[v][mask[v]]
        if p.numel() == 0:
            continue
        s = median(g) / median(p)
        p = p * s
        out["scale"][v] = float(s)  # float(): the inputs may live on a GPU, the results on the CPU
        out["abs_rel"][v] = float(((p - g).abs() / g).mean())
        out["inlier"][v] = float((torch.maximum(p / g, g / p) < threshold).double().mean())
    return out


# --- images ----------------------------------------------------------------------------------------------------

def image_metrics(pred: Tensor, gt: Tensor, seen: Tensor | None = None) -> dict[str, Tensor]:
    """PSNR (dB, inf for identical images) and SSIM per image of [V, 3, H, W] in [0, 1] (pred is clamped); with
    `seen` [V, H, W] bool also `psnr_seen`, the PSNR over those pixels only (nan where there are none)."""
    pred = pred.clamp(0, 1).float()
    gt = gt.float()
    out = {"psnr": psnr(pred, gt).double().cpu(), "ssim": ssim(pred, gt).double().cpu()}
    if seen is not None:
        m = seen[:, None].to(pred.device)
        val = psnr(pred, gt, mask=m).double().cpu()
        out["psnr_seen"] = torch.where(m.flatten(1).any(1).cpu(), val, torch.full_like(val, math.nan))
    return out


def seen_by_inputs(depths: Tensor, valid: Tensor, Ks: Tensor, c2w: Tensor, n_inputs: int = 2,
                   tol: float = 0.05) -> Tensor:
    """Pixels of the views after the inputs whose ground-truth surface point an input view also sees: it projects
    inside that view in front of the camera, and that view's depth there agrees within `tol` (not occluded).

    depths, valid [V, H, W] (z-depth, GT), Ks [V, 3, 3], c2w [V, 4, 4] -> [V - n_inputs, H, W] bool. A novel view
    can only be rendered from what the inputs saw: the rest must be hallucinated, which no reconstruction does.
    """
    from openlsm.cameras.cameras import invert_rigid, project, unproject_depth

    V, H, W = depths.shape
    depths, Ks, c2w = depths.double(), Ks.double(), c2w.double()
    out = []
    for t in range(n_inputs, V):
        pts = unproject_depth(depths[t], Ks[t], c2w[t]).reshape(-1, 3)
        seen = torch.zeros(H * W, dtype=torch.bool, device=depths.device)
        for v in range(n_inputs):
            uv, z = project(pts, Ks[v], invert_rigid(c2w[v]))
            u, w = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (z > 0) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
            u, w = u.clamp(0, W - 1), w.clamp(0, H - 1)
            z_there = depths[v][w, u]
            seen |= inside & valid[v][w, u] & ((z - z_there).abs() < tol * z)
        out.append(seen.reshape(H, W) & valid[t])
    return torch.stack(out) if out else depths.new_zeros((0, H, W), dtype=torch.bool)


# --- camera poses ----------------------------------------------------------------------------------------------

def rotation_error_deg(R_pred: Tensor, R_gt: Tensor) -> Tensor:
    """Geodesic angle between rotations [..., 3, 3] in degrees (atan2 form: accurate near 0 and 180)."""
    E = R_pred.double().transpose(-1, -2) @ R_gt.double()
    sin_vec = torch.stack([E[..., 2, 1] - E[..., 1, 2], E[..., 0, 2] - E[..., 2, 0], E[..., 1, 0] - E[..., 0, 1]], -1)
    cos = (E.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.atan2(0.5 * sin_vec.norm(dim=-1), cos))


def translation_angle_deg(t_pred: Tensor, t_gt: Tensor, eps: float = 1e-12) -> Tensor:
    """Angle between translation directions [..., 3] in degrees (scale-free); nan if either is ~0."""
    a, b = t_pred.double(), t_gt.double()
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    cross = torch.linalg.cross(a, b, dim=-1).norm(dim=-1)
    ang = torch.rad2deg(torch.atan2(cross, (a * b).sum(-1)))
    return torch.where((na > eps) & (nb > eps), ang, torch.full_like(ang, math.nan))


def relative_pose_errors(pred_c2w: Tensor, gt_c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation and translation-direction errors (degrees) of views 1.. relative to view 0.

    pred_c2w, gt_c2w [V, 4, 4] in any world frames (each is first re-expressed in its own view 0's frame,
    so the prediction's frame and scale do not matter). Returns two [V - 1] tensors."""
    from openlsm.metrics.align import relative_to_first

    p, g = relative_to_first(pred_c2w.double()), relative_to_first(gt_c2w.double())
    rot = rotation_error_deg(p[1:, :3, :3], g[1:, :3, :3])
    trans = translation_angle_deg(p[1:, :3, 3], g[1:, :3, 3])
    return rot, trans


# --- reporting -------------------------------------------------------------------------------------------------

def summarize(values: list) -> dict:
    """{"mean", "std" (population), "n"} over the non-None values (inf propagates into the mean)."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    t = torch.tensor(xs, dtype=torch.float64)
    if torch.isinf(t).any():
        return {"mean": float(t.mean()), "std": math.nan, "n": len(xs)}
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "n": len(xs)}


def json_safe(obj, path: str = "") -> tuple[object, dict[str, str]]:
    """Replace non-finite floats by None for strict JSON; returns (clean object, {path: "inf" | "-inf" | "nan"}).

    Paths read like `scenes[0].lsm.tgt_psnr`, so a reader can tell an infinite PSNR (identical images) from a
    missing value."""
    flags: dict[str, str] = {}
    if isinstance(obj, Tensor):
        obj = obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj, flags
        flags[path] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None, flags
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k], f = json_safe(v, f"{path}.{k}" if path else str(k))
            flags.update(f)
        return out, flags
    if isinstance(obj, (list, tuple)):
        out = []
        for i, v in enumerate(obj):
            c, f = json_safe(v, f"{path}[{i}]")
            out.append(c)
            flags.update(f)
        return out, flags
    return obj, flags
