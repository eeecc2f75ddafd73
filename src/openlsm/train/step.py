"""One training step's losses: LSM forward on views 0 and 1, render every view of the batch, compare.

    batch = SynthRooms("train", 64, views=3).sample_batch([0, 1])   # images [B, V, 3, H, W] in [0, 1], ...
    total, scalars = compute_losses(model, batch, LossWeights.paper())
    total.backward()

Views 0 and 1 are the inputs (scaled to [-1, 1]); all V views are render targets, as the LSM paper renders the
inputs and a target view. Target cameras are the GT poses in view 1's frame with translations scaled to the
prediction (see losses.target_cameras) and GT intrinsics. The model runs under `amp_dtype` autocast when given;
rendering and the losses run in float32. Feature targets come from the frozen extractor on [-1, 1] images (the
official code feeds [0, 1] images to the teacher, a quirk not reproduced).

With geometry-only weights (`LossWeights.geometry()`) only `model.dust3r` runs, on views 0 and 1, under the confidence
regression loss: no semantic extractor, point transformer, Gaussian head or renderer (several times faster a step).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from openlsm.cameras.cameras import Cameras, unproject_depth
from openlsm.errors import OpenLSMError
from openlsm.metrics import psnr
from openlsm.metrics.align import relative_to_first, weiszfeld_scale
from openlsm.render.render import render

from .losses import (
    LossWeights,
    confidence_regression_loss,
    dssim_loss,
    feature_loss,
    l1_loss,
    target_cameras,
)

BATCH_KEYS = ("images", "depths", "valid", "Ks", "c2w")


def check_batch(batch: dict) -> None:
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise OpenLSMError(f"training batch lacks {missing}")
    images = batch["images"]
    if images.dim() != 5 or images.shape[1] < 2 or images.shape[2] != 3:
        raise OpenLSMError(f"batch images must be [B, V>=2, 3, H, W], got {tuple(images.shape)}")


def gt_points_in_first_view(depths: Tensor, Ks: Tensor, c2w: Tensor) -> Tensor:
    """z-depths [B, V, H, W], Ks [B, V, 3, 3], c2w [B, V, 4, 4] -> points [B, V, H, W, 3] in view 0's frame."""
    return unproject_depth(depths, Ks, relative_to_first(c2w))


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def depth_absrel(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Median-scaled depth AbsRel per image, as openlsm.eval.metrics.depth_metrics (numpy median, pixels with
    gt > 0, pred > 0, finite, valid) but batched: pred, gt, valid [N, H, W] -> [N] (nan: no such pixel)."""
    pred, gt = pred.flatten(1).float(), gt.flatten(1).float()  # [N, HW]
    mask = valid.flatten(1).bool() & (gt > 0) & (pred > 0) & pred.isfinite() & gt.isfinite()
    n = mask.sum(1, keepdim=True)  # [N, 1]
    mid = torch.cat([(n - 1).clamp_min(0) // 2, n // 2], 1)  # the two middle ranks (equal for odd n)

    def median(x: Tensor) -> Tensor:  # over masked pixels; masked-out values sort last
        return x.masked_fill(~mask, torch.inf).sort(1).values.gather(1, mid).mean(1)  # [N]

    scaled = pred * (median(gt) / median(pred))[:, None]
    rel = ((scaled - gt).abs() / gt).masked_fill(~mask, 0)
    return torch.where(n[:, 0] > 0, rel.sum(1) / n[:, 0].clamp_min(1), torch.nan)


def regression_terms(geo, batch: dict, alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Confidence regression of the geometry output against GT views 0, 1, in float32.
    Returns (conf, regr, pred_pts [B, 2, H, W, 3], gt_pts [B, 2, H, W, 3] (view-0 frame), valid [B, 2, H, W])."""
    valid = batch["valid"][:, :2].bool() & (batch["depths"][:, :2] > 0)  # [B, 2, H, W]
    gt_pts = gt_points_in_first_view(batch["depths"][:, :2].float(), batch["Ks"][:, :2].float(),
                                     batch["c2w"][:, :2].float())  # [B, 2, H, W, 3]  (view-0 frame)
    pred_pts = torch.stack([geo.pts3d_1, geo.pts3d_2], 1).float()  # [B, 2, H, W, 3]
    confs = torch.stack([geo.conf_1, geo.conf_2], 1).float()  # [B, 2, H, W]
    conf, regr = confidence_regression_loss(pred_pts, confs, gt_pts, valid, alpha)
    return conf, regr, pred_pts, gt_pts, valid


def view0_absrel(pred_pts: Tensor, batch: dict, valid: Tensor) -> Tensor:
    """Batch mean of view 0's median-scaled depth AbsRel. Only view 0: pts3d_1 is in its own camera frame, so
    its z is its depth; pts3d_2 is in view 0's frame too, so its z is not view 1's depth."""
    return depth_absrel(pred_pts[:, 0, ..., 2].detach(), batch["depths"][:, 0], valid[:, 0]).nanmean()


def compute_losses(model: nn.Module, batch: dict, weights: LossWeights,
                   generator: torch.Generator | None = None,
                   amp_dtype: torch.dtype | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """(total loss, detached 0-d tensors: loss, l1, dssim, feature, conf, regr, psnr_target, scale, coverage,
    absrel).

    scale: the fitted prediction/GT scale; coverage: mean rendered alpha (0 = nothing in view); absrel: view 0's
    median-scaled depth AbsRel (see view0_absrel). Geometry-only weights: see geometry_losses."""
    check_batch(batch)
    if weights.geometry_only:
        return geometry_losses(model, batch, weights, amp_dtype)
    images = batch["images"].float()  # [B, V, 3, H, W] in [0, 1]
    B, V, _, H, W = images.shape
    with autocast(images.device, amp_dtype):
        out = model(images[:, 0] * 2 - 1, images[:, 1] * 2 - 1, generator=generator)
    with torch.autocast(images.device.type, enabled=False):  # render and losses in float32
        conf, regr, pred_pts, gt_pts, valid = regression_terms(out.geometry, batch, weights.conf_alpha)

        gaussians = out.gaussians.to(torch.float32)  # [B, 2HW]
        c2w, scale = target_cameras(gaussians.means.detach(), gt_pts.reshape(B, -1, 3), valid.reshape(B, -1),
                                    batch["c2w"])
        cams = Cameras(batch["Ks"].float(), c2w, W, H)  # [B, V]
        rendered = render(gaussians, cams)
        pred_rgb = rendered.rgb.permute(0, 1, 4, 2, 3).flatten(0, 1)  # [B V, 3, H, W]
        gt_rgb = images.flatten(0, 1)
        l1 = l1_loss(pred_rgb, gt_rgb)
        dssim = dssim_loss(pred_rgb, gt_rgb)

        feats = model.expand_features(rendered.features.permute(0, 1, 4, 2, 3).flatten(0, 1))  # [B V, D, H/2, W/2]
        teacher = out.semantic_features  # [B, 2, D, H/2, W/2] from the frozen extractor
        if V > 2:
            with autocast(images.device, amp_dtype):
                extra = model.extract_semantics(images[:, 2:].flatten(0, 1) * 2 - 1)
            teacher = torch.cat([teacher, extra.unflatten(0, (B, V - 2))], 1)
        feat = feature_loss(feats, teacher.flatten(0, 1).detach().float())

        total = weights.l1 * l1 + weights.conf * conf + weights.feature * feat
        if weights.ssim:
            total = total + weights.ssim * dssim
    with torch.no_grad():
        tgt = rendered.rgb[:, 2:] if V > 2 else rendered.rgb  # [B, T, H, W, 3] held-out views when present
        tgt_gt = images[:, 2:] if V > 2 else images
        p = psnr(tgt.permute(0, 1, 4, 2, 3).flatten(0, 1).clamp(0, 1), tgt_gt.flatten(0, 1)).mean()
    scalars = {"loss": total, "l1": l1, "dssim": dssim, "feature": feat, "conf": conf, "regr": regr,
               "psnr_target": p, "scale": scale.mean(), "coverage": rendered.alpha.mean(),
               "absrel": view0_absrel(pred_pts, batch, valid)}
    return total, {k: v.detach().float() for k, v in scalars.items()}


def geometry_losses(model: nn.Module, batch: dict, weights: LossWeights,
                    amp_dtype: torch.dtype | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """compute_losses for geometry-only weights: `model.dust3r` on views 0, 1 and the confidence regression.

    Same keys as the full path; the terms that need rendering (l1, dssim, feature, psnr_target, coverage) are
    NaN, "not computed" (a 0 would read as a perfect L1 or a black render). scale: Weiszfeld fit of the predicted
    point maps to GT (the full path fits the Gaussian means, which are these points)."""
    images = batch["images"].float()  # [B, V, 3, H, W] in [0, 1]
    B = images.shape[0]
    with autocast(images.device, amp_dtype):
        geo = model.dust3r(images[:, 0] * 2 - 1, images[:, 1] * 2 - 1)
    with torch.autocast(images.device.type, enabled=False):
        conf, regr, pred_pts, gt_pts, valid = regression_terms(geo, batch, weights.conf_alpha)
        total = weights.conf * conf
    scale = weiszfeld_scale(pred_pts.detach().reshape(B, -1, 3), gt_pts.reshape(B, -1, 3), valid.reshape(B, -1))
    nan = torch.full((), torch.nan, device=images.device)
    scalars = {"loss": total, "l1": nan, "dssim": nan, "feature": nan, "conf": conf, "regr": regr,
               "psnr_target": nan, "scale": scale.clamp_min(1e-3).mean(), "coverage": nan,
               "absrel": view0_absrel(pred_pts, batch, valid)}
    return total, {k: v.detach().float() for k, v in scalars.items()}


class LossModule(nn.Module):
    """model + losses in one forward, so DistributedDataParallel sees every trained parameter
    (feature_expansion is used only by the loss)."""

    def __init__(self, model: nn.Module, weights: LossWeights, amp_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.weights = weights
        self.amp_dtype = amp_dtype

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return compute_losses(self.model, batch, self.weights, generator, self.amp_dtype)
