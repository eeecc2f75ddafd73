"""Training data order and sources: a batch is a pure function of (seed, step), so resuming needs only the step.

    pairs = global_batch(seed=0, step=12, batch_size=8, n=1000)    # [(room index, epoch)] * 8
    source = SynthRoomsSource("train", resolution=64, views=3, size=1000)
    batch = source.fetch(pairs[rank * 4:(rank + 1) * 4])          # images [4, V, 3, H, W], ...

Sample i of the endless stream (i = step * batch_size + k) belongs to pass e = i // n over the n training rooms and
is room perm_e[i % n], where perm_e is a permutation seeded by (seed, e). Ranks take contiguous slices of the
global batch. With `resample_cameras`, pass e draws new cameras (SynthRooms.set_epoch(e)).

SynthRoomsSource(..., workers=N) computes the host part of samples (scene + cameras) in N processes; the Prefetcher
starts those of the next step (`prepare`) as soon as it is scheduled. Values never depend on N.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from openlsm.errors import OpenLSMError


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (SeedSequence hashing: nearby keys give unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@functools.lru_cache(maxsize=2)
def pass_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(mix_seed(seed, 0xDA7A, epoch))
    return torch.randperm(n, generator=gen)


def global_batch(seed: int, step: int, batch_size: int, n: int) -> list[tuple[int, int]]:
    """(room index, pass) of the `batch_size` samples of optimizer step `step`."""
    out = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n)
        out.append((int(pass_permutation(seed, epoch, n)[pos]), epoch))
    return out


KEYS = ("images", "depths", "valid", "Ks", "c2w", "labels")  # what training uses (the cache keeps only these)


def concat_batches(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}


class SynthRoomsSource:
    """SynthRooms rooms `0..size-1` of a split; `fetch` renders (or takes from the cache) a list of samples.

    workers > 0: scenes and cameras (the CPU part of a sample) come from that many processes (per rank), started
    ahead by `prepare`; rendering stays on `device`. Same values as workers=0. close() stops the processes.
    """

    def __init__(self, split: str, resolution: int, views: int, size: int | None = None, device=None,
                 resample_cameras: bool = True, cache: bool = False, workers: int = 0):
        from openlsm.data.synthrooms.dataset import SynthRooms
        from openlsm.data.synthrooms.pipeline import HostPool

        if resolution % 16:
            raise OpenLSMError(f"resolution must be a multiple of 16, got {resolution}")
        if views < 2:
            raise OpenLSMError(f"need at least 2 views (the inputs), got {views}")
        self.dataset = SynthRooms(split, resolution, views=views, length=size, device=device)
        self.resample_cameras = resample_cameras
        self.cache = {} if cache else None
        self.pool = HostPool(workers) if workers else None  # processes start on the first job

    def __len__(self) -> int:
        return len(self.dataset)

    def _pass(self, epoch: int) -> int:
        """Pass whose cameras a sample of pass `epoch` uses (0 without resample_cameras); the cache key."""
        return epoch if self.resample_cameras else 0

    def _camera_epoch(self, epoch: int) -> int:
        return epoch if self.dataset.split == "train" else 0  # as SynthRooms.set_epoch: val/test cameras stay

    def _render(self, indices: list[int], epoch: int) -> dict:
        from openlsm.data.synthrooms.dataset import make_samples

        # the epoch goes in as an argument (not set_epoch): a prefetch thread may render while prepare runs
        ds = self.dataset
        sample = make_samples(ds.seeds(indices), ds.cfg, self._camera_epoch(self._pass(epoch)), ds.device,
                              self.pool or 0)
        return {k: sample[k] for k in KEYS}

    def prepare(self, pairs: list[tuple[int, int]]) -> None:
        """Start the host parts of samples [(index, pass)] in the workers, for a later fetch (no-op without)."""
        if self.pool is None:
            return
        keys = [(index, self._pass(epoch)) for index, epoch in pairs]
        if self.cache is not None:
            keys = [k for k in keys if k not in self.cache]
        seeds = self.dataset.seeds([index for index, _ in keys])
        self.pool.prefetch([(seed, self._camera_epoch(e)) for seed, (_, e) in zip(seeds, keys)], self.dataset.cfg)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def fetch(self, pairs: list[tuple[int, int]]) -> dict:
        """Stack samples [(index, pass)] -> batch dict (images [S, V, 3, H, W], depths, valid, Ks, c2w, labels)."""
        self.prepare(pairs)  # all host parts of the batch at once (done already when the Prefetcher ran it)
        if self.cache is not None:  # one sample at a time, so a sample's values never depend on its batch
            if self.resample_cameras:  # camera draws of finished passes are never asked for again
                oldest = min(e for _, e in pairs)
                for key in [k for k in self.cache if k[1] < oldest]:
                    del self.cache[key]
            parts = []
            for index, epoch in pairs:
                key = (index, self._pass(epoch))
                if key not in self.cache:
                    self.cache[key] = self._render([index], key[1])
                parts.append(self.cache[key])
            return concat_batches(parts)
        runs: list[tuple[int, list[int]]] = []  # consecutive samples of one pass render together
        for index, epoch in pairs:
            if runs and runs[-1][0] == epoch:
                runs[-1][1].append(index)
            else:
                runs.append((epoch, [index]))
        return concat_batches([self._render(idx, e) for e, idx in runs])


class DatasetSource:
    """Any `load_dataset` spec (ScanNet, ScanNet++, Replica, folders, SynthRooms on disk) as a training source:
    samples 0..size-1 of the split at `resolution`², read on the CPU and moved to `device`. A sample's pass sets
    the loader's epoch (new random crops per pass where the loader has them)."""

    def __init__(self, spec: str, split: str, resolution: int, views: int, size: int | None = None, device=None):
        from openlsm.data.loaders import load_dataset

        self.dataset = load_dataset(spec, split=split, resolution=resolution, views=views)
        self.size = len(self.dataset) if size is None else min(size, len(self.dataset))
        if self.size == 0:
            raise OpenLSMError(f"{spec}: no {split} samples")
        self.device = device

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:  # nothing to release (SynthRoomsSource has worker processes)
        pass

    def fetch(self, pairs: list[tuple[int, int]]) -> dict:
        samples = []
        for index, epoch in pairs:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            samples.append(self.dataset[index])
        keys = [k for k in KEYS if all(k in smp for smp in samples)]  # labels only when every sample has them
        return {k: torch.stack([torch.as_tensor(smp[k]) for smp in samples]).to(self.device) for k in keys}


def make_source(data: str, split: str, resolution: int, views: int, size: int | None, device,
                resample_cameras: bool = True, cache: bool = False, workers: int = 0):
    """`synthrooms`: rooms rendered on the fly on `device` (host parts in `workers` processes); anything else is
    a `load_dataset` spec (workers unused)."""
    if data == "synthrooms":
        return SynthRoomsSource(split, resolution, views, size, device, resample_cameras, cache, workers)
    return DatasetSource(data, split, resolution, views, size, device)


class Prefetcher:
    """Renders the next step's batch in a background thread while the current step trains (CPU-side scene
    generation overlaps GPU work; both threads use the default CUDA stream, so ordering stays correct). Data
    are a pure function of the pairs, so prefetching changes no value.

    `schedule` also calls `source.prepare(pairs)` where the source has one (SynthRoomsSource with workers), even
    when the thread is off: the worker processes then build the next step's scenes while this step trains."""

    def __init__(self, source, enabled: bool):
        self.source = source
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="openlsm-data") if enabled else None
        self.pending: tuple[int, Future] | None = None

    def get(self, step: int, pairs: list[tuple[int, int]]) -> dict:
        if self.pending is not None and self.pending[0] == step:
            batch = self.pending[1].result()
            self.pending = None
            return batch
        return self.source.fetch(pairs)

    def schedule(self, step: int, pairs: list[tuple[int, int]]) -> None:
        prepare = getattr(self.source, "prepare", None)
        if prepare is not None:
            prepare(pairs)
        if self.pool is not None:
            self.pending = (step, self.pool.submit(self.source.fetch, pairs))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
