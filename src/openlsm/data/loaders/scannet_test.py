"""The LSM ScanNet test layout (scannet_test.tar of the official release) and the 8-class mapping.

    root/scannetv2-labels.combined.tsv          ScanNet's label table (columns `id` ... `nyu40class` ...)
    root/selected_seqs_test.json                {scene: [frame ids]} (and selected_seqs_train.json)
    root/<scene>/images/<id>.jpg                RGB
    root/<scene>/images/<id>.npz                camera_intrinsics [3,3] (or 4x4), camera_pose [4,4] c2w (OpenCV)
    root/<scene>/depths/<id>.png                uint16 millimetres
    root/<scene>/labels/<id>.png                raw ScanNet label ids

Labels: raw id -> nyu40class (lowercase) -> {wall, floor, ceiling, chair, table, sofa, bed} = 1..7, every other
class 8 ("other"), 0 stays 0 (unlabelled, ignored by the metrics). Scene scene0696_02 is skipped (as LSM).

Views of one sample: for each target id t of the split file, its neighbours t-1 and t+1 in the scene's sorted
frame list are the sources. `order="sources-first"` (default) gives [t-1, t+1, t]: inputs first, target last, as
LSM's data.md and the paper describe. `order="official-code"` gives [t-1, t, t+1] (LSM's TestDataset really
feeds t-1 and t as inputs and renders t+1; reference lsm.md flags this as a likely bug).

Assumptions where the reference is silent: ids of the split file are matched to file stems (as strings, or as
integers when the stems are zero-padded); targets without both neighbours are skipped; split "all" needs no
split file and uses every frame that has two neighbours; depth/label maps at another size than the image are
resized to it (nearest); K uses DUSt3R's integer-pixel-centre convention (+0.5 px shift into ours).

    ds = ScanNetTest("data/scannet_test", split="test", resolution=256)
    s = ds[0]        # labels in 0..8, see LSM_CLASSES
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ...errors import OpenLSMError
from .common import (
    Frame,
    MultiViewDataset,
    Scene,
    check_pose,
    natural_key,
    read_npz,
    require,
    shift_principal_point,
)

LSM_CLASSES = ["wall", "floor", "ceiling", "chair", "table", "sofa", "bed", "other"]  # ids 1..8; 0 = unlabelled
SKIP_SCENES = ("scene0696_02",)
PIXEL_OFFSET = 0.5
ORDERS = ("sources-first", "official-code")


def lsm_class_id(name: str) -> int:
    """A class name -> LSM's 8-class id (1..7 for the named classes, 8 for anything else)."""
    name = name.strip().lower()
    return LSM_CLASSES.index(name) + 1 if name in LSM_CLASSES[:7] else len(LSM_CLASSES)


def lsm_label_lut(names_by_id: dict[int, str], unlabelled: tuple[int, ...] = (0,)) -> np.ndarray:
    """Raw id -> LSM class id table (int64). Ids missing from `names_by_id` map to 8; its last entry is 8 too,
    so ids beyond the table (clamped to the end by MultiViewDataset.map_labels) count as "other"."""
    size = max([0, *names_by_id]) + 2
    lut = np.full(size, len(LSM_CLASSES), dtype=np.int64)
    for i, name in names_by_id.items():
        if i >= 0:
            lut[i] = lsm_class_id(name)
    for i in unlabelled:
        lut[i] = 0
    return lut


def read_scannet_label_table(path: Path) -> dict[int, str]:
    """scannetv2-labels.combined.tsv -> {raw id: nyu40class}."""
    try:
        with open(require(path), newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as e:
        raise OpenLSMError(f"cannot read {path} ({type(e).__name__})") from None
    if not rows or "id" not in rows[0] or "nyu40class" not in rows[0]:
        raise OpenLSMError(f"{path}: expected a TSV header with columns 'id' and 'nyu40class'")
    col_id, col_cls = rows[0].index("id"), rows[0].index("nyu40class")
    table = {}
    for r in rows[1:]:
        if len(r) > max(col_id, col_cls) and r[col_id].strip().isdigit():
            table[int(r[col_id])] = r[col_cls]
    if not table:
        raise OpenLSMError(f"{path}: no label rows")
    return table


def _match_ids(ids: list, stems: list[str], where: Path) -> list[str]:
    by_int = {int(s): s for s in stems if s.isdigit()}
    out = []
    for i in ids:
        s = str(i)
        if s in stems:
            out.append(s)
        elif s.isdigit() and int(s) in by_int:
            out.append(by_int[int(s)])
        else:
            raise OpenLSMError(f"{where}: frame {i!r} of the split file has no image")
    return out


class ScanNetTest(MultiViewDataset):
    layout = "LSM ScanNet test"

    def __init__(self, root, split: str = "test", resolution=None, order: str = "sources-first",
                 resize: str = "crop", random_crop: bool = False, seed: int = 0):
        super().__init__(root, resolution, 3, resize, random_crop, seed)
        if order not in ORDERS:
            raise OpenLSMError(f"unknown view order {order!r}; choose one of {ORDERS}")
        root = require(self.root, "folder")
        self.label_lut = lsm_label_lut(read_scannet_label_table(root / "scannetv2-labels.combined.tsv"))
        if split == "all":
            wanted = {p.name: None for p in root.iterdir() if (p / "images").is_dir()}
        else:
            split_file = root / f"selected_seqs_{split}.json"
            try:
                wanted = json.loads(require(split_file).read_text())
            except json.JSONDecodeError as e:
                raise OpenLSMError(f"{split_file} is not valid JSON ({e.msg})") from None
            if not isinstance(wanted, dict):
                raise OpenLSMError(f"{split_file}: expected {{scene: [frame ids]}}")
        scenes, tuples = [], []
        for name in sorted(n for n in wanted if n not in SKIP_SCENES):
            frames = scan_scene(root / name)
            stems = [f.id for f in frames]
            pos = {s: k for k, s in enumerate(stems)}
            targets = stems if wanted[name] is None else _match_ids(list(wanted[name]), stems, root / name)
            rows = []
            for t in targets:
                k = pos[t]
                if 0 < k < len(stems) - 1:
                    rows.append((k - 1, k + 1, k) if order == "sources-first" else (k - 1, k, k + 1))
            scenes.append(Scene(name, tuple(frames)))
            tuples.append(np.array(rows, dtype=np.int64).reshape(-1, 3))
        self.set_tuples(scenes, tuples)

    def read_camera(self, frame: Frame):
        K, c2w = read_npz(frame.camera, "camera_intrinsics", "camera_pose")
        return check_pose(shift_principal_point(K[:3, :3], PIXEL_OFFSET), c2w, frame.camera)


def scan_scene(scene_dir: Path) -> list[Frame]:
    images = require(scene_dir / "images", "folder")
    frames = []
    for p in sorted(images.glob("*.jpg"), key=lambda p: natural_key(p.stem)):
        frames.append(Frame(p.stem, p, depth=require(scene_dir / "depths" / f"{p.stem}.png"),
                            label=require(scene_dir / "labels" / f"{p.stem}.png"),
                            camera=require(images / f"{p.stem}.npz")))
    if not frames:
        raise OpenLSMError(f"{images}: no .jpg images")
    return frames
