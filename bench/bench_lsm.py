"""Whole LSM forward (random weights) on one 256² pair, with per-stage times like the paper's Table 3.

    python bench/bench_lsm.py --device cuda --presets paper small --dtype fp32
    python bench/bench_lsm.py --device cpu --presets small
Stages are timed with hooks around the geometry network, the semantic extractor, the point transformer and the
Gaussian head (device-synchronised). Prints one JSON line per preset.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from openlsm.models.lsm import LSM, LSMConfig


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", nargs="+", default=["small"])
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iters", type=int, default=5)
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for preset in a.presets:
        torch.manual_seed(0)
        model = LSM(LSMConfig.preset(preset)).to(dev).eval()
        stages = {"geometry": model.dust3r, "semantics": model.lseg_feature_extractor,
                  "point_transformer": model.point_transformer, "gaussian_head": model.gaussian_head}
        times, starts = defaultdict(list), {}

        def start(name):
            def hook(module, inputs):  # returns None: a pre-hook's return value would replace the inputs
                sync()
                starts[name] = time.perf_counter()
            return hook

        def stop(name):
            def hook(module, inputs, output):
                sync()
                times[name].append(time.perf_counter() - starts[name])
            return hook

        for name, mod in stages.items():
            mod.register_forward_pre_hook(start(name))
            mod.register_forward_hook(stop(name))
        imgs = torch.rand(2, 1, 3, a.size, a.size, device=dev) * 2 - 1
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        totals = []
        for it in range(a.iters + 1):
            if it == 1:
                times.clear()
            sync()
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=a.dtype == "bf16"):
                out = model(imgs[0], imgs[1])
            sync()
            totals.append(time.perf_counter() - t)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        res = {"bench": "lsm", "preset": preset, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else
               f"cpu x{torch.get_num_threads()}", "dtype": a.dtype, "size": a.size,
               "params": sum(p.numel() for p in model.parameters()), "gaussians": out.gaussians.means.shape[1],
               "total_ms": round(1000 * med(totals[1:]), 1),
               "stages_ms": {k: round(1000 * med(v), 1) for k, v in times.items()}}
        if dev.type == "cuda":
            res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
