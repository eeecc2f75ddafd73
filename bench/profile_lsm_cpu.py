"""Where the CPU forward of the shipped LSM spends its time: per-module hooks + wrapped helper functions
(serialisation, voxel hashing, patch layouts, pooling, kNN), then torch.profiler's top ops.

    python bench/profile_lsm_cpu.py --threads 2 --iters 3            # shipped weights, test room 0, 256^2
    python bench/profile_lsm_cpu.py --threads 2 --iters 3 --no-profiler --rooms 0 1
    python bench/profile_lsm_cpu.py --random small                   # untrained preset, no weights needed

Times are inclusive (a block's time contains its conv and attention), medians over the timed iterations after
one warm-up; `calls` is per forward. Prints a table and one JSON line (`{"total_ms": ..., "stages_ms": ...}`).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
from collections import defaultdict

import torch

from openlsm.models.lsm import gaussian_head as head_module
from openlsm.models.lsm import knn as knn_module
from openlsm.models.lsm import ptv3 as ptv3_module
from openlsm.models.lsm import sparse_conv as conv_module

TIMES: dict[str, list[float]] = defaultdict(list)


def record(name: str, seconds: float) -> None:
    TIMES[name].append(seconds)


def hook_modules(model: torch.nn.Module) -> None:
    """One pre/post hook pair per interesting module; names with block numbers folded into groups too."""
    pt = model.point_transformer
    watched = {"geometry": model.dust3r, "extractor": model.lseg_feature_extractor, "point_transformer": pt,
               "gaussian_head": model.gaussian_head, "pt.embedding": pt.embedding}
    for stage_name, stage in list(pt.enc.items()) + list(pt.dec.items()):
        for name, mod in stage.items():
            watched[f"pt.{stage_name}.{name}"] = mod
            if name.startswith("block"):
                watched[f"pt.{stage_name}.{name}.cpe"] = mod.cpe
                watched[f"pt.{stage_name}.{name}.attn"] = mod.attn
                watched[f"pt.{stage_name}.{name}.mlp"] = mod.mlp
    for name in ("decoder_block_dust", "decoder_block_lseg", "decoder_block_multi_scale"):
        if hasattr(pt, name):
            watched[f"pt.fusion.{name}"] = getattr(pt, name)
    starts: dict[str, float] = {}
    for name, mod in watched.items():
        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            record(name, time.perf_counter() - starts[name])

        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)


def wrap(owner, attr: str, name: str) -> None:
    """Replace owner.attr (a function or method) by a timed version (skipped where the code has no attr)."""
    fn = getattr(owner, attr, None)
    if fn is None:
        return
    if isinstance(owner, type) and isinstance(owner.__dict__.get(attr), staticmethod):
        fn = owner.__dict__[attr].__func__

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        record(name, time.perf_counter() - t)
        return out

    if isinstance(owner, type) and isinstance(owner.__dict__.get(attr), staticmethod):
        setattr(owner, attr, staticmethod(timed))
    else:
        setattr(owner, attr, timed)


def wrap_functions() -> None:
    wrap(ptv3_module, "build_root_level", "pt.serialize.root_level")
    wrap(ptv3_module, "pool_level", "pt.serialize.pool_level")
    wrap(ptv3_module, "encode", "pt.serialize.encode")
    wrap(ptv3_module, "sort_codes", "pt.serialize.sort_codes")
    wrap(ptv3_module, "patch_layout", "pt.patch_layout")
    wrap(ptv3_module.PointLevel, "patches", "pt.PointLevel.patches")
    wrap(conv_module.VoxelIndex, "build", "conv.VoxelIndex.build")
    wrap(conv_module.VoxelIndex, "neighbours", "conv.VoxelIndex.neighbours")
    wrap(conv_module.VoxelIndex, "pairs", "conv.VoxelIndex.pairs")
    wrap(conv_module, "submanifold_conv3d_voxels", "conv.compute(all)")
    wrap(ptv3_module.SerializedAttention, "forward_slots", "pt.attn.forward_slots(all)")
    wrap(head_module, "knn_mean_sq_dist", "head.knn")
    wrap(knn_module, "_cell_size", "head.knn._cell_size")
    wrap(knn_module._Grid, "search", "head.knn.search")
    wrap(knn_module, "_knn_bruteforce", "head.knn.bruteforce_fallback")
    wrap(ptv3_module.CrossModalBlock, "forward_points", "pt.fusion.forward_points(all)")


def grouped(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Also sum per kind: pt.enc3.block1.attn -> pt.*.block*.attn."""
    out = dict(times)
    kinds: dict[str, list[float]] = defaultdict(list)
    for name, values in times.items():
        kind = re.sub(r"(enc|dec)\d+", r"\1*", re.sub(r"block\d+", "block*", name))
        if kind != name:
            kinds[kind].append(values)
    for kind, lists in kinds.items():
        iters = min(len(v) for v in lists)
        out[kind + " [sum]"] = [sum(v[i] for v in lists) for i in range(iters)] if iters else []
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--rooms", type=int, nargs="+", default=[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--random", default=None, help="an untrained preset instead of the shipped weights")
    p.add_argument("--no-profiler", action="store_true")
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.random:
        from openlsm.models.lsm import LSM, LSMConfig

        torch.manual_seed(0)
        model = LSM(LSMConfig.preset(a.random)).eval()
    else:
        from openlsm.reconstruct import load_lsm

        model = load_lsm(None)
    from openlsm.data.synthrooms import SynthRooms

    ds = SynthRooms("test", a.size, views=2)
    pairs = [ds[i]["images"] * 2 - 1 for i in a.rooms]
    hook_modules(model)
    wrap_functions()
    totals = []
    n_forwards = 0
    with torch.inference_mode():
        for it in range(a.iters + 1):
            if it == 1:  # first pass = warm-up
                TIMES.clear()
                n_forwards = 0
            for im in pairs:
                t = time.perf_counter()
                model(im[0:1], im[1:2])
                if it > 0:
                    totals.append(time.perf_counter() - t)
                    n_forwards += 1
    times = grouped(TIMES)

    def per_forward(values: list[float]) -> tuple[float, float]:
        calls = len(values) / max(n_forwards, 1)
        per = [sum(values[i:i + max(int(calls), 1)]) for i in range(0, len(values), max(int(calls), 1))]
        return sorted(per)[len(per) // 2], calls

    med_total = sorted(totals)[len(totals) // 2]
    print(f"total per forward: median {1000 * med_total:.1f} ms, all {[round(1000 * t) for t in totals]}")
    print(f"{'name':52s} {'ms/fwd':>9s} {'calls':>6s} {'%':>6s}")
    rows = {}
    for name in sorted(times, key=lambda n: -per_forward(times[n])[0]):
        ms, calls = per_forward(times[name])
        rows[name] = round(1000 * ms, 1)
        print(f"{name:52s} {1000 * ms:9.1f} {calls:6.1f} {100 * ms / med_total:6.1f}")
    print(json.dumps({"total_ms": round(1000 * med_total, 1), "stages_ms": rows}))
    if not a.no_profiler:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(pairs[0][0:1], pairs[0][1:2])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top))


if __name__ == "__main__":
    main()
