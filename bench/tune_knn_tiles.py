"""Block sizes and warps of the Triton tile kNN on the bench clouds of `bench_lsm.py --knn` (CUDA only).

    python bench/tune_knn_tiles.py --iters 20
Prints one JSON line per configuration and cloud: median milliseconds and the largest relative difference to the
grid search.
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_lsm import room_point_maps, timed

from openlsm.models.lsm import LSM, LSMConfig
from openlsm.models.lsm.knn import knn_mean_sq_dist
from openlsm.models.lsm.knn_tiles import knn_mean_sq_dist_tiles

CONFIGS = [  # block_queries, block_keys, num_warps, box_chunk
    (64, 64, 4, 16), (64, 64, 4, 1), (64, 64, 4, 32), (64, 64, 2, 16), (128, 64, 4, 16), (128, 128, 4, 16),
    (128, 128, 8, 16), (64, 32, 2, 32), (32, 32, 1, 32), (128, 32, 4, 32), (32, 64, 2, 16),
    (32, 32, 1, 16), (32, 32, 1, 64), (32, 32, 2, 32), (32, 16, 1, 32), (16, 16, 1, 32), (16, 32, 1, 32)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    model = LSM(LSMConfig.small()).eval()
    with torch.no_grad():
        img = torch.rand(2, 1, 3, 256, 256) * 2 - 1
        geo = model.dust3r(img[0], img[1])
    clouds = {"room": room_point_maps(256),
              "untrained": torch.cat([geo.pts3d_1.reshape(-1, 3), geo.pts3d_2.reshape(-1, 3)])}
    sync = torch.cuda.synchronize
    for name, pts in clouds.items():
        pts = pts.cuda()
        ref = knn_mean_sq_dist(pts, method="grid")
        for bq, bk, warps, chunk in CONFIGS:
            t, d2 = timed(lambda: knn_mean_sq_dist_tiles(pts, 3, bq, bk, warps, chunk), a.iters, sync)  # noqa: B023
            print(json.dumps({"cloud": name, "block_queries": bq, "block_keys": bk, "num_warps": warps,
                              "box_chunk": chunk,
                              "ms": round(1000 * t, 2),
                              "max_rel_diff": float(((d2 - ref).abs() / ref.clamp_min(1e-30)).max())}), flush=True)


if __name__ == "__main__":
    main()
