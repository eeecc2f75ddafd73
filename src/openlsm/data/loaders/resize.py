"""Resize + crop a view to a target (H, W) while keeping its intrinsics exact.

Pixel convention (as everywhere in openlsm): pixel (i, j) covers [j, j+1) x [i, i+1) and its centre is at
(j + 0.5, i + 0.5). Resizing by (sx, sy) then maps a continuous image point (u, v) to (sx*u, sy*v), so K's rows
scale without any half-pixel correction; a crop at (left, top) subtracts the offset from the principal point.

    plan = plan_resize((480, 640), (256, 256))            # scale to cover, centre crop
    K2 = resize_K(K, plan)                                 # [..., 3, 3]
    img2 = resize_images(img, plan)                        # [..., C, 256, 256] (antialiased bilinear)
    depth2 = resize_nearest(depth, plan)                   # [..., 256, 256] (z-depth and labels: nearest)
    view2 = resize_view({"image": img, "depth": depth, "K": K, ...}, (256, 256))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import OpenLSMError

RESIZE_MODES = ("crop", "stretch")


@dataclass(frozen=True)
class ResizePlan:
    """Resize a (src_h, src_w) image to (scaled_h, scaled_w), then keep the window [top:top+h, left:left+w]."""

    src_h: int
    src_w: int
    scaled_h: int
    scaled_w: int
    top: int
    left: int
    h: int
    w: int

    @property
    def sx(self) -> float:
        return self.scaled_w / self.src_w

    @property
    def sy(self) -> float:
        return self.scaled_h / self.src_h

    @property
    def identity(self) -> bool:
        return (self.scaled_h, self.scaled_w, self.top, self.left, self.h, self.w) == (
            self.src_h, self.src_w, 0, 0, self.src_h, self.src_w)


def plan_resize(src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: str = "crop",
                crop_at: tuple[float, float] = (0.5, 0.5)) -> ResizePlan:
    """Plan for `src_hw` -> `dst_hw`.

    mode "crop": one scale that makes the image cover the target (aspect kept), then a crop whose position is
    `crop_at` = (fy, fx) in [0, 1] of the slack (0.5 = centred; random values give random crops).
    mode "stretch": independent x/y scales, no crop (aspect changes; K stays exact).
    """
    (sh, sw), (h, w) = (int(v) for v in src_hw), (int(v) for v in dst_hw)
    if min(sh, sw, h, w) <= 0:
        raise OpenLSMError(f"cannot resize an image of size {sh}x{sw} to {h}x{w}")
    if mode == "stretch":
        return ResizePlan(sh, sw, h, w, 0, 0, h, w)
    if mode != "crop":
        raise OpenLSMError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    s = max(h / sh, w / sw)
    # Round the scaled size, then use the exact per-axis factors it implies (never below the target).
    scaled_h, scaled_w = max(h, round(sh * s)), max(w, round(sw * s))
    fy, fx = (min(max(float(c), 0.0), 1.0) for c in crop_at)
    top, left = round(fy * (scaled_h - h)), round(fx * (scaled_w - w))
    return ResizePlan(sh, sw, scaled_h, scaled_w, top, left, h, w)


def resize_K(Ks: Tensor, plan: ResizePlan) -> Tensor:
    """Intrinsics [..., 3, 3] of the resized + cropped image."""
    K = Ks.clone()
    K[..., 0, :] *= plan.sx
    K[..., 1, :] *= plan.sy
    K[..., 0, 2] -= plan.left
    K[..., 1, 2] -= plan.top
    return K


def _as_4d(x: Tensor, channels: bool) -> tuple[Tensor, tuple]:
    lead = x.shape[:-3] if channels else x.shape[:-2]
    return x.reshape(-1, *x.shape[-3:]) if channels else x.reshape(-1, 1, *x.shape[-2:]), lead


def _crop(x: Tensor, plan: ResizePlan) -> Tensor:
    return x[..., plan.top:plan.top + plan.h, plan.left:plan.left + plan.w]


def resize_images(images: Tensor, plan: ResizePlan) -> Tensor:
    """Colour images [..., C, H, W] (float) -> [..., C, h, w]; antialiased bilinear, so downscaling is not aliased."""
    if plan.identity:
        return images
    x, lead = _as_4d(images, channels=True)
    x = F.interpolate(x.float(), size=(plan.scaled_h, plan.scaled_w), mode="bilinear", align_corners=False,
                      antialias=True)
    return _crop(x, plan).reshape(*lead, x.shape[1], plan.h, plan.w).to(images.dtype)


def resize_nearest(maps: Tensor, plan: ResizePlan) -> Tensor:
    """Per-pixel maps [..., H, W] (depth, labels, masks; any dtype) -> [..., h, w] by nearest sampling.

    "nearest-exact" samples the source pixel under each target pixel centre, consistent with the +0.5
    convention (plain "nearest" would shift content by up to half a source pixel).
    """
    if plan.identity:
        return maps
    x, lead = _as_4d(maps, channels=False)
    dtype = x.dtype
    x = x.double() if dtype in (torch.int64, torch.float64) else x.float()  # int64 ids survive exactly in float64
    x = F.interpolate(x, size=(plan.scaled_h, plan.scaled_w), mode="nearest-exact")
    x = _crop(x, plan).reshape(*lead, plan.h, plan.w)
    return x.to(dtype)


def resize_view(view: dict, dst_hw: tuple[int, int], mode: str = "crop",
                crop_at: tuple[float, float] = (0.5, 0.5)) -> dict:
    """Resize one view dict {image [3,H,W], depth [H,W], valid, label?, K [3,3], c2w} to `dst_hw`."""
    H, W = view["image"].shape[-2:]
    plan = plan_resize((H, W), dst_hw, mode, crop_at)
    out = dict(view)
    out["image"] = resize_images(view["image"], plan)
    out["K"] = resize_K(view["K"], plan)
    for key in ("depth", "valid", "label"):
        if key in view:
            out[key] = resize_nearest(view[key], plan)
    return out
