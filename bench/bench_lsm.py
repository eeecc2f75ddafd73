"""Whole LSM forward (random weights) on one 256² pair, with per-stage times like the paper's Table 3;
`--knn` times the Gaussian head's kNN alone on 2x256x256 point maps.

    python bench/bench_lsm.py --device cuda --presets paper small --dtype fp32
    python bench/bench_lsm.py --device cpu --presets small --threads 2
    python bench/bench_lsm.py --device cuda --presets paper --dtype bf16 --cuda-graphs
    python bench/bench_lsm.py --knn --device cpu --threads 2 [--knn-bruteforce]
    python bench/bench_lsm.py --device cuda --checkpoint src/openlsm/weights/lsm_small --knn-method grid
With --checkpoint the model is a trained one and the input the bundled `armchairs` pair (random weights see
random images); `--knn-method` picks the kNN (grid or Triton tiles; default: the device's) and `--knn-capped`
the grid's search ("none": grouped, as on the CPU; default: the device's).
Stages are timed with hooks around the geometry network, the semantic extractor, the point transformer and the
Gaussian head (device-synchronised); `knn` is the kNN inside the head. Prints one JSON line per preset.
kNN clouds: "room" (two unprojected depth maps of a box room, a dense surface) and "untrained" (the point maps
of the untrained small geometry net, a noisy volume); both 131,072 points.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from openlsm.examples import example_images
from openlsm.models.lsm import LSM, LSMConfig
from openlsm.models.lsm import gaussian_head as head_module
from openlsm.models.lsm import knn as knn_module
from openlsm.reconstruct import as_prepared, load_lsm
from openlsm.runtime import keep_freed_memory


def room_point_maps(size: int = 256) -> torch.Tensor:
    """[2 size^2, 3]: two views into a 4 x 3 x 8 m box room (camera near one wall), 1 mm depth noise."""
    g = torch.Generator().manual_seed(0)
    lo, hi = torch.tensor([-2.0, -1.5, -1.0]), torch.tensor([2.0, 1.5, 7.0])
    out = []
    for eye, yaw in (((0.0, 0.0, 0.0), 0.0), ((0.4, -0.1, 0.3), 0.25)):
        v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        d = torch.stack([(u - size / 2) / (0.8 * size), (v - size / 2) / (0.8 * size), torch.ones_like(u)], -1)
        c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
        rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        d = d.reshape(-1, 3) @ rot.T
        o = torch.tensor(eye)
        t = torch.where(d > 0, (hi - o) / d, (lo - o) / d).amin(1)  # exit distance of each ray from the box
        t = t * (1 + 1e-3 * torch.randn(t.shape, generator=g) / t)
        out.append(o + t[:, None] * d)
    return torch.cat(out)


def timed(fn, iters: int, sync) -> tuple[float, object]:
    fn()
    times = []
    for _ in range(iters):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def bench_knn(a, dev, sync):
    clouds = {"room": room_point_maps(a.size)}
    torch.manual_seed(0)
    model = LSM(LSMConfig.small()).eval()
    with torch.no_grad():
        img = torch.rand(2, 1, 3, a.size, a.size) * 2 - 1
        geo = model.dust3r(img[0], img[1])
    clouds["untrained"] = torch.cat([geo.pts3d_1.reshape(-1, 3), geo.pts3d_2.reshape(-1, 3)])
    for name, pts in clouds.items():
        pts = pts.to(dev)
        t, d2 = timed(lambda: knn_module.knn_mean_sq_dist(pts), a.iters, sync)  # noqa: B023
        res = {"bench": "knn", "cloud": name, "points": pts.shape[0], "device": device_name(dev),
               "grid_ms": round(1000 * t, 1)}
        searches = {"grouped": {"method": "grid", "capped": None},
                    "capped": {"method": "grid", "capped": knn_module.CAPPED_QUANTILE}}
        if knn_module.knn_tiles.tiles_available(dev):
            searches["tiles"] = {"method": "tiles"}
        for search, kwargs in searches.items():
            tp, d2p = timed(lambda: knn_module.knn_mean_sq_dist(pts, **kwargs), a.iters, sync)  # noqa: B023
            res[f"{search}_ms"] = round(1000 * tp, 1)
            res[f"{search}_equal_to_default"] = bool(torch.equal(d2p, d2))
            res[f"{search}_max_rel_diff_to_default"] = float(((d2p - d2).abs() / d2.clamp_min(1e-30)).max())
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                knn_module.knn_mean_sq_dist(pts, **kwargs)
                res[f"{search}_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        if a.knn_bruteforce:
            tb, ref = timed(lambda: knn_module.knn_mean_sq_dist_bruteforce(pts), 1, sync)  # noqa: B023
            res["bruteforce_ms"] = round(1000 * tb, 1)
            res["max_rel_diff"] = float(((d2 - ref).abs() / ref.clamp_min(1e-30)).max())
        print(json.dumps(res), flush=True)


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", nargs="+", default=["small"])
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables of one more forward")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the geometry net and the semantic extractor as CUDA graphs (LSM.use_cuda_graphs); "
                        "also reports the largest difference to the eager forward")
    p.add_argument("--knn", action="store_true", help="time the kNN alone")
    p.add_argument("--checkpoint", default=None, help="trained weights (then the input is the armchairs pair)")
    p.add_argument("--knn-capped", default="auto", help='grid kNN search: "auto", "none" or a quantile')
    p.add_argument("--knn-method", default="auto", help='kNN: "auto", "grid" or "tiles"')
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="keep: glibc reuses freed memory, as the CLI sets it (openlsm.runtime.keep_freed_memory)")
    p.add_argument("--knn-bruteforce", action="store_true", help="with --knn: also the all-pairs path (slow)")
    a = p.parse_args()
    if a.malloc == "keep":
        keep_freed_memory()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if a.knn:
        return bench_knn(a, dev, sync)
    for preset in ([None] if a.checkpoint else a.presets):
        print(json.dumps(bench_model(preset, a, dev, sync)), flush=True)


def bench_model(preset: str, a, dev: torch.device, sync) -> dict:
    torch.manual_seed(0)
    if a.checkpoint:
        model = load_lsm(a.checkpoint, dev)
        x = as_prepared(example_images("armchairs"), a.size).images * 2 - 1  # [2, 3, H, W]
        imgs = x[:, None].to(dev)
    else:
        model = LSM(LSMConfig.preset(preset)).to(dev).eval()
        imgs = torch.rand(2, 1, 3, a.size, a.size, device=dev) * 2 - 1
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

    if a.cuda_graphs:  # replayed stages call no hooks, and a sync inside a capture would break it
        del stages["geometry"], stages["semantics"]
    for name, mod in stages.items():
        mod.register_forward_pre_hook(start(name))
        mod.register_forward_hook(stop(name))
    knn = knn_module.knn_mean_sq_dist
    # only passed when asked for, so this script also times versions of the kNN without the option
    knn_kwargs = {} if a.knn_capped == "auto" else {"capped": None if a.knn_capped == "none" else float(a.knn_capped)}
    if a.knn_method != "auto":
        knn_kwargs["method"] = a.knn_method

    def timed_knn(*args, **kwargs):  # the head calls the kNN through its module global
        sync()
        t = time.perf_counter()
        out = knn(*args, **knn_kwargs, **kwargs)
        sync()
        times["knn"].append(time.perf_counter() - t)
        return out

    head_module.knn_mean_sq_dist = timed_knn
    eager = None
    if a.cuda_graphs:  # the eager result first, to compare against
        with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=a.dtype == "bf16"):
            eager = model(imgs[0], imgs[1])
        model.use_cuda_graphs()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    totals = []
    try:
        for it in range(max(a.iters, 1) + 1):
            if it == 1:
                times.clear()
            sync()
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=a.dtype == "bf16"):
                out = model(imgs[0], imgs[1])
            sync()
            totals.append(time.perf_counter() - t)
    finally:
        head_module.knn_mean_sq_dist = knn
    if a.profile:
        with torch.profiler.profile() as prof, torch.no_grad(), \
                torch.autocast(dev.type, torch.bfloat16, enabled=a.dtype == "bf16"):
            model(imgs[0], imgs[1])
            sync()
        for key in (["self_cuda_time_total"] if dev.type == "cuda" else []) + ["self_cpu_time_total", "count"]:
            print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)

    def med(xs):
        return sorted(xs)[len(xs) // 2]

    res = {"bench": "lsm", "preset": a.checkpoint or preset, "knn_capped": a.knn_capped, "knn_method": a.knn_method, "malloc": a.malloc,
           "device": device_name(dev), "dtype": a.dtype, "size": a.size,
           "params": sum(p.numel() for p in model.parameters()), "gaussians": out.gaussians.means.shape[1],
           "total_ms": round(1000 * med(totals[1:]), 1),
           "stages_ms": {k: round(1000 * med(v), 1) for k, v in times.items()}}
    if eager is not None:
        res["cuda_graphs"] = {"captures": model.graphs.captures, "max_abs_diff": {
            "pts3d_2": float((out.geometry.pts3d_2 - eager.geometry.pts3d_2).abs().max()),
            "semantic_features": float((out.semantic_features - eager.semantic_features).abs().max()),
            "gaussian_means": float((out.gaussians.means - eager.gaussians.means).abs().max())}}
    if dev.type == "cuda":
        res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res

if __name__ == "__main__":
    main()
