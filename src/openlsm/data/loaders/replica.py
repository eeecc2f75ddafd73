"""Replica RGB-D sequences, in the two layouts that Feature-3DGS-era papers use.

NICE-SLAM release (`Replica.zip`, the usual one):

    root/cam_params.json              {"camera": {"w", "h", "fx", "fy", "cx", "cy", "scale"}} (one for all scenes)
    root/<scene>/traj.txt             one line per frame: 16 numbers, row-major 4x4 camera-to-world (OpenCV axes)
    root/<scene>/results/frame000000.jpg, depth000000.png   (uint16, metres * scale; scale 6553.5)

Semantic-NeRF renders (with semantic labels):

    <scene>/traj_w_c.txt              one row-major 4x4 camera-to-world (OpenCV axes) per frame
    <scene>/rgb/rgb_<i>.png, depth/depth_<i>.png (uint16 mm), semantic_class/semantic_class_<i>.png (class ids)

Assumptions (the LSM reference only says "same data preparation as Feature-3DGS"):
- NICE-SLAM: without cam_params.json the NICE-SLAM config values are used (1200x680, f 600, c (599.5, 339.5),
  scale 6553.5). Semantic-NeRF: 90 degree horizontal field of view, principal point at the image centre.
- Both use integer pixel centres (c = (W-1)/2), shifted by +0.5 px into openlsm's convention.
- Semantic labels stay raw Semantic-NeRF class ids (no 8-class mapping: the layout has no class names).
- Samples: every `frame_stride`-th frame (10, as ScanNet's export), then LSM's ScanNet pair rule on those.
- A scene is any folder (root, or up to two levels below it) holding traj.txt + results/ or traj_w_c.txt + rgb/.

    ds = load_replica("data/Replica", resolution=(384, 512))     # picks the layout
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import OpenLSMError
from .common import (
    Frame,
    MultiViewDataset,
    Scene,
    find_with_stem,
    natural_key,
    require,
    shift_principal_point,
    view_tuples,
)

PIXEL_OFFSET = 0.5
NICE_SLAM_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}
SEMANTIC_NERF_HFOV_DEG = 90.0


def read_trajectory_rows(path: Path) -> np.ndarray:
    """Text file with one row-major 4x4 matrix (16 numbers) per line -> [N, 4, 4] float64."""
    try:
        rows = [ln.split() for ln in require(path).read_text().splitlines() if ln.strip()]
        mats = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise OpenLSMError(f"{path}: expected 16 numbers per line") from None
    if mats.ndim != 2 or mats.shape[1] != 16:
        raise OpenLSMError(f"{path}: expected 16 numbers per line")
    return mats.reshape(-1, 4, 4)


def find_scenes(root: Path, marker: str, folder: str) -> list[Path]:
    root = require(root, "folder")
    cands = [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))]
    return [p for p in cands if (p / marker).is_file() and (p / folder).is_dir()]


def _frame_index(stem: str) -> int:
    digits = "".join(c for c in stem if c.isdigit())
    return int(digits) if digits else -1


class _Replica(MultiViewDataset):
    marker, folder = "", ""

    def __init__(self, root, resolution=None, views: int = 3, frame_stride: int = 10, max_gap: int = 30,
                 step: int = 5, resize: str = "crop", random_crop: bool = False, seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        dirs = find_scenes(self.root, self.marker, self.folder)
        if not dirs:
            raise OpenLSMError(f"{self.root}: no scene with {self.marker} and {self.folder}/ "
                               f"(expected the {self.layout} layout)")
        scenes, tuples = [], []
        for d in dirs:
            frames = self.scan_scene(d)[:: max(1, int(frame_stride))]
            name = d.name if d == self.root else str(d.relative_to(self.root))
            scenes.append(Scene(name, tuple(frames)))
            tuples.append(view_tuples(len(frames), self.views, max_gap, step))
        self.set_tuples(scenes, tuples)

    def scan_scene(self, scene_dir: Path) -> list[Frame]:
        raise NotImplementedError

    @staticmethod
    def attach_poses(frames: list[tuple[int, Frame]], traj: np.ndarray, K: np.ndarray, traj_path: Path
                     ) -> list[Frame]:
        out = []
        for idx, fr in frames:
            if not 0 <= idx < len(traj):
                raise OpenLSMError(f"{traj_path}: no pose for frame {fr.image.name} ({len(traj)} poses)")
            out.append(replace(fr, K=_tuple(K), c2w=_tuple(traj[idx])))
        return out


def _tuple(a: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in a)


class ReplicaNiceSlam(_Replica):
    layout = "Replica (NICE-SLAM)"
    marker, folder = "traj.txt", "results"

    def scan_scene(self, scene_dir: Path) -> list[Frame]:
        cam = dict(NICE_SLAM_CAMERA)
        for params in (scene_dir / "cam_params.json", scene_dir.parent / "cam_params.json",
                       self.root / "cam_params.json"):
            if params.is_file():
                try:
                    cam.update(json.loads(params.read_text())["camera"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise OpenLSMError(f"{params}: expected {{'camera': {{fx, fy, cx, cy, scale}}}} "
                                       f"({type(e).__name__})") from None
                break
        K = shift_principal_point(np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1]],
                                           dtype=np.float64), PIXEL_OFFSET)
        results = scene_dir / "results"
        frames = []
        for img in sorted(results.glob("frame*.jpg"), key=lambda p: natural_key(p.stem)):
            idx = _frame_index(img.stem)
            depth = require(results / f"depth{img.stem[len('frame'):]}.png")
            frames.append((idx, Frame(f"{idx:06d}", img, depth=depth, depth_scale=float(cam["scale"]))))
        if not frames:
            raise OpenLSMError(f"{results}: no frame*.jpg images")
        return self.attach_poses(frames, read_trajectory_rows(scene_dir / "traj.txt"), K, scene_dir / "traj.txt")


class ReplicaSemanticNerf(_Replica):
    layout = "Replica (Semantic-NeRF)"
    marker, folder = "traj_w_c.txt", "rgb"
    depth_scale = 1000.0

    def scan_scene(self, scene_dir: Path) -> list[Frame]:
        frames = []
        for img in sorted((scene_dir / "rgb").glob("rgb_*.png"), key=lambda p: natural_key(p.stem)):
            idx = _frame_index(img.stem)
            depth = require(scene_dir / "depth" / f"depth_{idx}.png")
            label = find_with_stem(scene_dir / "semantic_class", f"semantic_class_{idx}", (".png",))
            frames.append((idx, Frame(str(idx), img, depth=depth, label=label)))
        if not frames:
            raise OpenLSMError(f"{scene_dir / 'rgb'}: no rgb_<i>.png images")
        with Image.open(frames[0][1].image) as im:
            W, H = im.size
        f = 0.5 * W / math.tan(math.radians(SEMANTIC_NERF_HFOV_DEG) / 2)
        K = shift_principal_point(np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]]), PIXEL_OFFSET)
        return self.attach_poses(frames, read_trajectory_rows(scene_dir / "traj_w_c.txt"), K,
                                 scene_dir / "traj_w_c.txt")


def load_replica(root, **kwargs) -> _Replica:
    """The Replica layout found under `root` (NICE-SLAM first, then Semantic-NeRF)."""
    if find_scenes(Path(root), ReplicaNiceSlam.marker, ReplicaNiceSlam.folder):
        return ReplicaNiceSlam(root, **kwargs)
    if find_scenes(Path(root), ReplicaSemanticNerf.marker, ReplicaSemanticNerf.folder):
        return ReplicaSemanticNerf(root, **kwargs)
    raise OpenLSMError(f"{root}: no Replica scene (NICE-SLAM traj.txt + results/, or Semantic-NeRF "
                       f"traj_w_c.txt + rgb/)")
