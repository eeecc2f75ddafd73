"""`load_dataset(spec)`: one entry point for the trainer, the evaluator and the CLI.

    spec = NAME | NAME:PATH | NAME:PATH?key=value&key=value | PATH (layout detected)

    synthrooms                    procedural rooms on the fly (options: length)
    synthrooms-disk:PATH          `openlsm synth` output
    scannet:PATH                  LSM's processed ScanNet (options: max_gap, step, val_scenes)
    scannet-test:PATH             LSM's ScanNet test set, 8 classes (options: order)
    scannetpp:PATH                LSM's ScanNet++ renders (options: max_frames, use_mask, max_gap, step)
    replica:PATH                  Replica, NICE-SLAM or Semantic-NeRF layout (options: frame_stride, ...)
    folder:PATH                   transforms.json, COLMAP text or an Open3D RGB-D folder (options: source, ...)
    rgbd:PATH                     Open3D RGB-D folder (color/, depth/, trajectory.log, intrinsics.json)

Query options override keyword defaults; values are parsed as bool (true/false), int, float, else text.
A list of specs gives their concatenation (e.g. LSM's ScanNet++ + ScanNet training mix).

    ds = load_dataset("scannet:data/scannet_processed?val_scenes=150", split="train", resolution=256)
    ds = load_dataset("folder:captures/kitchen", resolution=(384, 512), views=2)
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset

from ...errors import OpenLSMError
from .folder import FolderDataset, find_colmap_dir, load_folder
from .replica import ReplicaNiceSlam, find_scenes, load_replica
from .rgbd import Open3DRGBD, is_open3d_folder
from .scannet import ScanNetProcessed
from .scannet_test import ScanNetTest
from .scannetpp import ScanNetPP
from .synthrooms_disk import SynthRoomsDisk


def _synthrooms(split="train", resolution=None, views=3, length=None):
    from ..synthrooms import SynthRooms
    return SynthRooms(split, 256 if resolution is None else resolution, views, length)


# name -> (factory, class whose keywords the factory accepts, takes a split, needs a path)
LAYOUTS = {
    "synthrooms": (_synthrooms, _synthrooms, True, False),
    "synthrooms-disk": (SynthRoomsDisk, SynthRoomsDisk, True, True),
    "scannet": (ScanNetProcessed, ScanNetProcessed, True, True),
    "scannet-test": (ScanNetTest, ScanNetTest, True, True),
    "scannetpp": (ScanNetPP, ScanNetPP, True, True),
    "replica": (load_replica, ReplicaNiceSlam, False, True),
    "folder": (load_folder, FolderDataset, False, True),
    "rgbd": (Open3DRGBD, Open3DRGBD, False, True),
}


def parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, str | None, dict]:
    """'name:path?k=v&k2=v2' -> (name, path, options); a bare existing path gets its layout detected."""
    spec = spec.strip()
    body, _, query = spec.partition("?")
    options = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise OpenLSMError(f"dataset option {item!r} in {spec!r} is not key=value")
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    name, colon, path = body.partition(":")
    if colon and name in LAYOUTS:
        return name, path or None, options
    if not colon and name in LAYOUTS:
        return name, None, options
    if Path(body).exists():
        return detect_layout(Path(body)), body, options
    raise OpenLSMError(f"unknown dataset {spec!r}: use one of {', '.join(sorted(LAYOUTS))} (NAME:PATH), "
                       f"or an existing folder")


def detect_layout(root: Path) -> str:
    """Best guess of a folder's layout (used for bare paths)."""
    if (root / "scannetv2-labels.combined.tsv").is_file():
        return "scannet-test"
    if (root / "labels.json").is_file():
        return "synthrooms-disk"
    if (root / "transforms.json").is_file() or find_colmap_dir(root) or is_open3d_folder(root):
        return "folder"
    if find_scenes(root, "traj.txt", "results") or find_scenes(root, "traj_w_c.txt", "rgb"):
        return "replica"
    subdirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if any((p / "dslr" / "camera").is_dir() for p in subdirs):
        return "scannetpp"
    if any((p / "pose").is_dir() for p in subdirs):
        return "scannet"
    raise OpenLSMError(f"{root}: cannot tell the dataset layout; prefix the path with one of "
                       f"{', '.join(sorted(LAYOUTS))} (e.g. scannet:{root})")


def load_dataset(spec: str | list[str], split: str = "train", resolution=None, views: int = 3, **options
                 ) -> Dataset:
    """A Dataset of multi-view samples (see loaders/common.py for the sample structure)."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise OpenLSMError("empty list of dataset specs")
        return ConcatDataset([load_dataset(s, split, resolution, views, **options) for s in spec])
    name, path, spec_options = parse_spec(spec)
    factory, signature_of, has_split, needs_path = LAYOUTS[name]
    if needs_path and not path:
        raise OpenLSMError(f"dataset {name!r} needs a path: {name}:/path/to/data")
    kwargs = {**options, **spec_options, "resolution": resolution, "views": views}
    if has_split:
        kwargs["split"] = split
    params = inspect.signature(signature_of).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if "views" in unknown and views == 3:  # fixed 3-view layouts (scannet-test)
        kwargs.pop("views")
        unknown.remove("views")
    if unknown:
        allowed = sorted(k for k in params if k not in ("self", "root"))
        raise OpenLSMError(f"dataset {name!r} does not take option(s) {unknown}; it takes {allowed}")
    return factory(path, **kwargs) if needs_path else factory(**kwargs)
