"""A small procedural Gaussian scene used by `openlsm demo` and the benchmarks (deterministic)."""

from __future__ import annotations

import math

import torch

from ..gaussians import Gaussians, rgb_to_sh0


def demo_scene(n_floor: int = 96, n_sphere: int = 2000, seed: int = 0) -> Gaussians:
    """Checkered floor (y = 1, OpenCV: +y is down) and three spheres around the origin; features = one-hot class."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(-2, 2, n_floor)
    fx, fz = torch.meshgrid(u, u + 2.5, indexing="ij")
    floor = torch.stack([fx.flatten(), torch.ones(fx.numel()), fz.flatten()], -1)
    checker = ((fx.flatten() * 2).floor() + (fz.flatten() * 2).floor()) % 2
    floor_rgb = torch.stack([0.2 + 0.6 * checker] * 3, -1)
    means, rgbs, classes = [floor], [floor_rgb], [torch.zeros(len(floor), dtype=torch.long)]
    for k, (cx, colour) in enumerate([(-1.0, (0.9, 0.2, 0.2)), (0.0, (0.2, 0.8, 0.3)), (1.0, (0.2, 0.3, 0.9))]):
        d = torch.randn(n_sphere, 3, generator=g)
        d = d / d.norm(dim=-1, keepdim=True)
        means.append(d * 0.4 + torch.tensor([cx, 0.6, 2.5]))
        shade = 0.6 + 0.4 * (-d[:, 1:2]).clamp(min=0)  # lit from above
        rgbs.append(torch.tensor(colour) * shade)
        classes.append(torch.full((n_sphere,), k + 1))
    means, rgbs, classes = torch.cat(means), torch.cat(rgbs), torch.cat(classes)
    n = len(means)
    spacing = 4 / n_floor
    return Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
                     log_scales=torch.full((n, 3), math.log(spacing * 0.7)),
                     opacity_logits=torch.full((n,), 3.0), sh=rgb_to_sh0(rgbs)[:, None, :],
                     features=torch.nn.functional.one_hot(classes, 8).float())
