"""Input photos: decode any common format to float RGB, then resize + centre-crop to the model resolution,
recording the transform so results map back to the original pixels.

    img = load_image("photo.heic.jpg")               # [3, H, W] float32 in [0, 1], EXIF orientation applied
    batch = load_images(["a.jpg", "b.png"], 256)     # PreparedImages: images [2, 3, 256, 256] + transforms
    batch.transforms[0].to_input(uv)                 # model pixel coords -> original pixel coords

Grayscale, palette, RGBA (composited over white), CMYK and 16-bit images all become RGB. Sizes are checked from
the file header before any pixel is decoded, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OpenLSMError

MIN_SIDE = 16  # pixels; smaller inputs carry no usable geometry
MAX_PIXELS = 100_000_000  # refuse larger images before decoding (a 100 Mpixel float image is 1.2 GB)


def _open(path: str | os.PathLike):
    """PIL image with its size checked from the header; pixels not decoded yet."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise OpenLSMError(f"image not found: {path}")
    if not path.is_file():
        raise OpenLSMError(f"not an image file: {path} is a {'folder' if path.is_dir() else 'special file'}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is applied below
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise OpenLSMError(f"{path}: image is too large (over {MAX_PIXELS // 1_000_000} Mpixel); "
                           "downscale it first") from None
    except UnidentifiedImageError:
        raise OpenLSMError(f"{path} is not an image (or not a format Pillow can read)") from None
    except PermissionError:
        raise OpenLSMError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise OpenLSMError(f"cannot read {path}: {e.strerror or e}") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise OpenLSMError(f"{path}: image is too large ({w}x{h}, over {MAX_PIXELS // 1_000_000} Mpixel); "
                           "downscale it first")
    if min(w, h) < MIN_SIDE:
        img.close()
        raise OpenLSMError(f"{path}: image is too small ({w}x{h}); both sides must be at least {MIN_SIDE} pixels")
    return img


def _to_rgb_array(img) -> np.ndarray:
    """Decoded PIL image (any mode) -> float32 [H, W, 3] in [0, 1]."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit (or 32-bit int) grayscale
        a = np.asarray(img).astype(np.float32)
        a = np.clip(a / 65535.0, 0, 1)
        return np.repeat(a[..., None], 3, -1)
    if img.mode == "F":
        a = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 1)
        return np.repeat(a[..., None], 3, -1)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)  # transparent pixels become white, not undefined colours
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file -> float32 [3, H, W] in [0, 1] (EXIF orientation applied)."""
    from PIL import ImageOps

    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = _to_rgb_array(img)
    except OpenLSMError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, EOFError, zlib.error
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OpenLSMError(f"{path} is damaged or truncated ({msg})") from None
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


@dataclass
class ImageTransform:
    """How an input image became a model image: resize by (sx, sy), then crop (left, top) to (width, height).

    A model pixel coordinate (u, v) is the input coordinate ((u + left) / sx, (v + top) / sy)."""

    input_size: tuple[int, int]  # (W, H) of the original image, after EXIF orientation
    scale: tuple[float, float]  # (sx, sy) resized / original
    crop: tuple[int, int]  # (left, top) in resized pixels
    size: tuple[int, int]  # (W, H) of the model image

    def to_input(self, uv: torch.Tensor) -> torch.Tensor:
        """Model pixel coordinates [..., 2] -> original image pixel coordinates [..., 2]."""
        off = torch.tensor(self.crop, dtype=uv.dtype, device=uv.device)
        s = torch.tensor(self.scale, dtype=uv.dtype, device=uv.device)
        return (uv + off) / s

    def input_cameras(self, cams):
        """Cameras at the model resolution -> the same cameras for the original image (intrinsics only change)."""
        from ..cameras import Cameras

        K = cams.Ks.clone()
        K[..., 0, 2] += self.crop[0]
        K[..., 1, 2] += self.crop[1]
        K[..., 0, :] /= self.scale[0]
        K[..., 1, :] /= self.scale[1]
        return Cameras(K, cams.c2w, *self.input_size)

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "scale": list(self.scale), "crop": list(self.crop),
                "size": list(self.size)}

    @staticmethod
    def from_dict(d: dict) -> ImageTransform:
        return ImageTransform(tuple(d["input_size"]), tuple(d["scale"]), tuple(d["crop"]), tuple(d["size"]))


@dataclass
class PreparedImages:
    """Images at the model resolution, ready for `reconstruct`."""

    images: torch.Tensor  # [V, 3, H, W] in [0, 1]
    transforms: list[ImageTransform]
    names: list[str]  # where each image came from (file path, or "image{i}")


def parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """256 or (H, W) -> (H, W), both positive multiples of 16."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 32 or w < 32 or h % 16 or w % 16:
        raise OpenLSMError(f"model resolution must be multiples of 16 and at least 32, got {h}x{w}")
    return h, w


def fit_transform(width: int, height: int, size: tuple[int, int]) -> ImageTransform:
    """Scale so the image covers (H, W) (shorter side fits), then crop the centre."""
    H, W = size
    s = max(H / height, W / width)
    rw, rh = max(W, round(width * s)), max(H, round(height * s))
    left, top = (rw - W) // 2, (rh - H) // 2
    return ImageTransform((width, height), (rw / width, rh / height), (left, top), (W, H))


def apply_transform(image: torch.Tensor, t: ImageTransform) -> torch.Tensor:
    """[3, h, w] -> [3, H, W] following `t` (antialiased bicubic, clamped to [0, 1])."""
    rw, rh = round(t.scale[0] * t.input_size[0]), round(t.scale[1] * t.input_size[1])
    x = image[None].float()
    if (rh, rw) != tuple(image.shape[-2:]):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    (left, top), (W, H) = t.crop, t.size
    return x[0, :, top:top + H, left:left + W].contiguous()


def prepare_images(images: list[torch.Tensor], size: int | tuple[int, int] = 256,
                   names: list[str] | None = None) -> PreparedImages:
    """Images [3, h_i, w_i] in [0, 1] (any sizes) -> PreparedImages at `size` (see `fit_transform`)."""
    size = parse_size(size)
    out, transforms = [], []
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise OpenLSMError(f"image {i} must be a tensor [3, H, W] in [0, 1], got {shape}")
        h, w = img.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise OpenLSMError(f"image {i} is too small ({w}x{h}); both sides must be at least {MIN_SIDE} pixels")
        t = fit_transform(w, h, size)
        out.append(apply_transform(img, t))
        transforms.append(t)
    names = names or [f"image{i}" for i in range(len(images))]
    return PreparedImages(torch.stack(out), transforms, list(names))


def load_images(paths: list[str | os.PathLike], size: int | tuple[int, int] = 256) -> PreparedImages:
    """Decode and prepare image files one at a time (only one full-size image is in memory at once)."""
    size = parse_size(size)
    out, transforms = [], []
    for p in paths:
        prepared = prepare_images([load_image(p)], size)
        out.append(prepared.images[0])
        transforms.append(prepared.transforms[0])
    return PreparedImages(torch.stack(out), transforms, [str(p) for p in paths])
