"""LSM training losses (lsm.md §5) as small functions, plus the loss-weight presets.

    w = LossWeights.preset("paper")                          # or "official-code", "geometry"
    l1, dssim = l1_loss(pred, gt), dssim_loss(pred, gt)        # images [N, 3, H, W] in [0, 1]
    f = feature_loss(model.expand_features(rendered), teacher) # [N, D, h, w] each
    conf, regr = confidence_regression_loss(pred_pts, confs, gt_pts, valid)   # [B, V, H, W, 3], [B, V, H, W]
    c2w = target_cameras(means, gt_pts, valid, gt_c2w)        # GT cameras in view 1's frame, prediction's scale

Paper Eq. 6-7: L = |C - C^| + λ_ssim D-SSIM + λ_feat (1 - cos(S, S^)) + λ_conf Σ_v L_conf. The shipped code uses
no SSIM, 0.2 on the feature term and 1.0 on the confidence term (`official-code`). `geometry` keeps only the
confidence term (paper weight): a cheap phase that trains the geometry network alone (see step.py).

The confidence regression loss is DUSt3R's `ConfLoss(Regr3D(L21, 'avg_dis'), alpha)`: prediction and GT point
maps (both views, in view 1's frame) are each divided by their mean distance to the origin over the valid pixels
of both views, ℓ = ||pred - gt|| per pixel, and L_conf = Σ_views mean_valid(conf ℓ - α log conf). Means are taken
per sample and then over the batch (DUSt3R pools the valid pixels of the whole batch), so the loss of a global
batch is exactly the mean of its shards' losses, as data-parallel training needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from openlsm.errors import OpenLSMError
from openlsm.metrics import ssim
from openlsm.metrics.align import relative_to_first, scale_translations, weiszfeld_scale


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    ssim: float = 0.25  # λ1, on D-SSIM = 1 - SSIM
    feature: float = 0.3  # λ2, on 1 - cos
    conf: float = 1.5  # λ3, on the confidence-weighted 3D regression (summed over the two views)
    conf_alpha: float = 0.2  # α of -α log conf

    @classmethod
    def paper(cls) -> LossWeights:
        return cls()

    @classmethod
    def official_code(cls) -> LossWeights:
        return cls(ssim=0.0, feature=0.2, conf=1.0)

    @classmethod
    def geometry(cls) -> LossWeights:
        """Confidence-weighted 3D regression only: compute_losses then runs the geometry network alone."""
        return cls(l1=0.0, ssim=0.0, feature=0.0)

    @property
    def geometry_only(self) -> bool:
        return self.l1 == 0 and self.ssim == 0 and self.feature == 0

    @classmethod
    def preset(cls, name: str) -> LossWeights:
        presets = {"paper": cls.paper, "official-code": cls.official_code, "geometry": cls.geometry}
        if name not in presets:
            raise OpenLSMError(f"unknown loss preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


def l1_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean absolute error over every element."""
    return (pred - gt).abs().mean()


def dssim_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """1 - mean SSIM of images [N, C, H, W] in [0, 1]."""
    return 1 - ssim(pred, gt).mean()


def feature_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over pixels of 1 - cos(pred, target) along the channel axis: [N, D, h, w] x2 -> scalar."""
    return (1 - F.cosine_similarity(pred, target, dim=1, eps=eps)).mean()


def avg_dis_normalize(points: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """Divide each sample's points [B, V, H, W, 3] by their mean norm over valid [B, V, H, W] pixels of all views."""
    mask = valid.to(points.dtype)
    dists = points.norm(dim=-1)  # [B, V, H, W]
    factor = (dists * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)  # [B]
    return points / factor.clamp_min(eps)[:, None, None, None, None]


def confidence_regression_loss(pred_pts: Tensor, confs: Tensor, gt_pts: Tensor, valid: Tensor,
                               alpha: float = 0.2) -> tuple[Tensor, Tensor]:
    """DUSt3R ConfLoss(Regr3D(L21, 'avg_dis')).

    pred_pts, gt_pts [B, V, H, W, 3] in view 1's frame; confs [B, V, H, W] (> 0); valid [B, V, H, W].
    Returns (Σ_views mean_batch mean_valid(conf ℓ - α log conf), Σ_views mean_batch mean_valid ℓ)."""
    if pred_pts.shape != gt_pts.shape or confs.shape != pred_pts.shape[:-1] or valid.shape != confs.shape:
        raise OpenLSMError(f"point maps {tuple(pred_pts.shape)} / {tuple(gt_pts.shape)}, confidences "
                           f"{tuple(confs.shape)} and valid {tuple(valid.shape)} do not match")
    pred_n = avg_dis_normalize(pred_pts, valid)
    gt_n = avg_dis_normalize(gt_pts, valid)
    dists = (pred_n - gt_n).norm(dim=-1)  # [B, V, H, W]
    mask = valid.to(dists.dtype)
    count = mask.flatten(2).sum(2).clamp_min(1)  # [B, V]

    def masked_mean(x: Tensor) -> Tensor:  # [B, V, H, W] -> Σ_v mean_b mean_valid
        return ((x * mask).flatten(2).sum(2) / count).mean(0).sum()

    return masked_mean(confs * dists - alpha * torch.log(confs)), masked_mean(dists)


@torch.no_grad()
def target_cameras(pred_pts: Tensor, gt_pts: Tensor, valid: Tensor, gt_c2w: Tensor) -> tuple[Tensor, Tensor]:
    """GT cameras [B, V, 4, 4] re-expressed in view 1's frame, translations at the prediction's scale.

    pred_pts, gt_pts [B, N, 3] (inputs' points, view 1's frame), valid [B, N]. The scale s (pred ~ s gt) is a
    Weiszfeld fit, detached and clamped at 1e-3 like the official `find_opt_scaling`. Returns (c2w, s [B])."""
    scale = weiszfeld_scale(pred_pts.float(), gt_pts.float(), valid.float()).clamp_min(1e-3)
    return scale_translations(relative_to_first(gt_c2w.float()), scale), scale
