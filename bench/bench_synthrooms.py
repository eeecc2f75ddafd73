"""Throughput of SynthRooms: k-view samples per second (scene generation + camera sampling + rendering).

    python bench/bench_synthrooms.py --device cpu --threads 2
    python bench/bench_synthrooms.py --device cuda --n 100
    python bench/bench_synthrooms.py --device cuda --n 200 --batch 32   # make_samples: 32 scenes cast together
Prints one JSON line: samples/s, seconds per sample, peak memory (CPU max RSS or CUDA peak allocated).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from openlsm.data.synthrooms import RenderConfig, SynthConfig, make_sample, make_samples


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
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = SynthConfig(a.res, a.res, a.views, render=RenderConfig(supersample=a.supersample,
                                                                 adaptive=not a.no_adaptive, shadows=not a.no_shadows))
    b = a.batch

    def run(seeds):
        if b:
            return make_samples(seeds, cfg, device=dev)
        for seed in seeds:
            out = make_sample(seed, cfg, device=dev)
        return {k: v[None] for k, v in out.items()}

    run([a.seed0 - 1 - i for i in range(max(b, 1))])  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step = max(b, 1)
    for i in range(0, a.n, step):
        s = run(list(range(a.seed0 + i, a.seed0 + min(i + step, a.n))))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"bench": "synthrooms", "device": str(dev), "threads": torch.get_num_threads(), "res": a.res,
                      "views": a.views, "supersample": a.supersample, "adaptive": not a.no_adaptive,
                      "shadows": not a.no_shadows, "batch": b, "n": a.n, "samples_per_s": round(a.n / dt, 3),
                      "s_per_sample": round(dt / a.n, 4), "peak_mem_mb": round(peak / 2**20, 1),
                      "last_shape": list(s["images"].shape[1:])}))


if __name__ == "__main__":
    main()
