"""ScanNet processed layout (LSM training) and the LSM ScanNet test layout, on fake scenes written here."""

import json

import numpy as np
import pytest
import torch
from loader_fakes import (
    FACE_NAMES,
    assert_reprojects,
    integer_centre_K,
    reprojection_errors,
    save_image,
    save_npz,
    save_u16,
    scene_frames,
)

from openlsm.cameras import invert_rigid
from openlsm.data.loaders import (
    LSM_CLASSES,
    ScanNetProcessed,
    ScanNetTest,
    load_dataset,
    lsm_label_lut,
    view_tuples,
)
from openlsm.errors import OpenLSMError

H, W = 36, 48


def write_processed(root, frames_per_scene: dict, ext=".png"):
    truth = {}
    for s, (name, n) in enumerate(frames_per_scene.items()):
        K, c2ws, renders = scene_frames(n, H, W, seed=s)
        for k, (c2w, r) in enumerate(zip(c2ws, renders)):
            save_image(root / name / "color" / f"{k:06d}{ext}", r["rgb"])
            save_u16(root / name / "depth" / f"{k:06d}.png", r["depth"] * 1000)
            save_npz(root / name / "pose" / f"{k:06d}.npz", camera_intrinsics=integer_centre_K(K), camera_pose=c2w)
        truth[name] = (K, c2ws)
    return truth


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet_processed")
    truth = write_processed(root, {"scene0002_00": 12, "scene0000_00": 7, "scene0001_00": 6})
    return root, truth


def test_processed_split_pairs_and_views(processed):
    root, _ = processed
    train = ScanNetProcessed(root, split="train", val_scenes=1)
    val = ScanNetProcessed(root, split="val", val_scenes=1)
    assert [s.name for s in train.scenes] == ["scene0000_00", "scene0001_00"]
    assert [s.name for s in val.scenes] == ["scene0002_00"]
    assert len(train) == len(view_tuples(7)) + len(view_tuples(6)) and len(val) == len(view_tuples(12))
    seen = set()
    for k in range(len(val)):
        s = val[k]
        i, j, m = (int(f) for f in s["frames"])
        assert 0 < abs(i - j) <= 30 and abs(i - j) % 5 == 0 and m == (i + j) // 2
        seen.add((i, j))
        assert s["scene"] == "scene0002_00" and s["index"] == k
    assert len(seen) == len(val)  # every sample a different pair


def test_processed_sample_structure_and_pose_convention(processed):
    root, truth = processed
    ds = ScanNetProcessed(root, split="val", val_scenes=1)
    s = ds[0]
    V = 3
    assert s["images"].shape == (V, 3, H, W) and s["images"].dtype == torch.float32
    assert s["depths"].shape == s["valid"].shape == (V, H, W) and s["valid"].dtype == torch.bool
    assert 0 <= float(s["images"].min()) and float(s["images"].max()) <= 1
    assert "labels" not in s
    K, c2ws = truth["scene0002_00"]
    ids = [int(f) for f in s["frames"]]
    assert torch.allclose(s["Ks"], torch.tensor(K, dtype=torch.float32).expand(V, 3, 3), atol=1e-4)
    assert torch.allclose(s["c2w"], torch.tensor(c2ws[ids], dtype=torch.float32), atol=1e-5)
    for b in (1, 2):
        assert_reprojects(s, 0, b, tol=0.01)
    # The check is discriminative: the same data read with w2c instead of c2w does not reproject.
    wrong = dict(s, c2w=invert_rigid(s["c2w"]))
    assert float((reprojection_errors(wrong, 0, 1) < 0.01).double().mean()) < 0.5


def test_processed_resized_and_random_crops(processed):
    root, _ = processed
    ds = ScanNetProcessed(root, split="val", val_scenes=1, resolution=(24, 24), random_crop=True, seed=3)
    s = ds[5]
    assert s["images"].shape == (3, 3, 24, 24) and s["depths"].shape == (3, 24, 24)
    assert_reprojects(s, 0, 1, tol=0.02, frac=0.85, min_points=30)
    assert torch.equal(ds[5]["Ks"], s["Ks"])  # deterministic per (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["Ks"], s["Ks"])  # a new crop next epoch


def test_processed_errors(tmp_path):
    with pytest.raises(OpenLSMError, match="missing folder"):
        ScanNetProcessed(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpenLSMError, match="ScanNet processed layout"):
        ScanNetProcessed(tmp_path / "empty")
    root = tmp_path / "broken"
    write_processed(root, {"scene0000_00": 6}, ext=".jpg")
    assert len(ScanNetProcessed(root, split="all")) == len(view_tuples(6))  # colour as jpg is accepted
    (root / "scene0000_00" / "depth" / "000003.png").unlink()
    with pytest.raises(OpenLSMError, match=r"missing file: .*depth/000003\.png"):
        ScanNetProcessed(root, split="all")
    root2 = tmp_path / "badpose"
    write_processed(root2, {"scene0000_00": 6})
    save_npz(root2 / "scene0000_00" / "pose" / "000000.npz", intrinsics=np.eye(3), c2w=np.eye(4))
    ds = ScanNetProcessed(root2, split="all")
    with pytest.raises(OpenLSMError, match=r"000000\.npz: missing array"):
        ds[0]
    with pytest.raises(OpenLSMError, match="no 3-view samples"):
        ScanNetProcessed(root2, split="all", max_gap=30, step=10)  # 6 frames: no pair 10 apart


# --- LSM ScanNet test layout -------------------------------------------------------------------------------------

RAW_IDS = {"wall": 1, "chair": 2, "floor": 3, "bookshelf": 5, "table": 7, "ceiling": 22, "sofa": 6, "bed": 4}
TSV_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40id", "nyu40class"]


def write_label_table(path):
    rows = ["\t".join(TSV_HEADER)]
    for name, i in RAW_IDS.items():
        nyu = name.capitalize() if name == "bed" else name  # LSM lowercases nyu40class
        rows.append("\t".join([str(i), f"raw {name}", name, "10", "0", "0", name, "0", nyu]))
    path.write_text("\n".join(rows) + "\n")


def write_test_layout(root, scenes: dict):
    write_label_table(root / "scannetv2-labels.combined.tsv")
    split = {}
    for s, (name, (ids, targets)) in enumerate(scenes.items()):
        K, c2ws, renders = scene_frames(len(ids), H, W, seed=10 + s)
        for fid, c2w, r in zip(ids, c2ws, renders):
            d = root / name
            save_image(d / "images" / f"{fid}.jpg", r["rgb"])
            K4 = np.eye(4)
            K4[:3, :3] = integer_centre_K(K)
            save_npz(d / "images" / f"{fid}.npz", camera_intrinsics=K4, camera_pose=c2w)
            save_u16(d / "depths" / f"{fid}.png", r["depth"] * 1000)
            raw = np.array([RAW_IDS[n] for n in FACE_NAMES])[r["face"]]
            raw[:4, :4] = 0        # unlabelled stays 0
            raw[-4:, -4:] = 9999   # an id missing from the table counts as "other"
            save_u16(d / "labels" / f"{fid}.png", raw)
        split[name] = targets
    (root / "selected_seqs_test.json").write_text(json.dumps(split))
    return K


@pytest.fixture(scope="module")
def test_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet_test")
    ids = [0, 5, 10, 15, 20, 25]  # unpadded: "10" sorts before "5" as text
    K = write_test_layout(root, {"scene0001_00": (ids, [10, 20, 25]), "scene0696_02": (ids[:3], [5])})
    return root, K


def test_class_mapping_table():
    lut = lsm_label_lut({1: "wall", 3: "Floor", 22: "ceiling", 2: "chair", 7: "table", 6: "sofa", 4: "bed",
                         5: "bookshelf", 40: "otherprop"})
    expected = {0: 0, 1: 1, 3: 2, 22: 3, 2: 4, 7: 5, 6: 6, 4: 7, 5: 8, 40: 8, 9: 8}
    assert {i: int(lut[i]) for i in expected} == expected
    assert lut[-1] == 8 and LSM_CLASSES == ["wall", "floor", "ceiling", "chair", "table", "sofa", "bed", "other"]


def test_test_layout_views_labels_and_poses(test_layout):
    root, K = test_layout
    ds = ScanNetTest(root, split="test")
    assert [s.name for s in ds.scenes] == ["scene0001_00"]  # scene0696_02 skipped
    assert len(ds) == 2  # target 25 has no right neighbour
    s = ds[0]
    assert s["frames"] == ["5", "15", "10"]  # sources t-1, t+1 in numeric order, target t last
    assert ds[1]["frames"] == ["15", "25", "20"]
    official = ScanNetTest(root, split="test", order="official-code")
    assert official[0]["frames"] == ["5", "10", "15"]
    assert s["labels"].shape == (3, H, W) and s["labels"].dtype == torch.int64
    assert torch.allclose(s["Ks"][0], torch.tensor(K, dtype=torch.float32), atol=1e-4)
    # Expected classes per face, from LSM's rule: named classes 1..7, everything else 8, 0 stays 0.
    face_class = {"wall": 1, "chair": 4, "bookshelf": 8, "table": 5, "floor": 2, "ceiling": 3}
    from loader_fakes import render
    for v, fid in enumerate(s["frames"]):
        r = render(K, s["c2w"][v].double().numpy(), H, W)
        expected = np.array([face_class[n] for n in FACE_NAMES])[r["face"]]
        expected[:4, :4], expected[-4:, -4:] = 0, 8
        agree = (s["labels"][v].numpy() == expected).mean()
        assert agree > 0.98, (fid, agree)  # pose round trip -> same faces (edge pixels may flip)
    for b in (1, 2):
        assert_reprojects(s, 0, b, tol=0.01)


def test_test_layout_through_load_dataset_and_errors(test_layout, tmp_path):
    root, _ = test_layout
    ds = load_dataset(f"scannet-test:{root}", split="test", resolution=16)
    s = ds[0]
    assert s["images"].shape == (3, 3, 16, 16) and set(s["labels"].unique().tolist()) <= set(range(9))
    assert len(load_dataset(f"scannet-test:{root}?order=official-code", split="all")) == 4  # every interior frame; scene0696_02 skipped
    with pytest.raises(OpenLSMError, match="selected_seqs_train.json"):
        ScanNetTest(root, split="train")
    with pytest.raises(OpenLSMError, match="unknown view order"):
        ScanNetTest(root, order="middle")
    with pytest.raises(OpenLSMError, match="scannetv2-labels.combined.tsv"):
        ScanNetTest(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scannetv2-labels.combined.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(OpenLSMError, match="nyu40class"):
        ScanNetTest(bad)
