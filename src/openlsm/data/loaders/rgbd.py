"""Open3D-style RGB-D folders (Redwood / Augmented ICL-NUIM as shipped in Open3D's test data).

    root/color/*.jpg|png          RGB
    root/depth/*.png              uint16 millimetres (depth_scale 1000), 0 = invalid
    root/trajectory.log           per frame: a metadata line "i i i+1", then the 4x4 camera-to-world, row by row
    root/intrinsics.json          Open3D PinholeCameraIntrinsic: width, height, intrinsic_matrix (9 numbers,
                                  column-major)

Poses are Open3D's camera-to-world with OpenCV axes (what Open3D's RGB-D integration expects); the k-th pose
block belongs to the k-th colour image in sorted order. Open3D puts pixel centres on integers (cx = 319.5 for
640 px), so the principal point moves +0.5 px into openlsm's convention.

    ds = Open3DRGBD("shared/data/rgbd_livingroom", max_gap=2, step=2)   # views [i, i+2, i+1], both orders
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import OpenLSMError
from .common import Frame, MultiViewDataset, Scene, list_images, require, shift_principal_point, view_tuples

PIXEL_OFFSET = 0.5


def is_open3d_folder(root: Path) -> bool:
    root = Path(root)
    return (root / "trajectory.log").is_file() and (root / "color").is_dir()


def read_open3d_log(path: Path) -> np.ndarray:
    """Open3D .log trajectory -> [N, 4, 4] float64 (blocks of 1 metadata line + 4 matrix rows)."""
    lines = [ln.split() for ln in require(path).read_text().splitlines() if ln.strip()]
    if len(lines) % 5:
        raise OpenLSMError(f"{path}: expected blocks of 5 lines (metadata + 4x4 matrix), got {len(lines)} lines")
    try:
        mats = np.array([[[float(v) for v in lines[b + 1 + r]] for r in range(4)] for b in range(0, len(lines), 5)])
    except ValueError:
        raise OpenLSMError(f"{path}: non-numeric matrix entry") from None
    if mats.ndim != 3 or mats.shape[1:] != (4, 4):
        raise OpenLSMError(f"{path}: every matrix row must hold 4 numbers")
    return mats


def read_open3d_intrinsics(path: Path) -> tuple[np.ndarray, int, int]:
    """Open3D pinhole JSON -> (K [3,3] in Open3D's integer-centre convention, width, height)."""
    try:
        doc = json.loads(require(path).read_text())
        K = np.array(doc["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # stored column-major
        return K, int(doc["width"]), int(doc["height"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise OpenLSMError(f"{path}: expected Open3D intrinsics JSON (width, height, intrinsic_matrix of 9) "
                           f"({type(e).__name__})") from None


class Open3DRGBD(MultiViewDataset):
    layout = "Open3D RGB-D"

    def __init__(self, root, resolution=None, views: int = 3, max_gap: int = 2, step: int = 2,
                 depth_scale: float = 1000.0, resize: str = "crop", random_crop: bool = False, seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        root = require(self.root, "folder")
        self.depth_scale = float(depth_scale)
        colors = list_images(root / "color")
        depths = {p.stem: p for p in list_images(require(root / "depth", "folder"), (".png",))}
        poses = read_open3d_log(root / "trajectory.log")
        K, _, _ = read_open3d_intrinsics(root / "intrinsics.json")
        K = tuple(map(tuple, shift_principal_point(K, PIXEL_OFFSET)))
        if not colors:
            raise OpenLSMError(f"{root / 'color'}: no images")
        if len(poses) < len(colors):
            raise OpenLSMError(f"{root / 'trajectory.log'}: {len(poses)} poses for {len(colors)} colour images")
        frames = []
        for k, c in enumerate(colors):
            if c.stem not in depths:
                raise OpenLSMError(f"missing file: {root / 'depth' / (c.stem + '.png')}")
            frames.append(Frame(c.stem, c, depth=depths[c.stem], K=K, c2w=tuple(map(tuple, poses[k]))))
        self.set_tuples([Scene(root.name, tuple(frames))], [view_tuples(len(frames), self.views, max_gap, step)])
