import math

import pytest
import torch

from openlsm.cameras import (
    Cameras,
    invert_rigid,
    look_at,
    make_K,
    opencv_to_opengl,
    opengl_to_opencv,
    project,
    quat_to_rotmat,
    rotmat_to_quat,
    unproject_depth,
)
from openlsm.cameras.io import (
    read_cameras_json,
    read_colmap_text,
    read_transforms_json,
    write_cameras_json,
    write_colmap_text,
    write_transforms_json,
)
from openlsm.cameras.paths import ellipse_path, interpolate_poses, pull_back, slerp
from openlsm.errors import OpenLSMError


def random_rotations(n, seed=0, dtype=torch.float64):
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return quat_to_rotmat(q)


def random_cameras(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, :3, :3] = random_rotations(n, seed).float()
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g)
    K = make_K(torch.rand(n, generator=g) * 100 + 100, torch.rand(n, generator=g) * 100 + 100,
               torch.rand(n, generator=g) * 10 + 30, torch.rand(n, generator=g) * 10 + 20)
    return Cameras(K, c2w, 64, 48)


def test_rotation_quaternion_round_trip_and_orthonormal():
    R = random_rotations(100)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(100, dtype=R.dtype))
    q = rotmat_to_quat(R)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(quat_to_rotmat(q), R, atol=1e-12)
    # known case: 90 deg about z maps x to y
    qz = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    assert torch.allclose(quat_to_rotmat(qz) @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)


def test_invert_rigid_matches_general_inverse():
    c = random_cameras(5)
    assert torch.allclose(invert_rigid(c.c2w), torch.linalg.inv(c.c2w), atol=1e-5)


def test_projection_of_known_point_and_pixel_centre_convention():
    K = make_K(100.0, 100.0, 32.0, 24.0)
    cam = Cameras(K, torch.eye(4), 64, 48)
    uv, z = project(torch.tensor([[0.2, -0.1, 2.0]]), cam.Ks, cam.viewmats)
    assert torch.allclose(uv, torch.tensor([[32 + 100 * 0.1, 24 - 100 * 0.05]]))
    assert torch.allclose(z, torch.tensor([2.0]))
    # the ray of pixel (i=0, j=0) passes through (0.5, 0.5)
    o, d = cam.rays()
    uv0, _ = project((o + d)[0, 0][None], cam.Ks, cam.viewmats)
    assert torch.allclose(uv0, torch.tensor([[0.5, 0.5]]), atol=1e-5)
    assert torch.allclose(d.norm(dim=-1), torch.ones(48, 64))


def test_unproject_then_project_is_identity():
    cams = random_cameras(3)
    depth = torch.rand(3, 48, 64) * 3 + 0.5
    pts = unproject_depth(depth, cams.Ks, cams.c2w)  # [3, H, W, 3]
    uv, z = project(pts.reshape(3, -1, 3), cams.Ks, cams.viewmats)
    v, u = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    assert torch.allclose(z, depth.reshape(3, -1), atol=1e-4)
    assert torch.allclose(uv[0], torch.stack([u, v], -1).reshape(-1, 2), atol=2e-3)


def test_opengl_round_trip_and_axes():
    c = random_cameras(4)
    assert torch.allclose(opengl_to_opencv(opencv_to_opengl(c.c2w)), c.c2w)
    gl = opencv_to_opengl(c.c2w)
    # OpenGL camera looks down its -z, which is OpenCV's +z
    assert torch.allclose(-gl[:, :3, 2], c.c2w[:, :3, 2])
    assert torch.allclose(-gl[:, :3, 1], c.c2w[:, :3, 1])


def test_look_at_points_the_optical_axis_at_target_with_image_up():
    c2w = look_at(torch.tensor([1.0, -3.0, 1.5]), torch.tensor([0.0, 0.0, 1.0]))
    cam = Cameras(make_K(50.0, 50.0, 32.0, 24.0), c2w, 64, 48)
    uv, z = project(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]), cam.Ks, cam.viewmats)
    assert torch.allclose(uv[0], torch.tensor([32.0, 24.0]), atol=1e-4) and z[0] > 0
    assert uv[1, 1] < uv[0, 1]  # world up (+z) appears higher in the image (smaller v)


@pytest.mark.parametrize("fmt", ["transforms", "colmap", "cameras"])
def test_file_round_trips(tmp_path, fmt):
    cams = random_cameras(4)
    names = [f"img_{i}.png" for i in range(4)]
    if fmt == "transforms":
        write_transforms_json(tmp_path / "t.json", cams, names)
        back, nm = read_transforms_json(tmp_path / "t.json")
    elif fmt == "colmap":
        write_colmap_text(tmp_path / "colmap", cams, names)
        back, nm = read_colmap_text(tmp_path / "colmap")
    else:
        write_cameras_json(tmp_path / "c.json", cams, names)
        back, nm = read_cameras_json(tmp_path / "c.json")
    assert nm == names and (back.width, back.height) == (64, 48)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-5)
    assert torch.allclose(back.Ks, cams.Ks, atol=1e-4)


def test_cross_format_consistency(tmp_path):
    """A point projects to the same pixel whether the cameras came through nerfstudio or COLMAP files."""
    cams = random_cameras(2)
    write_transforms_json(tmp_path / "t.json", cams)
    write_colmap_text(tmp_path / "colmap", cams)
    a, _ = read_transforms_json(tmp_path / "t.json")
    b, _ = read_colmap_text(tmp_path / "colmap")
    pts = cams.c2w[:, None, :3, 3] + cams.c2w[:, None, :3, 2] * 2  # 2 m in front of each camera
    uva, _ = project(pts, a.Ks, a.viewmats)
    uvb, _ = project(pts, b.Ks, b.viewmats)
    assert torch.allclose(uva, uvb, atol=1e-3)
    assert torch.allclose(uva[:, 0], cams.Ks[:, :2, 2], atol=1e-3)


def test_colmap_w2c_quaternion_convention(tmp_path):
    """images.txt stores world-to-camera: a camera at (0,0,-5) looking down +z has t = (0,0,5) and q = identity."""
    c2w = torch.eye(4)
    c2w[2, 3] = -5
    write_colmap_text(tmp_path, Cameras(make_K(10.0, 10.0, 5.0, 5.0), c2w[None], 10, 10))
    line = next(ln for ln in (tmp_path / "images.txt").read_text().splitlines() if ln and not ln.startswith("#"))
    vals = [float(v) for v in line.split()[1:8]]
    assert vals == pytest.approx([1, 0, 0, 0, 0, 0, 5])


def test_malformed_camera_files_raise_clear_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OpenLSMError, match="not valid JSON"):
        read_transforms_json(tmp_path / "bad.json")
    (tmp_path / "nof.json").write_text('{"w": 4}')
    with pytest.raises(OpenLSMError, match="frames"):
        read_transforms_json(tmp_path / "nof.json")
    (tmp_path / "cameras.txt").write_text("1 OPENCV 10 10 5 5 5 5 0.1 0 0 0\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    with pytest.raises(OpenLSMError, match="distortion"):
        read_colmap_text(tmp_path)


def test_slerp_and_interpolation_hit_keyframes_and_stay_rigid():
    c = random_cameras(3)
    path = interpolate_poses(c.c2w, frames=21)
    assert torch.allclose(path[0], c.c2w[0], atol=1e-5) and torch.allclose(path[-1], c.c2w[2], atol=1e-5)
    assert torch.allclose(path[10], c.c2w[1], atol=1e-5)
    R = path[:, :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)
    # slerp midpoint of identity and 90 deg about z is 45 deg about z
    q0 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    q1 = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    mid = slerp(q0, q1, torch.tensor([0.5], dtype=torch.float64))[0]
    assert torch.allclose(mid, torch.tensor([math.cos(math.pi / 8), 0, 0, math.sin(math.pi / 8)],
                                            dtype=torch.float64))


def test_ellipse_path_looks_at_focus_and_pull_back():
    eyes = torch.tensor([[-0.3, -2.0, 1.5], [0.3, -2.0, 1.5]])
    target = torch.tensor([0.0, 0.0, 1.0])
    c2ws = look_at(eyes, target.expand(2, 3))
    path = ellipse_path(c2ws, frames=12)
    assert path.shape == (12, 4, 4)
    cams = Cameras(make_K(50.0, 50.0, 32.0, 24.0), path, 64, 48)
    uv, z = project(target.expand(12, 1, 3), cams.Ks, cams.viewmats)
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 24.0]).expand(12, 2), atol=1e-3) and (z > 0).all()
    pb = pull_back(c2ws[0], 1.0, 5)
    assert torch.allclose((pb[-1, :3, 3] - c2ws[0, :3, 3]).norm(), torch.tensor(1.0))
    assert ((pb[-1, :3, 3] - c2ws[0, :3, 3]) @ c2ws[0, :3, 2]) < 0


def test_rescale_and_crop_keep_rays():
    cam = random_cameras(1)[0]
    half = cam.rescale(32, 24)
    # pixel (0,0) of the half-size image covers pixels (0..1, 0..1): its centre is at full-res (1, 1)
    _, d_half = half.rays()
    uv, _ = project((cam.centers + d_half[0, 0])[None], cam.Ks, cam.viewmats)
    assert torch.allclose(uv[0], torch.tensor([1.0, 1.0]), atol=1e-3)
    crop = cam.crop(10, 5, 20, 20)
    _, d_crop = crop.rays()
    _, d_full = cam.rays()
    assert torch.allclose(d_crop[0, 0], d_full[5, 10], atol=1e-6)
