"""ScanNet++ in LSM's render layout (output of the scannetpp_lsm `common.render` step, DSLR only, undistorted).

    root/<scene>/dslr/rgb_resized_undistorted/<name>.JPG     RGB (.jpg/.png accepted)
    root/<scene>/dslr/render_depth/<name>.png                uint16 millimetres rendered from the mesh, 0 = none
    root/<scene>/dslr/camera/<name>.npz                      intrinsic [3,3], extrinsic [4,4] camera-to-world
    root/<scene>/dslr/mask_resized_undistorted/<name>.png    optional; LSM ignores it (use_mask=True ANDs it
                                                             into `valid`: nonzero = keep)

Per scene at most `max_frames` (200) images, taken with a stride; then LSM's ScanNet pair rule (see
`view_tuples`). ScanNet++ has no LSM labels, so samples carry no `labels`. Split: LSM trains on every scene
(nvs_sem_train); "train" and "all" both mean every scene under root.

Assumptions where the reference is silent: the stride is ceil(n / max_frames) on the *sorted* image list (LSM
subsamples before sorting, i.e. in file-system order, which is not reproducible); poses are OpenCV camera-to-
world; K comes from COLMAP's undistortion and is already in the +0.5 pixel-centre convention (no shift).

    ds = ScanNetPP("data/scannetpp_render", resolution=(256, 256))
"""

from __future__ import annotations

from pathlib import Path

from ...errors import OpenLSMError
from .common import (
    Frame,
    MultiViewDataset,
    Scene,
    ceil_stride,
    check_pose,
    find_with_stem,
    read_npz,
    require,
    view_tuples,
)

RGB_DIR, DEPTH_DIR, CAMERA_DIR, MASK_DIR = ("rgb_resized_undistorted", "render_depth", "camera",
                                            "mask_resized_undistorted")


class ScanNetPP(MultiViewDataset):
    layout = "ScanNet++ render"

    def __init__(self, root, split: str = "train", resolution=None, views: int = 3, max_gap: int = 30,
                 step: int = 5, max_frames: int = 200, use_mask: bool = False, resize: str = "crop",
                 random_crop: bool = False, seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        if split not in ("train", "all"):
            raise OpenLSMError(f"unknown split {split!r} for ScanNet++ (LSM trains on every scene): use train or all")
        root = require(self.root, "folder")
        names = sorted(p.name for p in root.iterdir() if (p / "dslr" / CAMERA_DIR).is_dir())
        if not names:
            raise OpenLSMError(f"{root}: no <scene>/dslr/{CAMERA_DIR} folders; expected the ScanNet++ render layout")
        self.use_mask = bool(use_mask)
        scenes, tuples = [], []
        for name in names:
            frames = scan_scene(root / name / "dslr", max_frames, self.use_mask)
            scenes.append(Scene(name, tuple(frames)))
            tuples.append(view_tuples(len(frames), self.views, max_gap, step))
        self.set_tuples(scenes, tuples)

    def read_camera(self, frame: Frame):
        K, c2w = read_npz(frame.camera, "intrinsic", "extrinsic")
        return check_pose(K, c2w, frame.camera)


def scan_scene(dslr: Path, max_frames: int, use_mask: bool) -> list[Frame]:
    cams = sorted(p.stem for p in require(dslr / CAMERA_DIR, "folder").glob("*.npz"))
    cams = cams[:: ceil_stride(len(cams), max_frames)]
    frames = []
    for stem in cams:
        rgb = find_with_stem(dslr / RGB_DIR, stem, (".JPG", ".jpg", ".png"))
        if rgb is None:
            raise OpenLSMError(f"missing file: {dslr / RGB_DIR / (stem + '.JPG')}")
        mask = require(dslr / MASK_DIR / f"{stem}.png") if use_mask else None
        frames.append(Frame(stem, rgb, depth=require(dslr / DEPTH_DIR / f"{stem}.png"), mask=mask,
                            camera=dslr / CAMERA_DIR / f"{stem}.npz"))
    return frames

