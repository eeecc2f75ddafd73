"""ScanNet in the processed layout that LSM trains on (output of LSM's `data_process.scannet.scannet_processor`).

    root/<scene>/color/000000.png       RGB, 640x480 (.jpg accepted too)
    root/<scene>/depth/000000.png       uint16 millimetres, 0 = invalid
    root/<scene>/pose/000000.npz        camera_intrinsics [3,3], camera_pose [4,4] camera-to-world (OpenCV axes)

Scenes are sorted by name; split "train" is all but the last `val_scenes` (150 in LSM), "val" the last ones,
"all" every scene. Frame indices are positions in the sorted frame list of a scene (processed frames, 10 raw
frames apart). Pairs: all (i, j) with 0 < |i-j| <= 30 and |i-j| % 5 == 0, both orders; the third view is
(i + j) // 2 (see `view_tuples`).

Assumption where the reference is silent: the processor's intrinsics follow DUSt3R's integer-pixel-centre
convention (pixel (i, j) at (j, i)), so the principal point is shifted by +0.5 px into openlsm's convention.

    ds = ScanNetProcessed("data/scannet_processed", split="train", resolution=(256, 256))
    s = ds[0]        # views [i, j, (i+j)//2]; s["scene"], s["frames"]
"""

from __future__ import annotations

from pathlib import Path

from ...errors import OpenLSMError
from .common import (
    Frame,
    MultiViewDataset,
    Scene,
    check_pose,
    read_npz,
    require,
    shift_principal_point,
    split_scenes,
    view_tuples,
)

PIXEL_OFFSET = 0.5  # DUSt3R-style K -> openlsm K


class ScanNetProcessed(MultiViewDataset):
    layout = "ScanNet processed"

    def __init__(self, root, split: str = "train", resolution=None, views: int = 3, max_gap: int = 30,
                 step: int = 5, val_scenes: int = 150, resize: str = "crop", random_crop: bool = False,
                 seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        root = require(self.root, "folder")
        names = [p.name for p in root.iterdir() if (p / "color").is_dir()]
        if not names:
            raise OpenLSMError(f"{root}: no <scene>/color folders; expected the ScanNet processed layout "
                               f"(<scene>/color, depth, pose)")
        scenes, tuples = [], []
        for name in split_scenes(names, split, val_scenes, root):
            frames = scan_scene(root / name)
            scenes.append(Scene(name, tuple(frames)))
            tuples.append(view_tuples(len(frames), self.views, max_gap, step))
        self.set_tuples(scenes, tuples)

    def read_camera(self, frame: Frame):
        K, c2w = read_npz(frame.camera, "camera_intrinsics", "camera_pose")
        return check_pose(shift_principal_point(K[:3, :3], PIXEL_OFFSET), c2w, frame.camera)


def scan_scene(scene_dir: Path) -> list[Frame]:
    """Frames of one scene in sorted order, with their depth and pose paths (checked to exist)."""
    colors = sorted(p for p in require(scene_dir / "color", "folder").iterdir() if p.suffix in (".png", ".jpg"))
    depths = {p.stem for p in require(scene_dir / "depth", "folder").glob("*.png")}
    poses = {p.stem for p in require(scene_dir / "pose", "folder").glob("*.npz")}
    frames = []
    for c in colors:
        if c.stem not in depths:
            raise OpenLSMError(f"missing file: {scene_dir / 'depth' / (c.stem + '.png')}")
        if c.stem not in poses:
            raise OpenLSMError(f"missing file: {scene_dir / 'pose' / (c.stem + '.npz')}")
        frames.append(Frame(c.stem, c, depth=scene_dir / "depth" / f"{c.stem}.png",
                            camera=scene_dir / "pose" / f"{c.stem}.npz"))
    return frames
