"""Throughput of SynthRooms: k-view samples per second (scene generation + camera sampling + rendering).

    python bench/bench_synthrooms.py --device cpu --threads 2
    python bench/bench_synthrooms.py --device cuda --n 100
    python bench/bench_synthrooms.py --device cuda --n 200 --batch 32   # make_samples: 32 scenes cast together
    python bench/bench_synthrooms.py --device cuda --n 640 --batch 64 --workers 15   # host parts in 15 processes
Prints one JSON line: samples/s, seconds per sample, peak memory (CPU max RSS or CUDA peak allocated). With
--batch, also the split of the timed wall clock: host_wait_s (scenes + cameras computed in the main process, or
waited for from the workers), render_s (merge + render on the device, synchronised per batch), and the main
process's CPU seconds per sample (with --workers the host parts leave it, so this drops to the render's share).
Pool start-up is not timed; the first batch (pipeline fill) is, and steady_samples_per_s leaves it out.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from contextlib import nullcontext

import torch

from openlsm.data.synthrooms import (
    HostPool,
    RenderConfig,
    SynthConfig,
    SynthStream,
    make_sample,
    render_parts,
)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--n", type=int, default=10, help="samples to time (after one warm-up)")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--no-adaptive", action="store_true", help="supersample every pixel, not only edges")
    ap.add_argument("--no-shadows", action="store_true")
    ap.add_argument("--seed0", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=0, help="scenes per make_samples call (0: make_sample per item)")
    ap.add_argument("--workers", type=int, default=0, help="processes for scenes + cameras (needs --batch)")
    ap.add_argument("--prefetch", type=int, default=2, help="batches whose host parts run ahead (with --workers)")
    a = ap.parse_args()
    if a.workers and not a.batch:
        ap.error("--workers needs --batch > 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = SynthConfig(a.res, a.res, a.views, render=RenderConfig(supersample=a.supersample,
                                                                 adaptive=not a.no_adaptive, shadows=not a.no_shadows))
    b = a.batch

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    split = {}
    with HostPool(a.workers) if b else nullcontext() as pool:
        if b:  # warm-up: start every worker (several jobs each) and the device
            warm = [pool.submit(a.seed0 - 1 - i, cfg) for i in range(max(b, 2 * a.workers))]
            render_parts([f.result() for f in warm][:b], cfg, dev)
        else:
            make_sample(a.seed0 - 1, cfg, device=dev)
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        if b:
            batches = [list(range(a.seed0 + i, a.seed0 + min(i + b, a.n))) for i in range(0, a.n, b)]
            stream = SynthStream(batches, cfg, dev, pool, prefetch=a.prefetch)
            t_sync, t_first = 0.0, 0.0
            for s in stream:
                t = time.perf_counter()
                sync()  # so that render_s holds the device time of the batch
                t_sync += time.perf_counter() - t
                t_first = t_first or time.perf_counter() - t0  # includes filling the pipeline
            split = {"host_wait_s": round(stream.stats["host_s"], 3),
                     "render_s": round(stream.stats["render_s"] + t_sync, 3), "first_batch_s": round(t_first, 3)}
            if len(batches) > 1:  # after the first batch: what a long run sees
                split["steady_samples_per_s"] = round((a.n - len(batches[0])) / (time.perf_counter() - t0 - t_first), 3)
        else:
            for seed in range(a.seed0, a.seed0 + a.n):
                out = make_sample(seed, cfg, device=dev)
            s = {k: v[None] for k, v in out.items()}
        sync()
        dt, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"bench": "synthrooms", "device": str(dev), "threads": torch.get_num_threads(), "res": a.res,
                      "views": a.views, "supersample": a.supersample, "adaptive": not a.no_adaptive,
                      "shadows": not a.no_shadows, "batch": b, "workers": a.workers, "n": a.n,
                      "samples_per_s": round(a.n / dt, 3), "s_per_sample": round(dt / a.n, 4), "wall_s": round(dt, 3),
                      **split, "parent_cpu_s_per_sample": round(cpu / a.n, 4),
                      "peak_mem_mb": round(peak / 2**20, 1), "last_shape": list(s["images"].shape[1:])}))


if __name__ == "__main__":
    main()
