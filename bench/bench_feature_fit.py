"""The feature fit (`LSMConfig.feature_fit_*`) on trained weights: per-stage times and how far it brings the
rendered input views towards their own Gaussians' features, on SynthRooms test rooms at 256².

    python bench/bench_feature_fit.py --device cpu --threads 2 --scenes 2
    python bench/bench_feature_fit.py --device cuda --scenes 4 --iters 3 8     # sparse weights
    OPENLSM_MATRIX_FREE=1 python bench/bench_feature_fit.py --device cuda ...   # matrix-free, through gsplat
Prints one JSON line per (scene, iters): operator build and solve seconds (device-synchronised), the operator, its
non-zero weights per view (sparse), and the relative error |W_v F - T_v| / |T_v| of each input view before and after.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from openlsm.data.synthrooms import SynthRooms
from openlsm.models.lsm.feature_fit import SparseViews, solve_features, view_operator
from openlsm.reconstruct import load_lsm, recover_scene_cameras


def synced(device: torch.device, fn, *args):
    """(fn(*args), seconds), device-synchronised."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="LSM weights folder (default: the shipped ones)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--iters", type=int, nargs="+", default=[8])
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--min-weight", type=float, default=1e-3)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    model = load_lsm(a.checkpoint, device=device)
    data = SynthRooms("test", 256, views=2)
    for i in range(a.scenes):
        x = data[i]["images"].float().to(device) * 2 - 1
        with torch.no_grad():
            out, forward_s = synced(device, model, x[:1], x[1:])
            cams, _, warning = recover_scene_cameras(out, 256, 256)
            if warning:
                print(json.dumps({"scene": i, "skipped": warning}))
                continue
            g = out.gaussians[0]
            F0 = g.features.float()
            T = F0.reshape(2, 256 * 256, -1)
            views, build_s = synced(device, view_operator, g, cams.to(device), a.min_weight)
            before = (views.apply(F0) - T).flatten(1).norm(dim=1) / T.flatten(1).norm(dim=1)
            for iters in a.iters:
                X, solve_s = synced(device, solve_features, views, T, F0, a.ridge, iters)
                after = (views.apply(X) - T).flatten(1).norm(dim=1) / T.flatten(1).norm(dim=1)
                sparse = isinstance(views, SparseViews)
                print(json.dumps({"scene": i, "device": str(device), "iters": iters, "ridge": a.ridge,
                                  "operator": type(views).__name__, "min_weight": a.min_weight if sparse else 0,
                                  "forward_s": round(forward_s, 3), "build_s": round(build_s, 3),
                                  "solve_s": round(solve_s, 3),
                                  "nnz": [int(w.values().numel()) for w in views.A] if sparse else None,
                                  "rel_err_before": [round(float(e), 4) for e in before],
                                  "rel_err_after": [round(float(e), 4) for e in after]}), flush=True)


if __name__ == "__main__":
    main()
