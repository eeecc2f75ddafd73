"""Writing results: atomic output folders, PNG helpers, depth colour maps, videos.

    with output_folder("out", overwrite=False) as tmp:   # everything lands in `out` only if the block succeeds
        save_png(tmp / "rgb.png", rgb)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import OpenLSMError


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary folder beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OpenLSMError(f"output folder {path} already exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new folder
    except OSError as e:
        raise OpenLSMError(f"cannot write to {parent}: {e.strerror or e}") from None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] or [H, W] floats in [0, 1] -> uint8."""
    a = img.detach().float().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, dtype=np.float32)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike, img) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = img if isinstance(img, np.ndarray) and img.dtype in (np.uint8, np.uint16) else to_uint8(img)
    Image.fromarray(arr).save(path)
    return path


def save_depth_png16(path: str | os.PathLike, depth: torch.Tensor, scale: float = 1000.0) -> Path:
    """Depth [H, W] in scene units -> uint16 PNG of depth·scale (millimetres for metres); 0 = invalid."""
    d = depth.detach().float().cpu().numpy() * scale
    d = np.where(np.isfinite(d) & (d > 0), np.clip(np.round(d), 0, 65535), 0).astype(np.uint16)
    return save_png(path, d)


# A perceptually ordered dark-blue -> green -> yellow ramp (anchor colours, linearly interpolated).
_RAMP = np.array([[0.05, 0.03, 0.25], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]])


def colorize(values: torch.Tensor, lo: float | None = None, hi: float | None = None,
             valid: torch.Tensor | None = None) -> np.ndarray:
    """Scalar map [H, W] -> RGB uint8 [H, W, 3] (invalid pixels black); range from the 2nd–98th percentile."""
    v = values.detach().float().cpu().numpy()
    ok = np.isfinite(v) if valid is None else (valid.cpu().numpy() & np.isfinite(v))
    if ok.any():
        lo = float(np.percentile(v[ok], 2)) if lo is None else lo
        hi = float(np.percentile(v[ok], 98)) if hi is None else hi
    lo, hi = lo or 0.0, hi if hi is not None and hi > (lo or 0.0) else (lo or 0.0) + 1.0
    t = np.clip((np.nan_to_num(v) - lo) / (hi - lo), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    rgb = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    rgb[~ok] = 0
    return to_uint8(rgb)


def save_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 30) -> Path:
    """MP4 (H.264 via imageio-ffmpeg) from uint8 frames [H, W, 3]; sizes are padded to even numbers."""
    import imageio.v3 as iio

    try:  # without it imageio picks another writer for ".mp4", which fails with an unrelated error
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise OpenLSMError("writing an MP4 video needs imageio-ffmpeg (pip install imageio-ffmpeg); "
                           "or skip the video with --video none") from None
    path = Path(path)
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    frames = [np.pad(f, pad, mode="edge") for f in frames]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        # ffmpeg plugin (imageio-ffmpeg); macro_block_size 1: keep the (even) size instead of resizing to x16
        iio.imwrite(tmp, np.stack(frames), extension=path.suffix, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plain(x):
    """Dataclass fields -> YAML-safe values (paths as strings, tuples as lists)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def dump_config(path: str | os.PathLike, **sections) -> Path:
    """Write dataclass configs (or plain dicts) as YAML, one top-level key per section."""
    import dataclasses

    import yaml

    doc = {name: _plain(dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for name, v in sections.items()}
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
