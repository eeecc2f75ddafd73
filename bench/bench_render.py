"""Renderer benchmark: 131k pixel-aligned Gaussians (two 256² views lifted by depth), RGB + depth + 64-d features.

    python bench/bench_render.py --device cpu --backend torch --sizes 256
    python bench/bench_render.py --device cuda --backend gsplat --sizes 256 512
    python bench/bench_render.py --threads 1 --cpu-time --scene openlsm-demo   # a saved reconstruction, CPU time
Prints one JSON line per configuration. On the CPU the compositing is Numba's where it is installed (forward only);
OPENLSM_NUMBA=0 times the pure-PyTorch one.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from openlsm.cameras import Cameras, look_at, unproject_depth
from openlsm.gaussians import Gaussians, rgb_to_sh0
from openlsm.render import render
from openlsm.runtime import keep_freed_memory


def pixel_aligned_scene(res: int = 256, feature_dim: int = 64, seed: int = 0,
                        sh_degree: int = 0) -> tuple[Gaussians, Cameras]:
    """Two views of a wavy wall 3 m away; one Gaussian per pixel, about one pixel wide. SH bands above 0 are
    random (0.1 std): view-dependent colour as in a reconstruction."""
    g = torch.Generator().manual_seed(seed)
    eyes = torch.tensor([[-0.2, 0.0, 0.0], [0.2, 0.0, 0.0]])
    c2w = look_at(eyes, torch.tensor([[0.0, 0.0, 3.0]] * 2), torch.tensor([0.0, -1.0, 0.0]))
    cams = Cameras.from_fov(60, res, res, c2w)
    v, u = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    depth = (3 + 0.3 * torch.sin(4 * u) * torch.cos(3 * v)).expand(2, res, res)
    means = unproject_depth(depth, cams.Ks, cams.c2w).reshape(-1, 3)
    n = means.shape[0]
    px = (depth / cams.Ks[:, None, None, 0, 0]).reshape(-1)  # metres per pixel
    rgb = torch.rand(n, 3, generator=g)
    gs = Gaussians(means=means, quats=torch.randn(n, 4, generator=g),
                   log_scales=torch.log(px * 0.7)[:, None].repeat(1, 3) + 0.2 * torch.randn(n, 3, generator=g),
                   opacity_logits=torch.full((n,), 2.0), sh=rgb_to_sh0(rgb)[:, None, :],
                   features=torch.randn(n, feature_dim, generator=g))
    if sh_degree:
        rest = 0.1 * torch.randn(n, (sh_degree + 1) ** 2 - 1, 3, generator=torch.Generator().manual_seed(1))
        gs.sh = torch.cat([gs.sh, rest], 1)
    mid = look_at(torch.tensor([0.0, -0.05, 0.0]), torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, -1.0, 0.0]))
    return gs, Cameras.from_fov(60, res, res, mid)


def _render_gsplat_rasterization(g, colors, feats, viewmats, Ks, width, height, near, far, eps2d):
    """The previous gsplat path: one `rasterization` call on RGB + features + expected depth."""
    from gsplat import rasterization

    C = viewmats.shape[0]
    values = colors if feats is None else torch.cat([colors, feats[None].expand(C, -1, -1)], -1)
    out, alphas, _ = rasterization(g.means, g.quats, g.scales, g.opacities, values, viewmats, Ks, width, height,
                                   near_plane=near, far_plane=far, eps2d=eps2d, render_mode="RGB+ED", packed=False,
                                   channel_chunk=128)
    return out[..., :3], out[..., -1], alphas[..., 0], out[..., 3:-1] if feats is not None else None


def timed(fn, device, repeat, clock=time.perf_counter, warmup=1):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        sync()
        times.append(clock() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch")
    p.add_argument("--sizes", type=int, nargs="+", default=[256])
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    p.add_argument("--backward", action="store_true")
    p.add_argument("--gsplat-rasterization", action="store_true", help="time gsplat.rasterization() in one call "
                   "(RGB+ED on 68 channels, channel_chunk 128: the previous implementation) instead of openlsm's path")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one forward")
    p.add_argument("--feature-pass", type=int, default=None, help="gsplat feature channels per rasterisation pass")
    p.add_argument("--tile", type=int, default=None, help="gsplat tile size (pixels per side; openlsm uses 8 without gradients, 16 with)")
    p.add_argument("--cameras", type=int, default=1, help="views per render call (throughput = cameras x FPS)")
    p.add_argument("--scene", default=None, help="a reconstruction folder (gaussians.ply + cameras.json) to render "
                   "from its first camera instead of the synthetic wall")
    p.add_argument("--sh-degree", type=int, default=0, help="SH degree of the synthetic wall")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="keep: glibc reuses freed memory, as the CLI sets it (openlsm.runtime.keep_freed_memory)")
    p.add_argument("--cpu-time", action="store_true", help="report process CPU time instead of wall time "
                   "(robust when other jobs share the CPU)")
    a = p.parse_args()
    if a.malloc == "keep":
        keep_freed_memory()
    if a.threads:
        torch.set_num_threads(a.threads)
    clock = time.process_time if a.cpu_time else time.perf_counter
    if a.feature_pass:
        import sys

        sys.modules["openlsm.render.render"].GSPLAT_FEATURE_PASS = a.feature_pass
        sys.modules["openlsm.render.render"].GSPLAT_FEATURE_PASS_INFERENCE = a.feature_pass
    if a.tile:
        import sys

        sys.modules["openlsm.render.render"].GSPLAT_TILE = a.tile
        sys.modules["openlsm.render.render"].GSPLAT_TILE_INFERENCE = a.tile
    if a.gsplat_rasterization:
        import sys

        sys.modules["openlsm.render.render"]._render_gsplat = _render_gsplat_rasterization
        sys.modules["openlsm.render.render"]._needs_grad = lambda *_: True  # also without gradients
    device = torch.device(a.device)
    if a.scene:
        from openlsm.scene import Scene

        scene = Scene.load(a.scene)
        g, cam = scene.gaussians, scene.cameras[0:1]
    else:
        g, cam = pixel_aligned_scene(256, a.features, sh_degree=a.sh_degree)
    if a.cameras > 1:  # the view slid sideways by up to ±10 cm: a batch of nearby frames
        c2w = cam.c2w.reshape(1, 4, 4).repeat(a.cameras, 1, 1)
        c2w[:, 0, 3] += torch.linspace(-0.1, 0.1, a.cameras)
        cam = Cameras(cam.Ks.reshape(1, 3, 3).expand(a.cameras, 3, 3), c2w, cam.width, cam.height)
    g, cam = g.to(device), cam.to(device)
    for size in a.sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def fwd(size=size):
            with torch.no_grad():
                return render(g, cam, size, size, backend=a.backend)

        t_fwd = timed(fwd, device, a.repeat, clock, a.warmup)
        res = {"bench": "render", "device": torch.cuda.get_device_name(0) if device.type == "cuda" else
               f"cpu x{torch.get_num_threads()}", "backend": a.backend, "gaussians": len(g), "size": size,
               "features": a.features, "gsplat_rasterization": a.gsplat_rasterization, "scene": a.scene, "malloc": a.malloc, "clock": clock.__name__,
               "cameras": a.cameras, "sh_degree": a.sh_degree, "warmup": a.warmup, "repeat": a.repeat, "tile": a.tile, "feature_pass": a.feature_pass,
               "forward_s": round(t_fwd, 5), "fps": round(a.cameras / t_fwd, 1)}
        if a.backward:
            params = [t.requires_grad_() for t in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, g.features)]

            def fwd_bwd(size=size):
                out = render(g, cam, size, size, backend=a.backend)
                (out.rgb.mean() + out.features.mean() + out.depth.mean()).backward()

            res["forward_backward_s"] = round(timed(fwd_bwd, device, a.repeat, clock, a.warmup), 5)
            for t in params:
                t.requires_grad_(False)
        if a.profile:
            with torch.profiler.profile() as prof:
                fwd()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=sort_by, row_limit=20), flush=True)
        if device.type == "cuda":
            res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
