"""Generic folders (nerfstudio transforms.json, COLMAP text, Open3D RGB-D) and the real rgbd_livingroom frames."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_fakes import (
    assert_reprojects,
    integer_centre_K,
    reprojection_errors,
    save_image,
    save_u16,
    scene_frames,
)
from scipy.spatial.transform import Rotation

from openlsm.cameras import invert_rigid
from openlsm.data.loaders import FolderDataset, Open3DRGBD, collate, load_dataset, load_folder
from openlsm.errors import OpenLSMError

H, W = 30, 40
LIVINGROOM = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "rgbd_livingroom"


def write_frames(root, n, depth_ext=".png", seed=0):
    K, c2ws, renders = scene_frames(n, H, W, seed=seed)
    for k, r in enumerate(renders):
        save_image(root / "images" / f"frame_{k:03d}.png", r["rgb"])
        if depth_ext == ".png":
            save_u16(root / "depth" / f"frame_{k:03d}.png", r["depth"] * 1000)
        elif depth_ext == ".npy":
            (root / "depths").mkdir(parents=True, exist_ok=True)
            np.save(root / "depths" / f"frame_{k:03d}.npy", r["depth"].astype(np.float32))
        save_u16(root / "labels" / f"frame_{k:03d}.png", r["face"] + 1)
    return K, c2ws


def test_nerfstudio_transforms_opengl_poses(tmp_path):
    K, c2ws = write_frames(tmp_path, 5)
    frames = []
    for k, c2w in enumerate(c2ws):
        gl = c2w.copy()
        gl[:3, 1:3] *= -1  # OpenGL camera axes: y up, z backwards
        frames.append({"file_path": f"images/frame_{k:03d}.png", "transform_matrix": gl.tolist(),
                       "depth_file_path": f"depth/frame_{k:03d}.png"})
    doc = {"camera_model": "OPENCV", "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": W, "h": H,
           "k1": 0.0, "frames": frames[::-1]}  # listed out of order: frames are sorted by name
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    ds = load_folder(tmp_path)
    assert isinstance(ds, FolderDataset) and ds.source == "transforms"
    assert len(ds) == 2 * 3  # i, i+2 with target i+1, both orders
    s = ds[0]
    assert s["frames"] == ["frame_000", "frame_002", "frame_001"]
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[[0, 2, 1]], dtype=torch.float32), atol=1e-5)
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)
    assert s["labels"].shape == (3, H, W) and int(s["labels"].min()) >= 1
    assert_reprojects(s, 0, 1, tol=0.01)
    assert_reprojects(s, 0, 2, tol=0.01)

    doc["k1"] = 0.1
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(OpenLSMError, match="lens distortion"):
        load_folder(tmp_path)
    doc["k1"], doc["frames"][0]["file_path"] = 0.0, "images/missing.png"
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(OpenLSMError, match=r"missing file: .*images/missing\.png"):
        load_folder(tmp_path)


def write_colmap(folder: Path, K, c2ws, names):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(f"# cameras\n1 PINHOLE {W} {H} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    lines = ["# images"]
    for k, (c2w, name) in enumerate(zip(c2ws, names)):
        R = c2w[:3, :3].T  # world-to-camera
        t = (-R @ c2w[:3, 3]).tolist()
        x, y, z, w = Rotation.from_matrix(R).as_quat().tolist()  # scipy: xyzw; COLMAP: wxyz
        lines += [f"{k + 1} {w!r} {x!r} {y!r} {z!r} {t[0]!r} {t[1]!r} {t[2]!r} 1 {name}",
                  "1.0 2.0 -1"]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


def test_colmap_text_with_metric_npy_depth(tmp_path):
    K, c2ws = write_frames(tmp_path, 4, depth_ext=".npy", seed=2)
    write_colmap(tmp_path / "sparse" / "0", K, c2ws, [f"frame_{k:03d}.png" for k in range(4)])
    ds = load_dataset(f"folder:{tmp_path}?max_gap=1&step=1", views=2)
    assert ds.source == "colmap" and len(ds) == 2 * 3
    s = ds[0]
    assert s["images"].shape == (2, 3, H, W) and s["frames"] == ["frame_000", "frame_001"]
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[[0, 1]], dtype=torch.float32), atol=1e-5)
    assert_reprojects(s, 0, 1, tol=0.01)  # .npy depth read as metres
    assert_reprojects(s, 1, 0, tol=0.01)


def test_folder_without_depth_and_resized(tmp_path):
    K, c2ws = write_frames(tmp_path, 3, depth_ext=None)
    write_colmap(tmp_path, K, c2ws, [f"frame_{k:03d}.png" for k in range(3)])
    s = FolderDataset(tmp_path, resolution=(16, 24))[0]
    assert s["depths"].shape == (3, 16, 24) and not s["valid"].any() and (s["depths"] == 0).all()
    with pytest.raises(OpenLSMError, match="no transforms.json and no COLMAP"):
        FolderDataset(tmp_path / "images")


def write_open3d(root, n, seed=5):
    K, c2ws, renders = scene_frames(n, H, W, seed=seed)
    for k, r in enumerate(renders):
        save_image(root / "color" / f"{k:05d}.jpg", r["rgb"])
        save_u16(root / "depth" / f"{k:05d}.png", r["depth"] * 1000)
    log = []
    for k, c2w in enumerate(c2ws):
        log.append(f"{k} {k} {k + 1}")
        log += [" ".join(repr(v) for v in row) for row in c2w.tolist()]
    (root / "trajectory.log").write_text("\n".join(log) + "\n")
    Ko = integer_centre_K(K)
    (root / "intrinsics.json").write_text(json.dumps({"width": W, "height": H,
                                                      "intrinsic_matrix": Ko.T.reshape(-1).tolist()}))
    return K, c2ws


def test_open3d_fake_folder(tmp_path):
    K, c2ws = write_open3d(tmp_path, 5)
    ds = load_dataset(str(tmp_path))  # bare path: layout detected
    assert isinstance(ds, Open3DRGBD)
    s = ds[0]
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)  # column-major, +0.5
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[[0, 2, 1]], dtype=torch.float32), atol=1e-5)
    assert_reprojects(s, 0, 1, tol=0.01)
    lines = (tmp_path / "trajectory.log").read_text().splitlines()
    (tmp_path / "trajectory.log").write_text("\n".join(lines[:10]))
    with pytest.raises(OpenLSMError, match="2 poses for 5 colour images"):
        Open3DRGBD(tmp_path)
    (tmp_path / "trajectory.log").write_text("\n".join(lines[:7]))
    with pytest.raises(OpenLSMError, match="blocks of 5 lines"):
        Open3DRGBD(tmp_path)


@pytest.mark.skipif(not LIVINGROOM.is_dir(), reason="shared rgbd_livingroom frames not present")
def test_real_rgbd_livingroom_trajectory_convention():
    ds = load_dataset(f"folder:{LIVINGROOM}?max_gap=2&step=2", views=2)
    assert isinstance(ds, Open3DRGBD) and len(ds) == 6
    s = ds[0]
    assert s["frames"] == ["00000", "00002"] and s["images"].shape == (2, 3, 480, 640)
    assert torch.allclose(s["Ks"][0], torch.tensor([[525.0, 0, 320.0], [0, 525.0, 240.0], [0, 0, 1]]))
    assert abs(float(s["c2w"][0, 0, 3]) + 0.31057997) < 1e-6 and abs(float(s["c2w"][1, 2, 3]) - 2.12478944) < 1e-6
    assert 0.8 < float(s["valid"].double().mean()) < 0.95 and float(s["depths"].max()) < 5
    # The sensor-noise depth of frame 0, moved by the trajectory into frame 2, agrees with frame 2's depth.
    assert_reprojects(s, 0, 1, tol=0.02, frac=0.9, min_points=100_000)
    assert_reprojects(s, 1, 0, tol=0.02, frac=0.9, min_points=100_000)
    for wrong in (invert_rigid(s["c2w"]), s["c2w"].flip(0)):  # w2c reading, swapped frames
        err = reprojection_errors(dict(s, c2w=wrong), 0, 1)
        assert float((err < 0.02).double().mean()) < 0.7
    small = load_dataset(f"folder:{LIVINGROOM}?max_gap=4&step=4", resolution=(96, 128))
    t = small[0]
    assert t["images"].shape == (3, 3, 96, 128) and t["frames"] == ["00000", "00004", "00002"]
    assert_reprojects(t, 0, 1, tol=0.03, frac=0.85)


def test_collate_keeps_names(tmp_path):
    write_open3d(tmp_path, 4)
    ds = Open3DRGBD(tmp_path, max_gap=1, step=1, views=2)
    batch = collate([ds[0], ds[1]])
    assert batch["images"].shape == (2, 2, 3, H, W) and batch["scene"] == [tmp_path.name] * 2
    assert batch["frames"] == [["00000", "00001"], ["00001", "00002"]] and batch["index"].tolist() == [0, 1]
