"""Where the float32 PyTorch backend departs from its float64 self on the agreement scene of gpu_check_render.py:
for each RGB value off by > 1e-3, the (pixel, Gaussian) pairs near the alpha >= 1/255 cut-off, in both precisions.

    python bench/gpu_agreement_pairs.py --device cuda     # one JSON line per suspicious pair
"""

from __future__ import annotations

import argparse
import json

import torch

from openlsm.cameras import Cameras, look_at
from openlsm.gaussians import Gaussians
from openlsm.render import render
from openlsm.render.torch_backend import project_gaussians


def pair_terms(g, cams, dtype, dev, cam, px, py):
    g = g.to(dev).to(dtype)
    c = cams.flatten()
    m2, depths, conics, radii = project_gaussians(g.means, g.quats, g.scales, g.opacities, c.viewmats.to(g.means),
                                                  c.Ks.to(g.means), 256, 256)
    m2, conics, radii, depths = m2[cam], conics[cam], radii[cam], depths[cam]
    dx = (px + 0.5) - m2[:, 0]
    dy = (py + 0.5) - m2[:, 1]
    a2, b, c2 = 0.5 * conics[:, 0], conics[:, 1], 0.5 * conics[:, 2]
    sigma = dx * a2
    sigma.addcmul_(dy, b).mul_(dx).addcmul_(dy * dy, c2)
    sigma_max = torch.log(g.opacities * 255.0)
    alpha = g.opacities * torch.exp(-sigma)
    inside = (radii > 0).all(-1) & ((m2[:, 0] - px - 0.5).abs() <= radii[:, 0]) & ((m2[:, 1] - py - 0.5).abs() <= radii[:, 1])
    return sigma, sigma_max, alpha, depths, inside


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--threshold", type=float, default=1e-3)
    a = p.parse_args()
    dev = torch.device(a.device)
    g = Gaussians.random(20_000, sh_degree=3, feature_dim=64, seed=0)
    g.features = g.features * 0.3
    c2w = look_at(torch.tensor([[0.3, -0.4, -3.0], [-0.5, 0.2, -2.5]]), torch.zeros(2, 3), torch.tensor([0.0, -1, 0]))
    cams = Cameras.from_fov(60, 256, 256, c2w)
    with torch.no_grad():
        out = render(g.to(dev), cams.to(dev), backend="torch")
        exact = render(g.to(dev).to(torch.float64), cams.to(dev), backend="torch")
        d = (out.rgb.double() - exact.rgb).abs().amax(-1)
        bad = (d > a.threshold).nonzero().tolist()
        print(json.dumps({"device": str(dev), "max": d.max().item(), "bad_pixels": bad}))
        for cam, py, px in bad:
            s32, m32, a32, z32, in32 = pair_terms(g, cams, torch.float32, dev, cam, px, py)
            s64, m64, a64, z64, in64 = pair_terms(g, cams, torch.float64, dev, cam, px, py)
            keep32, keep64 = (s32 <= m32) & (s32 >= 0) & in32, (s64 <= m64) & (s64 >= 0) & in64
            near = ((a64 - 1 / 255).abs() < 1e-5) | (keep32 != keep64)
            order = torch.argsort(z64)
            for i in order[near[order]].tolist():
                print(json.dumps({"cam": cam, "px": px, "py": py, "gaussian": i, "depth": z64[i].item(),
                                  "keep32": bool(keep32[i]), "keep64": bool(keep64[i]),
                                  "alpha32_minus_cut": (a32[i] - 1 / 255).item(), "alpha64_minus_cut": (a64[i] - 1 / 255).item(),
                                  "sigma32": s32[i].item(), "sigma_max32": m32[i].item(), "sigma64": s64[i].item(),
                                  "sigma_max64": m64[i].item()}))
            # depth-order ties between Gaussians that both take weight at this pixel
            z = z32[keep64]
            zs = torch.sort(z).values
            print(json.dumps({"cam": cam, "px": px, "py": py, "contributors": int(keep64.sum()),
                              "float32_depth_ties": int((zs[1:] == zs[:-1]).sum())}))
        out2 = render(g.to(dev), cams.to(dev), backend="torch")
        print(json.dumps({"repeat_identical": bool(torch.equal(out.rgb, out2.rgb))}))


if __name__ == "__main__":
    main()
