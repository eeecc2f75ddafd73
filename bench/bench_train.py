"""Training throughput of LSM (pairs/s, step time, peak memory) with the trainer's losses and optimizer.

    python bench/bench_train.py --device cuda --presets small paper --size 256 --batch 4 --precision bf16
    python bench/bench_train.py --device cpu --presets tiny --size 64 --batch 2 --steps 3
    python bench/bench_train.py --device cuda --presets small --size 256 --batch 32 --precision fp32 --loss geometry

`--loss geometry` times the geometry-only phase (model.dust3r and the 3D regression; the rest frozen as the
trainer does).

One SynthRooms batch (views 0, 1 in, all views rendered) is generated on the device once and reused, so
`pairs_per_s` is the optimizer-step rate alone; `data_ms` is the time to render one fresh batch of rooms and
`pairs_per_s_with_data` the rate when data generation runs in the loop (as the trainer does). Prints one JSON
line per preset (an out-of-memory preset reports "oom": true).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from openlsm.data.synthrooms.dataset import SynthRooms
from openlsm.models.lsm import LSM, LSMConfig
from openlsm.train.losses import LossWeights
from openlsm.train.optim import freeze, param_groups, set_train_mode
from openlsm.train.step import LossModule
from openlsm.train.trainer import amp_dtype_of, freeze_unused


def label_stages(model) -> None:
    """Name the model's stages and the renderer in profiler tables (record_function around each forward)."""
    from openlsm.train import step

    def labelled(name, fn):
        def run(*args, **kwargs):
            with torch.profiler.record_function(f"stage:{name}"):
                return fn(*args, **kwargs)
        return run

    for name in ("dust3r", "lseg_feature_extractor", "point_transformer", "gaussian_head"):
        module = getattr(model, name)
        module.forward = labelled(name, module.forward)
    step.render = labelled("render", step.render)


def bench_preset(preset: str, a, dev: torch.device) -> dict:
    if a.knn_growth:
        import functools

        import openlsm.models.lsm.gaussian_head as head
        from openlsm.models.lsm.knn import knn_mean_sq_dist

        head.knn_mean_sq_dist = functools.partial(knn_mean_sq_dist, chunk_growth=a.knn_growth,
                                                  max_elements=1 << 22 if a.knn_growth < 2 else 1 << 26)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = LSM(LSMConfig.preset(preset))
    freeze(model, tuple(a.freeze))
    freeze_unused(model, a.loss)
    model.to(dev)
    groups = param_groups(model, 0.05)
    trainable = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95))
    amp = amp_dtype_of(a.precision, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)
    loss_module = LossModule(model, LossWeights.preset(a.loss), amp)
    ds = SynthRooms("train", a.size, views=a.views, device=dev)
    sync()
    t = time.perf_counter()
    batch = ds.sample_batch(list(range(a.batch)))
    sync()
    data_first = time.perf_counter() - t
    t = time.perf_counter()
    ds.sample_batch(list(range(a.batch, 2 * a.batch)))
    sync()
    data_s = time.perf_counter() - t
    set_train_mode(model)
    res = {"bench": "train", "preset": preset, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
           f"cpu x{torch.get_num_threads()}", "precision": a.precision if amp is not None else "fp32",
           "loss_weights": a.loss, "size": a.size, "batch": a.batch, "views": a.views, "freeze": list(a.freeze), "knn_growth": a.knn_growth,
           "params": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    try:
        for it in range(a.warmup + a.steps):
            sync()
            t = time.perf_counter()
            loss, _ = loss_module(batch, torch.Generator().manual_seed(it))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sync()
            if it >= a.warmup:
                times.append(time.perf_counter() - t)
    except torch.OutOfMemoryError:
        return {**res, "oom": True}
    if a.profile:  # one more step under the profiler: where does a training step spend its time?
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        label_stages(model)
        with profile(activities=acts) as prof:
            loss, _ = loss_module(batch, torch.Generator().manual_seed(0))
            scaler.scale(loss).backward()
            opt.zero_grad(set_to_none=True)
            sync()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages()
        print(table.table(sort_by=key, row_limit=25, max_name_column_width=60), flush=True)
        # host view: stages (labelled below) and the calls that wait for the GPU, by time including children
        print(table.table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=60), flush=True)
    step_s = sorted(times)[len(times) // 2]
    res.update(step_ms=round(1000 * step_s, 1), pairs_per_s=round(a.batch / step_s, 2),
               data_ms=round(1000 * data_s, 1), data_first_ms=round(1000 * data_first, 1),
               pairs_per_s_with_data=round(a.batch / (step_s + data_s), 2), loss=round(float(loss.detach()), 4),
               finite=math.isfinite(float(loss.detach())))
    if dev.type == "cuda":
        res["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", nargs="+", default=["small"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4, help="pairs per step (one device)")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--loss", choices=["paper", "official-code", "geometry"], default="paper",
                   help="geometry: model.dust3r and the 3D regression only (what --loss geometry trains)")
    p.add_argument("--freeze", nargs="*", default=[], help="e.g. geometry_encoder (the official setting)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--knn-growth", type=float, default=None, help="kNN chunk growth and max_elements as on the CPU "
                   "(1.25, 2^22) or the GPU default (2, 2^26): pass 1.25 to time the CPU chunking on a GPU")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one more step")
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    dev = torch.device(a.device)
    for preset in a.presets:
        print(json.dumps(bench_preset(preset, a, dev)), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
