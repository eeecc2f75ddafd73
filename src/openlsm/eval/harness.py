"""The evaluation harness: LSM and baselines over a test split -> metrics.json and a short table.

    cfg = EvalConfig(preset="tiny", data="synthrooms:test", scenes=2, resolution=32, baselines=("3dgs", "2d"))
    result = evaluate(cfg)                   # JSON-ready dict (see README of metrics.json below)
    write_metrics(result, "eval/metrics.json"); print_table(result)

metrics.json: `scenes` (one record per scene and method), `summary` (mean, population std and count over scenes),
`pooled` (segmentation from the confusion matrices summed over all scenes, per-class IoU included), `held_out`
queries (every class replaced by a held-out synonym) reported separately, the environment (device, versions, git
commit), the config, and `nonfinite`: the JSON paths whose value is null because it was inf or nan (PSNR of
identical images is inf). Segmentation and depth metrics are fractions (AbsRel 0.05 = 5 %), angles in degrees.
LPIPS (VGG) is computed only from weights the user gives; otherwise `lpips` says unavailable and no value is
written (never approximated).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from openlsm.errors import OpenLSMError
from openlsm.io.atomic import write_text_atomic
from openlsm.reconstruct import set_view_fits

from . import metrics as M
from .baselines import (
    BaselineUnavailable,
    GaussianFitConfig,
    init_gaussians,
    optimize_gaussians,
    render_views,
    segment_2d,
    sfm_two_view,
)
from .loading import load_eval_model, open_dataset
from .predict import decode_labels, predict
from .queries import synonym_sets, text_space

BASELINES = {"a": "3dgs", "b": "sfm", "c": "2d"}


@dataclass
class EvalConfig:
    checkpoint: Path | None = None
    preset: str | None = None
    data: str = "synthrooms:test"
    scenes: int = 10
    resolution: int = 256
    views: int = 3  # 2 inputs + targets
    class_names: tuple[str, ...] = ()  # empty: every dataset class except the ignored ones
    text_encoder: str = "auto"
    text_table: Path | None = None  # precomputed text embeddings (for --text-encoder table / auto)
    baselines: tuple[str, ...] = ()  # "3dgs", "sfm", "2d" (or a, b, c)
    gs: GaussianFitConfig = field(default_factory=GaussianFitConfig)
    gs_features: bool = True  # baseline (a) also distils the extractor's features (Feature-3DGS style)
    render_repeats: int = 3
    recover_pose: bool = True
    feature_fit: int | None = None  # override LSMConfig.feature_fit_iters (None: the checkpoint's)
    color_fit: int | None = None  # override LSMConfig.color_fit_iters (None: the checkpoint's)
    refine: int | None = None  # override LSMConfig.refine_steps (None: the checkpoint's)
    lpips_weights: Path | None = None  # VGG-16 (torchvision) or a full LPIPS state dict
    lpips_linear: Path | None = None  # the LPIPS linear layers (lpips weights/v0.1/vgg.pth), if not in the above
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    warmup: bool = True  # one untimed forward + render before the first scene (lazy set-up is not timed)


def parse_baselines(text: str | tuple[str, ...]) -> tuple[str, ...]:
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    out = []
    for t in items:
        name = BASELINES.get(t, t)
        if name not in BASELINES.values():
            raise OpenLSMError(f"unknown baseline {t!r}; choose from a (3dgs), b (sfm), c (2d)")
        if name not in out:
            out.append(name)
    return tuple(out)


def environment(device: torch.device) -> dict:
    from importlib import metadata

    import openlsm

    versions = {"python": platform.python_version(), "torch": torch.__version__, "openlsm": openlsm.__version__}
    for pkg in ("numpy", "gsplat", "pycolmap"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if device.type == "cuda":
        name = f"cuda: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        name = f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    return {"device": name, "versions": versions, "git": git_info(Path(openlsm.__file__).parent)}


def git_info(path: Path) -> dict | None:
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5,
                                  check=True).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def seg_record(cm: torch.Tensor, prefix: str) -> dict:
    s = M.segmentation_scores(cm)
    return {f"{prefix}_miou": s["miou"], f"{prefix}_acc": s["acc"], f"{prefix}_macc": s["macc"]}


class Accumulator:
    """Confusion matrices summed over scenes, per (method, key)."""

    def __init__(self, k: int):
        self.k, self.cms = k, {}

    def add(self, method: str, key: str, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        cm = M.confusion_matrix(pred, gt, self.k)
        self.cms[(method, key)] = self.cms.get((method, key), 0) + cm
        return cm

    def pooled(self, names: list[str]) -> dict:
        out: dict = {}
        for (method, key), cm in self.cms.items():
            s = M.segmentation_scores(cm)
            iou = {n: (None if math.isnan(v) else v) for n, v in zip(names, s["iou"])}  # null: class absent
            out.setdefault(method, {})[key] = {"miou": s["miou"], "acc": s["acc"], "macc": s["macc"], "iou": iou,
                                               "pixels": int(cm.sum())}
        return out


def evaluate(cfg: EvalConfig, log=print) -> dict:
    """Run the evaluation; returns the JSON-ready result (not yet written)."""
    from openlsm.runtime import pick_device

    device = pick_device(cfg.device)
    baselines = parse_baselines(cfg.baselines)
    data = open_dataset(cfg.data, cfg.resolution, cfg.views, cfg.scenes, device)
    model, model_info = load_eval_model(cfg.checkpoint, cfg.preset, device, cfg.seed)
    set_view_fits(model, cfg.feature_fit, cfg.color_fit, cfg.refine)
    has_labels = data.class_names is not None
    names = list(cfg.class_names) or ([n for i, n in enumerate(data.class_names) if i not in data.ignore_ids]
                                      if has_labels else [])
    if has_labels:
        unknown = [n for n in names if n not in data.class_names]
        if unknown:
            raise OpenLSMError(f"class names {unknown} are not classes of {data.description} ({data.class_names})")
        # dataset label id -> index into `names` (-1 = not scored)
        lut = torch.tensor([names.index(n) if n in names and i not in data.ignore_ids else -1
                            for i, n in enumerate(data.class_names)], dtype=torch.int64, device=device)
        space = text_space(model, cfg.text_encoder, cfg.text_table)
        texts = space.embed(names).to(device)
        held = synonym_sets(names)
        held_texts = [space.embed(h).to(device) for h in held]
    else:
        log(f"{data.description} has no semantic labels: segmentation metrics are skipped")
        space, texts, held, held_texts = None, None, [], []
        baselines = tuple(b for b in baselines if b != "2d")
    lpips = None
    if cfg.lpips_weights is not None:
        from .lpips import load_lpips

        lpips = load_lpips(cfg.lpips_weights, cfg.lpips_linear).to(device)
    acc = Accumulator(len(names))
    sfm_status = None
    scenes = []
    for i in range(data.length):
        sample = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.dataset[i].items()}
        if i == 0 and cfg.warmup:
            predict(model, sample, cfg.backend, render_repeats=1, recover_pose=False)
        torch.manual_seed(cfg.seed + i)  # the point transformer's serialisation orders
        gt_labels = map_labels(sample, lut) if has_labels else None  # [V, H, W], -1 ignored
        record = {"index": i, "scene": scene_name(sample),
                  "lsm": score_lsm(model, sample, gt_labels, texts, held_texts, acc, cfg, lpips)}
        if "3dgs" in baselines:
            record["3dgs"] = score_3dgs(model, sample, gt_labels, texts, acc, cfg, lpips)
        if "2d" in baselines:
            record["2d"] = score_2d(model, sample, gt_labels, texts, acc)
        if "sfm" in baselines:
            record["sfm"], sfm_status = score_sfm(sample)
        scenes.append(record)
        log(f"scene {i + 1}/{data.length}: " + ", ".join(
            f"{m} {_short(r)}" for m, r in record.items() if isinstance(r, dict)))
    methods = [m for m in ("lsm", "3dgs", "2d", "sfm") if m in scenes[0]]
    summary = {}
    for m in methods:  # every numeric key any scene reported (a failed baseline scene reports fewer)
        keys = dict.fromkeys(k for s in scenes for k, v in s[m].items() if isinstance(v, (int, float)))
        summary[m] = {k: M.summarize([s[m].get(k) for s in scenes]) for k in keys}
    pooled = acc.pooled(names)
    held_pooled = [{"names": h, **{key: pooled["lsm"].pop(f"held{j}_{key}") for key in ("src", "tgt")}}
                   for j, h in enumerate(held)]
    cfg_dict = _jsonable(asdict(cfg))
    result = {
        "format": "openlsm-eval", "version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **environment(device),
        "config": cfg_dict, "model": model_info,
        "data": {"spec": cfg.data, "description": data.description, "scenes": data.length,
                 "resolution": cfg.resolution, "views": cfg.views, "inputs": [0, 1],
                 "targets": list(range(2, cfg.views))},
        "text_encoder": None if space is None else {"name": space.name, "dim": space.dim,
                                                    "meaningful": space.meaningful},
        "class_names": names, "held_out_queries": held,
        "lpips": lpips_status(cfg.lpips_weights, cfg.lpips_linear),
        "baselines": {"3dgs": (f"per-scene 3DGS from the GT-posed inputs ({cfg.gs.steps} steps, {cfg.gs.init} init, "
                               f"features {'distilled' if cfg.gs_features and has_labels else 'off'}; "
                               f"time excludes SfM)") if "3dgs" in baselines else "not run",
                      "sfm": (sfm_status or "ok") if "sfm" in baselines else "not run",
                      "2d": "2D extractor alone" if "2d" in baselines else "not run"},
        "scenes": scenes, "summary": summary, "pooled": pooled, "held_out": held_pooled,
    }
    clean, flags = M.json_safe(result)
    clean["nonfinite"] = flags
    return clean


def map_labels(sample: dict, lut: torch.Tensor) -> torch.Tensor:
    """Dataset label ids [V, H, W] -> indices into the scored names (-1: ignored, also for ids < 0 or unknown)."""
    labels = sample["labels"].long()
    ok = (labels >= 0) & (labels < len(lut))
    return torch.where(ok, lut[labels.clamp(0, len(lut) - 1)], torch.full_like(labels, -1))


def scene_name(sample: dict) -> str | None:
    if "scene" in sample and isinstance(sample["scene"], str):
        return sample["scene"]
    if isinstance(sample.get("scene_seed"), torch.Tensor):
        return f"seed {int(sample['scene_seed'])}"
    return None


def target_seen(sample: dict) -> torch.Tensor:
    """Target-view pixels the two inputs see (GT depth and cameras), for PSNR on what can be reconstructed."""
    return M.seen_by_inputs(sample["depths"], sample["valid"].bool(), sample["Ks"], sample["c2w"])


def score_lsm(model, sample, gt_labels, texts, held_texts, acc: Accumulator, cfg: EvalConfig, lpips=None) -> dict:
    """LSM on one scene; gt_labels [V, H, W] (indices into texts, -1 ignored) or None for data without labels."""
    pred = predict(model, sample, cfg.backend, cfg.render_repeats, cfg.recover_pose)
    rec = {}
    if gt_labels is not None:
        labels = decode_labels(model, pred.features, texts)  # [V, H, W]
        rec.update(seg_record(acc.add("lsm", "src", labels[:2], gt_labels[:2]), "src"))
        rec.update(seg_record(acc.add("lsm", "tgt", labels[2:], gt_labels[2:]), "tgt"))
        H, W = sample["images"].shape[-2:]  # each input pixel read from its own Gaussian, as Scene.segment does
        own = pred.gaussians.features.reshape(2, H, W, -1).permute(0, 3, 1, 2).to(pred.features.dtype)
        own_labels = decode_labels(model, model.expand_features(own), texts)
        rec.update(seg_record(acc.add("lsm", "own", own_labels, gt_labels[:2]), "own"))
    d = M.depth_metrics(pred.source_depths, sample["depths"][:2], sample["valid"][:2])
    rec["abs_rel"], rec["inlier"] = float(d["abs_rel"].nanmean()), float(d["inlier"].nanmean())
    im = M.image_metrics(pred.rgb[2:], sample["images"][2:], target_seen(sample))
    rec["psnr"], rec["ssim"] = float(im["psnr"].mean()), float(im["ssim"].mean())
    rec["psnr_seen"] = float(im["psnr_seen"].nanmean())
    if lpips is not None:
        rec["lpips"] = float(lpips(pred.rgb[2:], sample["images"][2:]).mean())
    rec["recon_s"], rec["render_fps"], rec["scale"] = pred.recon_s, pred.render_fps, pred.scale
    for j, ht in enumerate(held_texts):
        hl = decode_labels(model, pred.features, ht)
        for key, sl in (("src", slice(0, 2)), ("tgt", slice(2, None))):
            cm = acc.add("lsm", f"held{j}_{key}", hl[sl], gt_labels[sl])
            rec[f"held{j}_{key}_miou"] = M.segmentation_scores(cm)["miou"]
    if pred.pose_error is not None:
        rec["pose_status"] = pred.pose_error
    elif pred.pose_c2w is not None:
        rot, trans = M.relative_pose_errors(pred.pose_c2w, sample["c2w"][:2])
        rec["pose_rot_deg"], rec["pose_trans_deg"], rec["pose_s"] = float(rot[0]), float(trans[0]), pred.pose_s
        f_gt = sample["Ks"][:2, 0, 0].double().cpu()
        rec["focal_rel_err"] = float(((pred.pose_focals.double().cpu() - f_gt).abs() / f_gt).mean())
    return rec


def score_3dgs(model, sample, gt_labels, texts, acc: Accumulator, cfg: EvalConfig, lpips=None) -> dict:
    from openlsm.cameras.cameras import Cameras
    from openlsm.metrics.align import relative_to_first

    images, H, W = sample["images"], sample["images"].shape[-2], sample["images"].shape[-1]
    cams = Cameras(sample["Ks"].float(), relative_to_first(sample["c2w"][None].float())[0], W, H)  # GT, metric
    gs = replace(cfg.gs, backend=cfg.backend)
    inputs = (images[:2], sample["depths"][:2], sample["valid"][:2], cams[:2])
    with torch.no_grad():
        distil = cfg.gs_features and gt_labels is not None
        teacher = model.extract_semantics(images[:2].float() * 2 - 1) if distil else None
        g0_rgb, _ = render_views(init_gaussians(*inputs, gs), cams, cfg.backend)
    g, info = optimize_gaussians(*inputs, gs, teacher)
    rgb, feats = render_views(g, cams, cfg.backend)
    im, im0 = M.image_metrics(rgb[2:], images[2:], target_seen(sample)), M.image_metrics(g0_rgb[2:], images[2:])
    tr, tr0 = M.image_metrics(rgb[:2], images[:2]), M.image_metrics(g0_rgb[:2], images[:2])
    rec = {"time_s": info["time_s"], "steps": info["steps"], "gaussians": info["gaussians"],
           "psnr": float(im["psnr"].mean()), "psnr_seen": float(im["psnr_seen"].nanmean()),
           "ssim": float(im["ssim"].mean()),
           "psnr_init": float(im0["psnr"].mean()), "train_psnr": float(tr["psnr"].mean()),
           "train_psnr_init": float(tr0["psnr"].mean())}
    if lpips is not None:
        rec["lpips"] = float(lpips(rgb[2:], images[2:]).mean())
    if feats is not None and gt_labels is not None:
        labels = decode_labels(model, feats, texts)
        rec.update(seg_record(acc.add("3dgs", "src", labels[:2], gt_labels[:2]), "src"))
        rec.update(seg_record(acc.add("3dgs", "tgt", labels[2:], gt_labels[2:]), "tgt"))
    return rec


def score_2d(model, sample, gt_labels, texts, acc: Accumulator) -> dict:
    labels = segment_2d(model, sample["images"], texts)
    rec = seg_record(acc.add("2d", "src", labels[:2], gt_labels[:2]), "src")
    rec.update(seg_record(acc.add("2d", "tgt", labels[2:], gt_labels[2:]), "tgt"))
    return rec


def score_sfm(sample) -> tuple[dict, str | None]:
    try:
        out = sfm_two_view(sample["images"][:2], sample["Ks"][:2].cpu())
    except BaselineUnavailable as e:
        return {"status": "unavailable"}, f"unavailable: {e}"
    except Exception as e:  # noqa: BLE001 - COLMAP failing on a pair is a result, not a crash
        return {"status": f"failed: {type(e).__name__}: {e}"}, None
    rot, trans = M.relative_pose_errors(out["c2w"], sample["c2w"][:2].cpu())
    return {"status": "ok", "pose_rot_deg": float(rot[0]), "pose_trans_deg": float(trans[0]),
            "time_s": out["time_s"]}, None


def lpips_status(weights: Path | None, linear: Path | None) -> dict:
    if weights is None:
        return {"available": False, "reason": "no LPIPS weights given (--lpips-weights); never approximated"}
    return {"available": True, "variant": "vgg16", "weights": str(weights), "linear": None if linear is None
            else str(linear)}


def _short(rec: dict) -> str:
    keys = [k for k in ("src_miou", "abs_rel", "psnr", "pose_rot_deg", "time_s", "status") if k in rec]
    return " ".join(f"{k}={rec[k]:.3g}" if isinstance(rec[k], float) else f"{k}={rec[k]}" for k in keys)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_metrics(result: dict, path: str | os.PathLike) -> Path:
    """Write strict JSON atomically (temp file in the same folder + os.replace)."""
    return write_text_atomic(path, json.dumps(result, indent=2, allow_nan=False) + "\n")


# --- the table ---------------------------------------------------------------------------------------------------

ROWS = [  # (label, summary key (None: the method's own time), pooled (view, key) or None, scale, digits)
    ("src mIoU", "src_miou", ("src", "miou"), 1, 3), ("src Acc", "src_acc", ("src", "acc"), 1, 3),
    ("src mIoU, own Gaussian", "own_miou", ("own", "miou"), 1, 3),
    ("depth AbsRel %", "abs_rel", None, 100, 2), ("depth τ<1.03 %", "inlier", None, 100, 1),
    ("tgt mIoU", "tgt_miou", ("tgt", "miou"), 1, 3), ("tgt Acc", "tgt_acc", ("tgt", "acc"), 1, 3),
    ("tgt PSNR", "psnr", None, 1, 2), ("tgt PSNR, seen px", "psnr_seen", None, 1, 2),
    ("tgt SSIM", "ssim", None, 1, 3), ("tgt LPIPS", "lpips", None, 1, 3),
    ("recon. time s", None, None, 1, 3), ("render FPS", "render_fps", None, 1, 0),
    ("pose rot °", "pose_rot_deg", None, 1, 2), ("pose trans °", "pose_trans_deg", None, 1, 2),
]


def table_cells(result: dict) -> dict[str, list[str]]:
    """{method: one cell per ROWS entry}: segmentation pooled over scenes, the rest mean ± std over scenes."""
    cells = {}
    for method, summ in result["summary"].items():
        pooled = result["pooled"].get(method, {})
        col = []
        for _, key, pkey, scale, digits in ROWS:
            key = key or ("recon_s" if method == "lsm" else "time_s")
            if pkey is not None and pkey[0] in pooled:
                v = pooled[pkey[0]][pkey[1]]
                col.append("–" if v is None else f"{v * scale:.{digits}f}")
                continue
            s = summ.get(key)
            if s is None or s["n"] == 0:
                col.append("–")
            elif s["mean"] is None:
                col.append(result["nonfinite"].get(f"summary.{method}.{key}.mean", "–"))
            else:
                if digits == 0 and abs(s["mean"] * scale) < 10:  # a CPU's 0.18 FPS must not print as "0"
                    digits = 2
                std = f" ± {s['std'] * scale:.{digits}f}" if s["std"] else ""
                col.append(f"{s['mean'] * scale:.{digits}f}{std}")
        cells[method] = col
    return cells


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{result['data']['description']}: {result['data']['scenes']} scenes, "
                        f"{result['data']['resolution']}px, {result['device']}")
    cells = table_cells(result)
    table.add_column("metric")
    for method in cells:
        table.add_column(method, justify="right")
    for i, (label, *_) in enumerate(ROWS):
        table.add_row(label, *(col[i] for col in cells.values()))
    console.print(table)
    for h in result["held_out"]:
        src, tgt = h["src"]["miou"], h["tgt"]["miou"]
        console.print(f"held-out queries ({', '.join(h['names'][:4])}, ...): src mIoU "
                      f"{'–' if src is None else f'{src:.3f}'}, tgt mIoU {'–' if tgt is None else f'{tgt:.3f}'}")
    if result["text_encoder"] is not None and not result["text_encoder"]["meaningful"]:
        console.print("[yellow]text embeddings are random (no text encoder for this feature space): "
                      "semantic scores are meaningless[/yellow]")
    if not result["lpips"]["available"]:
        console.print(f"LPIPS: {result['lpips']['reason']}")
    if result["baselines"]["sfm"].startswith("unavailable"):
        console.print(f"SfM baseline: {result['baselines']['sfm']}")
