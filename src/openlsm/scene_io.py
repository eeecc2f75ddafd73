"""The output folder of a reconstructed Scene: writing, reading, the summary and the novel-view video.

    write_scene(scene, Path("tmp_folder"), video="orbit")    # Scene.save wraps this in an atomic output folder
    scene = read_scene(Path("out"))                          # = Scene.load("out")
    write_segmentation(Path("out/segment-x"), seg, names)    # label maps + legend + per-Gaussian probabilities

The layout is documented in docs/output_format.md; keep the two in step.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .cameras import Cameras, invert_rigid, look_at
from .cameras.io import (
    read_cameras_json,
    write_cameras_json,
    write_colmap_text,
    write_text_atomic,
    write_transforms_json,
)
from .errors import OpenLSMError
from .gaussians import load_ply, save_ply
from .io.images import ImageTransform
from .io.outputs import colorize, dump_config, save_depth_png16, save_png, save_video, to_uint8
from .scene import OTHER, Scene, SceneRelevancy, SceneSegmentation, colorize_labels

FORMAT_VERSION = 1
OTHER_ID = 255  # value of OTHER in the uint8 label-id PNGs


def image_file(i: int) -> str:
    return f"images/{i:04d}.png"


def write_json(path: Path, doc) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def depth_png_scale(depths: Tensor) -> float:
    """Millimetres (x1000) when depths fit a uint16 PNG that way, else the largest scale that fits."""
    d = depths[torch.isfinite(depths) & (depths > 0)]
    top = float(d.max()) if d.numel() else 1.0
    return 1000.0 if top * 1000 <= 65535 else 65535.0 / top


def _safetensors_save(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(path))  # no shared storage


def _safetensors_load(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for malformed files
        raise OpenLSMError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


# --- summary ---------------------------------------------------------------------------------------------------

def pose_summary(c2w: Tensor) -> dict:
    """Relative pose of a camera in view 0's frame: rotation angle, translation, baseline."""
    R, t = c2w[:3, :3].double(), c2w[:3, 3].double()
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(R.trace()) - 1) / 2))))
    return {"rotation_deg": round(angle, 3), "translation": [round(float(v), 6) for v in t],
            "baseline": round(float(t.norm()), 6)}


def scene_summary(scene: Scene) -> dict:
    cams = scene.cameras.flatten()
    focals = cams.Ks[:, 0, 0].tolist()
    seg = scene._cache.get("segmentation")
    inputs = []
    for i in range(scene.num_views):
        entry = {"file": image_file(i), "source": scene.names[i] if i < len(scene.names) else None}
        if scene.transforms:
            t = scene.transforms[i]
            entry.update(t.to_dict())
            entry["K_input"] = t.input_cameras(cams[i]).Ks.tolist()
        inputs.append(entry)
    return {
        "format": "openlsm-scene", "version": FORMAT_VERSION,
        "num_gaussians": len(scene.gaussians), "num_views": scene.num_views, "resolution": list(scene.size),
        "sh_degree": scene.gaussians.sh_degree, "feature_dim": scene.gaussians.feature_dim,
        "text_dim": scene.text_dim, "text_encoder": scene.text_encoder_name, "pixel_aligned": scene.pixel_aligned,
        "inputs": inputs,
        "cameras": {"focal_px": [round(f, 4) for f in focals],
                    "fov_x_deg": [round(math.degrees(2 * math.atan(0.5 * cams.width / f)), 3) if f > 0 else None
                                  for f in focals],
                    "views_in_view0": [pose_summary(cams.c2w[i]) for i in range(1, len(focals))],
                    "confidence": scene.info.get("camera_confidence")},
        "labels": scene.labels, "threshold": scene.threshold,
        "labels_found": None if seg is None else {k: round(v, 4) for k, v in seg.fractions().items() if v >= 0.01},
        "depth_png_scale": depth_png_scale(scene.depths),
        "info": {k: v for k, v in scene.info.items() if k not in ("camera_confidence", "model")},
    }


# --- writing ---------------------------------------------------------------------------------------------------

def save_legend(path: Path, names: list[str], palette: Tensor) -> Path:
    """A PNG with one colour swatch and name per label (plus 'other')."""
    from PIL import Image, ImageDraw

    rows = list(zip(names, palette.tolist())) + [("other", [48, 48, 48])]
    img = Image.new("RGB", (220, 8 + 20 * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (name, col) in enumerate(rows):
        y = 4 + 20 * i
        draw.rectangle([6, y, 22, y + 16], fill=tuple(col), outline=(0, 0, 0))
        draw.text((30, y + 3), name[:28], fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_segmentation(folder: Path, seg: SceneSegmentation, threshold: float) -> None:
    """Per-input colour label maps, uint8 id maps (255 = other), labels.json, legend.png, per-Gaussian probs."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = seg.palette
    for v in range(seg.view_labels.shape[0]):
        lab = seg.view_labels[v]
        save_png(folder / f"{v:04d}.png", colorize_labels(lab, palette).numpy())
        save_png(folder / f"{v:04d}_ids.png", lab.masked_fill(lab == OTHER, OTHER_ID).to(torch.uint8).numpy())
    save_legend(folder / "legend.png", seg.names, palette)
    write_json(folder / "labels.json", {
        "labels": seg.names, "colors": palette.tolist(), "other": {"id": OTHER_ID, "color": [48, 48, 48]},
        "threshold": threshold, "fractions": {k: round(v, 6) for k, v in seg.fractions().items()}})
    _safetensors_save(folder / "probabilities.safetensors",
                      {"probs": seg.probs.half(), "labels": seg.labels.to(torch.int16)})


def write_relevancy(folder: Path, rel: SceneRelevancy) -> None:
    """Per-input relevancy heat maps (fixed range 0.5..1, LERF's 'more relevant than the negatives') + values."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(rel.views.shape[0]):
        save_png(folder / f"{v:04d}.png", colorize(rel.views[v], lo=0.5, hi=1.0))
    write_json(folder / "query.json", {"query": rel.text, "max": float(rel.gaussians.max()),
                                       "mean": float(rel.gaussians.mean())})
    _safetensors_save(folder / "relevancy.safetensors", {"gaussians": rel.gaussians.float(),
                                                        "views": rel.views.float()})


def write_scene(scene: Scene, folder: Path, video: str = "interpolate", frames: int = 30,
                video_size: int | None = None, extra_config: dict | None = None) -> None:
    t0 = time.perf_counter()
    cams = scene.cameras.flatten().to("cpu")
    files = [image_file(i) for i in range(scene.num_views)]
    save_ply(folder / "gaussians.ply", scene.gaussians.to("cpu"))
    write_cameras_json(folder / "cameras.json", cams, files)
    write_transforms_json(folder / "transforms.json", cams, files)
    write_colmap_text(folder / "colmap", cams, [Path(f).name for f in files])
    scale = depth_png_scale(scene.depths)
    for i in range(scene.num_views):
        save_png(folder / files[i], scene.images[i].permute(1, 2, 0))
        d = scene.depths[i].cpu()
        save_depth_png16(folder / "depth" / f"{i:04d}.png", d, scale=scale)
        save_png(folder / "depth" / f"{i:04d}_color.png", colorize(d, valid=d > 0))
        save_png(folder / "confidence" / f"{i:04d}.png", colorize(scene.confidences[i].cpu().log()))
    _safetensors_save(folder / "maps.safetensors", {"depths": scene.depths.float(),
                                                   "confidences": scene.confidences.float()})
    if scene.gaussians.features is not None and scene.feature_weight is not None:
        pca = scene.feature_pca()
        feats, _ = scene.view_features()
        for i in range(scene.num_views):
            save_png(folder / "features" / f"{i:04d}_pca.png", pca.apply(feats[i].cpu()))
        _safetensors_save(folder / "feature_map.safetensors", {
            "weight": scene.feature_weight.float(), "bias": scene.feature_bias.float(),
            **{f"pca.{k}": v for k, v in pca.state_dict().items()}})
    seg = None
    if scene.labels:
        try:
            seg = scene.default_segmentation()
        except OpenLSMError as e:
            scene.info["semantics_skipped"] = str(e)
    if seg is not None:
        write_segmentation(folder / "semantics", seg, scene.threshold)
    scene.timings["save"] = time.perf_counter() - t0
    if video != "none":
        t1 = time.perf_counter()
        fps = min(30, max(8, round(frames / 3)))  # about 3 s whatever the frame count
        save_video(folder / "video.mp4", render_video(scene, video, frames, video_size, seg), fps=fps)
        scene.timings["video"] = time.perf_counter() - t1
    sections = {"scene": {"labels": scene.labels, "threshold": scene.threshold, "video": video, "frames": frames,
                          "resolution": list(scene.size)}, "model": scene.info.get("model", {})}
    dump_config(folder / "config.yaml", **sections, **(extra_config or {}))
    write_json(folder / "summary.json", scene_summary(scene))
    write_json(folder / "timings.json", {k: round(v, 4) for k, v in scene.timings.items()})


# --- video -----------------------------------------------------------------------------------------------------

def video_path(scene: Scene, kind: str, frames: int) -> Tensor:
    """Camera poses [F, 4, 4]: 'interpolate' goes view 0 -> last view -> back; 'orbit' circles around the input
    cameras, looking at the scene's median depth along their mean view direction."""
    from .cameras import quat_to_rotmat, rotmat_to_quat
    from .cameras.paths import slerp

    c2w = scene.cameras.flatten().c2w.cpu().double()
    if kind == "interpolate":  # view 0 -> last view -> back (loops seamlessly)
        t = 1 - (2 * torch.arange(frames, dtype=torch.float64) / frames - 1).abs()  # [F] 0 .. 1 .. ~0
        q = rotmat_to_quat(c2w[[0, -1], :3, :3])
        out = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
        out[:, :3, :3] = quat_to_rotmat(slerp(q[0], q[1], t))
        out[:, :3, 3] = (1 - t[:, None]) * c2w[0, :3, 3] + t[:, None] * c2w[-1, :3, 3]
        return out.float()
    d = scene.depths[scene.depths > 0]
    depth = float(d.median()) if d.numel() else 1.0
    centres, fwd = c2w[:, :3, 3], c2w[:, :3, 2].mean(0)
    fwd = fwd / fwd.norm().clamp_min(1e-9)
    up = -c2w[:, :3, 1].mean(0)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm().clamp_min(1e-9)
    true_up = torch.linalg.cross(right, fwd)
    mid = centres.mean(0)
    radius = max(0.5 * float((centres - mid).norm(dim=-1).max()), 0.08 * depth)
    theta = torch.linspace(0, 2 * math.pi, frames + 1, dtype=torch.float64)[:-1]
    eyes = mid + radius * (torch.cos(theta)[:, None] * right + 0.5 * torch.sin(theta)[:, None] * true_up)
    target = (mid + depth * fwd).expand_as(eyes)
    return look_at(eyes, target, up).float()


def render_video(scene: Scene, kind: str, frames: int, size: int | None = None,
                 seg: SceneSegmentation | None = None) -> list[np.ndarray]:
    """Frames [H, 3W, 3] uint8: RGB | depth | semantics (class colours, or feature PCA without labels)."""
    from .render import render

    if frames < 2:
        raise OpenLSMError(f"a video needs at least 2 frames, got {frames}")
    c2ws = video_path(scene, kind, frames)
    base = scene.cameras.flatten()[0].to("cpu")
    h, w = scene.size
    if size:  # longest side = size
        s = size / max(h, w)
        w, h = max(2, round(w * s)), max(2, round(h * s))
    g = scene.gaussians
    if seg is not None:
        colors = seg.colors()
    elif g.features is not None and scene.feature_weight is not None:
        colors = scene.feature_pca().apply(g.features)
    else:
        colors = g.colors_dc
    g = replace(g, features=colors.to(g.means))
    valid = scene.depths[scene.depths > 0]
    lo = float(valid.quantile(0.02)) if valid.numel() else 0.0
    hi = float(valid.quantile(0.98)) if valid.numel() else 1.0
    out = []
    for c2w in c2ws:
        cam = Cameras(base.Ks, c2w, base.width, base.height).rescale(w, h).to(g.means.device)
        with torch.no_grad():
            r = render(g, cam, with_features=True)
        mask = r.alpha > 0.5
        sem = r.features / r.alpha[..., None].clamp_min(1e-6) * mask[..., None]
        frame = np.concatenate([to_uint8(r.rgb), colorize(r.depth, lo, max(hi, lo + 1e-6), valid=mask),
                                to_uint8(sem)], 1)
        # H.264 players want multiples of 16; pad (black) rather than let the encoder rescale
        out.append(np.pad(frame, ((0, -frame.shape[0] % 16), (0, -frame.shape[1] % 16), (0, 0))))
    return out


# --- reading ---------------------------------------------------------------------------------------------------

def read_rgb(path: Path) -> Tensor:
    """An image we wrote ourselves -> [3, H, W] in [0, 1] (no size limits: model images may be small)."""
    from PIL import Image

    if not path.is_file():
        raise OpenLSMError(f"image listed in cameras.json is missing: {path}")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for damaged files
        raise OpenLSMError(f"cannot read {path} ({type(e).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_scene(folder: Path) -> Scene:
    if not folder.is_dir():
        raise OpenLSMError(f"output folder not found: {folder}")
    missing = [n for n in ("gaussians.ply", "cameras.json", "summary.json") if not (folder / n).is_file()]
    if missing:
        raise OpenLSMError(f"{folder} is not an openlsm output folder (missing {', '.join(missing)})")
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenLSMError(f"{folder / 'summary.json'} is not valid JSON ({e})") from None
    g = load_ply(folder / "gaussians.ply")
    cams, files = read_cameras_json(folder / "cameras.json")
    images = torch.stack([read_rgb(folder / f) for f in files])
    maps = _safetensors_load(folder / "maps.safetensors") if (folder / "maps.safetensors").is_file() else {}
    v, h, w = images.shape[0], images.shape[2], images.shape[3]
    depths = maps.get("depths", torch.zeros(v, h, w))
    confs = maps.get("confidences", torch.ones(v, h, w))
    weight = bias = None
    if (folder / "feature_map.safetensors").is_file():
        fm = _safetensors_load(folder / "feature_map.safetensors")
        weight, bias = fm["weight"], fm["bias"]
    inputs = summary.get("inputs", [])
    transforms = [ImageTransform.from_dict(e) for e in inputs] if inputs and "scale" in inputs[0] else None
    timings = json.loads((folder / "timings.json").read_text()) if (folder / "timings.json").is_file() else {}
    info = dict(summary.get("info", {}))
    info["camera_confidence"] = summary.get("cameras", {}).get("confidence")
    scene = Scene(gaussians=g, cameras=cams, images=images, depths=depths, confidences=confs,
                  feature_weight=weight, feature_bias=bias, text_encoder_name=summary.get("text_encoder"),
                  names=[e.get("source") or f for e, f in zip(inputs, files)] if inputs else files,
                  transforms=transforms, labels=summary.get("labels"), threshold=summary.get("threshold", 0.0),
                  timings=timings, info=info)
    if weight is not None:
        fm_pca = {k[4:]: t for k, t in fm.items() if k.startswith("pca.")}
        if fm_pca:
            from .models.semantics.query import FeaturePCA

            scene._cache["pca"] = FeaturePCA.from_state_dict(fm_pca)
    return scene


def relative_depths(pts3d: Tensor, c2w: Tensor) -> Tensor:
    """z-depth [H, W] of world points [H, W, 3] in the camera c2w [4, 4]."""
    w2c = invert_rigid(c2w.double())
    return (pts3d.double() @ w2c[:3, :3].T + w2c[:3, 3])[..., 2].float()
