"""How well a reconstruction re-renders its own inputs: PSNR of the two input views rendered at the recovered
cameras against the input images, for each colour-fit setting (shipped weights unless --checkpoint).

    python bench/input_view_psnr.py A.jpg B.jpg --color-fit 0 8     # one JSON line per setting
"""

from __future__ import annotations

import argparse
import json

import torch

from openlsm import load_lsm
from openlsm.metrics import psnr
from openlsm.reconstruct import set_view_fits
from openlsm.render import render


def main():
    p = argparse.ArgumentParser()
    p.add_argument("images", nargs=2)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--color-fit", type=int, nargs="+", default=[0, 8])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_lsm(args.checkpoint)
    for steps in args.color_fit:
        scene = set_view_fits(model, colors=steps).reconstruct(args.images)
        rgb = render(scene.gaussians, scene.cameras, backend="torch").rgb.permute(0, 3, 1, 2).clamp(0, 1)
        print(json.dumps({"images": args.images, "color_fit": steps, "psnr_db": [
            round(float(psnr(rgb[i:i + 1], scene.images[i:i + 1])), 2) for i in range(2)],
            "color_fit_s": round(scene.timings.get("color_fit", 0.0), 2)}))


if __name__ == "__main__":
    main()
