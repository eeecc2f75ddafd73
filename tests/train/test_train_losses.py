import math

import pytest
import torch
import torch.nn.functional as F

from openlsm.cameras.cameras import invert_rigid, look_at, make_K, pixel_directions, transform_points
from openlsm.errors import OpenLSMError
from openlsm.train.losses import (
    LossWeights,
    avg_dis_normalize,
    confidence_regression_loss,
    dssim_loss,
    feature_loss,
    l1_loss,
    target_cameras,
)
from openlsm.train.step import gt_points_in_first_view


def test_presets():
    p, o = LossWeights.preset("paper"), LossWeights.preset("official-code")
    assert (p.l1, p.ssim, p.feature, p.conf, p.conf_alpha) == (1.0, 0.25, 0.3, 1.5, 0.2)
    assert (o.l1, o.ssim, o.feature, o.conf, o.conf_alpha) == (1.0, 0.0, 0.2, 1.0, 0.2)
    with pytest.raises(OpenLSMError):
        LossWeights.preset("nope")


def test_l1_by_hand():
    pred = torch.tensor([[0.0, 1.0], [2.0, -3.0]])
    assert l1_loss(pred, torch.zeros(2, 2)).item() == pytest.approx(1.5)


def reference_ssim(x, y):
    """float64 brute force: 11x11 Gaussian window (sigma 1.5), zero padding, per-pixel loop over windows."""
    x, y = x.double(), y.double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = torch.outer(g, g) / g.sum() ** 2  # [11, 11]
    N, _, H, W = x.shape
    xp, yp = F.pad(x, (5, 5, 5, 5)), F.pad(y, (5, 5, 5, 5))
    c1, c2 = 0.01**2, 0.03**2
    total = torch.zeros(N, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            a, b = xp[:, :, i:i + 11, j:j + 11], yp[:, :, i:i + 11, j:j + 11]
            mx, my = (a * w).sum((-1, -2)), (b * w).sum((-1, -2))
            vx, vy = (a * a * w).sum((-1, -2)) - mx**2, (b * b * w).sum((-1, -2)) - my**2
            cov = (a * b * w).sum((-1, -2)) - mx * my
            s = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))  # [N, C]
            total += s.mean(1)
    return total / (H * W)


def test_dssim_matches_brute_force_and_is_zero_for_equal_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 14, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 12, 14, generator=g)).clamp(0, 1)
    expected = 1 - reference_ssim(x, y).mean()
    assert dssim_loss(x, y).item() == pytest.approx(expected.item(), abs=1e-5)
    assert dssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_loss_by_hand():
    pred = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])[None, :, None, :]  # [1, D=2, 1, 3]
    target = torch.tensor([[0.0, 2.0, -1.0], [1.0, 2.0, 0.0]])[None, :, None, :]
    # pixel 0: (1,0)·(0,1) -> cos 0; pixel 1: (1,1)·(2,2) -> 1; pixel 2: (1,0)·(-1,0) -> -1
    assert feature_loss(pred, target).item() == pytest.approx((1 + 0 + 2) / 3, abs=1e-6)


def test_avg_dis_normalize_by_hand():
    pts = torch.tensor([[1.0, 0, 0], [0, 0, 3.0], [100.0, 0, 0], [0, 4.0, 3.0]]).reshape(1, 2, 1, 2, 3)
    valid = torch.tensor([True, True, False, True]).reshape(1, 2, 1, 2)
    out = avg_dis_normalize(pts, valid)  # factor (1 + 3 + 5) / 3 = 3; the invalid point does not count
    assert torch.allclose(out, pts / 3)


def hand_case():
    gt = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 100.0]]).reshape(1, 2, 1, 2, 3)
    pred = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 5.0, 5.0]]).reshape(1, 2, 1, 2, 3)
    conf = torch.tensor([2.0, 1.0, math.e, 7.0]).reshape(1, 2, 1, 2)
    valid = torch.tensor([True, True, True, False]).reshape(1, 2, 1, 2)
    return pred, conf, gt, valid


def test_confidence_regression_by_hand():
    pred, conf, gt, valid = hand_case()
    # GT avg_dis = (1+2+3)/3 = 2 -> (.5,0,0) (0,1,0) (0,0,1.5); pred avg_dis = 1 -> unchanged.
    # distances .5, 0 | .5 ; view 0: (2*.5 - .2 ln 2 + 0 - .2 ln 1) / 2 ; view 1: e*.5 - .2 ln e
    view0 = (2 * 0.5 - 0.2 * math.log(2)) / 2
    view1 = math.e * 0.5 - 0.2
    loss, regr = confidence_regression_loss(pred, conf, gt, valid, alpha=0.2)
    assert loss.item() == pytest.approx(view0 + view1, abs=1e-6)
    assert regr.item() == pytest.approx(0.25 + 0.5, abs=1e-6)


def test_confidence_regression_is_scale_invariant_in_prediction():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, 2, 4, 5, 3, generator=g) + torch.tensor([0, 0, 3.0])
    pred = gt + 0.3 * torch.randn(2, 2, 4, 5, 3, generator=g)
    conf = 1 + torch.rand(2, 2, 4, 5, generator=g)
    valid = torch.rand(2, 2, 4, 5, generator=g) > 0.2
    base, base_regr = confidence_regression_loss(pred, conf, gt, valid)
    for s in (1e-3, 0.37, 12.5):
        loss, regr = confidence_regression_loss(pred * s, conf, gt, valid)
        assert torch.allclose(loss, base, rtol=1e-5) and torch.allclose(regr, base_regr, rtol=1e-5)
    per_sample_scale = torch.tensor([2.0, 5.0])[:, None, None, None, None]  # independent per sample too
    assert torch.allclose(confidence_regression_loss(pred * per_sample_scale, conf, gt, valid)[0], base, rtol=1e-5)
    moved = pred.clone()
    moved[..., 0] += 0.5  # not a scale: the loss must change
    assert not torch.allclose(confidence_regression_loss(moved, conf, gt, valid)[0], base, rtol=1e-3)


def test_confidence_regression_of_batch_is_mean_of_samples():
    g = torch.Generator().manual_seed(2)
    gt, pred = torch.randn(2, 2, 3, 3, 3, generator=g), torch.randn(2, 2, 3, 3, 3, generator=g)
    conf = 1 + torch.rand(2, 2, 3, 3, generator=g)
    valid = torch.ones(2, 2, 3, 3, dtype=torch.bool)
    valid[1, :, :2] = False  # different valid counts per sample
    whole = confidence_regression_loss(pred, conf, gt, valid)[0]
    parts = [confidence_regression_loss(pred[i:i + 1], conf[i:i + 1], gt[i:i + 1], valid[i:i + 1])[0] for i in (0, 1)]
    assert torch.allclose(whole, (parts[0] + parts[1]) / 2, rtol=1e-6)


def test_confidence_regression_rejects_mismatched_shapes():
    pred, conf, gt, valid = hand_case()
    with pytest.raises(OpenLSMError):
        confidence_regression_loss(pred, conf[:, :1], gt, valid)


def test_gt_points_in_first_view_brute_force():
    H, W = 3, 4
    c2w = torch.stack([look_at(torch.tensor([1.0, 2.0, 1.5]), torch.tensor([0.0, 0.0, 1.0])),
                       look_at(torch.tensor([-1.0, 2.5, 1.2]), torch.tensor([0.2, 0.1, 1.0]))])[None]  # [1, 2, 4, 4]
    Ks = make_K(torch.tensor([5.0, 6.0]), torch.tensor([5.0, 6.5]), 2.0, 1.5)[None]
    depths = 1 + torch.rand(1, 2, H, W)
    pts = gt_points_in_first_view(depths, Ks, c2w)  # [1, 2, H, W, 3]
    # view 0 in its own frame: directions (z = 1) times depth
    assert torch.allclose(pts[0, 0], pixel_directions(Ks[0, 0], W, H) * depths[0, 0, ..., None], atol=1e-5)
    # view 1: world points from its own camera, then into view 0's camera frame
    world = transform_points(c2w[0, 1], (pixel_directions(Ks[0, 1], W, H) * depths[0, 1, ..., None]).reshape(-1, 3))
    in_view0 = transform_points(invert_rigid(c2w[0, 0]), world)
    assert torch.allclose(pts[0, 1].reshape(-1, 3), in_view0, atol=1e-5)


def test_target_cameras_recover_scale_and_relative_pose():
    g = torch.Generator().manual_seed(3)
    c2w = torch.stack([look_at(torch.tensor([1.0, 2.0, 1.5]), torch.tensor([0.0, 0.0, 1.0])),
                       look_at(torch.tensor([-1.0, 2.5, 1.2]), torch.tensor([0.2, 0.1, 1.0])),
                       look_at(torch.tensor([0.3, 3.0, 1.8]), torch.tensor([0.0, 0.0, 0.8]))])[None]  # [1, 3]
    gt = torch.randn(1, 200, 3, generator=g) + torch.tensor([0, 0, 3.0])
    pred = 2.5 * gt
    pred[0, :20] += 5 * torch.randn(20, 3, generator=g)  # outliers
    valid = torch.ones(1, 200, dtype=torch.bool)
    out, scale = target_cameras(pred, gt, valid, c2w)
    assert scale.item() == pytest.approx(2.5, rel=1e-3)
    ref = torch.linalg.inv(c2w[0, 0].double()) @ c2w[0].double()  # [3, 4, 4] relative poses
    assert torch.allclose(out[0, :, :3, :3].double(), ref[:, :3, :3], atol=1e-5)
    assert torch.allclose(out[0, :, :3, 3].double(), 2.5 * ref[:, :3, 3], atol=1e-3)
    assert torch.allclose(out[0, 0], torch.eye(4), atol=1e-6)
