"""The Large Spatial Model: two unposed images -> pixel-aligned 3D Gaussians with colour and semantic features.

Module attributes give the official `LSM_Dust3R` state-dict prefixes (`dust3r.dust3r.`, `point_transformer.`,
`gaussian_head.`, `lseg_feature_extractor.`, `feature_expansion.`, `feature_reduction.`), so the `paper` preset
takes an official `checkpoint-final.pth` directly.

    model = LSM(LSMConfig.tiny()).eval()
    out = model(img1, img2)                  # images [B, 3, H, W] in [-1, 1], H, W multiples of 16
    out.gaussians                            # Gaussians [B, 2HW] (view-1 pixels, then view-2 pixels)
    out.geometry.pts3d_1, out.semantic_features   # GeometryOutput, [B, 2, D, H/2, W/2]
    load_official_lsm_checkpoint(LSM(LSMConfig.paper()), "checkpoint-final.pth")
    model.save("runs/lsm", dtype=torch.float16)  # model.safetensors + config.json (our format)
    model = LSM.load("runs/lsm")              # fp32, eval mode

Forward (lsm.md §2.1): geometry net -> semantic features of both views (frozen extractor) -> 8x8 pooled tokens
and a per-pixel residual (1x1 conv + bilinear x2) -> merge the detached point maps, normalise to [-1, 1],
feat = [xyz, rgb] -> point transformer fused with encoder tokens and semantic tokens -> Gaussian head.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from openlsm.cameras.cameras import Cameras
from openlsm.errors import OpenLSMError
from openlsm.gaussians.gaussians import Gaussians
from openlsm.models.checkpoint_io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    KeyReport,
    complete_tied,
    load_official_checkpoint,
    load_state,
    load_strict,
    model_state_of,
    report_keys,
    save_model,
)
from openlsm.models.lsm.config_dict import config_from_dict, config_to_dict
from openlsm.models.lsm.feature_fit import fit_source_colors, fit_source_features, view_operator
from openlsm.models.lsm.gaussian_head import GaussianHead, GaussianHeadConfig
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet, GeometryOutput, check_images
from openlsm.models.lsm.ptv3 import PointTransformer, PTv3Config, normalize_points
from openlsm.models.lsm.refine import refine_gaussians
from openlsm.models.semantics.lseg import LSegConfig, LSegNet
from openlsm.models.semantics.small_extractor import SmallExtractor, SmallExtractorConfig


@dataclass
class LSMConfig:
    geometry: GeometryConfig = field(default_factory=GeometryConfig.paper)
    point_transformer: PTv3Config = field(default_factory=PTv3Config.paper)
    head: GaussianHeadConfig = field(default_factory=GaussianHeadConfig)
    semantic: Literal["lseg", "small"] = "lseg"  # which 2D extractor sits at `lseg_feature_extractor`
    lseg: LSegConfig = field(default_factory=LSegConfig)
    small_extractor: SmallExtractorConfig = field(default_factory=SmallExtractorConfig)
    token_pool: int = 8  # official `tokenizer = AvgPool2d(8, 8)` on the H/2 features
    freeze_semantic: bool = True  # official `freeze_lseg: true` (no grad, eval mode)
    # Inference only: each Gaussian's semantic feature is the extractor's feature at its source pixel, mapped into
    # the rendered space by the least-squares inverse of `feature_expansion` (instead of the head's prediction;
    # training keeps the head's). On the shipped small model: +0.05 source and target mIoU (docs/benchmarks.md).
    semantic_lift: bool = False
    # The lift's fit (semantic_lift) is least squares in the metric of these class names' text vectors (buffer
    # `lift_texts` [K, D], saved with the weights): the expanded Gaussian features then give the extractor's dot
    # products with the K texts (exactly when lift_ridge = 0), with lift_ridge x the plain least-squares error
    # in every other direction. Empty: plain least squares. On the shipped small model, the 17 training classes:
    # +0.03 source mIoU, also with held-out synonyms (docs/benchmarks.md, session 13).
    lift_vocabulary: tuple[str, ...] = ()
    lift_ridge: float = 0.05
    # Inference, after camera recovery (`fit_to_views`): refit the Gaussians' features so that rendering the input
    # views through the recovered cameras gives each pixel back its own Gaussian's feature; a rendered pixel blends
    # hundreds of wide, faint Gaussians, which blurs the per-pixel features. feature_fit_iters conjugate-gradient
    # steps (0: off), feature_fit_ridge pulls towards the prediction, blend weights under feature_fit_min_weight
    # are dropped (in the colour fit too; the opt-in matrix-free GPU path, OPENLSM_MATRIX_FREE=1, uses every
    # weight). On the shipped small model: +0.02 source and target mIoU (docs/benchmarks.md, session 15).
    feature_fit_iters: int = 0
    feature_fit_ridge: float = 1.0
    feature_fit_min_weight: float = 1e-3
    # Inference, after camera recovery (`fit_to_views` too): the same for the colours, with the input images as targets
    # (each Gaussian's SH DC term moves; color_fit_iters steps, 0: off; color_fit_ridge pulls towards the
    # prediction). On the shipped small model: +0.25-0.5 dB target PSNR (docs/benchmarks.md, session 19).
    color_fit_iters: int = 0
    color_fit_ridge: float = 1.0
    # Inference, after camera recovery and before the fits above (`fit_to_views`): refine_steps Adam steps (0: off,
    # learning rate refine_lr) on the Gaussians' opacities, scales and base colours so that the input views render
    # back the input images (`refine.py`; ~10 ms a step on a GPU, ~0.9 s on a 2-core CPU with Numba). On the
    # shipped small model, 30 steps: +0.4 dB target PSNR, +0.02 rendered-view mIoU (docs/benchmarks.md, session 19).
    refine_steps: int = 0
    refine_lr: float = 0.01

    @property
    def semantic_dim(self) -> int:
        return self.lseg.out_dim if self.semantic == "lseg" else self.small_extractor.feature_dim

    @classmethod
    def paper(cls) -> LSMConfig:
        """The official model (1,100,071,497 parameters): DUSt3R ViT-L/DPT, PTv3 with fusion, LSeg."""
        return cls()

    @classmethod
    def small(cls) -> LSMConfig:
        """~25 M parameters: small geometry net, small PTv3, the small extractor (384-d MiniLM space)."""
        return cls(geometry=GeometryConfig.small(), point_transformer=PTv3Config.small(),
                   head=GaussianHeadConfig(in_dim=PTv3Config.small().out_channels, feature_dim=64),
                   semantic="small", small_extractor=SmallExtractorConfig())

    @classmethod
    def tiny(cls) -> LSMConfig:
        """For CPU tests: every part tiny, 16-d semantic space."""
        ptv3 = PTv3Config.tiny()
        return cls(geometry=GeometryConfig.tiny(), point_transformer=ptv3,
                   head=GaussianHeadConfig(in_dim=ptv3.out_channels, feature_dim=16), semantic="small",
                   small_extractor=SmallExtractorConfig(widths=(8, 16, 16, 16), feature_dim=ptv3.semantic_dim,
                                                        groups=4))

    @classmethod
    def preset(cls, name: str) -> LSMConfig:
        presets = {"tiny": cls.tiny, "small": cls.small, "paper": cls.paper}
        if name not in presets:
            raise OpenLSMError(f"unknown LSM preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    def to_dict(self) -> dict:
        """Nested plain dict (JSON-ready, tuples as lists); `LSMConfig.from_dict` inverts it."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LSMConfig:
        """Rebuild from `to_dict` output: tuples restored, types checked, unknown keys -> OpenLSMError."""
        return config_from_dict(cls, d)

    def __post_init__(self) -> None:
        pt = self.point_transformer
        if self.semantic not in ("lseg", "small"):
            raise OpenLSMError(f"semantic must be 'lseg' or 'small', got {self.semantic!r}")
        if self.geometry.enc_dim != pt.geometry_dim:
            raise OpenLSMError(f"geometry enc_dim {self.geometry.enc_dim} != point_transformer.geometry_dim "
                               f"{pt.geometry_dim}")
        if self.semantic_dim != pt.semantic_dim:
            raise OpenLSMError(f"semantic feature dim {self.semantic_dim} != point_transformer.semantic_dim "
                               f"{pt.semantic_dim}")
        if not self.lift_ridge >= 0:
            raise OpenLSMError(f"lift_ridge must be >= 0, got {self.lift_ridge}")
        if self.feature_fit_iters < 0 or not self.feature_fit_ridge > 0 or not 0 <= self.feature_fit_min_weight < 1:
            raise OpenLSMError("feature fit needs feature_fit_iters >= 0, feature_fit_ridge > 0 and "
                               f"0 <= feature_fit_min_weight < 1, got {self.feature_fit_iters}, "
                               f"{self.feature_fit_ridge}, {self.feature_fit_min_weight}")
        if self.refine_steps < 0 or not self.refine_lr > 0:
            raise OpenLSMError(f"refinement needs refine_steps >= 0 and refine_lr > 0, got {self.refine_steps}, "
                               f"{self.refine_lr}")
        if self.color_fit_iters < 0 or not self.color_fit_ridge > 0:
            raise OpenLSMError("colour fit needs color_fit_iters >= 0 and color_fit_ridge > 0, got "
                               f"{self.color_fit_iters}, {self.color_fit_ridge}")
        if self.head.in_dim != pt.out_channels:
            raise OpenLSMError(f"head in_dim {self.head.in_dim} != point transformer output {pt.out_channels}")


class GeometryWrapper(nn.Module):
    """Holds the geometry net as `.dust3r`, giving the official `dust3r.dust3r.` prefix."""

    def __init__(self, config: GeometryConfig):
        super().__init__()
        self.dust3r = GeometryNet(config)

    def forward(self, img1: Tensor, img2: Tensor) -> GeometryOutput:
        return self.dust3r(img1, img2)


@dataclass
class LSMOutput:
    gaussians: Gaussians  # [B, 2HW]: view-1 pixels (row-major), then view-2 pixels
    geometry: GeometryOutput  # point maps [B, H, W, 3] in view 1's frame, confidences, encoder tokens
    semantic_features: Tensor  # [B, 2, D, H/2, W/2] frozen extractor output (loss targets come from these)
    center: Tensor  # [B, 1, 3] normalisation of the merged points: coords = (pts - center) / scale
    scale: Tensor  # [B, 1, 1]

    def view(self, v: int) -> Gaussians:
        """The Gaussians of view v (0 or 1): [B, HW]."""
        hw = self.gaussians.means.shape[1] // 2
        return self.gaussians._map(lambda t: t[:, v * hw:(v + 1) * hw])


def views_to_points(x: Tensor, batch: int) -> Tensor:
    """'(v b) c h w -> b (v h w) c': [2B, C, h, w] view-major -> [B, 2hw, C]."""
    return x.unflatten(0, (2, batch)).permute(1, 0, 3, 4, 2).flatten(1, 3)


class LSM(nn.Module):
    def __init__(self, config: LSMConfig | None = None):
        super().__init__()
        cfg = self.config = config or LSMConfig.paper()
        d_sem, d_feat = cfg.semantic_dim, cfg.head.feature_dim
        # Registration order follows the official model (state-dict order).
        self.dust3r = GeometryWrapper(cfg.geometry)
        self.point_transformer = PointTransformer(cfg.point_transformer)
        self.gaussian_head = GaussianHead(cfg.head)
        if cfg.semantic == "lseg":
            self.lseg_feature_extractor = LSegNet(cfg.lseg)
        else:
            self.lseg_feature_extractor = SmallExtractor(cfg.small_extractor)
        self.tokenizer = nn.AvgPool2d(cfg.token_pool, cfg.token_pool)
        self.feature_expansion = nn.Sequential(nn.Upsample(scale_factor=0.5, mode="bilinear"),
                                               nn.Conv2d(d_feat, d_sem, 1))
        self.feature_reduction = nn.Sequential(nn.Conv2d(d_sem, d_feat, 1),
                                               nn.Upsample(scale_factor=2, mode="bilinear"))
        if cfg.lift_vocabulary:  # filled by set_lift_vocabulary or loaded with the weights
            self.register_buffer("lift_texts", torch.zeros(len(cfg.lift_vocabulary), d_sem))
        if cfg.freeze_semantic:
            self.lseg_feature_extractor.requires_grad_(False)
            self.lseg_feature_extractor.eval()

    def train(self, mode: bool = True) -> LSM:
        super().train(mode)
        if self.config.freeze_semantic:  # the frozen extractor stays in eval mode (its BatchNorms)
            self.lseg_feature_extractor.eval()
        return self

    def save(self, path_dir: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
        """Write `model.safetensors` + `config.json` into `path_dir` (each file atomically). `dtype`
        (torch.float16 / "fp16", "bf16", ...) stores the floating-point weights in that type (fp16 halves
        the size); `LSM.load` casts back to fp32. Returns the weights path."""
        if Path(path_dir).suffix == ".safetensors":
            raise OpenLSMError(f"LSM.save takes a folder, got the file name {path_dir}")
        return save_model(path_dir, self, self.config.to_dict(), dtype=_dtype(dtype))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LSM:
        """An `LSM.save` output (its folder or its model.safetensors) -> fp32 model in eval mode on `device`.
        Anything else (another model's file, wrong keys or shapes) raises a one-line OpenLSMError."""
        p = Path(path)
        if p.name == WEIGHTS_NAME and not p.with_suffix(".json").exists() and (p.parent / CONFIG_NAME).exists():
            p = p.parent  # the file inside a saved folder: its config is config.json
        state, meta = load_state(p)
        if not isinstance(meta, dict) or meta.get("format") != "openlsm" or meta.get("module") != "LSM":
            module = meta.get("module") if isinstance(meta, dict) else None
            raise OpenLSMError(f"{path} holds {f'a {module}' if module else 'no openlsm'} model, not an LSM")
        config = LSMConfig.from_dict(meta.get("config"))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model = cls(config)
        load_strict(model, state, what=f"LSM file {path}")
        return model.to(device).eval()

    def use_cuda_graphs(self, enabled: bool = True) -> LSM:
        """Replay the static-shape stages (geometry network, semantic extractor) as CUDA graphs in inference on a
        GPU: the first forward per image size records them, later ones skip the per-kernel launch cost. Training
        (gradients on) and CPU inputs run as usual. Returns self."""
        from openlsm.models.cuda_graphs import GraphCache

        self.graphs = GraphCache() if enabled else None
        return self

    def _stage(self, name: str, module: nn.Module, *args: Tensor):
        graphs = getattr(self, "graphs", None)
        return module(*args) if graphs is None or self.training else graphs.run(name, module, *args)

    def extract_semantics(self, images: Tensor) -> Tensor:
        """images [N, 3, H, W] in [-1, 1] -> [N, D, H/2, W/2] (channels-last on the CPU)."""
        if images.device.type == "cpu":  # oneDNN's convolutions run faster channels-last, 1x1 ones ~4x (plain GEMMs)
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad() if self.config.freeze_semantic else contextlib.nullcontext():
            return self._stage("semantics", self.lseg_feature_extractor, images)

    def expand_features(self, feature_maps: Tensor) -> Tensor:
        """Rendered feature maps [N, feature_dim, H, W] -> [N, D, H/2, W/2] in the extractor's space."""
        return self.feature_expansion(feature_maps)

    def lift_features(self, sem: Tensor, batch: int) -> Tensor:
        """Extractor features [2B, D, H/2, W/2] (view-major) -> per-pixel Gaussian features [B, 2HW, feature_dim]
        whose `feature_expansion` is the least-squares fit of the (upsampled) extractor features."""
        conv = self.feature_expansion[1]  # the 1x1 conv; the bilinear resize before it acts on space only
        weight, bias = conv.weight[:, :, 0, 0].double(), conv.bias.double()  # [D, d], [D]
        metric = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)  # [M, D]
        texts = getattr(self, "lift_texts", None)
        if texts is not None:  # the directions the text decoder reads first, the rest weighted by the ridge
            metric = torch.cat([nn.functional.normalize(texts.double(), dim=-1), self.config.lift_ridge * metric])
        inverse = torch.linalg.pinv(metric @ weight) @ metric  # [d, D]: argmin_f |metric (W f + b - s)|
        # (x - bias) @ inverse.T is affine with the bias folded in; bilinear weights sum to one, so it commutes
        # with the x2 resize and runs on the D-channel maps at half resolution (~20x less work than after it).
        low = nn.functional.conv2d(sem, inverse[:, :, None, None].to(sem.dtype), (-inverse @ bias).to(sem.dtype))
        # channels-last: the resize writes the [..., H, W, d] rows `views_to_points` reads (no transposing copy)
        low = low.contiguous(memory_format=torch.channels_last)
        return views_to_points(nn.functional.interpolate(low, scale_factor=2, mode="bilinear"), batch)

    def set_lift_vocabulary(self, names: list[str] | tuple[str, ...], texts: Tensor) -> LSM:
        """Fit the semantic lift in the metric of these class names' text vectors [K, D] (the model's own training
        vocabulary, embedded as its decoder embeds queries); they are saved with the model. Returns self.

            model.set_lift_vocabulary(CLASSES, label_embeddings(get_text_encoder("minilm"), list(CLASSES)))
        """
        if not names or texts.shape != (len(names), self.config.semantic_dim):
            raise OpenLSMError(f"lift texts must be [{len(names)}, {self.config.semantic_dim}] for {len(names)} "
                               f"names, got {tuple(texts.shape)}")
        self.config = replace(self.config, lift_vocabulary=tuple(names))  # a copy: configs may be shared
        device = self.feature_expansion[1].weight.device
        self.register_buffer("lift_texts", nn.functional.normalize(texts.detach().float(), dim=-1).to(device))
        return self

    def fit_to_views(self, gaussians: Gaussians, cameras: Cameras, images: Tensor,
                     timed: Callable[[str], contextlib.AbstractContextManager] | None = None) -> Gaussians:
        """One scene's pixel-aligned Gaussians [2HW], its two (recovered) cameras and input images [2, 3, H, W] in
        [0, 1] -> the Gaussians refined (refine_*, `refine.py`), then with colours and features refitted through the
        renderer (color_fit_*, feature_fit_*, `feature_fit.py`; both fits share the views' blend weights) as the
        config asks. `timed(name)`, if given, wraps each step (stage timings)."""
        cfg, g = self.config, gaussians
        timed = timed or (lambda name: contextlib.nullcontext())
        if cfg.refine_steps:
            with timed("refine"):
                g = refine_gaussians(g, cameras, images, cfg.refine_steps, cfg.refine_lr)
        weights = None
        if cfg.color_fit_iters:
            with timed("color_fit"):
                weights = view_operator(g, cameras, cfg.feature_fit_min_weight)
                g = replace(g, sh=fit_source_colors(g, cameras, images, cfg.color_fit_ridge, cfg.color_fit_iters,
                                                    weights=weights))
        if cfg.feature_fit_iters and g.features is not None:
            with timed("feature_fit"):
                g = replace(g, features=fit_source_features(g, cameras, cfg.feature_fit_ridge, cfg.feature_fit_iters,
                                                            cfg.feature_fit_min_weight, weights))
        return g

    def reconstruct(self, images, **kwargs):
        """Images (paths, arrays or tensors) -> `openlsm.scene.Scene`; see `openlsm.reconstruct.reconstruct`."""
        from openlsm.reconstruct import reconstruct

        return reconstruct(self, images, **kwargs)

    def forward(self, img1: Tensor, img2: Tensor, generator: torch.Generator | None = None) -> LSMOutput:
        check_images(img1, img2, self.config.geometry.patch_size)
        if img1.shape != img2.shape:
            raise OpenLSMError(f"both images must have one shape, got {tuple(img1.shape)} and {tuple(img2.shape)}")
        B, _, H, W = img1.shape
        if H % (2 * self.config.token_pool) or W % (2 * self.config.token_pool):
            raise OpenLSMError(f"image size {H}x{W} must be a multiple of {2 * self.config.token_pool}")
        geo = self._stage("geometry", self.dust3r, img1, img2)
        images = torch.cat([img1, img2], 0)  # [2B, 3, H, W] view-major
        sem = self.extract_semantics(images)  # [2B, D, H/2, W/2]
        sem_tokens = views_to_points(self.tokenizer(sem), B)  # [B, 2 (H/16)(W/16), D]
        lift = self.config.semantic_lift and not self.training
        # the lift replaces the head's features: their projection and residual are not computed
        sem_residual = None if lift else views_to_points(self.feature_reduction(sem), B)  # [B, 2HW, feature_dim]

        points = torch.stack([geo.pts3d_1, geo.pts3d_2], 1).detach().reshape(B, 2 * H * W, 3)  # [B, 2HW, 3]
        colors = views_to_points(images, B)  # [B, 2HW, 3] in [-1, 1]
        coords, center, scale = normalize_points(points)
        feats = torch.cat([coords, colors], -1)  # [B, 2HW, 6]
        offsets = torch.arange(1, B + 1, device=img1.device) * (2 * H * W)
        point_feats = self.point_transformer(coords.reshape(-1, 3), feats.reshape(-1, 6), offsets,
                                             geo.enc_tokens, sem_tokens, generator)  # [B*2HW, C]
        gaussians = self.gaussian_head(point_feats.reshape(B, 2 * H * W, -1), points, colors * 0.5 + 0.5,
                                       sem_residual, features=self.lift_features(sem, B) if lift else None)
        return LSMOutput(gaussians, geo, sem.unflatten(0, (2, B)).transpose(0, 1), center, scale)


_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise OpenLSMError(f"unsupported weight dtype {dtype!r}; use one of {sorted(_DTYPES)}")


def count_parameters(module: nn.Module) -> int:
    """Unique parameter elements (tied tensors counted once)."""
    return sum(p.numel() for p in module.parameters())


def load_official_lsm_checkpoint(model: LSM, source: str | os.PathLike | dict, strict: bool = True,
                                 skip_prefixes: tuple[str, ...] = ()) -> KeyReport:
    """Load an official LSM checkpoint (`ckpt['model']` with the `LSM_Dust3R` key set) into `model`.

    DPT aliases (`layer{i}_rn` / `layer_rn.{i-1}`) may appear under either name. Keys under `skip_prefixes` are
    neither loaded nor required: `("dust3r.", "lseg_feature_extractor.")` mimics the official loader, which
    takes DUSt3R and LSeg weights from their own checkpoints. Mis-shaped keys always raise; with `strict`,
    missing or unexpected keys raise too. Returns the KeyReport."""
    ckpt = source if isinstance(source, dict) else load_official_checkpoint(source)
    model_string = getattr(ckpt.get("args"), "model", None)
    if isinstance(model_string, str) and not model_string.lstrip().startswith("LSM"):
        raise OpenLSMError(f"not an LSM checkpoint (its model is {model_string.split('(')[0]!r})")
    def keep(key: str) -> bool:
        return not (skip_prefixes and key.startswith(skip_prefixes))

    state = complete_tied(model, {k: v for k, v in model_state_of(ckpt).items() if keep(k)})
    own = {k: v for k, v in model.state_dict().items() if keep(k)}
    report = report_keys(own, state)
    if report.mismatched or (strict and not report.ok):
        raise OpenLSMError(f"LSM checkpoint does not fit the model: {report}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return report
