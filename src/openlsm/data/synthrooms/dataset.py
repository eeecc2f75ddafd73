"""On-the-fly SynthRooms dataset: every item is a freshly generated room and k rendered views.

Seeds: item i of a split renders the scene with seed `SPLITS[split][0] + i`; the ranges never overlap:

    train: 0 .. 9_999_999        val: 10_000_000 .. 10_009_999        test: 10_010_000 .. 10_019_999

Items are pure functions of (seed, epoch, config), so DataLoader workers need no special seeding to be
reproducible; `worker_init_fn` only pins each worker to one intra-op thread (ray casting is many small
ops). `set_epoch(e)` re-samples the cameras of training rooms each epoch (the room itself stays).

    ds = SynthRooms("train", resolution=256, views=3)
    sample = ds[0]   # images [3,3,256,256], depths, valid, Ks, c2w, labels, instances, normals, scene_seed
    loader = DataLoader(ds, batch_size=8, num_workers=4, worker_init_fn=worker_init_fn)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ...cameras import Cameras
from ...errors import OpenLSMError
from .raycast import RenderConfig, merge_scenes, render, render_batch, scene_tensors
from .sampler import SamplerConfig, sample_views, sample_views_batch
from .scene import SceneConfig, generate_scene

SPLITS = {"train": (0, 10_000_000), "val": (10_000_000, 10_010_000), "test": (10_010_000, 10_020_000)}


@dataclass(frozen=True)
class SynthConfig:
    height: int = 256
    width: int = 256
    views: int = 3  # first two are the inputs, the rest targets
    scene: SceneConfig = field(default_factory=SceneConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    render: RenderConfig = field(default_factory=RenderConfig)


def split_seed(split: str, index: int) -> int:
    if split not in SPLITS:
        raise OpenLSMError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    start, stop = SPLITS[split]
    if not 0 <= index < stop - start:
        raise OpenLSMError(f"index {index} outside split {split!r} (size {stop - start})")
    return start + index


def make_sample(seed: int, cfg: SynthConfig = SynthConfig(), epoch: int = 0, device=None) -> dict:
    """One training sample (dict of tensors) from a scene seed."""
    scene = generate_scene(seed, cfg.scene)
    st = scene_tensors(scene, device=device)
    rng = np.random.default_rng([int(seed), int(epoch), 0xCA3])
    cams, info = sample_views(st, scene, rng, cfg.width, cfg.height, cfg.views, cfg.sampler)
    out = render(st, cams.to(device=st.device), cfg.render)
    return {"images": out["rgb"], "depths": out["depth"], "valid": out["valid"], "Ks": cams.Ks.to(st.device),
            "c2w": cams.c2w.to(st.device), "labels": out["labels"], "instances": out["instances"],
            "normals": out["normals"], "scene_seed": torch.tensor(int(seed)),
            "covisibility": torch.tensor(info["covisibility"], dtype=torch.float32)}


def make_samples(seeds: list[int], cfg: SynthConfig = SynthConfig(), epoch: int = 0, device=None) -> dict:
    """make_sample for many seeds at once, stacked on a leading axis (images [S,V,3,H,W], ...).

    All scenes are cast together (probe renders of the camera sampler and the final render), so a GPU sees a
    few large launches per batch instead of many small ones per sample. Same values as make_sample.
    """
    scenes = [generate_scene(int(s), cfg.scene) for s in seeds]
    st = merge_scenes([scene_tensors(sc) for sc in scenes], device)
    rngs = [np.random.default_rng([int(s), int(epoch), 0xCA3]) for s in seeds]
    drawn = sample_views_batch(st, scenes, rngs, cfg.width, cfg.height, cfg.views, cfg.sampler)
    cams = Cameras(torch.stack([c.Ks for c, _ in drawn]), torch.stack([c.c2w for c, _ in drawn]), cfg.width,
                   cfg.height).to(device=st.device)
    out = render_batch(st, cams, cfg.render)
    return {"images": out["rgb"], "depths": out["depth"], "valid": out["valid"], "Ks": cams.Ks, "c2w": cams.c2w,
            "labels": out["labels"], "instances": out["instances"], "normals": out["normals"],
            "scene_seed": torch.tensor([int(s) for s in seeds]),
            "covisibility": torch.tensor([i["covisibility"] for _, i in drawn], dtype=torch.float32)}


class SynthRooms(Dataset):
    """Procedural rooms rendered on the fly (see module docstring for the seed ranges)."""

    def __init__(self, split: str = "train", resolution: int | tuple[int, int] = 256, views: int = 3,
                 length: int | None = None, device=None, cfg: SynthConfig | None = None):
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        base = cfg or SynthConfig()
        self.cfg = SynthConfig(h, w, views, base.scene, base.sampler, base.render)
        self.split = split
        start, stop = SPLITS.get(split, (0, 0))
        split_seed(split, 0)  # validates the split name
        self.length = stop - start if length is None else int(length)
        if not 0 < self.length <= stop - start:
            raise OpenLSMError(f"length {length} must be in 1..{stop - start} for split {split!r}")
        self.device = device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New camera draws for training rooms (val/test cameras never change)."""
        self.epoch = int(epoch) if self.split == "train" else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return make_sample(split_seed(self.split, index), self.cfg, self.epoch, self.device)

    def sample_batch(self, indices, device=None) -> dict:
        """Items `indices` stacked on a leading axis, rendered together (see make_samples); for GPU loaders."""
        for i in indices:
            if not 0 <= int(i) < self.length:
                raise IndexError(i)
        seeds = [split_seed(self.split, int(i)) for i in indices]
        return make_samples(seeds, self.cfg, self.epoch, self.device if device is None else device)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: one thread per worker (items are seeded by index, not by worker)."""
    torch.set_num_threads(1)
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)
