"""Shared pieces of the dataset loaders: file readers, the pair rule, and the multi-view Dataset base class.

Every loader returns the SynthRooms sample structure (views: the first two are the inputs, then the targets):

    images [V,3,H,W] float in [0,1]     depths [V,H,W] z-depth in metres (0 = invalid)     valid [V,H,W] bool
    Ks [V,3,3] pixel intrinsics (pixel centres at +0.5)     c2w [V,4,4] camera-to-world, OpenCV axes
    labels [V,H,W] int64 (only when the layout has labels; -1 where a view has none)
    scene: str      frames: list[str] (frame ids, one per view)      index: int

With a `resolution`, every view is scaled to cover it and cropped (centred, or at a random place per epoch with
random_crop); K follows exactly (see resize.py). LSM/DUSt3R crop about the principal point instead, and do
not transpose portrait views here: neither changes the geometry, only which pixels are kept.

A layout subclass lists its scenes and frames (`Frame` records, paths only) and the view tuples; it overrides
`read_camera` when cameras live in per-frame files. Cameras leave the subclass already in openlsm's convention
(converted at the edge).

    ds = ScanNetProcessed("data/scannet_processed", split="train", resolution=(256, 256))
    sample = ds[0]
    loader = DataLoader(ds, batch_size=8, num_workers=4, collate_fn=collate)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from ...errors import OpenLSMError
from .resize import RESIZE_MODES, plan_resize, resize_nearest, resize_view

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")


# --- readers -----------------------------------------------------------------------------------------------------

def require(path: Path, what: str = "file") -> Path:
    path = Path(path)
    ok = path.is_dir() if what == "folder" else path.is_file()
    if not ok:
        raise OpenLSMError(f"missing {what}: {path}")
    return path


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(require(path))
    except (UnidentifiedImageError, OSError) as e:
        raise OpenLSMError(f"cannot read image {path} ({type(e).__name__})") from None


def read_rgb(path: Path) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1]."""
    with _open_image(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def read_array(path: Path) -> np.ndarray:
    """A single-channel image (8/16-bit PNG, ...) or a .npy file as a 2-D numpy array."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            arr = np.load(require(path))
        except (ValueError, OSError) as e:
            raise OpenLSMError(f"cannot read array {path} ({type(e).__name__})") from None
    else:
        with _open_image(path) as im:
            arr = np.asarray(im)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise OpenLSMError(f"{path}: expected a single-channel map, got shape {arr.shape}")
    return arr


def read_depth(path: Path, scale: float) -> torch.Tensor:
    """Depth file -> [H, W] float32 metres (stored value / scale); non-finite and non-positive values become 0."""
    d = read_array(path).astype(np.float64) / float(scale)
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return torch.from_numpy(d).float()


def read_labels(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_array(path).astype(np.int64))


def read_npz(path: Path, *keys: str) -> list[np.ndarray]:
    try:
        with np.load(require(path)) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise OpenLSMError(f"{path}: missing array(s) {missing} (has {z.files})")
            return [np.asarray(z[k], dtype=np.float64) for k in keys]
    except (ValueError, OSError) as e:
        raise OpenLSMError(f"cannot read {path} ({type(e).__name__})") from None


def check_pose(K: np.ndarray, c2w: np.ndarray, path) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pinhole K (3x3 or larger, top-left used) and a 4x4 c2w; return float32 tensors."""
    K, c2w = np.asarray(K, dtype=np.float64), np.asarray(c2w, dtype=np.float64)
    if K.shape[0] < 3 or K.shape[1] < 3 or c2w.shape != (4, 4):
        raise OpenLSMError(f"{path}: expected K 3x3 and pose 4x4, got {K.shape} and {c2w.shape}")
    K = K[:3, :3]
    if not (np.isfinite(K).all() and np.isfinite(c2w).all()) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise OpenLSMError(f"{path}: invalid camera (non-finite pose or non-positive focal length)")
    return torch.from_numpy(K).float(), torch.from_numpy(c2w).float()


def shift_principal_point(K: np.ndarray, offset: float) -> np.ndarray:
    """Convert K between pixel-centre conventions: +0.5 takes integer-centre K (Open3D, NICE-SLAM, DUSt3R) to ours."""
    K = np.array(K, dtype=np.float64)
    K[0, 2] += offset
    K[1, 2] += offset
    return K


def list_images(folder: Path, exts=IMAGE_EXTS) -> list[Path]:
    return sorted(p for p in require(folder, "folder").iterdir() if p.suffix in exts and not p.name.startswith("."))


def find_with_stem(folder: Path, stem: str, exts=IMAGE_EXTS) -> Path | None:
    for ext in exts:
        p = Path(folder) / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def natural_key(name: str):
    """Sort key that orders 'rgb_2' before 'rgb_10'."""
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else -1, name)


# --- the pair rule -------------------------------------------------------------------------------------------------

def view_tuples(n_frames: int, views: int = 3, max_gap: int = 30, step: int = 5, both_orders: bool = True
                ) -> np.ndarray:
    """LSM's pair rule on processed-frame indices -> int64 [N, views].

    Inputs (i, j) for all 0 < |i - j| <= max_gap with |i - j| % step == 0 (both orders unless both_orders is
    False); targets are spread between them: target k of views-2 is (i*(views-1-k) + j*k) // (views-1), so
    with 3 views the target is (i + j) // 2 as in LSM.
    """
    if views < 2:
        raise OpenLSMError(f"views must be >= 2 (two inputs, then targets), got {views}")
    if max_gap < 1 or step < 1:
        raise OpenLSMError(f"max_gap and step must be >= 1, got {max_gap} and {step}")
    rows = []
    for gap in range(step, max_gap + 1, step):
        i = np.arange(0, n_frames - gap)
        for a, b in ((i, i + gap), (i + gap, i)) if both_orders else ((i, i + gap),):
            targets = [(a * (views - 1 - k) + b * k) // (views - 1) for k in range(1, views - 1)]
            rows.append(np.stack([a, b, *targets], 1))
    return np.concatenate(rows, 0) if rows else np.zeros((0, views), dtype=np.int64)


# --- dataset base --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One image of a scene: paths, plus cameras when the layout keeps them in one file for all frames."""

    id: str
    image: Path
    depth: Path | None = None
    label: Path | None = None
    mask: Path | None = None    # optional validity mask (nonzero = keep), ANDed into `valid`
    camera: Path | None = None  # per-frame camera file, read by the subclass's read_camera
    depth_scale: float | None = None  # stored depth units per metre; None = the dataset's depth_scale
    K: tuple | None = None      # 3x3 nested tuple, openlsm convention (preloaded cameras)
    c2w: tuple | None = None    # 4x4 nested tuple, OpenCV c2w


@dataclass(frozen=True)
class Scene:
    name: str
    frames: tuple[Frame, ...]


def parse_resolution(resolution) -> tuple[int, int] | None:
    """None (native size), an int (square) or (H, W)."""
    if resolution is None:
        return None
    if isinstance(resolution, int):
        return resolution, resolution
    try:
        h, w = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise OpenLSMError(f"resolution must be an int or (H, W), got {resolution!r}") from None
    return h, w


class MultiViewDataset(Dataset):
    """Base class: `scenes` + `tuples` [N, 1 + V] rows of (scene index, frame index per view)."""

    depth_scale: float = 1000.0  # stored depth unit per metre (uint16 millimetres)
    layout: str = "?"

    def __init__(self, root, resolution=None, views: int = 3, resize: str = "crop", random_crop: bool = False,
                 seed: int = 0):
        self.root = Path(root)
        self.size = parse_resolution(resolution)
        self.views = int(views)
        if self.views < 2:
            raise OpenLSMError(f"views must be >= 2 (two inputs, then targets), got {views}")
        if resize not in RESIZE_MODES:
            raise OpenLSMError(f"unknown resize mode {resize!r}; choose one of {RESIZE_MODES}")
        self.resize, self.random_crop, self.seed, self.epoch = resize, bool(random_crop), int(seed), 0
        self.scenes: list[Scene] = []
        self.tuples = np.zeros((0, 1 + self.views), dtype=np.int64)
        self.label_lut: np.ndarray | None = None  # raw label id -> class id (ids beyond the table: lut[-1])

    # -- subclass hooks --
    def read_camera(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
        if frame.K is None or frame.c2w is None:
            raise NotImplementedError(f"{type(self).__name__} must read the camera of {frame.image}")
        return check_pose(np.array(frame.K), np.array(frame.c2w), frame.image)

    def set_tuples(self, scenes: list[Scene], per_scene: list[np.ndarray]) -> None:
        """Keep scenes and their [n, V] frame-index tuples; raises when nothing is left."""
        rows = [np.concatenate([np.full((len(t), 1), s), t], 1) for s, t in enumerate(per_scene) if len(t)]
        self.scenes = scenes
        self.tuples = np.concatenate(rows, 0).astype(np.int64) if rows else np.zeros((0, 1 + self.views), np.int64)
        if not len(self.tuples):
            raise OpenLSMError(f"{self.root}: no {self.views}-view samples found for the {self.layout} layout "
                               f"({len(scenes)} scene(s) with {sum(len(s.frames) for s in scenes)} frame(s))")

    # -- Dataset API --
    def set_epoch(self, epoch: int) -> None:
        """New random crops each epoch (when random_crop is on)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.tuples)

    def read_frame(self, frame: Frame) -> dict:
        """One view at native size: image [3,H,W], depth [H,W], valid, K, c2w, label? ([H,W] int64)."""
        image = read_rgb(frame.image)
        H, W = image.shape[-2:]
        K, c2w = self.read_camera(frame)
        view = {"image": image, "K": K, "c2w": c2w}
        if frame.depth is not None:
            scale = self.depth_scale if frame.depth_scale is None else frame.depth_scale
            depth = _to_size(read_depth(frame.depth, scale), (H, W))
        else:
            depth = torch.zeros(H, W)
        if frame.mask is not None:
            depth = torch.where(_to_size(torch.from_numpy(read_array(frame.mask) > 0), (H, W)), depth, 0.0)
        view["depth"], view["valid"] = depth, depth > 0
        if frame.label is not None:
            labels = _to_size(read_labels(frame.label), (H, W))
            view["label"] = self.map_labels(labels)
        return view

    def map_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if self.label_lut is None:
            return labels
        lut = torch.from_numpy(self.label_lut)
        return lut[labels.clamp(0, len(lut) - 1)]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        row = self.tuples[index]
        scene = self.scenes[int(row[0])]
        frames = [scene.frames[int(f)] for f in row[1:]]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        views = []
        for fr in frames:
            view = self.read_frame(fr)
            if self.size is not None:
                crop_at = tuple(rng.uniform(0, 1, 2)) if self.random_crop else (0.5, 0.5)
                view = resize_view(view, self.size, self.resize, crop_at)
            views.append(view)
        sizes = {tuple(v["image"].shape[-2:]) for v in views}
        if len(sizes) > 1:
            raise OpenLSMError(f"{self.root}/{scene.name}: views of different sizes {sorted(sizes)}; "
                               f"pass a resolution to resize them")
        out = {"images": torch.stack([v["image"] for v in views]),
               "depths": torch.stack([v["depth"] for v in views]),
               "valid": torch.stack([v["valid"] for v in views]),
               "Ks": torch.stack([v["K"] for v in views]),
               "c2w": torch.stack([v["c2w"] for v in views])}
        if any("label" in v for v in views):
            H, W = out["depths"].shape[-2:]
            out["labels"] = torch.stack([v.get("label", torch.full((H, W), -1, dtype=torch.int64)) for v in views])
        out.update(scene=scene.name, frames=[f.id for f in frames], index=int(index))
        return out


def _to_size(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Depth/label map -> the colour image's size (nearest), for layouts that store them at another resolution."""
    if tuple(m.shape) == tuple(hw):
        return m
    return resize_nearest(m, plan_resize(tuple(m.shape), hw, "stretch"))


def collate(samples: list[dict]) -> dict:
    """DataLoader collate: tensors stacked on a new batch axis, `scene`/`frames` kept as plain lists."""
    keep = ("scene", "frames")
    out = default_collate([{k: v for k, v in s.items() if k not in keep} for s in samples])
    for k in keep:
        if k in samples[0]:
            out[k] = [s[k] for s in samples]
    return out


def split_scenes(names: list[str], split: str, val_scenes: int, root) -> list[str]:
    """LSM's ScanNet split on sorted scene names: train = all but the last `val_scenes`, val = the last ones."""
    names = sorted(names)
    if split == "all":
        return names
    if split not in ("train", "val"):
        raise OpenLSMError(f"unknown split {split!r} for {root}; choose train, val or all")
    k = min(max(int(val_scenes), 0), len(names))
    return names[: len(names) - k] if split == "train" else names[len(names) - k:]


def ceil_stride(n: int, max_frames: int) -> int:
    return max(1, math.ceil(n / max(1, max_frames)))
