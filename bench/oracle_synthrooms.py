"""Upper reference for target-view PSNR on SynthRooms: Gaussians placed at the ground-truth depth of the two input
views (one per pixel, input colour, the Gaussian head's scale rule x 0.5, opacity 0.9), rendered from the GT target
camera. Without hallucinating content the inputs never saw, a feed-forward model of this family scores about this.

    python bench/oracle_synthrooms.py --res 128 --scenes 12
Prints one line per room (share of target pixels the inputs see, PSNR on all pixels and on those) and the means.
"""

from __future__ import annotations

import argparse
import json

import torch

from openlsm.cameras.cameras import Cameras, unproject_depth
from openlsm.data.synthrooms.dataset import SynthRooms
from openlsm.eval.metrics import seen_by_inputs
from openlsm.gaussians.gaussians import Gaussians, rgb_to_sh0
from openlsm.metrics import psnr
from openlsm.metrics.align import relative_to_first
from openlsm.models.lsm.gaussian_head import GaussianHeadConfig, clamp_scales
from openlsm.render.render import render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--split", default="test")
    a = ap.parse_args()
    ds = SynthRooms(a.split, resolution=a.res, views=3)
    rows = []
    for i in range(a.scenes):
        s = ds[i]
        imgs, depths, Ks = s["images"], s["depths"], s["Ks"]
        c2w = relative_to_first(s["c2w"][None])[0]
        seen = seen_by_inputs(depths, s["valid"].bool(), Ks, c2w)[0]
        means = unproject_depth(depths[:2], Ks[:2], c2w[:2]).reshape(1, -1, 3)
        n = means.shape[1]
        scales = clamp_scales(torch.zeros(1, n, 3), means, GaussianHeadConfig())[0] * 0.5
        g = Gaussians(means[0], torch.tensor([1.0, 0, 0, 0]).expand(n, 4), scales.log(),
                      torch.logit(torch.tensor(0.9)).expand(n), rgb_to_sh0(imgs[:2].permute(0, 2, 3, 1).reshape(-1, 3))[:, None])
        rgb = render(g, Cameras(Ks[2], c2w[2], a.res, a.res)).rgb.permute(2, 0, 1).clamp(0, 1)[None]
        mask = seen[None, None].expand(1, 3, a.res, a.res).float()
        row = {"room": i, "seen": float(seen.float().mean()), "psnr_all": float(psnr(rgb, imgs[2:3])),
               "psnr_seen": float(psnr(rgb, imgs[2:3], mask=mask)) if seen.any() else float("nan")}
        rows.append(row)
        print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    t = torch.tensor([[r["seen"], r["psnr_all"], r["psnr_seen"]] for r in rows])
    print(json.dumps({"bench": "oracle_synthrooms", "split": a.split, "res": a.res, "scenes": a.scenes,
                      "mean_seen": round(float(t[:, 0].mean()), 4), "mean_psnr_all": round(float(t[:, 1].mean()), 2),
                      "mean_psnr_seen": round(float(t[:, 2].nanmean()), 2)}))


if __name__ == "__main__":
    main()
