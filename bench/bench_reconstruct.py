"""Per-stage times of `reconstruct` (preprocess, forward, camera recovery, semantic decode) and of writing the
output folder (files, video), on one bundled example pair.

    python bench/bench_reconstruct.py --device cpu --preset tiny --resolution 128
    python bench/bench_reconstruct.py --device cuda --preset small paper --repeat 3     # random weights
    python bench/bench_reconstruct.py --device cpu --checkpoint src/openlsm/weights/lsm_small

Prints one JSON line per configuration: median seconds per stage over --repeat runs (after one warm-up run).
Labels are decoded with MiniLM when the model's space is 384-d; other spaces skip that part of the stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from openlsm.examples import example_images
from openlsm.models.semantics.vocab import CLASSES
from openlsm.reconstruct import load_lsm, reconstruct


def build(preset: str, checkpoint: str | None, device: str):
    from openlsm.models.lsm.model import LSM, LSMConfig

    if checkpoint:
        return load_lsm(checkpoint, device)
    torch.manual_seed(0)
    return LSM(LSMConfig.preset(preset)).to(device).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", nargs="+", default=["tiny"])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--example", default="armchairs")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--video-frames", type=int, default=24, help="0 = no video")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = example_images(args.example)
    for preset in ([None] if args.checkpoint else args.preset):
        t0 = time.perf_counter()
        model = build(preset, args.checkpoint, args.device)
        load_s = time.perf_counter() - t0
        labels = list(CLASSES) if model.config.semantic_dim == 384 else None
        reconstruct(model, images, labels, resolution=args.resolution, strict_labels=False)  # warm-up
        runs = []
        for _ in range(args.repeat):
            scene = reconstruct(model, images, labels, resolution=args.resolution, strict_labels=False)
            with tempfile.TemporaryDirectory() as d:
                video = "interpolate" if args.video_frames else "none"
                scene.save(Path(d) / "out", video=video, frames=max(2, args.video_frames))
            runs.append(dict(scene.timings))
        stages = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
        print(json.dumps({"bench": "reconstruct", "preset": preset or args.checkpoint, "device": args.device,
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "resolution": args.resolution, "gaussians": len(scene.gaussians),
                          "params": sum(p.numel() for p in model.parameters()), "load_model_s": round(load_s, 3),
                          "stages_s": stages, "total_s": round(sum(stages.values()), 3),
                          "peak_gpu_mib": peak}), flush=True)


if __name__ == "__main__":
    main()
