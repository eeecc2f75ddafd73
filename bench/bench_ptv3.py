"""Forward-pass benchmark of the point aggregation network (PTv3 + LSM fusion), random weights.

Input: a synthetic merged cloud of two 256x256 "views" (131,072 points: smooth depth surfaces seen from two
nearby cameras), normalised like LSM, plus random geometry/semantic tokens (512 each, as in LSM).
Measures `paper` in fp32 and bf16 autocast on CUDA and `small` on CPU; prints one JSON line.

    python bench/bench_ptv3.py                          # CUDA part if available, then CPU part
    python bench/bench_ptv3.py --device cpu --cpu-points 16384 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import torch

from openlsm.models.lsm.ptv3 import PointTransformer, PTv3Config, normalize_points


def synthetic_views(points_per_view: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two depth-map-like surfaces -> pts [1, 2M, 3], rgb [1, 2M, 3] in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    h = math.isqrt(points_per_view)
    w = points_per_view // h
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    views = []
    for i in range(2):
        depth = 2.0 + 0.3 * torch.sin(3 * u + i) * torch.cos(2 * v) + 0.01 * torch.randn(u.shape, generator=gen)
        pts = torch.stack([u * depth * 0.6, v * depth * 0.6, depth], -1).reshape(-1, 3)
        angle = 0.2 * i  # second camera rotated about y and shifted
        rot = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])
        views.append(pts @ rot.T + torch.tensor([0.3 * i, 0.0, 0.0]))
    pts = torch.cat(views)[None]
    rgb = torch.rand(pts.shape, generator=gen) * 2 - 1
    return pts, rgb


def time_forward(cfg: PTv3Config, device: str, points: int, autocast_dtype: torch.dtype | None,
                 repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    net = PointTransformer(cfg).to(device).eval()
    pts, rgb = synthetic_views(points // 2)
    coords, _, _ = normalize_points(pts)
    coords = coords.reshape(-1, 3).to(device)
    feats = torch.cat([coords, rgb.reshape(-1, 3).to(device)], -1)
    offsets = torch.tensor([coords.shape[0]], device=device)
    geo = torch.randn(1, 512, cfg.geometry_dim, device=device)
    sem = torch.randn(1, 512, cfg.semantic_dim, device=device)
    cuda = device.startswith("cuda")

    def once() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device_type="cuda" if cuda else "cpu", dtype=autocast_dtype or
                                             torch.bfloat16, enabled=autocast_dtype is not None):
            return net(coords, feats, offsets, geo, sem)

    for _ in range(warmup):
        once()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = once()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"points": int(coords.shape[0]), "ms": round(1000 * min(times), 2),
              "ms_mean": round(1000 * sum(times) / len(times), 2), "finite": bool(torch.isfinite(out).all())}
    if cuda:
        result["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA part if available, then the CPU part")
    parser.add_argument("--points", type=int, default=131072, help="points for the CUDA runs (2 views)")
    parser.add_argument("--cpu-points", type=int, default=131072, help="points for the CPU run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"torch": torch.__version__}
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name()
        paper = PTv3Config.paper()
        report["paper_cuda_fp32"] = time_forward(paper, "cuda", args.points, None, args.repeats, args.warmup)
        report["paper_cuda_bf16"] = time_forward(paper, "cuda", args.points, torch.bfloat16, args.repeats,
                                                 args.warmup)
    if args.device in ("auto", "cpu"):
        report["small_cpu_fp32"] = time_forward(PTv3Config.small(), "cpu", args.cpu_points, None,
                                                max(1, args.repeats // 5), min(args.warmup, 1))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
