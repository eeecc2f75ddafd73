"""Generic posed image folders: nerfstudio `transforms.json` or COLMAP text, depth and labels optional.

    root/transforms.json                       nerfstudio: OpenGL c2w per frame, fl_x/fl_y/cx/cy/w/h
        frames[].file_path, .depth_file_path?, .mask_path? (relative to root; black mask = ignore)
  or
    root/{., sparse/0, sparse, colmap, colmap/sparse/0}/cameras.txt + images.txt   COLMAP text (w2c quaternions)
    root/images/<NAME> (or root/<NAME>)         the images named in images.txt
    root/depth(s)/<stem>.png|.npy               optional depth (16-bit PNG in millimetres, .npy in metres)
  and for both
    root/labels/<stem>.png                      optional per-pixel class ids

Cameras are read by `openlsm.cameras.io` and arrive in openlsm's convention (OpenCV c2w; both formats already put
pixel centres at +0.5). Frames are sorted by name; samples follow LSM's pair rule with folder-sized defaults
(max_gap 2, step 2: inputs i and i+2, target i+1, both orders). Lens distortion is refused (undistort first).
A folder has no train/val split: every frame takes part.

    ds = load_folder("captures/kitchen", resolution=(384, 512))
    ds = FolderDataset("captures/kitchen", source="colmap")
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...cameras.io import read_colmap_text, read_transforms_json
from ...errors import OpenLSMError
from .common import (
    IMAGE_EXTS,
    Frame,
    MultiViewDataset,
    Scene,
    find_with_stem,
    natural_key,
    require,
    view_tuples,
)

COLMAP_DIRS = (".", "sparse/0", "sparse", "colmap", "colmap/sparse/0")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")


def find_colmap_dir(root: Path) -> Path | None:
    for d in COLMAP_DIRS:
        p = Path(root) / d
        if (p / "cameras.txt").is_file() and (p / "images.txt").is_file():
            return p
    return None


def _tuple(a) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(a))


def _resolve_image(root: Path, name: str, where: Path) -> Path:
    p = Path(name) if Path(name).is_absolute() else root / name
    if p.is_file():
        return p
    if not p.suffix:  # Blender-style file_path without an extension
        found = find_with_stem(p.parent, p.name)
        if found is not None:
            return found
    raise OpenLSMError(f"missing file: {p} (listed in {where})")


def _side_file(root: Path, folders: tuple[str, ...], stem: str, exts: tuple[str, ...]) -> Path | None:
    for f in folders:
        p = find_with_stem(root / f, stem, exts)
        if p is not None:
            return p
    return None


class FolderDataset(MultiViewDataset):
    layout = "posed folder"

    def __init__(self, root, source: str = "auto", resolution=None, views: int = 3, max_gap: int = 2,
                 step: int = 2, depth_scale: float = 1000.0, resize: str = "crop", random_crop: bool = False,
                 seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        root = require(self.root, "folder")
        self.depth_scale = float(depth_scale)
        if source == "auto":
            source = "transforms" if (root / "transforms.json").is_file() else "colmap" if find_colmap_dir(root) else ""
        if source == "transforms":
            frames = self.read_nerfstudio(root / "transforms.json")
        elif source == "colmap":
            cdir = find_colmap_dir(root)
            if cdir is None:
                raise OpenLSMError(f"{root}: no COLMAP cameras.txt/images.txt in {', '.join(COLMAP_DIRS)}")
            frames = self.read_colmap(cdir)
        elif source == "":
            raise OpenLSMError(f"{root}: no transforms.json and no COLMAP text model (cameras.txt, images.txt)")
        else:
            raise OpenLSMError(f"unknown folder source {source!r}; choose auto, transforms or colmap")
        frames.sort(key=lambda f: natural_key(f.id))
        self.source = source
        self.set_tuples([Scene(root.name, tuple(frames))], [view_tuples(len(frames), self.views, max_gap, step)])

    def _extras(self, root: Path, stem: str, depth: Path | None = None, mask: Path | None = None) -> dict:
        depth = depth or _side_file(root, ("depth", "depths"), stem, (".png", ".npy"))
        label = _side_file(root, ("labels",), stem, (".png",))
        return {"depth": depth, "depth_scale": 1.0 if depth is not None and depth.suffix == ".npy" else None,
                "label": label, "mask": mask}

    def read_nerfstudio(self, path: Path) -> list[Frame]:
        cams, names = read_transforms_json(path)  # validates the file (OpenLSMError on bad input)
        doc = json.loads(path.read_text())
        model = str(doc.get("camera_model", "OPENCV")).upper()
        if model not in PINHOLE_MODELS:
            raise OpenLSMError(f"{path}: camera_model {model} is not a pinhole model")
        root, frames = path.parent, []
        for i, (fr, name) in enumerate(zip(doc["frames"], names)):
            if any(float(fr.get(k, doc.get(k, 0.0)) or 0.0) != 0.0 for k in DISTORTION_KEYS):
                raise OpenLSMError(f"{path}: frame {name} has lens distortion; undistort the images first")
            image = _resolve_image(root, name, path)
            depth = _resolve_image(root, fr["depth_file_path"], path) if fr.get("depth_file_path") else None
            mask = _resolve_image(root, fr["mask_path"], path) if fr.get("mask_path") else None
            frames.append(Frame(image.stem, image, K=_tuple(cams.Ks[i]), c2w=_tuple(cams.c2w[i]),
                                **self._extras(root, image.stem, depth, mask)))
        return frames

    def read_colmap(self, cdir: Path) -> list[Frame]:
        cams, names = read_colmap_text(cdir)
        root, frames = self.root, []
        for i, name in enumerate(names):
            image = None
            for base in (root / "images", root, cdir / "images"):
                if (base / name).is_file():
                    image = base / name
                    break
            if image is None:
                raise OpenLSMError(f"missing file: {root / 'images' / name} (listed in {cdir / 'images.txt'})")
            frames.append(Frame(Path(name).stem, image, K=_tuple(cams.Ks[i]), c2w=_tuple(cams.c2w[i]),
                                **self._extras(root, Path(name).stem)))
        return frames


def load_folder(root, **kwargs) -> MultiViewDataset:
    """A posed folder of any supported kind: transforms.json, COLMAP text, or an Open3D RGB-D folder
    (source "auto" picks in that order; "transforms", "colmap" or "open3d" forces one)."""
    from .rgbd import Open3DRGBD, is_open3d_folder

    root, source = Path(root), kwargs.pop("source", "auto")
    auto_open3d = source == "auto" and not (root / "transforms.json").is_file() and find_colmap_dir(root) is None
    if source == "open3d" or (auto_open3d and is_open3d_folder(root)):
        return Open3DRGBD(root, **kwargs)
    return FolderDataset(root, source=source, **kwargs)


__all__ = ["COLMAP_DIRS", "IMAGE_EXTS", "FolderDataset", "find_colmap_dir", "load_folder"]
