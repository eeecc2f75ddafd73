"""On-the-fly SynthRooms dataset: every item is a freshly generated room and k rendered views.

Seeds: item i of a split renders the scene with seed `SPLITS[split][0] + i`; the ranges never overlap:

    train: 0 .. 9_999_999        val: 10_000_000 .. 10_009_999        test: 10_010_000 .. 10_019_999

Items are pure functions of (seed, epoch, config), so DataLoader workers need no special seeding to be
reproducible; `worker_init_fn` only pins each worker to one intra-op thread (ray casting is many small
ops). `set_epoch(e)` re-samples the cameras of training rooms each epoch (the room itself stays).

    ds = SynthRooms("train", resolution=256, views=3)
    sample = ds[0]   # images [3,3,256,256], depths, valid, Ks, c2w, labels, instances, normals, scene_seed
    loader = DataLoader(ds, batch_size=8, num_workers=4, worker_init_fn=worker_init_fn)
    with HostPool(15) as pool:   # GPU: scenes + cameras in 15 processes, all 64 scenes cast together
        batch = ds.sample_batch(range(64), device="cuda", workers=pool)

For streams of GPU batches with host parts prefetched by a persistent pool, see pipeline.py (SynthStream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import OpenLSMError
from .pipeline import HostPool, host_part, render_parts
from .raycast import RenderConfig, render
from .sampler import SamplerConfig
from .scene import SceneConfig

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
    """One training sample (dict of tensors) from a scene seed. Cameras are sampled on the CPU (float32) whatever
    `device` is, so they never depend on it; only the final render runs on `device`."""
    part = host_part(seed, cfg, epoch)
    st = part.st.to(device)
    cams = part.cameras.to(device=st.device)
    out = render(st, cams, cfg.render)
    return {"images": out["rgb"], "depths": out["depth"], "valid": out["valid"], "Ks": cams.Ks, "c2w": cams.c2w,
            "labels": out["labels"], "instances": out["instances"], "normals": out["normals"],
            "scene_seed": torch.tensor(int(seed)),
            "covisibility": torch.tensor(part.info["covisibility"], dtype=torch.float32)}


def make_samples(seeds: list[int], cfg: SynthConfig = SynthConfig(), epoch: int = 0, device=None,
                 workers: int | HostPool = 0) -> dict:
    """make_sample for many seeds at once, stacked on a leading axis (images [S,V,3,H,W], ...).

    Host parts (scene + cameras, CPU) come from `workers` processes (a count: a pool for this call; a HostPool:
    shared; 0: computed here); all scenes are then cast together on `device`, so a GPU sees a few large launches
    per batch. Same values as make_sample, whatever `workers` is (see pipeline.py).
    """
    if isinstance(workers, HostPool):
        return render_parts([f.result() for f in [workers.submit(s, cfg, epoch) for s in seeds]], cfg, device)
    if workers:
        with HostPool(workers) as pool:
            return make_samples(seeds, cfg, epoch, device, pool)
    return render_parts([host_part(s, cfg, epoch) for s in seeds], cfg, device)


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

    def seeds(self, indices) -> list[int]:
        """Scene seeds of items `indices`."""
        for i in indices:
            if not 0 <= int(i) < self.length:
                raise IndexError(i)
        return [split_seed(self.split, int(i)) for i in indices]

    def sample_batch(self, indices, device=None, workers: int | HostPool = 0) -> dict:
        """Items `indices` stacked on a leading axis, rendered together (see make_samples); for GPU loaders.
        workers: processes for the host parts (a HostPool kept across calls, or a count: a pool for this call
        only, which costs its start-up); same values whatever it is."""
        return make_samples(self.seeds(indices), self.cfg, self.epoch, self.device if device is None else device,
                            workers)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: one thread per worker (items are seeded by index, not by worker)."""
    torch.set_num_threads(1)
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)
