"""Forward time and peak memory of the geometry network (random weights) on an image pair; prints one JSON line.

    python bench/bench_geometry.py --device cpu --presets tiny small               # CPU
    python bench/bench_geometry.py --device cuda --presets paper --dtypes fp32 bf16  # GPU, 256x256 pair

bf16 runs the forward under torch.autocast (weights stay fp32). Also times camera recovery on the output.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from openlsm.models.lsm.camera_recovery import recover_cameras
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet, count_parameters

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(preset: str, dtype: str, device: torch.device, size: int, batch: int, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    net = GeometryNet(GeometryConfig.preset(preset)).to(device).eval()
    img1 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    img2 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    amp = DTYPES[dtype]
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else torch.no_grad

    def run():
        with torch.no_grad(), ctx():
            return net(img1, img2)

    for _ in range(warmup):
        run()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        out = run()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    t0 = time.perf_counter()
    recover_cameras(out.pts3d_1[:1].float(), out.pts3d_2[:1].float(), out.conf_1[:1].float(), out.conf_2[:1].float())
    _sync(device)
    rec_ms = (time.perf_counter() - t0) * 1e3
    res = {"preset": preset, "dtype": dtype, "params": count_parameters(net), "size": size, "batch": batch,
           "forward_ms_median": round(times[len(times) // 2] * 1e3, 3), "forward_ms_min": round(times[0] * 1e3, 3),
           "camera_recovery_ms": round(rec_ms, 2)}
    if device.type == "cuda":
        res["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:  # process-wide peak resident set (kB on Linux)
        res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="+", default=None, choices=["tiny", "small", "paper"],
                    help="default: paper on CUDA, tiny + small on CPU")
    ap.add_argument("--dtypes", nargs="+", default=None, choices=list(DTYPES),
                    help="default: fp32 bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--size", type=int, default=256, help="square image side (multiple of 16)")
    ap.add_argument("--batch", type=int, default=1, help="pairs per forward")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    presets = a.presets or (["paper"] if cuda else ["tiny", "small"])
    dtypes = a.dtypes or (["fp32", "bf16"] if cuda else ["fp32"])
    warmup = a.warmup if a.warmup is not None else (5 if cuda else 1)
    iters = a.iters if a.iters is not None else (20 if cuda else 3)
    results = [bench_one(p, d, device, a.size, a.batch, warmup, iters) for p in presets for d in dtypes]
    env = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps({"bench": "geometry", "env": env, "results": results}))


if __name__ == "__main__":
    main()
