"""SynthRooms samples split in two: a host part computed in worker processes, a render part on the device.

Host part (`host_part`): generate_scene + sample_views, always on the CPU in float32 (the camera sampler's probe
renders included), so cameras never depend on the render device. Render part (`render_parts`): merge_scenes +
render_batch on `device`. Host parts are pure functions of (seed, epoch, config), so computing them in any number
of worker processes changes no value: batches equal make_samples(seeds, cfg, epoch, device) exactly.

    with SynthStream([[0, 1, 2, 3], [4, 5, 6, 7]], cfg, device="cuda", workers=15) as stream:
        for batch in stream:        # make_samples of each seed list, in order; host parts prefetched
            ...
    with HostPool(15) as pool:      # or keep a pool and hand it to make_samples / SynthRooms.sample_batch
        batch = make_samples(seeds, cfg, device="cuda", workers=pool)
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ...cameras import Cameras
from ...errors import OpenLSMError
from .raycast import SceneTensors, merge_scenes, render_batch, scene_tensors
from .sampler import sample_views
from .scene import generate_scene

if TYPE_CHECKING:
    from .dataset import SynthConfig


@dataclass
class HostPart:
    """Everything a sample needs before rendering: its scene (CPU tensors) and sampled cameras."""

    seed: int
    epoch: int
    st: SceneTensors  # the scene, CPU float32 (the one the probes were cast against)
    Ks: Tensor  # [V, 3, 3] float32
    c2w: Tensor  # [V, 4, 4] float32
    width: int
    height: int
    info: dict  # covisibility, fov

    @property
    def cameras(self) -> Cameras:
        return Cameras(self.Ks, self.c2w, self.width, self.height)

    # Pickled as numpy: torch's multiprocessing pickler would send every tensor through its own shared-memory
    # file, which costs far more than the ~10 kB a host part weighs.
    def __getstate__(self) -> dict:
        return {k: _to_numpy(v) for k, v in self.__dict__.items()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({k: _to_torch(v) for k, v in state.items()})


def _to_numpy(x):
    if isinstance(x, Tensor):
        return x.numpy()
    if isinstance(x, SceneTensors):
        return {"__scene__": {f.name: _to_numpy(getattr(x, f.name)) for f in fields(x)}}
    return {k: _to_numpy(v) for k, v in x.items()} if isinstance(x, dict) else x


def _to_torch(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        if "__scene__" in x:
            return SceneTensors(**_to_torch(x["__scene__"]))
        return {k: _to_torch(v) for k, v in x.items()}
    return x


def host_part(seed: int, cfg: SynthConfig, epoch: int = 0) -> HostPart:
    """Scene and cameras of one sample, on the CPU (rng draws as in make_sample)."""
    scene = generate_scene(int(seed), cfg.scene)
    st = scene_tensors(scene)  # CPU float32: probe depths, hence cameras, never depend on the render device
    rng = np.random.default_rng([int(seed), int(epoch), 0xCA3])
    cams, info = sample_views(st, scene, rng, cfg.width, cfg.height, cfg.views, cfg.sampler)
    return HostPart(int(seed), int(epoch), st, cams.Ks, cams.c2w, cfg.width, cfg.height, info)


def render_parts(parts: Sequence[HostPart], cfg: SynthConfig, device=None) -> dict:
    """Render host parts together on `device` -> stacked sample dict (images [S,V,3,H,W], ...; see make_samples)."""
    if not parts:
        raise OpenLSMError("no samples to render (empty seed list)")
    st = merge_scenes([p.st for p in parts], device)
    cams = Cameras(torch.stack([p.Ks for p in parts]), torch.stack([p.c2w for p in parts]), cfg.width,
                   cfg.height).to(device=st.device)
    out = render_batch(st, cams, cfg.render)
    return {"images": out["rgb"], "depths": out["depth"], "valid": out["valid"], "Ks": cams.Ks, "c2w": cams.c2w,
            "labels": out["labels"], "instances": out["instances"], "normals": out["normals"],
            "scene_seed": torch.tensor([p.seed for p in parts]),
            "covisibility": torch.tensor([p.info["covisibility"] for p in parts], dtype=torch.float32)}


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per worker: the host part is many tiny ops


class HostPool:
    """Host parts computed by `workers` processes ('spawn' or 'forkserver': safe with CUDA in the parent);
    workers=0 computes them inline, in the caller. Use as a context manager or call close()."""

    def __init__(self, workers: int, start_method: str = "spawn", keep: int = 4096):
        if workers < 0:
            raise OpenLSMError(f"workers must be >= 0, got {workers}")
        if start_method not in ("spawn", "forkserver"):  # a forked child of a CUDA process is unusable
            raise OpenLSMError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        self.workers = int(workers)
        self._executor = ProcessPoolExecutor(workers, multiprocessing.get_context(start_method),
                                             initializer=_init_worker) if workers else None
        self._kept: OrderedDict[tuple, Future] = OrderedDict()  # prefetched jobs not yet asked for
        self._keep = keep
        self._lock = threading.Lock()  # submit / prefetch may come from a trainer's prefetch thread too
        self._closed = False

    def _start(self, seed: int, cfg: SynthConfig, epoch: int) -> Future:
        if self._closed:
            raise OpenLSMError("HostPool is closed")
        if self._executor is not None:
            return self._executor.submit(host_part, seed, cfg, epoch)
        fut: Future = Future()
        try:
            fut.set_result(host_part(seed, cfg, epoch))
        except Exception as e:  # noqa: BLE001 - re-raised by fut.result(), as a worker's exception is
            fut.set_exception(e)
        return fut

    def submit(self, seed: int, cfg: SynthConfig, epoch: int = 0) -> Future:
        """Future of host_part(seed, cfg, epoch); takes the job started by `prefetch` if there is one."""
        key = (int(seed), cfg, int(epoch))  # host_part arguments
        with self._lock:
            fut = self._kept.pop(key, None)
        return fut if fut is not None else self._start(*key)

    def prefetch(self, jobs: Iterable[tuple[int, int]], cfg: SynthConfig) -> None:
        """Start host parts of (seed, epoch) jobs now, for later `submit`s (inline pools do nothing).
        At most `keep` unclaimed jobs are held; older ones are dropped."""
        if self._executor is None:
            return
        with self._lock:
            for seed, epoch in jobs:
                key = (int(seed), cfg, int(epoch))  # host_part arguments
                if key not in self._kept:
                    self._kept[key] = self._start(*key)
            while len(self._kept) > self._keep:
                self._kept.popitem(last=False)[1].cancel()

    def close(self) -> None:
        """Cancel queued jobs and wait for the workers to exit (a running job finishes first)."""
        with self._lock:
            self._closed = True
            for fut in self._kept.values():
                fut.cancel()
            self._kept.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SynthStream:
    """make_samples(seeds, cfg, epoch, device) for each seed list of `batches`, in order, with the host parts of
    up to `prefetch` later batches computing in the pool's workers while a batch renders here.

    workers: a count (the stream owns a HostPool of that size) or a HostPool to share (left open on close).
    stats: batches, samples, host_s (time spent here on host parts: computing them inline, or waiting for the
    workers), render_s (merge + render calls, as seen from the host).
    """

    def __init__(self, batches: Iterable[Sequence[int]], cfg: SynthConfig, device=None,
                 workers: int | HostPool = 0, epoch: int = 0, prefetch: int = 2):
        if prefetch < 0:
            raise OpenLSMError(f"prefetch must be >= 0, got {prefetch}")
        self.batches, self.cfg, self.device, self.epoch = batches, cfg, device, int(epoch)
        self._owns_pool = not isinstance(workers, HostPool)
        self.pool = HostPool(workers) if self._owns_pool else workers
        self.prefetch = prefetch if self.pool.workers else 0  # inline host parts gain nothing from running ahead
        self.stats = {"batches": 0, "samples": 0, "host_s": 0.0, "render_s": 0.0}

    def __iter__(self):
        todo = iter(self.batches)
        ahead: deque[list[Future]] = deque()

        def top_up() -> None:  # an inline pool computes the host parts right here
            while len(ahead) <= self.prefetch:
                seeds = next(todo, None)
                if seeds is None:
                    return
                ahead.append([self.pool.submit(s, self.cfg, self.epoch) for s in seeds])

        try:
            t0 = time.perf_counter()
            top_up()
            while ahead:
                futs = ahead.popleft()
                top_up()  # keep the workers busy while this batch renders
                parts = [f.result() for f in futs]  # a worker's exception is raised here
                t1 = time.perf_counter()
                out = render_parts(parts, self.cfg, self.device)
                t2 = time.perf_counter()
                self.stats["host_s"] += t1 - t0
                self.stats["render_s"] += t2 - t1
                self.stats["batches"] += 1
                self.stats["samples"] += len(parts)
                yield out
                t0 = time.perf_counter()
        finally:  # error or early stop: drop the jobs nobody will read
            for futs in ahead:
                for f in futs:
                    f.cancel()

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
