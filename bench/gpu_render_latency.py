"""One gsplat frame's latency, variants compared in one process: `render()` with feature passes of 32 or 64
channels, the previous render.py (`--old FILE`, optional), and gsplat's compiled kernels alone
on precomputed inputs (the floor: no per-call tensor work). Variants take turns in rounds, so drifts of the machine
hit all of them alike.

    python bench/gpu_render_latency.py --size 256 --rounds 20 --frames 50 [--sh-degree 3] [--old outputs/old_render.py]

Scene and camera as bench/bench_render.py (131,072 Gaussians, RGB + depth + 64-d features). Each frame is timed with
a sync (what a viewer pays: every frame goes back to the host). Prints one JSON line: per variant the median and
10th/90th percentiles of all frames, the spread of the round medians, and the summed kernel time of one frame.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import time

import torch
from bench_render import pixel_aligned_scene

from openlsm.render import render

render_module = importlib.import_module("openlsm.render.render")  # the module (`render` is also its function)


def kernel_ms(fn) -> float:
    """Summed device time of the kernels (and memsets/copies) one call launches."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.device_time_total for e in prof.key_averages()) / 1000  # microseconds -> ms


def quantile_ms(sorted_seconds: list[float], f: float) -> float:
    return round(1000 * sorted_seconds[min(len(sorted_seconds) - 1, math.floor(f * len(sorted_seconds)))], 4)


def settings(feature_pass: int):
    def apply():
        render_module.GSPLAT_FEATURE_PASS_INFERENCE = feature_pass
    return apply


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--frames", type=int, default=50, help="timed frames per variant and round")
    p.add_argument("--sh-degree", type=int, default=0)
    p.add_argument("--old", default=None, help="a previous render.py to time beside the current one")
    a = p.parse_args()
    from openlsm.render import gsplat_kernels as gk

    dev = torch.device("cuda")
    g, cam = pixel_aligned_scene(256, sh_degree=a.sh_degree)  # the 256² scene at every output size, as bench_render
    cam = cam.rescale(a.size, a.size)
    g, cam = g.to(dev), cam.to(dev)
    W = H = a.size
    tile = render_module.GSPLAT_TILE_INFERENCE

    # the floor: compiled kernels on per-scene inputs computed once, feature pass of 64
    means, quats, scales, opac = g.means, g.quats, g.scales.contiguous(), g.opacities.contiguous()
    with torch.no_grad():
        colors = render_module.view_colors(g, cam.c2w[None], None).contiguous()  # [1, N, 3]
    feats = g.features[None].contiguous()
    viewmats, Ks = cam.viewmats[None].contiguous(), cam.Ks[None].contiguous()

    def kernels_only():
        radii, m2d, depths, conics = gk.project(means, quats, scales, opac, viewmats, Ks, W, H, 0.3, 0.01, 1e10)
        flat, offsets = gk.intersect(m2d, radii, depths, tile, 1, W, H)
        rgbd = gk.rasterize(m2d, conics, torch.cat([colors, depths[..., None]], -1), opac[None], W, H, tile, offsets,
                            flat)
        return rgbd, gk.rasterize(m2d, conics, feats, opac[None], W, H, tile, offsets, flat)

    def current():
        return render(g, cam, backend="gsplat")

    variants = {"render_pass32": (current, settings(32)), "render_pass64": (current, settings(64)),
                "kernels_only": (kernels_only, settings(32))}
    if a.old:
        spec = importlib.util.spec_from_file_location("openlsm.render.old_render", a.old)
        old = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look the module up
        spec.loader.exec_module(old)
        variants["old_render"] = (lambda: old.render(g, cam, backend="gsplat"), settings(32))
    times = {name: [] for name in variants}
    round_medians = {name: [] for name in variants}
    with torch.no_grad():
        for fn, apply in variants.values():  # warm-up
            apply()
            for _ in range(20):
                fn()
        torch.cuda.synchronize()
        for _ in range(a.rounds):
            for name, (fn, apply) in variants.items():
                apply()
                frames = []
                for _ in range(a.frames):
                    t = time.perf_counter()
                    fn()
                    torch.cuda.synchronize()
                    frames.append(time.perf_counter() - t)
                times[name] += frames
                round_medians[name].append(sorted(frames)[len(frames) // 2])
        res = {"bench": "render_latency", "device": torch.cuda.get_device_name(0), "gaussians": len(g),
               "size": a.size, "sh_degree": a.sh_degree, "tile": tile, "rounds": a.rounds, "frames": a.frames}
        for name, (fn, apply) in variants.items():
            apply()
            t, r = sorted(times[name]), sorted(round_medians[name])
            res[name] = {"median_ms": quantile_ms(t, 0.5), "fps": round(1 / t[len(t) // 2], 1),
                         "p10_ms": quantile_ms(t, 0.1), "p90_ms": quantile_ms(t, 0.9),
                         "round_medians_ms": [round(1000 * r[0], 4), round(1000 * r[-1], 4)],
                         "kernel_ms": round(kernel_ms(fn), 4)}
        settings(32)()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
