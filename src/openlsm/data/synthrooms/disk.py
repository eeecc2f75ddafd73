"""ScanNet-like processed layout: write SynthRooms samples to disk and read them (or real data) back.

    root/labels.json                  {"0": "void", "1": "wall", ...}
    root/<scene>/color/0000.png       RGB uint8
    root/<scene>/depth/0000.png       uint16 millimetres (0 = invalid)
    root/<scene>/label/0000.png       uint16 class id
    root/<scene>/instance/0000.png    uint16 instance id
    root/<scene>/0000.npz             intrinsics [3,3], c2w [4,4] (OpenCV, float64)
    root/<scene>/samples.json         which frames form each k-view sample (+ measured co-visibility)

    write_frames(root / "synth_10000000", sample)      # a dict from SynthRooms / make_sample
    frames = read_scene(root / "synth_10000000")       # same keys as a sample, stacked over frames
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import OpenLSMError
from .scene import CLASSES


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    _atomic_bytes(path, buf.getvalue())


def write_json(path: Path, obj) -> None:
    _atomic_bytes(Path(path), (json.dumps(obj, indent=1) + "\n").encode())


def write_labels_json(root: Path, classes: list[str] = CLASSES) -> Path:
    """`labels.json`: class id (as text) -> class name."""
    path = Path(root) / "labels.json"
    write_json(path, {str(i): name for i, name in enumerate(classes)})
    return path


def write_frames(scene_dir: Path, sample: dict, start: int = 0) -> list[int]:
    """Write the V views of a sample as frames start..start+V-1; returns the frame indices."""
    scene_dir = Path(scene_dir)
    V = sample["images"].shape[0]
    ids = []
    for v in range(V):
        i = start + v
        name = f"{i:04d}"
        rgb = (sample["images"][v].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        depth = sample["depths"][v].cpu().double().numpy()
        valid = sample["valid"][v].cpu().numpy() & (depth * 1000 < 65535)
        mm = np.where(valid, np.round(depth * 1000), 0).astype(np.uint16)
        _png(scene_dir / "color" / f"{name}.png", rgb)
        _png(scene_dir / "depth" / f"{name}.png", mm)
        _png(scene_dir / "label" / f"{name}.png", sample["labels"][v].cpu().numpy().astype(np.uint16))
        _png(scene_dir / "instance" / f"{name}.png", sample["instances"][v].cpu().numpy().astype(np.uint16))
        buf = io.BytesIO()
        np.savez(buf, intrinsics=sample["Ks"][v].cpu().double().numpy(), c2w=sample["c2w"][v].cpu().double().numpy())
        _atomic_bytes(scene_dir / f"{name}.npz", buf.getvalue())
        ids.append(i)
    return ids


def list_frames(scene_dir: Path) -> list[int]:
    return sorted(int(p.stem) for p in Path(scene_dir).glob("color/*.png"))


def read_frame(scene_dir: Path, index: int) -> dict:
    """One frame as tensors: image [3,H,W] float, depth [H,W] m, valid, K, c2w, label/instance (if present)."""
    scene_dir, name = Path(scene_dir), f"{index:04d}"
    color = scene_dir / "color" / f"{name}.png"
    if not color.exists():
        color = scene_dir / "color" / f"{name}.jpg"  # ScanNet exports colour as jpg
    if not color.exists():
        raise OpenLSMError(f"no colour image for frame {index} in {scene_dir}")
    img = torch.from_numpy(np.array(Image.open(color).convert("RGB"))).permute(2, 0, 1).float() / 255
    out = {"image": img}
    dpath = scene_dir / "depth" / f"{name}.png"
    if dpath.exists():
        mm = np.array(Image.open(dpath)).astype(np.float64)
        out["depth"] = torch.from_numpy(mm / 1000.0).float()
        out["valid"] = out["depth"] > 0
    meta = scene_dir / f"{name}.npz"
    if not meta.exists():
        raise OpenLSMError(f"missing camera file {meta}")
    with np.load(meta) as z:
        out["K"] = torch.from_numpy(z["intrinsics"][:3, :3]).float()
        out["c2w"] = torch.from_numpy(z["c2w"]).float()
    for key, folder in (("label", "label"), ("instance", "instance")):
        p = scene_dir / folder / f"{name}.png"
        if p.exists():
            out[key] = torch.from_numpy(np.array(Image.open(p)).astype(np.int64))
    return out


def read_scene(scene_dir: Path, frames: list[int] | None = None) -> dict:
    """Frames stacked with the sample keys: images [V,3,H,W], depths, valid, Ks, c2w, labels, instances."""
    frames = list_frames(scene_dir) if frames is None else frames
    if not frames:
        raise OpenLSMError(f"no frames in {scene_dir}")
    fr = [read_frame(scene_dir, i) for i in frames]
    keys = {"image": "images", "depth": "depths", "valid": "valid", "K": "Ks", "c2w": "c2w", "label": "labels",
            "instance": "instances"}
    return {plural: torch.stack([f[k] for f in fr]) for k, plural in keys.items() if k in fr[0]}


def read_labels(root: Path) -> list[str]:
    m = json.loads((Path(root) / "labels.json").read_text())
    return [m[str(i)] for i in range(len(m))]


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """Class/instance ids [H,W] -> RGB uint8 (fixed pseudo-random palette, 0 is black)."""
    pal = (np.random.default_rng(7).uniform(0.15, 1.0, (4096, 3)) * 255).astype(np.uint8)
    pal[0] = 0
    return pal[labels % 4096]


def contact_sheet(samples: list[dict], path: Path, max_rows: int = 16) -> None:
    """One row per view: colour | depth | labels | instances."""
    rows = []
    for s in samples:
        for v in range(s["images"].shape[0]):
            rgb = (s["images"][v].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
            d = s["depths"][v].cpu().numpy()
            dn = (np.clip(d / max(float(d.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
            rows.append(np.concatenate([rgb, np.repeat(dn[..., None], 3, -1), colorize_labels(s["labels"][v].cpu().numpy()),
                                        colorize_labels(s["instances"][v].cpu().numpy())], 1))
    if rows:
        _png(Path(path), np.concatenate(rows[:max_rows * 3], 0))
