"""Run LSM on one evaluation sample: Gaussians, source-view depth, rendered views and features, timings.

    pred = predict(model, sample)             # sample: images [V,3,H,W] in [0,1], depths, valid, Ks, c2w
    pred.rgb            # [V, 3, H, W] rendered at the GT cameras of every view, aligned to the prediction
    pred.features       # [V, D, H/2, W/2] rendered features after model.expand_features (text space)
    labels = decode_labels(model, pred.features, texts)          # [V, H, W] argmax over the K texts

Views 0 and 1 are the inputs (in [-1, 1]), views 2.. the targets. The model predicts in view 0's camera frame at
its own scale, so the GT cameras are re-expressed in view 0's frame (`relative_to_first`) and their positions
multiplied by the robust scale s (pred ~ s * gt) fitted between the predicted and GT points of the inputs.
Times are wall-clock with the device synchronised: `recon_s` is the model forward, `render_fps` the frames per
second of rendering all V views with features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from openlsm.cameras.cameras import Cameras, invert_rigid, transform_points, unproject_depth
from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians
from openlsm.metrics.align import relative_to_first, scale_translations, weiszfeld_scale
from openlsm.render.render import render


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(result, seconds) of fn() with the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


@dataclass
class Prediction:
    gaussians: Gaussians  # [N] one scene, in view 0's frame at the model's scale
    cameras: Cameras  # [V] GT cameras in the prediction's frame
    scale: float  # s with pred ~ s * gt
    source_depths: Tensor  # [2, H, W] z of the predicted points in their own (aligned GT) cameras
    rgb: Tensor  # [V, 3, H, W] rendered, unclamped
    features: Tensor  # [V, D, H/2, W/2] text-space features of the rendered views
    recon_s: float  # model forward
    render_fps: float  # views per second (RGB + features + depth)
    pose_c2w: Tensor | None = None  # [2, 4, 4] cameras recovered from the point maps (view 0 = identity)
    pose_focals: Tensor | None = None  # [2] pixels
    pose_s: float | None = None
    pose_error: str | None = None  # why camera recovery failed (e.g. too few valid points)


def align_gt_cameras(pts3d: Tensor, depths: Tensor, valid: Tensor, Ks: Tensor, c2w: Tensor) -> tuple[Cameras, float]:
    """GT cameras [V] moved into the prediction's frame. pts3d [2, H, W, 3] predicted points of the inputs (view
    0's frame); depths, valid [>=2, H, W], Ks [V, 3, 3], c2w [V, 4, 4] GT. Returns (cameras, scale)."""
    H, W = pts3d.shape[1:3]
    rel = relative_to_first(c2w[None].float())  # [1, V, 4, 4]
    gt_pts = unproject_depth(depths[:2].float(), Ks[:2].float(), rel[0, :2])  # [2, H, W, 3]
    ok = valid[:2].bool() & torch.isfinite(gt_pts).all(-1) & torch.isfinite(pts3d).all(-1)
    gt_pts = torch.where(ok[..., None], gt_pts, torch.zeros_like(gt_pts))
    pred_pts = torch.where(ok[..., None], pts3d, torch.zeros_like(pts3d))
    s = weiszfeld_scale(pred_pts.reshape(1, -1, 3), gt_pts.reshape(1, -1, 3), ok.reshape(1, -1).float())
    s = s.clamp_min(1e-3)  # as LSM's loss: a degenerate (e.g. untrained) prediction must not mirror the cameras
    return Cameras(Ks.float(), scale_translations(rel, s)[0], W, H), float(s[0])


def decode_labels(model, features: Tensor, texts: Tensor) -> Tensor:
    """Features [V, D, h, w] in the text space -> labels [V, 2h, 2w] (argmax of the extractor's decoder)."""
    return model.lseg_feature_extractor.decode(features, texts.to(features.device)).argmax(1)


def _reconstruct(model, images: Tensor):
    """The LSM forward on views 0, 1 and, where the config asks for them, the refinement and the colour and feature
    fits through the cameras recovered from its point maps (as `openlsm reconstruct` does; never the ground truth)."""
    out = model(images[0:1], images[1:2])
    cfg = model.config
    if cfg.feature_fit_iters or cfg.color_fit_iters or cfg.refine_steps:
        from openlsm.reconstruct import recover_scene_cameras

        cams, _, warning = recover_scene_cameras(out, images.shape[-1], images.shape[-2])
        if warning is None:
            g = model.fit_to_views(out.gaussians[0], cams, (images[:2] + 1) / 2)
            for field in fields(g):  # whichever of them the fits changed
                if getattr(g, field.name) is not None:
                    getattr(out.gaussians, field.name)[0] = getattr(g, field.name)
    return out


@torch.no_grad()
def predict(model, sample: dict, backend: str = "auto", render_repeats: int = 1,
            recover_pose: bool = True) -> Prediction:
    """LSM on views 0, 1 of `sample` (tensors on the model's device); renders all V views at aligned GT cameras."""
    device = sample["images"].device
    images = sample["images"].float() * 2 - 1  # [V, 3, H, W]
    out, recon_s = timed(lambda: _reconstruct(model, images), device)
    geo = out.geometry
    pts3d = torch.stack([geo.pts3d_1[0], geo.pts3d_2[0]])  # [2, H, W, 3]
    cams, s = align_gt_cameras(pts3d, sample["depths"], sample["valid"], sample["Ks"], sample["c2w"])
    g = out.gaussians[0]
    r = render(g, cams, backend=backend)
    fps_s = 0.0
    for _ in range(max(render_repeats, 1)):
        _, dt = timed(lambda: render(g, cams, backend=backend), device)
        fps_s += dt
    render_fps = max(render_repeats, 1) * len(cams) / max(fps_s, 1e-12)
    feats = model.expand_features(r.features.permute(0, 3, 1, 2))  # [V, D, H/2, W/2]
    w2c_2 = invert_rigid(cams.c2w[1])
    z2 = transform_points(w2c_2, pts3d[1].reshape(-1, 3)).reshape(pts3d.shape[1:])[..., 2]
    pred = Prediction(g, cams, s, torch.stack([pts3d[0, ..., 2], z2]), r.rgb.permute(0, 3, 1, 2), feats, recon_s,
                      render_fps)
    if recover_pose:
        from openlsm.models.lsm.camera_recovery import recover_cameras

        try:
            rec, pred.pose_s = timed(lambda: recover_cameras(geo.pts3d_1[0], geo.pts3d_2[0], geo.conf_1[0],
                                                             geo.conf_2[0]), device)
            pred.pose_c2w, pred.pose_focals = rec.cameras.c2w, rec.focals
        except OpenLSMError as e:  # a degenerate prediction is a (bad) result, not a crash
            pred.pose_error = f"failed: {e}"
    return pred
