"""Speed of the 2D semantic extractors at 256x256 (random weights unless --lseg-weights), one JSON line.

    python bench/bench_semantics.py --extractor small --device cpu
    python bench/bench_semantics.py --extractor lseg --device cuda --batch 2 --iters 20 [--amp]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from openlsm.models.semantics import (
    LSegConfig,
    LSegNet,
    SmallExtractor,
    SmallExtractorConfig,
    load_lseg_checkpoint,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extractor", choices=["small", "lseg"], default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2, help="images per forward (LSM runs 2 views per pair)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--lseg-weights", default=None, help="optional demo_e200.ckpt")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.extractor == "lseg":
        with torch.device("meta"):
            model = LSegNet(LSegConfig())
        model = model.to_empty(device="cpu")
        if args.lseg_weights:
            load_lseg_checkpoint(model, args.lseg_weights)
        else:  # to_empty leaves memory uninitialised: fill with small random values so numbers stay finite
            with torch.no_grad():
                for t in model.state_dict().values():
                    if t.is_floating_point():
                        t.normal_(0, 0.02)
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_var.fill_(1.0)
    else:
        model = SmallExtractor(SmallExtractorConfig())
    model = model.to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1

    def step() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.amp):
            return model(images)

    for _ in range(args.warmup):
        out = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        out = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.iters
    print(json.dumps({
        "bench": "semantics", "extractor": args.extractor, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "size": args.size, "batch": args.batch, "amp": args.amp,
        "params": sum(p.numel() for p in model.parameters()), "feature_shape": list(out.shape),
        "ms_per_batch": round(dt * 1e3, 2), "images_per_s": round(args.batch / dt, 2),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "finite": bool(torch.isfinite(out.float()).all()),
    }))


if __name__ == "__main__":
    main()
