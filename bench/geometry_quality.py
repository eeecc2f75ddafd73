"""Depth and camera quality of LSM checkpoints on more SynthRooms test rooms than a full evaluation affords on a
CPU: the geometry network alone, view 0's median-scaled depth AbsRel / τ and the relative pose recovered from the
point maps; with --psnr also the whole model's target-view PSNR (GT cameras aligned as in `openlsm eval`, RGB only).

    python bench/geometry_quality.py --rooms 40 src/openlsm/weights/lsm_small outputs/candidate
    python bench/geometry_quality.py --first 8 --rooms 32 --psnr src/openlsm/weights/lsm_small outputs/candidate
Prints one JSON line per checkpoint (means, medians, per-room values).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from openlsm.data.synthrooms import SynthRooms
from openlsm.eval import metrics as M
from openlsm.eval.harness import target_seen
from openlsm.eval.predict import align_gt_cameras
from openlsm.models.lsm.camera_recovery import recover_cameras
from openlsm.models.lsm.model import LSM
from openlsm.render import render


@torch.no_grad()
def score_room(model, sample: dict, psnr: bool) -> dict[str, float]:
    images = sample["images"].float() * 2 - 1  # [V, 3, H, W]
    if psnr:
        out = model(images[0:1], images[1:2])
        geo = out.geometry
    else:
        geo = model.dust3r(images[0:1], images[1:2])
    d = M.depth_metrics(geo.pts3d_1[0][..., 2][None], sample["depths"][:1], sample["valid"][:1])
    rec = recover_cameras(geo.pts3d_1[0], geo.pts3d_2[0], geo.conf_1[0], geo.conf_2[0])
    rot, trans = M.relative_pose_errors(rec.cameras.c2w, sample["c2w"][:2])
    row = {"abs_rel": float(d["abs_rel"][0]), "inlier": float(d["inlier"][0]), "rot": float(rot[0]),
           "trans": float(trans[0])}
    if psnr:
        pts3d = torch.stack([geo.pts3d_1[0], geo.pts3d_2[0]])
        cams, _ = align_gt_cameras(pts3d, sample["depths"], sample["valid"], sample["Ks"], sample["c2w"])
        r = render(out.gaussians[0], cams[2:], backend="torch", with_features=False)
        im = M.image_metrics(r.rgb.permute(0, 3, 1, 2), sample["images"][2:], target_seen(sample))
        row["psnr"], row["psnr_seen"] = float(im["psnr"].mean()), float(im["psnr_seen"].nanmean())
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--first", type=int, default=0, help="first test room")
    p.add_argument("--rooms", type=int, default=40)
    p.add_argument("--psnr", action="store_true", help="also run the whole model and render the target view")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = SynthRooms("test", 256, views=3, length=args.first + args.rooms)
    models = {c: LSM.load(c).eval() for c in args.checkpoints}
    rows: dict[str, list[dict]] = {c: [] for c in models}
    for i in range(args.first, args.first + args.rooms):
        sample = data[i]
        for c, model in models.items():
            rows[c].append(score_room(model, sample, args.psnr))
    for c, rs in rows.items():
        out = {"checkpoint": c, "rooms": [args.first, args.first + args.rooms]}
        for k in rs[0]:
            vals = [r[k] for r in rs]
            out[k] = {"mean": statistics.fmean(vals), "median": statistics.median(vals),
                      "rooms": [round(v, 3) for v in vals]}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
