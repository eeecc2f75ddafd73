"""Evaluation harness as a benchmark: LSM reconstruction time and render FPS next to baseline (a), per-scene 3DGS.

    python bench/bench_eval.py --device cuda --preset small --scenes 20 --resolution 256 --gs-steps 1000
    python bench/bench_eval.py --device cuda --checkpoint run/model --scenes 40 --out $OUT/eval
    python bench/bench_eval.py --device cpu --preset tiny --scenes 2 --resolution 64 --gs-steps 20
Runs `openlsm.eval.evaluate` (LSM + baselines a and c on SynthRooms test) and prints one JSON line: LSM forward
time, render FPS, baseline (a) optimisation time, the speed-up (issue 6 target: >= 100x), and the headline scores.
With --out it also writes metrics.json there. Random weights (no --checkpoint) measure speed only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from openlsm.eval.baselines import GaussianFitConfig
from openlsm.eval.harness import EvalConfig, evaluate, print_table, write_metrics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default=None)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--data", default="synthrooms:test")
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--gs-steps", type=int, default=1000)
    p.add_argument("--baselines", default="3dgs,2d")
    p.add_argument("--text-table", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.checkpoint is None and a.preset is None:
        a.preset = "small"
    cfg = EvalConfig(checkpoint=a.checkpoint, preset=a.preset, data=a.data, scenes=a.scenes,
                     resolution=a.resolution, baselines=tuple(a.baselines.split(",")) if a.baselines else (),
                     gs=GaussianFitConfig(steps=a.gs_steps), text_table=a.text_table, device=a.device)
    t0 = time.perf_counter()
    result = evaluate(cfg, log=print)
    wall = time.perf_counter() - t0
    if a.out is not None:
        write_metrics(result, a.out / "metrics.json")
    print_table(result)
    s = result["summary"]

    def mean(method, key):
        return s.get(method, {}).get(key, {}).get("mean")

    lsm_t, gs_t = mean("lsm", "recon_s"), mean("3dgs", "time_s")
    line = {"device": result["device"], "model": result["model"]["source"], "scenes": result["data"]["scenes"],
            "resolution": a.resolution, "lsm_recon_s": lsm_t, "lsm_render_fps": mean("lsm", "render_fps"),
            "gs_steps": a.gs_steps, "gs_time_s": gs_t,
            "speedup_vs_3dgs": (gs_t / lsm_t) if lsm_t and gs_t else None,
            "lsm_psnr": mean("lsm", "psnr"), "gs_psnr": mean("3dgs", "psnr"), "lsm_ssim": mean("lsm", "ssim"),
            "gs_ssim": mean("3dgs", "ssim"), "lsm_abs_rel": mean("lsm", "abs_rel"),
            "lsm_src_miou": result["pooled"].get("lsm", {}).get("src", {}).get("miou"),
            "2d_src_miou": result["pooled"].get("2d", {}).get("src", {}).get("miou"),
            "pose_rot_deg": mean("lsm", "pose_rot_deg"), "wall_s": round(wall, 1)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
