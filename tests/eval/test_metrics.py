"""Evaluation metrics against hand-made predictions and brute-force references."""

import json
import math

import pytest
import torch

from openlsm.eval.metrics import (
    confusion_matrix,
    depth_metrics,
    image_metrics,
    json_safe,
    relative_pose_errors,
    rotation_error_deg,
    segmentation_scores,
    summarize,
    translation_angle_deg,
)


def rot(axis: str, deg: float) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def test_perfect_segmentation_gives_one():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (2, 8, 8), generator=g)
    s = segmentation_scores(confusion_matrix(gt, gt, 5))
    assert s["miou"] == 1.0 and s["acc"] == 1.0 and s["macc"] == 1.0


def test_hand_computed_confusion_matrix():
    gt = torch.tensor([0, 0, 1, 1, 2, 2, -1])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 2])  # the last pixel is ignored (gt -1)
    cm = confusion_matrix(pred, gt, 4)  # class 3 absent from both gt and prediction
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = segmentation_scores(cm)
    # IoU: 1/(2+2-1), 2/(2+3-2), 1/(2+1-1); class 3 excluded from the mean
    assert s["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx(0.5)
    assert s["acc"] == pytest.approx(4 / 6)
    assert s["macc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    # a class that is only predicted (a false positive) counts with IoU 0
    s2 = segmentation_scores(confusion_matrix(torch.tensor([3, 0]), torch.tensor([0, 0]), 4))
    assert s2["iou"][3] == 0 and s2["miou"] == pytest.approx((1 / 2 + 0) / 2)


def test_confusion_matrix_matches_loop_and_accumulates():
    g = torch.Generator().manual_seed(1)
    gt = torch.randint(-1, 6, (3, 10, 12), generator=g)  # -1 = ignore
    pred = torch.randint(0, 6, (3, 10, 12), generator=g)
    ref = torch.zeros(6, 6, dtype=torch.int64)
    for p, t in zip(pred.flatten().tolist(), gt.flatten().tolist()):
        if t >= 0:
            ref[t, p] += 1
    assert torch.equal(confusion_matrix(pred, gt, 6), ref)
    parts = confusion_matrix(pred[:1], gt[:1], 6) + confusion_matrix(pred[1:], gt[1:], 6)
    assert torch.equal(parts, ref)  # summing per-scene matrices = scoring all pixels at once


def test_out_of_range_prediction_is_an_error():
    from openlsm.errors import OpenLSMError

    with pytest.raises(OpenLSMError):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 3)


def test_perfect_depth_and_median_scaling_invariance():
    g = torch.Generator().manual_seed(2)
    gt = 1 + 4 * torch.rand(2, 6, 7, generator=g, dtype=torch.float64)
    d = depth_metrics(gt.clone(), gt)
    assert torch.all(d["abs_rel"] == 0) and torch.all(d["inlier"] == 1)
    noisy = gt * (1 + 0.05 * torch.randn(gt.shape, generator=g, dtype=torch.float64))
    a, b = depth_metrics(noisy, gt), depth_metrics(noisy * 37.5, gt)
    assert torch.allclose(a["abs_rel"], b["abs_rel"], rtol=1e-12) and torch.equal(a["inlier"], b["inlier"])
    assert torch.all(a["abs_rel"] > 0.01)
    # per image: scaling one image only leaves both images' metrics unchanged
    c = depth_metrics(torch.stack([noisy[0] * 0.01, noisy[1]]), gt)
    assert torch.allclose(c["abs_rel"], a["abs_rel"], rtol=1e-12)


def test_inlier_ratio_on_constructed_case():
    ratios = torch.tensor([1.0, 1.0, 1.0, 1.02, 0.97, 1.05, 0.9, 5.0], dtype=torch.float64)
    gt = torch.full((1, 2, 4), 2.0, dtype=torch.float64)
    pred = 3.7 * (gt * ratios.view(1, 2, 4))
    valid = torch.ones(1, 2, 4, dtype=torch.bool)
    valid[0, 1, 3] = False  # drops the ratio 5.0; the median of the rest is 1.0, so the scale is exactly 1/3.7
    d = depth_metrics(pred, gt, valid)
    # max(r, 1/r) < 1.03: 1, 1, 1, 1.02 pass; 0.97 (1/0.97 = 1.0309), 1.05, 0.9 fail
    assert d["inlier"].item() == pytest.approx(4 / 7)
    assert d["abs_rel"].item() == pytest.approx((0.02 + 0.03 + 0.05 + 0.1) / 7)
    assert d["scale"].item() == pytest.approx(1 / 3.7)
    assert math.isnan(depth_metrics(pred, gt, torch.zeros_like(valid))["abs_rel"].item())  # nothing valid


def test_image_metrics_perfect_and_known_mse():
    g = torch.Generator().manual_seed(3)
    img = 0.1 + 0.8 * torch.rand(2, 3, 16, 16, generator=g)
    m = image_metrics(img, img)
    assert torch.all(torch.isinf(m["psnr"])) and torch.allclose(m["ssim"], torch.ones(2, dtype=torch.float64))
    m2 = image_metrics(img + 0.1, img)  # MSE 0.01 -> 20 dB
    assert torch.allclose(m2["psnr"], torch.full((2,), 20.0, dtype=torch.float64), atol=1e-3)


def test_json_safe_flags_inf_and_nan():
    clean, flags = json_safe({"a": {"psnr": float("inf"), "ok": 1.5}, "b": [0.0, float("nan")],
                              "c": torch.tensor(-float("inf"))})
    assert clean == {"a": {"psnr": None, "ok": 1.5}, "b": [0.0, None], "c": None}
    assert flags == {"a.psnr": "inf", "b[1]": "nan", "c": "-inf"}
    json.dumps(clean, allow_nan=False)


def test_summarize():
    s = summarize([1.0, 3.0, None, float("nan")])
    assert s == {"mean": 2.0, "std": 1.0, "n": 2}
    assert math.isinf(summarize([1.0, float("inf")])["mean"])
    assert summarize([])["n"] == 0


@pytest.mark.parametrize("deg", [1e-4, 0.5, 30.0, 90.0, 179.9])
def test_rotation_error_of_known_rotations(deg):
    R0 = rot("x", 20) @ rot("y", -35)
    for axis in "xyz":
        assert rotation_error_deg(R0 @ rot(axis, deg), R0).item() == pytest.approx(deg, rel=1e-7, abs=1e-9)
        assert rotation_error_deg(rot(axis, deg) @ R0, R0).item() == pytest.approx(deg, rel=1e-7, abs=1e-9)


def test_translation_angle():
    t = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    assert translation_angle_deg(5 * t, t).item() == pytest.approx(0, abs=1e-6)
    axis_perp = torch.linalg.cross(t, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    k = axis_perp / axis_perp.norm()
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    a = math.radians(20)
    R = torch.eye(3, dtype=torch.float64) + math.sin(a) * K + (1 - math.cos(a)) * K @ K
    assert translation_angle_deg(R @ t, t).item() == pytest.approx(20, abs=1e-9)
    assert translation_angle_deg(-t, t).item() == pytest.approx(180, abs=1e-9)
    assert math.isnan(translation_angle_deg(torch.zeros(3), t).item())


def test_relative_pose_errors_ignore_world_frame_and_scale():
    gt = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    gt[1, :3, :3], gt[1, :3, 3] = rot("y", 25), torch.tensor([1.0, 0.1, 0.2])
    gt[2, :3, :3], gt[2, :3, 3] = rot("x", -10), torch.tensor([-0.5, 0.3, 0.4])
    gt[0, :3, 3] = torch.tensor([0.2, -0.1, 0.05])
    # the same cameras in another world frame (similarity): errors must be 0
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = rot("z", 70) @ rot("x", 15), torch.tensor([3.0, -2.0, 1.0])
    pred = T @ gt
    pred[:, :3, 3] *= 4.2
    r, t = relative_pose_errors(pred, gt)
    assert torch.allclose(r, torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(t, torch.zeros(2, dtype=torch.float64), atol=1e-6)
    # rotate view 1's camera by 10 degrees about its own optical axis: rotation error 10, translation unchanged
    bad = gt.clone()
    bad[1, :3, :3] = gt[1, :3, :3] @ rot("z", 10)
    r, t = relative_pose_errors(bad, gt)
    assert r[0].item() == pytest.approx(10, abs=1e-9) and r[1].item() == pytest.approx(0, abs=1e-6)
    assert t[0].item() == pytest.approx(0, abs=1e-6)


def test_seen_by_inputs_on_a_wall_with_an_occluder():
    """Inputs look straight at a wall; a target that looks the other way sees nothing they saw, one that shares
    their view sees everything, and one whose left half sees a wall region hidden by a near occluder in the inputs
    only counts what the inputs really saw."""
    from openlsm.cameras import Cameras, look_at
    from openlsm.eval.metrics import seen_by_inputs

    res = 32
    eyes = torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [0.1, 0, 0], [0.1, 0, 0]], dtype=torch.float64)
    looks = torch.tensor([[0.0, 0, 5], [0.2, 0, 5], [0.1, 0, 5], [0.1, 0, -5]], dtype=torch.float64)
    c2w = look_at(eyes, looks, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    cams = Cameras.from_fov(40.0, res, res, c2w)
    # z-depth of the wall z = 5 seen by cameras whose axis is +z (views 0-2) or -z (view 3: a wall at z = -5)
    depths = torch.full((4, res, res), 5.0, dtype=torch.float64)
    valid = torch.ones(4, res, res, dtype=torch.bool)
    seen = seen_by_inputs(depths, valid, cams.Ks, cams.c2w)
    assert seen.shape == (2, res, res)
    assert seen[0].float().mean() > 0.9  # between the inputs, same wall: almost all seen (edges may leave both)
    assert not seen[1].any()  # the wall behind the inputs
    # an occluder: in input views the left image half shows a board at z = 1 instead of the wall
    occluded = depths.clone()
    occluded[:2, :, : res // 2] = 1.0
    seen_occ = seen_by_inputs(occluded, valid, cams.Ks, cams.c2w)[0]
    assert seen_occ[:, -4:].float().mean() > 0.9 and seen_occ[:, :4].float().mean() < 0.1
    # invalid target pixels are never "seen"
    v2 = valid.clone()
    v2[2, :5] = False
    assert not seen_by_inputs(depths, v2, cams.Ks, cams.c2w)[0, :5].any()


def test_psnr_on_seen_pixels_only():
    from openlsm.eval.metrics import image_metrics

    gt = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pred = gt.clone()
    pred[:, :, :, :4] = (gt[:, :, :, :4] + 0.1).clamp(0, 1)  # errors only on the left half
    seen = torch.zeros(2, 8, 8, dtype=torch.bool)
    seen[0, :, 4:] = True  # view 0: only the right (exact) half is seen
    seen[1, :, :] = True
    m = image_metrics(pred, gt, seen)
    assert torch.isinf(m["psnr_seen"][0]) and torch.isfinite(m["psnr"][0])
    assert torch.allclose(m["psnr_seen"][1], m["psnr"][1])
    m2 = image_metrics(pred, gt, torch.zeros(2, 8, 8, dtype=torch.bool))
    assert torch.isnan(m2["psnr_seen"]).all()
