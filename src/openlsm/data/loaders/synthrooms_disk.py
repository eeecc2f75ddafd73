"""SynthRooms written to disk by `openlsm synth` (layout in data/synthrooms/disk.py), read as a dataset.

Each `<scene>/samples.json` lists the frames of every k-view sample (first two inputs, then targets); a scene
without samples.json is cut into consecutive groups of `views` frames. Cameras are already in openlsm's
convention. Split: LSM-style on sorted scene names (train = all but the last `val_scenes`, val = the last ones).

    ds = SynthRoomsDisk("data/synth", split="train", resolution=(256, 256))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...errors import OpenLSMError
from ..synthrooms.disk import list_frames, read_frame
from .common import Frame, MultiViewDataset, Scene, require, split_scenes


class SynthRoomsDisk(MultiViewDataset):
    layout = "SynthRooms on disk"

    def __init__(self, root, split: str = "all", resolution=None, views: int = 3, val_scenes: int = 0,
                 resize: str = "crop", random_crop: bool = False, seed: int = 0):
        super().__init__(root, resolution, views, resize, random_crop, seed)
        root = require(self.root, "folder")
        names = [p.name for p in root.iterdir() if (p / "color").is_dir()]
        if not names:
            raise OpenLSMError(f"{root}: no <scene>/color folders; expected an `openlsm synth` output folder")
        scenes, tuples = [], []
        for name in split_scenes(names, split, val_scenes, root):
            ids = list_frames(root / name)
            pos = {i: k for k, i in enumerate(ids)}
            frames = tuple(Frame(f"{i:04d}", root / name / "color" / f"{i:04d}.png") for i in ids)
            groups = self.read_groups(root / name, ids)
            rows = []
            for g in groups:
                if len(g) >= self.views and all(i in pos for i in g[: self.views]):
                    rows.append([pos[i] for i in g[: self.views]])
            scenes.append(Scene(name, frames))
            tuples.append(np.array(rows, dtype=np.int64).reshape(-1, self.views))
        self.set_tuples(scenes, tuples)

    def read_groups(self, scene_dir: Path, ids: list[int]) -> list[list[int]]:
        path = scene_dir / "samples.json"
        if not path.is_file():
            return [ids[k:k + self.views] for k in range(0, len(ids) - self.views + 1, self.views)]
        try:
            return [[int(i) for i in s["frames"]] for s in json.loads(path.read_text())["samples"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise OpenLSMError(f"{path}: malformed samples.json ({type(e).__name__})") from None

    def read_frame(self, frame: Frame) -> dict:
        f = read_frame(frame.image.parent.parent, int(frame.id))
        H, W = f["image"].shape[-2:]
        depth = f["depth"] if "depth" in f else torch.zeros(H, W)
        view = {"image": f["image"], "K": f["K"], "c2w": f["c2w"], "depth": depth, "valid": depth > 0}
        if "label" in f:
            view["label"] = f["label"]
        return view

