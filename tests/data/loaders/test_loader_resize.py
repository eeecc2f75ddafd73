"""Resize/crop keeps K consistent with the resampled pixels (projection tests, pixel centres at +0.5)."""

import itertools

import numpy as np
import pytest
import torch

from openlsm.cameras import make_K, pixel_grid, project
from openlsm.data.loaders import plan_resize, resize_images, resize_K, resize_nearest, resize_view
from openlsm.errors import OpenLSMError

CASES = [((48, 64), (32, 32), "crop", (0.5, 0.5)),
         ((48, 64), (24, 24), "crop", (0.0, 1.0)),
         ((48, 64), (96, 128), "crop", (0.5, 0.5)),   # upscale
         ((60, 40), (30, 45), "crop", (0.3, 0.7)),    # portrait -> landscape
         ((48, 64), (40, 40), "stretch", (0.5, 0.5)),
         ((37, 53), (16, 20), "crop", (0.5, 0.5))]    # odd sizes: rounded scaled size


@pytest.mark.parametrize("src,dst,mode,crop_at", CASES)
def test_projection_lands_where_the_new_K_predicts(src, dst, mode, crop_at):
    g = torch.Generator().manual_seed(0)
    K = make_K(55.0, 57.0, src[1] / 2 + 1.3, src[0] / 2 - 2.1).double()
    pts = torch.cat([torch.rand(200, 2, generator=g, dtype=torch.float64) * 4 - 2,
                     torch.rand(200, 1, generator=g, dtype=torch.float64) * 5 + 1], -1)
    eye = torch.eye(4, dtype=torch.float64)
    uv, _ = project(pts, K, eye)
    plan = plan_resize(src, dst, mode, crop_at)
    assert (plan.h, plan.w) == dst
    uv2, _ = project(pts, resize_K(K, plan), eye)
    # A continuous image point (u, v) scales to (sx*u, sy*v), then the crop shifts it: the scale comes from the
    # resized size actually produced (which must cover the target in crop mode).
    sx, sy = plan.scaled_w / src[1], plan.scaled_h / src[0]
    if mode == "crop":
        assert plan.scaled_h >= dst[0] and plan.scaled_w >= dst[1]
        assert abs(sx / sy - 1) < 2.0 / min(src)  # aspect kept up to rounding of the scaled size
    expected = torch.stack([uv[:, 0] * sx - plan.left, uv[:, 1] * sy - plan.top], -1)
    assert torch.allclose(uv2, expected, atol=1e-9)


@pytest.mark.parametrize("src,dst,mode,crop_at", CASES)
def test_resampled_pixels_match_the_new_K(src, dst, mode, crop_at):
    """Each output pixel must show the scene point that the new K says is there.

    The source image stores its own pixel-centre coordinates (u, v); a bilinear/area filter preserves such
    linear ramps, so an interior output pixel's value is the source coordinate it was sampled at. Casting that
    output pixel's ray with the new K and projecting it with the old K must give the same coordinate.
    """
    H, W = src
    K = make_K(55.0, 57.0, W / 2 + 1.3, H / 2 - 2.1).double()
    ramp = pixel_grid(W, H, dtype=torch.float64).permute(2, 0, 1)  # [2, H, W] = (u, v)
    plan = plan_resize(src, dst, mode, crop_at)
    out = resize_images(ramp, plan)  # [2, h, w]
    K2 = resize_K(K, plan)
    uv_new = pixel_grid(plan.w, plan.h, dtype=torch.float64).reshape(-1, 2)
    rays = torch.cat([(uv_new - K2[:2, 2]) / torch.stack([K2[0, 0], K2[1, 1]]), torch.ones(len(uv_new), 1,
                                                                                          dtype=torch.float64)], -1)
    uv_old, _ = project(rays * 3.0, K, torch.eye(4, dtype=torch.float64))
    got = out.reshape(2, -1).T
    # Filters clamp at the image border; compare pixels whose footprint stays inside the source.
    margin_x, margin_y = 1.5 / min(plan.sx, 1.0), 1.5 / min(plan.sy, 1.0)
    inner = ((uv_old[:, 0] > margin_x) & (uv_old[:, 0] < W - margin_x) & (uv_old[:, 1] > margin_y)
             & (uv_old[:, 1] < H - margin_y))
    assert inner.sum() > 20
    # The antialias filter's discrete weights are not exactly symmetric at fractional ratios (a few 1/100 px);
    # any half-pixel convention slip would be >= 0.25 source px here.
    assert float((got[inner] - uv_old[inner]).abs().max()) < 0.1

    # Nearest resampling (depth, labels) picks the source pixel under each output centre: off by <= half a pixel.
    near = resize_nearest(ramp, plan).reshape(2, -1).T
    assert float((near - uv_old).abs().max()) <= 0.5 + 1e-6


def test_nearest_is_centre_aligned_when_downscaling_by_four():
    """Plain 'nearest' would take source pixel 4j (centre 4j+0.5) instead of the one under 4j+2."""
    ramp = pixel_grid(32, 16, dtype=torch.float64)[..., 0]  # u centres
    plan = plan_resize((16, 32), (4, 8), "stretch")
    out = resize_nearest(ramp, plan)
    exact = (torch.arange(8, dtype=torch.float64) + 0.5) * 4
    assert float((out[0] - exact).abs().max()) <= 0.5


def test_nearest_keeps_values_and_dtypes():
    labels = torch.tensor([[0, 7, 2**40 + 3], [5, -1, 9]], dtype=torch.int64).repeat_interleave(4, 0).repeat_interleave(4, 1)
    plan = plan_resize(labels.shape, (4, 6), "stretch")
    out = resize_nearest(labels, plan)
    assert out.dtype == torch.int64 and set(out.unique().tolist()) <= set(labels.unique().tolist())
    assert out[0, 4] == 2**40 + 3
    valid = labels > 0
    assert resize_nearest(valid, plan).dtype == torch.bool
    depth = torch.rand(8, 12) * 5
    d2 = resize_nearest(depth, plan)
    assert set(d2.flatten().tolist()) <= set(depth.flatten().tolist())  # z-depth values are never blended


def test_resize_view_and_identity():
    view = {"image": torch.rand(3, 48, 64), "depth": torch.rand(48, 64) + 1, "valid": torch.ones(48, 64, dtype=bool),
            "label": torch.randint(0, 9, (48, 64)), "K": make_K(50.0, 50.0, 32.0, 24.0), "c2w": torch.eye(4)}
    out = resize_view(view, (32, 32))
    assert out["image"].shape == (3, 32, 32) and out["depth"].shape == (32, 32) and out["label"].shape == (32, 32)
    assert out["c2w"] is view["c2w"]
    same = resize_view(view, (48, 64))
    assert torch.equal(same["image"], view["image"]) and torch.equal(same["K"], view["K"])
    batched = resize_images(torch.rand(2, 5, 3, 48, 64), plan_resize((48, 64), (24, 24)))
    assert batched.shape == (2, 5, 3, 24, 24)


@pytest.mark.parametrize("src,dst", list(itertools.product([(48, 64), (64, 48), (31, 77)], [(16, 16), (24, 40)])))
def test_crop_window_inside_resized_image(src, dst):
    for fy, fx in [(0, 0), (1, 1), (0.5, 0.5), (np.float64(0.25), 0.9)]:
        p = plan_resize(src, dst, "crop", (fy, fx))
        assert 0 <= p.top <= p.scaled_h - p.h and 0 <= p.left <= p.scaled_w - p.w


def test_bad_resize_arguments():
    with pytest.raises(OpenLSMError, match="unknown resize mode"):
        plan_resize((4, 4), (2, 2), "pad")
    with pytest.raises(OpenLSMError, match="cannot resize"):
        plan_resize((0, 4), (2, 2))
