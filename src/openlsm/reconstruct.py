"""Two photos -> a Scene: preprocess, LSM forward, camera recovery, [feature fit,] semantic decode (each timed).

    from openlsm.reconstruct import load_lsm, reconstruct
    model = load_lsm("src/openlsm/weights/lsm_small", device="cpu")     # or load_lsm(None): shipped weights
    scene = reconstruct(model, ["a.jpg", "b.jpg"], labels=["wall", "floor", "chair"])
    scene.timings        # {"preprocess": s, "forward": s, "camera_recovery": s, "semantic_decode": s, ...}
    scene.save("out")

Images may be file paths, tensors [3, H, W] in [0, 1] of any size, a tensor [2, 3, H, W], or `PreparedImages`
from `openlsm.io.images.load_images`. They are resized (shorter side) and centre-cropped to `resolution`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import OpenLSMError
from .io.images import PreparedImages, load_images, prepare_images

WEIGHTS_DIR = Path(__file__).parent / "weights" / "lsm_small"  # shipped `small` model (model.safetensors + config)
DEFAULT_RESOLUTION = 256
MIN_FOV, MAX_FOV, FALLBACK_FOV = 5.0, 160.0, 60.0  # degrees: estimates outside are treated as failures


# --- model loading ---------------------------------------------------------------------------------------------

def shipped_weights() -> Path | None:
    """The packaged small-model weights, or None when this install has none."""
    return WEIGHTS_DIR if (WEIGHTS_DIR / "model.safetensors").is_file() else None


def fallback_config():
    """The `tiny` preset with a 384-d semantic space, so random weights still run every stage, MiniLM
    label decoding included (the results are meaningless; only the plumbing is exercised)."""
    from .models.lsm.model import LSMConfig
    from .models.lsm.ptv3 import PTv3Config
    from .models.semantics.small_extractor import SmallExtractorConfig

    tiny = LSMConfig.tiny()
    return dataclasses.replace(tiny, point_transformer=dataclasses.replace(PTv3Config.tiny(), semantic_dim=384),
                               small_extractor=SmallExtractorConfig(widths=(8, 16, 16, 16), feature_dim=384,
                                                                    groups=4))


def _load_official(path: Path, device):
    """An official LSM checkpoint (the paper model); checked to be one before 1.1 B parameters are allocated."""
    from .models.checkpoint_io import load_official_checkpoint, model_state_of
    from .models.lsm.model import LSM, LSMConfig, load_official_lsm_checkpoint

    ckpt = load_official_checkpoint(path)
    model_string = getattr(ckpt.get("args"), "model", None)
    if isinstance(model_string, str) and not model_string.lstrip().startswith("LSM"):
        raise OpenLSMError(f"{path} is not an LSM checkpoint (its model is {model_string.split('(')[0]!r})")
    if not any(k.startswith(("point_transformer.", "gaussian_head.")) for k in model_state_of(ckpt)):
        raise OpenLSMError(f"{path} is not an LSM checkpoint (no point_transformer / gaussian_head weights)")
    model = LSM(LSMConfig.paper())
    load_official_lsm_checkpoint(model, ckpt)
    return model.to(device)


def load_lsm(checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """The one model loader: `LSM.load` (a folder with model.safetensors + config.json) or an official LSM
    `.pth`. `None` loads the shipped weights. Every failure is one OpenLSMError line."""
    from .models.lsm.model import LSM

    path = Path(checkpoint) if checkpoint is not None else shipped_weights()
    if path is None:
        raise OpenLSMError("this install ships no LSM weights; pass --checkpoint PATH")
    if not path.exists():
        raise OpenLSMError(f"checkpoint not found: {path}")
    try:
        if path.suffix in (".pth", ".pt", ".ckpt"):
            model = _load_official(path, device)
        else:
            model = LSM.load(path, device)
    except OpenLSMError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, OSError) as e:  # shape/key mismatches, bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OpenLSMError(f"cannot load an LSM from {path}: {msg}") from None
    return model.eval()


def save_lsm(model, path: str | os.PathLike) -> Path:
    """Write a model in the format `load_lsm` reads (a folder); returns the folder."""
    model.save(path)
    return Path(path)


def text_encoder_name(model) -> str:
    """Which text space the model's semantic features live in."""
    cfg = model.config
    if cfg.semantic == "lseg":
        return "clip"
    name = getattr(model.lseg_feature_extractor, "text_encoder_name", None)
    return name or ("minilm" if cfg.semantic_dim == 384 else "clip" if cfg.semantic_dim == 512 else "unknown")


def check_text_space(model, encoder=None) -> None:
    """Raise unless `encoder` (or the model's default text encoder) embeds into the model's semantic space."""
    dim, name = model.config.semantic_dim, text_encoder_name(model)
    if encoder is not None:
        if getattr(encoder, "dim", dim) != dim:
            raise OpenLSMError(f"the model's semantic features are {dim}-d but the text encoder "
                               f"{getattr(encoder, 'name', '?')!r} gives {encoder.dim}-d embeddings")
        return
    if name == "minilm" and dim == 384:
        return
    if name == "clip":
        raise OpenLSMError("this model's features live in CLIP space: pass a CLIP text encoder "
                           "(get_text_encoder('clip', weights=...))")
    raise OpenLSMError(f"no text encoder matches this model's {dim}-d semantic space (random or test weights?)")


# --- reconstruction --------------------------------------------------------------------------------------------

def as_prepared(images, resolution: int | tuple[int, int]) -> PreparedImages:
    """Accept paths, tensors [3, H, W], a tensor [V, 3, H, W] or PreparedImages."""
    if isinstance(images, PreparedImages):
        return images
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise OpenLSMError(f"images must be [2, 3, H, W] or a list of two images, got {tuple(images.shape)}")
        images = list(images)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    images = list(images)
    if len(images) != 2:
        raise OpenLSMError(f"LSM reconstructs from exactly two images, got {len(images)}")
    if all(isinstance(i, (str, os.PathLike)) for i in images):
        return load_images(images, resolution)
    if all(isinstance(i, torch.Tensor) for i in images):
        return prepare_images(images, resolution)
    raise OpenLSMError("images must be two file paths or two tensors [3, H, W]")


class _Stages:
    """Times named stages (device-synchronised) and reports their start to a progress callback."""

    def __init__(self, device: torch.device, progress: Callable[[str], None] | None):
        self.device, self.progress, self.timings = device, progress, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.progress:
            self.progress(name)
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = time.perf_counter() - t


def set_view_fits(model, features: int | None = None, colors: int | None = None, refine: int | None = None):
    """Override the steps of the model's feature fit, colour fit and refinement (`LSMConfig.feature_fit_iters`,
    `color_fit_iters`, `refine_steps`): None keeps its config, 0 turns one off."""
    changes = {k: v for k, v in (("feature_fit_iters", features), ("color_fit_iters", colors),
                                 ("refine_steps", refine)) if v is not None}
    if changes:
        model.config = dataclasses.replace(model.config, **changes)  # validated by the config
    return model


def recover_scene_cameras(out, width: int, height: int):
    """An LSM output -> (cameras [2] from its point maps, their confidences, None), or with degenerate maps an
    identity pose and a fixed field of view with a warning instead of None."""
    from .cameras import Cameras, make_K
    from .models.lsm.camera_recovery import recover_cameras

    geo = out.geometry
    try:
        rec = recover_cameras(geo.pts3d_1[0].float(), geo.pts3d_2[0].float(), geo.conf_1[0].float(),
                              geo.conf_2[0].float())
        if not (torch.isfinite(rec.cameras.c2w).all() and torch.isfinite(rec.focals).all()):
            raise OpenLSMError("non-finite camera estimate")
        fov = 2 * torch.atan(0.5 * width / rec.focals.clamp_min(1e-9)).rad2deg()
        if not ((fov > MIN_FOV) & (fov < MAX_FOV)).all():  # e.g. random weights: keep the video watchable
            raise OpenLSMError(f"implausible field of view {float(fov.min()):.1f}-{float(fov.max()):.1f} deg")
        return rec.cameras.to("cpu"), rec.confidence.cpu().tolist(), None
    except (OpenLSMError, RuntimeError) as e:  # e.g. too few points in front of the camera (random weights)
        f = 0.5 * width / math.tan(math.radians(FALLBACK_FOV / 2))
        K = make_K(f, f, width / 2, height / 2)
        cams = Cameras(K.expand(2, 3, 3).clone(), torch.eye(4).expand(2, 4, 4).clone(), width, height)
        return cams, [0.0, 0.0], (f"camera recovery failed ({str(e).splitlines()[0]}); assuming a {FALLBACK_FOV:.0f} "
                                  "deg field of view with view 2 at view 1")


@torch.no_grad()
def reconstruct(model, images, labels: list[str] | None = None, *, resolution: int | tuple[int, int] | None = None,
                device: str | torch.device | None = None, text_encoder=None, threshold: float = 0.0,
                strict_labels: bool = True, seed: int = 0, progress: Callable[[str], None] | None = None):
    """Reconstruct a Scene from two images (see the module docstring). `labels` are decoded into per-input
    label maps; with `strict_labels=False` a missing/mismatched text encoder only records a warning."""
    from .gaussians import Gaussians
    from .scene import Scene
    from .scene_io import relative_depths

    if device is not None:
        model = model.to(device)
    dev = next(model.parameters()).device
    model.eval()
    stage = _Stages(dev, progress)
    info: dict = {"device": str(dev), "seed": seed, "warnings": []}
    enc = text_encoder
    if enc is None and model.config.semantic == "lseg":
        enc = model.lseg_feature_extractor.text_encoder()
    if labels:  # decide before the expensive forward, not after it
        try:
            check_text_space(model, enc)
        except OpenLSMError as e:
            if strict_labels:
                raise
            info["warnings"].append(f"semantic labels skipped: {e}")
            labels = None
    with stage("preprocess"):
        prepared = as_prepared(images, resolution or DEFAULT_RESOLUTION)
        x = (prepared.images * 2 - 1).to(dev)  # [2, 3, H, W] in [-1, 1]
        H, W = x.shape[-2:]
    if labels and enc is None:  # the images are fine: start loading the text encoder while the model runs
        from .scene import shared_text_encoder

        shared_text_encoder(text_encoder_name(model), background=True)
    with stage("forward"):
        out = model(x[:1], x[1:], generator=torch.Generator().manual_seed(seed))
    with stage("camera_recovery"):
        cams, cam_conf, warning = recover_scene_cameras(out, W, H)
        if warning:
            info["warnings"].append(warning)
        geo = out.geometry
        depths = torch.stack([geo.pts3d_1[0, ..., 2].float().cpu(),
                              relative_depths(geo.pts3d_2[0].cpu(), cams.c2w[1])]).clamp_min(0)
        depths = torch.nan_to_num(depths, nan=0.0, posinf=0.0)
        confs = torch.stack([geo.conf_1[0], geo.conf_2[0]]).float().cpu()
        g = out.gaussians[0].detach()
        g = Gaussians(g.means.float(), g.quats.float(), g.log_scales.float(), g.opacity_logits.float(),
                      g.sh.float(), None if g.features is None else g.features.float())
    fits = [n for n, on in (("refinement", model.config.refine_steps), ("colour fit", model.config.color_fit_iters),
                            ("feature fit", model.config.feature_fit_iters and g.features is not None)) if on]
    if fits and warning:  # the fallback cameras would fit the Gaussians to views nobody took
        info["warnings"].append(f"{', '.join(fits)} skipped: no recovered cameras")
    elif fits:
        g = model.fit_to_views(g, cams, prepared.images, stage)
    with stage("semantic_decode"):
        conv = model.feature_expansion[1]  # 1x1 conv: features -> text space (the upsample before it is spatial)
        weight = conv.weight.detach().reshape(conv.out_channels, conv.in_channels).float().cpu()
        bias = conv.bias.detach().float().cpu() if conv.bias is not None else torch.zeros(conv.out_channels)
        info["camera_confidence"] = [round(float(c), 4) for c in cam_conf]
        info["focal_px"] = [round(float(f), 3) for f in cams.Ks[:, 0, 0]]
        info["model"] = {"config": dataclasses.asdict(model.config),
                         "parameters": sum(p.numel() for p in model.parameters())}
        scene = Scene(gaussians=g, cameras=cams, images=prepared.images.cpu(), depths=depths, confidences=confs,
                      feature_weight=weight, feature_bias=bias, text_encoder_name=text_encoder_name(model),
                      names=list(prepared.names), transforms=list(prepared.transforms),
                      labels=list(labels) if labels else None, threshold=threshold, info=info, text_encoder=enc)
        if scene.labels:
            try:
                scene.default_segmentation()
            except OpenLSMError as e:
                if strict_labels:
                    raise
                info["warnings"].append(f"semantic labels skipped: {e}")
                scene.labels = None
        if g.features is not None:
            scene.feature_pca()
    scene.timings.update(stage.timings)
    return scene
