"""Baselines evaluated side by side with LSM (issue 6, part 5).

(a) `optimize_gaussians`: per-scene 3DGS optimisation from the two GT-posed input views with our renderer
    (Feature-3DGS style: optionally also distils the 2D extractor's features of the inputs). Initialised from the
    unprojected GT depth (one Gaussian per `stride`² pixels) or from random points in the depth's bounding box;
    Adam on means, colours, log-scales, quaternions, opacities (and features) for `steps` steps with the 3DGS
    photometric loss (1 - λ) L1 + λ (1 - SSIM). No densification or pruning.
(b) `sfm_two_view`: classical SfM on the image pair with pycolmap (SIFT, exhaustive matching, incremental mapping
    with the GT intrinsics) when pycolmap is importable; otherwise `BaselineUnavailable`.
(c) `segment_2d`: the 2D extractor alone on each image, decoded against the class texts ("LSeg-only").

    g, info = optimize_gaussians(images[:2], depths[:2], valid[:2], cams[:2], GaussianFitConfig(steps=300))
    out = render(g, cams[2:])                          # evaluate at the targets
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from openlsm.cameras.cameras import Cameras, invert_rigid, unproject_depth
from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians, rgb_to_sh0
from openlsm.metrics import ssim
from openlsm.render.render import render

from .predict import decode_labels, synchronize, timed


class BaselineUnavailable(Exception):
    """The baseline cannot run here (a missing optional dependency); the message says why."""


# --- (a) per-scene 3DGS optimisation ---------------------------------------------------------------------------

@dataclass
class GaussianFitConfig:
    steps: int = 1000
    init: Literal["depth", "random"] = "depth"
    stride: int = 1  # one Gaussian per stride x stride input pixels
    init_opacity: float = 0.1
    ssim_weight: float = 0.2  # λ of the 3DGS loss
    feature_weight: float = 1.0  # weight of 1 - cos(rendered, extractor) when target features are given
    lr_means: float = 1.6e-4  # times the scene extent, as in 3DGS
    lr_colors: float = 2.5e-3  # on the SH DC coefficients
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_features: float = 5e-3
    seed: int = 0
    backend: str = "auto"


def init_gaussians(images: Tensor, depths: Tensor, valid: Tensor, cams: Cameras, cfg: GaussianFitConfig,
                   features: Tensor | None = None) -> Gaussians:
    """Initial Gaussians from the inputs. images [2, 3, H, W] in [0, 1], depths/valid [2, H, W], cams [2];
    features [2, D, h, w] (lifted per pixel, bilinearly resized) or None."""
    s = cfg.stride
    pts = unproject_depth(depths.float(), cams.Ks.float(), cams.c2w.float())[:, ::s, ::s]  # [2, h, w, 3]
    ok = valid.bool()[:, ::s, ::s] & (depths[:, ::s, ::s] > 0) & torch.isfinite(pts).all(-1)
    if not ok.any():
        raise OpenLSMError("the input views have no valid depth to initialise Gaussians from")
    means = pts[ok]  # [N, 3]
    rgb = images[:, :, ::s, ::s].permute(0, 2, 3, 1)[ok].float()  # [N, 3]
    # pixel footprint at the point's depth: z * stride / f
    foot = (depths[:, ::s, ::s] * s / cams.Ks[:, None, None, 0, 0])[ok].float().clamp_min(1e-6)
    feats = None
    if features is not None:
        up = F.interpolate(features.float(), size=depths.shape[-2:], mode="bilinear", align_corners=False)
        feats = up[:, :, ::s, ::s].permute(0, 2, 3, 1)[ok]  # [N, D]
    n = means.shape[0]
    if cfg.init == "random":
        gen = torch.Generator().manual_seed(cfg.seed)
        lo, hi = means.min(0).values, means.max(0).values
        means = lo + (hi - lo) * torch.rand(n, 3, generator=gen).to(means)
        rgb = torch.rand(n, 3, generator=gen).to(means)
        spacing = float((hi - lo).clamp_min(1e-6).prod() / n) ** (1 / 3)  # mean point spacing in the box
        foot = torch.full_like(foot, 0.5 * spacing)
        feats = None if feats is None else 0.01 * torch.randn(feats.shape, generator=gen).to(means)
    elif cfg.init != "depth":
        raise OpenLSMError(f"unknown 3DGS init {cfg.init!r} (depth or random)")
    quats = torch.zeros(n, 4, dtype=means.dtype, device=means.device)
    quats[:, 0] = 1
    logit = math.log(cfg.init_opacity / (1 - cfg.init_opacity))
    return Gaussians(means, quats, foot.log()[:, None].expand(n, 3).clone(), torch.full_like(means[:, 0], logit),
                     rgb_to_sh0(rgb)[:, None, :], feats)


def photometric_loss(pred: Tensor, gt: Tensor, ssim_weight: float) -> Tensor:
    """(1 - λ) L1 + λ (1 - SSIM) on [V, 3, H, W]."""
    return (1 - ssim_weight) * (pred - gt).abs().mean() + ssim_weight * (1 - ssim(pred, gt).mean())


def optimize_gaussians(images: Tensor, depths: Tensor, valid: Tensor, cams: Cameras,
                       cfg: GaussianFitConfig | None = None, features: Tensor | None = None,
                       callback=None) -> tuple[Gaussians, dict]:
    """Fit Gaussians to the two posed inputs. images [2, 3, H, W] in [0, 1]; features [2, D, H/2, W/2] teacher
    features (or None: RGB only). Returns (Gaussians, {"time_s", "steps", "loss_first", "loss_last"})."""
    cfg = cfg or GaussianFitConfig()
    device = images.device
    synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        g0 = init_gaussians(images, depths, valid, cams, cfg, features)
    extent = float((g0.means - g0.means.mean(0)).norm(dim=-1).max().clamp_min(1e-6))
    params = {k: getattr(g0, k).detach().clone().requires_grad_(True)
              for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
    lrs = {"means": cfg.lr_means * extent, "quats": cfg.lr_quats, "log_scales": cfg.lr_scales,
           "opacity_logits": cfg.lr_opacity, "sh": cfg.lr_colors}
    if g0.features is not None:
        params["features"] = g0.features.detach().clone().requires_grad_(True)
        lrs["features"] = cfg.lr_features
    opt = torch.optim.Adam([{"params": [p], "lr": lrs[k]} for k, p in params.items()], eps=1e-15)
    gt = images.float()
    losses = []  # detached tensors: no host sync per step (the loop is timed)
    for step in range(cfg.steps):
        g = Gaussians(**params)
        out = render(g, cams, backend=cfg.backend, with_features="features" in params)
        loss = photometric_loss(out.rgb.permute(0, 3, 1, 2), gt, cfg.ssim_weight)
        if "features" in params:
            rendered = F.avg_pool2d(out.features.permute(0, 3, 1, 2), 2)  # [2, D, H/2, W/2] like the teacher
            loss = loss + cfg.feature_weight * (1 - F.cosine_similarity(rendered, features.float(), dim=1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if callback is not None:
            callback(step, float(losses[-1]))
    synchronize(device)
    info = {"time_s": time.perf_counter() - t0, "steps": cfg.steps, "gaussians": int(g0.means.shape[0]),
            "loss_first": float(losses[0]) if losses else math.nan,
            "loss_last": float(losses[-1]) if losses else math.nan}
    return Gaussians(**{k: v.detach() for k, v in params.items()}), info


@torch.no_grad()
def render_views(g: Gaussians, cams: Cameras, backend: str = "auto") -> tuple[Tensor, Tensor | None]:
    """(rgb [V, 3, H, W], features [V, D, H/2, W/2] (2x2 average-pooled, like the teacher) or None)."""
    out = render(g, cams, backend=backend, with_features=g.features is not None)
    feats = None if out.features is None else F.avg_pool2d(out.features.permute(0, 3, 1, 2), 2)
    return out.rgb.permute(0, 3, 1, 2), feats


# --- (b) classical SfM with pycolmap ---------------------------------------------------------------------------

def sfm_two_view(images: Tensor, Ks: Tensor) -> dict:
    """Relative pose of the pair by COLMAP. images [2, 3, H, W] in [0, 1], Ks [2, 3, 3] (shared PINHOLE camera
    from view 0). Returns {"c2w": [2, 4, 4] in view 0's frame, "time_s"}. Raises BaselineUnavailable without
    pycolmap and OpenLSMError when COLMAP does not register both images."""
    try:
        import pycolmap
    except ImportError as e:
        raise BaselineUnavailable(f"pycolmap is not installed ({e}); pip install pycolmap") from None
    import numpy as np
    from PIL import Image

    fx, fy, cx, cy = (float(Ks[0, 0, 0]), float(Ks[0, 1, 1]), float(Ks[0, 0, 2]), float(Ks[0, 1, 2]))

    def run() -> dict:
        with tempfile.TemporaryDirectory(prefix="openlsm-sfm-") as tmp:
            root = Path(tmp)
            (root / "images").mkdir()
            for i in range(2):
                arr = (images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
                Image.fromarray(arr).save(root / "images" / f"{i}.png")
            db = root / "database.db"
            pycolmap.extract_features(db, root / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options={"camera_model": "PINHOLE",
                                                      "camera_params": f"{fx},{fy},{cx},{cy}"})
            pycolmap.match_exhaustive(db)
            opts = pycolmap.IncrementalPipelineOptions()
            for key, value in {"min_model_size": 2, "ba_refine_focal_length": False,
                               "ba_refine_principal_point": False, "ba_refine_extra_params": False}.items():
                if hasattr(opts, key):
                    setattr(opts, key, value)
            (root / "sparse").mkdir()
            recs = pycolmap.incremental_mapping(db, root / "images", root / "sparse", options=opts)
            for rec in recs.values():
                poses = {}
                for image in rec.images.values():
                    cfw = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
                    w2c = torch.eye(4, dtype=torch.float64)
                    w2c[:3] = torch.as_tensor(np.asarray(cfw.matrix()), dtype=torch.float64)
                    poses[image.name] = invert_rigid(w2c)
                if {"0.png", "1.png"} <= set(poses):
                    c2w = torch.stack([poses["0.png"], poses["1.png"]])
                    return {"c2w": invert_rigid(c2w[:1]) @ c2w}
        raise OpenLSMError("COLMAP did not register both images")

    out, seconds = timed(run, torch.device("cpu"))
    out["time_s"] = seconds
    return out


# --- (c) 2D-only segmentation ----------------------------------------------------------------------------------

@torch.no_grad()
def segment_2d(model, images: Tensor, texts: Tensor) -> Tensor:
    """Labels [V, H, W] from the model's 2D extractor alone on images [V, 3, H, W] in [0, 1]."""
    feats = model.extract_semantics(images.float() * 2 - 1)  # [V, D, H/2, W/2]
    return decode_labels(model, feats, texts)
