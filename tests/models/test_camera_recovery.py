"""Camera recovery from synthetic point maps of known cameras (with noise and outliers)."""

import math

import pytest
import torch

from openlsm.cameras.cameras import invert_rigid, look_at, make_K, unproject_depth
from openlsm.errors import OpenLSMError
from openlsm.models.lsm.camera_recovery import (
    RansacConfig,
    estimate_focal,
    fit_similarity,
    recover_cameras,
    rotation_angle_deg,
    solve_pnp_dlt,
)


def _depth(H, W, g):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64),
                            torch.linspace(0, 1, W, dtype=torch.float64), indexing="ij")
    phase = torch.rand(2, generator=g, dtype=torch.float64) * 3
    return 2 + 0.5 * torch.sin(6 * xx + phase[0]) + 0.4 * torch.cos(5 * yy + phase[1]) \
        + 0.2 * torch.rand(H, W, generator=g, dtype=torch.float64)


def _corrupt(pts, g, noise=0.003, outliers=0.1):
    pts = pts * (1 + noise * torch.randn(pts.shape, generator=g, dtype=pts.dtype))
    mask = torch.rand(pts.shape[:-1], generator=g) < outliers
    junk = torch.randn(pts.shape, generator=g, dtype=pts.dtype) * 3 + torch.tensor([0, 0, 3.0], dtype=pts.dtype)
    junk[..., 2] = junk[..., 2].abs() * 0.1  # includes points close to z = 0: large lever on a focal fit
    return torch.where(mask[..., None], junk, pts)


def _scene(H, W, f, c2w2, seed, f2=None):
    g = torch.Generator().manual_seed(seed)
    K1 = make_K(f, f, W / 2, H / 2).double()
    K2 = make_K(f2 or f, f2 or f, W / 2, H / 2).double()
    eye = torch.eye(4, dtype=torch.float64)
    p1 = unproject_depth(_depth(H, W, g), K1, eye)
    d2 = _depth(H, W, g)
    p2 = unproject_depth(d2, K2, c2w2)  # view 2 in view 1's frame
    p2_own = unproject_depth(d2, K2, eye)  # view 2 in its own frame
    return _corrupt(p1, g).float(), _corrupt(p2, g).float(), _corrupt(p2_own, g).float()


C2W2 = look_at(torch.tensor([0.4, -0.1, 0.1]), torch.tensor([0.1, 0.0, 2.5]), torch.tensor([0.0, -1.0, 0.0])).double()


@pytest.mark.parametrize("H,W,f", [(48, 64, 70.0), (64, 48, 55.0)])
def test_recovers_focal_and_pose(H, W, f):
    p1, p2, _ = _scene(H, W, f, C2W2, seed=H)
    rec = recover_cameras(p1, p2)
    assert abs(rec.focals[0].item() / f - 1) < 0.01
    assert rotation_angle_deg(rec.cameras.c2w[1, :3, :3].double(), C2W2[:3, :3]) < 0.5
    assert (rec.cameras.c2w[1, :3, 3].double() - C2W2[:3, 3]).norm() < 0.02 * C2W2[:3, 3].norm()
    assert torch.equal(rec.cameras.c2w[0], torch.eye(4))
    assert torch.allclose(rec.cameras.Ks[0], make_K(rec.focals[0], rec.focals[0], W / 2, H / 2))
    assert rec.cameras.width == W and rec.cameras.height == H
    # About 10% outliers were injected: confidences are the inlier fractions.
    assert (rec.confidence > 0.8).all() and (rec.confidence < 0.95).all()


def test_batched_with_own_frame_focal_and_determinism():
    H, W = 48, 64
    c2w_b = look_at(torch.tensor([-0.3, 0.2, -0.2]), torch.tensor([0.0, 0.1, 2.0]),
                    torch.tensor([0.1, -1.0, 0.0])).double()
    s0, s1 = _scene(H, W, 60.0, C2W2, seed=1, f2=80.0), _scene(H, W, 75.0, c2w_b, seed=2, f2=65.0)
    p1, p2, own = (torch.stack([a, b]) for a, b in zip(s0, s1))
    conf = torch.ones(2, H, W)
    rec = recover_cameras(p1, p2, conf, conf, pts3d_2_own=own)
    expect_f = torch.tensor([[60.0, 80.0], [75.0, 65.0]])
    assert ((rec.focals / expect_f - 1).abs() < 0.01).all()
    for b, c2w in enumerate((C2W2, c2w_b)):
        assert rotation_angle_deg(rec.cameras.c2w[b, 1, :3, :3].double(), c2w[:3, :3]) < 0.5
    again = recover_cameras(p1, p2, conf, conf, pts3d_2_own=own)
    assert torch.equal(again.cameras.c2w, rec.cameras.c2w)  # seeded RANSAC


def test_focal_fit_clean_and_robust():
    H, W, f = 24, 32, 40.0
    p = unproject_depth(torch.rand(H, W, dtype=torch.float64) + 1, make_K(f, f, W / 2, H / 2).double(),
                        torch.eye(4, dtype=torch.float64))
    assert abs(estimate_focal(p[None]).item() - f) < 1e-9
    bad = p.clone()
    bad[0, 0] = torch.tensor([5.0, 5.0, 1e-4], dtype=torch.float64)  # a huge-lever outlier
    bad[3:6, 3:6] = torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64)
    assert abs(estimate_focal(bad[None]).item() / f - 1) < 1e-3


def test_dlt_exact_on_clean_points():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 8, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 5.0], dtype=torch.float64)
    R_true = look_at(torch.zeros(3), torch.tensor([0.3, 0.1, 1.0]), torch.tensor([0.0, -1.0, 0.0])).double()
    w2c = invert_rigid(R_true)
    pc = X @ w2c[:3, :3].T + w2c[:3, 3] + torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    R, t = solve_pnp_dlt(X, pc[..., :2] / pc[..., 2:])
    assert torch.allclose(R, w2c[:3, :3].expand(3, 3, 3), atol=1e-8)
    assert torch.allclose(t, (w2c[:3, 3] + torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)).expand(3, 3),
                          atol=1e-8)


def test_rotation_angle_helper():
    c, s = math.cos(0.1), math.sin(0.1)
    Rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float64)
    assert abs(rotation_angle_deg(torch.eye(3, dtype=torch.float64), Rz).item() - math.degrees(0.1)) < 1e-9


def _plane_depth(H, W, K, c2w, normal, offset):
    """z-depth of the plane n.X = offset seen from camera c2w -> [H, W]."""
    from openlsm.cameras.cameras import pixel_directions
    dirs = pixel_directions(K, W, H) @ c2w[:3, :3].T  # world rays with camera z = 1
    return (offset - normal @ c2w[:3, 3]) / (dirs @ normal)


def test_procrustes_handles_planar_scene_and_scale_change():
    H, W, f = 48, 64, 60.0
    K = make_K(f, f, W / 2, H / 2).double()
    eye = torch.eye(4, dtype=torch.float64)
    normal = torch.tensor([0.1, -0.2, 1.0], dtype=torch.float64)
    normal = normal / normal.norm()
    g = torch.Generator().manual_seed(7)
    p1 = unproject_depth(_plane_depth(H, W, K, eye, normal, 3.0), K, eye)
    d2 = _plane_depth(H, W, K, C2W2, normal, 3.0)
    p2 = unproject_depth(d2, K, C2W2)
    own = unproject_depth(d2, K, eye) * 1.7  # the swapped run has its own scale
    p1, p2, own = (_corrupt(p, g).float() for p in (p1, p2, own))
    rec = recover_cameras(p1, p2, pts3d_2_own=own, method="procrustes")
    assert ((rec.focals / f - 1).abs() < 0.01).all()
    assert rotation_angle_deg(rec.cameras.c2w[1, :3, :3].double(), C2W2[:3, :3]) < 0.5
    assert (rec.cameras.c2w[1, :3, 3].double() - C2W2[:3, 3]).norm() < 0.02 * C2W2[:3, 3].norm()
    assert 0.8 < rec.confidence[1] < 0.95
    with pytest.raises(OpenLSMError, match="pts3d_2_own"):
        recover_cameras(p1, p2, method="procrustes")


def test_similarity_exact():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    R = look_at(torch.zeros(3), torch.tensor([0.5, -0.3, 1.0]), torch.tensor([0.0, -1.0, 0.2])).double()[:3, :3]
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    dst = 2.5 * src @ R.T + t
    s_, R_, t_ = fit_similarity(src, dst)
    assert torch.allclose(s_, torch.full((2,), 2.5, dtype=torch.float64))
    assert torch.allclose(R_, R.expand(2, 3, 3), atol=1e-10) and torch.allclose(t_, t.expand(2, 3), atol=1e-10)


def test_bad_inputs():
    with pytest.raises(OpenLSMError):
        recover_cameras(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 5, 3))
    with pytest.raises(OpenLSMError, match="at least"):
        recover_cameras(torch.ones(2, 2, 3), torch.ones(2, 2, 3), ransac=RansacConfig(sample_size=6))
