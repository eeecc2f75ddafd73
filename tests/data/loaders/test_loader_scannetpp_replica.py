"""ScanNet++ (LSM render layout) and Replica (NICE-SLAM and Semantic-NeRF layouts), on fake scenes written here."""

import json
import math

import numpy as np
import pytest
import torch
from loader_fakes import (
    assert_reprojects,
    integer_centre_K,
    render,
    save_image,
    save_npz,
    save_u16,
    scene_frames,
)

from openlsm.data.loaders import ReplicaNiceSlam, ReplicaSemanticNerf, ScanNetPP, load_dataset, load_replica
from openlsm.errors import OpenLSMError

H, W = 30, 40


def write_scannetpp(root, name, n):
    K, c2ws, renders = scene_frames(n, H, W, seed=4)
    dslr = root / name / "dslr"
    for k, (c2w, r) in enumerate(zip(c2ws, renders)):
        stem = f"DSC{k:05d}"
        save_image(dslr / "rgb_resized_undistorted" / f"{stem}.JPG", r["rgb"])
        save_u16(dslr / "render_depth" / f"{stem}.png", r["depth"] * 1000)
        save_npz(dslr / "camera" / f"{stem}.npz", intrinsic=K, extrinsic=c2w)  # COLMAP K: +0.5 convention
        mask = np.full((H, W), 255, np.uint8)
        mask[:, : W // 4] = 0
        save_u16(dslr / "mask_resized_undistorted" / f"{stem}.png", mask)
    return K, c2ws


def test_scannetpp_frames_pairs_and_poses(tmp_path):
    K, c2ws = write_scannetpp(tmp_path, "0a5c013435", 9)
    ds = ScanNetPP(tmp_path, max_frames=5, max_gap=2, step=1)
    assert [f.id for f in ds.scenes[0].frames] == ["DSC00000", "DSC00002", "DSC00004", "DSC00006", "DSC00008"]
    assert len(ds) == 2 * (4 + 3)  # gaps 1 and 2 over 5 frames, both orders
    s = ds[0]
    ids = [int(f[3:]) for f in s["frames"]]
    pos = [i // 2 for i in ids]  # positions in the subsampled frame list
    assert 0 < abs(pos[0] - pos[1]) <= 2 and pos[2] == (pos[0] + pos[1]) // 2
    assert s["images"].shape == (3, 3, H, W) and "labels" not in s
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[ids], dtype=torch.float32), atol=1e-5)
    assert s["valid"].all()  # masks are ignored by default, as in LSM
    assert_reprojects(s, 0, 1, tol=0.01)
    masked = ScanNetPP(tmp_path, max_frames=5, max_gap=2, step=1, use_mask=True)[0]
    assert not masked["valid"][:, :, : W // 4].any() and masked["valid"][:, :, W // 4:].all()
    assert (masked["depths"][:, :, : W // 4] == 0).all()


def test_scannetpp_errors(tmp_path):
    write_scannetpp(tmp_path, "scene", 4)
    with pytest.raises(OpenLSMError, match="every scene"):
        ScanNetPP(tmp_path, split="val")
    (tmp_path / "scene" / "dslr" / "render_depth" / "DSC00002.png").unlink()
    with pytest.raises(OpenLSMError, match=r"missing file: .*render_depth/DSC00002\.png"):
        ScanNetPP(tmp_path)
    with pytest.raises(OpenLSMError, match="ScanNet\\+\\+ render layout"):
        ScanNetPP(tmp_path / "scene")


# --- Replica -------------------------------------------------------------------------------------------------------

NICE_SCALE = 6553.5


def write_nice_slam(root, scenes=("room0", "office1"), n=6):
    truth = {}
    K, _, _ = scene_frames(1, H, W)
    Kf = integer_centre_K(K)
    cam = {"w": W, "h": H, "fx": Kf[0, 0], "fy": Kf[1, 1], "cx": Kf[0, 2], "cy": Kf[1, 2], "scale": NICE_SCALE}
    root.mkdir(parents=True, exist_ok=True)
    (root / "cam_params.json").write_text(json.dumps({"camera": cam}))
    for s, name in enumerate(scenes):
        _, c2ws, renders = scene_frames(n, H, W, seed=20 + s)
        res = root / name / "results"
        for k, r in enumerate(renders):
            save_image(res / f"frame{k:06d}.jpg", r["rgb"])
            save_u16(res / f"depth{k:06d}.png", r["depth"] * NICE_SCALE)
        (root / name / "traj.txt").write_text("\n".join(" ".join(f"{v:.17g}" for v in c.reshape(-1)) for c in c2ws))
        truth[name] = c2ws
    return K, truth


def test_replica_nice_slam(tmp_path):
    K, truth = write_nice_slam(tmp_path / "Replica")
    ds = load_replica(tmp_path / "Replica", frame_stride=1, max_gap=2, step=2)
    assert isinstance(ds, ReplicaNiceSlam)
    assert [s.name for s in ds.scenes] == ["office1", "room0"]
    assert len(ds) == 2 * (2 * 4)
    s = ds[0]
    assert s["scene"] == "office1" and s["frames"] == ["000000", "000002", "000001"]
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)
    assert torch.allclose(s["c2w"], torch.tensor(truth["office1"][[0, 2, 1]], dtype=torch.float32), atol=1e-5)
    assert_reprojects(s, 0, 1, tol=0.01)  # depth scale 6553.5 and traj.txt c2w read right
    one = ReplicaNiceSlam(tmp_path / "Replica" / "room0", frame_stride=2, max_gap=2, step=1)  # a single scene
    assert [f.id for f in one.scenes[0].frames] == ["000000", "000002", "000004"]
    assert ds.scenes[0].frames[0].depth_scale == NICE_SCALE


def test_replica_nice_slam_errors(tmp_path):
    write_nice_slam(tmp_path / "R", scenes=("room0",), n=4)
    traj = tmp_path / "R" / "room0" / "traj.txt"
    traj.write_text("\n".join(traj.read_text().splitlines()[:3]))
    with pytest.raises(OpenLSMError, match="no pose for frame"):
        ReplicaNiceSlam(tmp_path / "R", frame_stride=1, max_gap=1, step=1)
    traj.write_text("1 2 3\n")
    with pytest.raises(OpenLSMError, match="16 numbers"):
        ReplicaNiceSlam(tmp_path / "R")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpenLSMError, match="no Replica scene"):
        load_replica(tmp_path / "empty")


def test_replica_semantic_nerf_layout(tmp_path):
    """Semantic-NeRF: 90 degree hfov, centred principal point, depth in mm, raw class ids."""
    n, seq = 5, tmp_path / "room_0" / "Sequence_1"
    f = 0.5 * W / math.tan(math.radians(45))
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])  # openlsm convention of (W-1)/2 integer centres
    _, c2ws, _ = scene_frames(n, H, W, seed=7)
    for k, c2w in enumerate(c2ws):
        r = render(K, c2w, H, W)
        save_image(seq / "rgb" / f"rgb_{k}.png", r["rgb"])
        save_u16(seq / "depth" / f"depth_{k}.png", r["depth"] * 1000)
        save_u16(seq / "semantic_class" / f"semantic_class_{k}.png", r["face"] + 10)
    (seq / "traj_w_c.txt").write_text("\n".join(" ".join(map(repr, c.reshape(-1).tolist())) for c in c2ws))
    ds = load_dataset(f"replica:{tmp_path}?frame_stride=1&max_gap=2&step=2")
    assert isinstance(ds, ReplicaSemanticNerf) and ds.scenes[0].name == "room_0/Sequence_1"
    s = ds[0]
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[[0, 2, 1]], dtype=torch.float32), atol=1e-5)
    assert s["labels"].dtype == torch.int64 and set(s["labels"].unique().tolist()) <= set(range(10, 16))
    assert_reprojects(s, 0, 1, tol=0.01)
