"""A reconstructed scene: Gaussians with semantic features, the recovered input cameras, per-input maps, and the
linear map from the 64-d Gaussian features to the text-embedding space, with open-vocabulary queries on top.

    scene = reconstruct(model, ["a.jpg", "b.jpg"], labels=["wall", "floor", "chair"])
    seg = scene.segment(["sofa", "table"])          # seg.labels [N], seg.view_labels [V, H, W]
    heat = scene.relevancy("a place to sit")        # heat.gaussians [N], heat.views [V, H, W]
    out = scene.render(scene.cameras)               # RenderOutput at the input resolution
    scene.save("out", video="orbit");  scene = Scene.load("out")

Gaussian features f [N, F] live in the model's compact space; `to_text_space(f) = f @ W.T + b` (the model's 1x1
`feature_expansion` conv) puts them in the text encoder's space, where cosine similarity with text embeddings
is meaningful. The folder layout written by `save` is documented in docs/output_format.md.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .cameras import Cameras
from .errors import OpenLSMError
from .gaussians import Gaussians
from .io.images import ImageTransform

OTHER = -1  # label of "none of the queried classes" (as in models.semantics.query)
OTHER_COLOR = (48, 48, 48)
CHUNK = 65536  # Gaussians mapped to the text space at once (bounds memory: 65536 x 512 floats)
VideoPath = Literal["interpolate", "orbit", "none"]
_ENCODERS: dict[str, object] = {}  # name -> TextEncoder (or its Future): slow to build, one per process


def shared_text_encoder(name: str, background: bool = False):
    """The process-wide text encoder `name`, built once. With `background`, building starts in a thread and
    this returns at once (reconstruct overlaps MiniLM's ~2-4 s start-up with the model forward)."""
    import concurrent.futures

    from .models.semantics.text import get_text_encoder

    if name not in _ENCODERS:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openlsm-text")
        _ENCODERS[name] = pool.submit(get_text_encoder, name)
        pool.shutdown(wait=False)
    if background:
        return None
    enc = _ENCODERS[name]
    if isinstance(enc, concurrent.futures.Future):
        try:
            enc = enc.result()
        except BaseException:
            del _ENCODERS[name]  # let a later call retry (and raise its own error)
            raise
        _ENCODERS[name] = enc
    return enc


def label_palette(k: int) -> Tensor:
    """k distinct colours [k, 3] uint8: golden-ratio hue steps, alternating lightness."""
    cols = [colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, 0.45 + 0.15 * (i % 2), 0.75) for i in range(k)]
    return (torch.tensor(cols, dtype=torch.float32).reshape(k, 3) * 255).round().to(torch.uint8)


def colorize_labels(labels: Tensor, palette: Tensor) -> Tensor:
    """Label ids [...] (OTHER allowed) -> RGB uint8 [..., 3]."""
    table = torch.cat([palette, torch.tensor([OTHER_COLOR], dtype=torch.uint8)])  # OTHER indexes the last row
    return table[labels.cpu().clamp_min(-1)]


@dataclass
class SceneSegmentation:
    names: list[str]
    probs: Tensor  # [N, K] per Gaussian, softmax over the queried names
    labels: Tensor  # [N] int64 in [0, K) or OTHER
    confidence: Tensor  # [N]
    view_labels: Tensor  # [V, H, W] int64 per input pixel
    view_probs: Tensor  # [V, H, W, K]

    @property
    def palette(self) -> Tensor:
        return label_palette(len(self.names))

    def colors(self) -> Tensor:
        """Per-Gaussian class colours [N, 3] in [0, 1]."""
        return colorize_labels(self.labels, self.palette).float() / 255

    def fractions(self) -> dict[str, float]:
        """Fraction of input pixels per name (and 'other'), largest first."""
        n = self.view_labels.numel()
        counts = torch.bincount(self.view_labels.flatten() + 1, minlength=len(self.names) + 1).tolist()
        out = {name: counts[i + 1] / n for i, name in enumerate(self.names)}
        out["other"] = counts[0] / n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class SceneRelevancy:
    text: str
    gaussians: Tensor  # [N] LERF relevancy in (0, 1)
    views: Tensor  # [V, H, W]


@dataclass
class Scene:
    gaussians: Gaussians  # [N], features [N, F] in the model's compact space
    cameras: Cameras  # [V] input cameras at the model resolution, OpenCV c2w; view 0 is the identity
    images: Tensor  # [V, 3, H, W] model inputs in [0, 1]
    depths: Tensor  # [V, H, W] z-depth in scene units (0 = unknown)
    confidences: Tensor  # [V, H, W] geometry confidence (>= 1 for DUSt3R-style heads)
    feature_weight: Tensor | None  # [D, F] features -> text space (None: no semantic features)
    feature_bias: Tensor | None  # [D]
    text_encoder_name: str | None = "minilm"  # "minilm" or "clip"
    names: list[str] = field(default_factory=list)  # per input: where it came from
    transforms: list[ImageTransform] | None = None  # per input: model pixels -> original pixels
    labels: list[str] | None = None  # names for the default segmentation (saved as semantics/)
    threshold: float = 0.0  # confidence threshold of the default segmentation
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    info: dict = field(default_factory=dict)  # focals, camera confidence, model, warnings...
    text_encoder: object | None = field(default=None, repr=False)  # a TextEncoder; built from the name if None

    def __post_init__(self):
        self._cache: dict[str, object] = {}

    # --- shapes ---------------------------------------------------------------------------------------------
    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model images."""
        return tuple(self.images.shape[-2:])

    @property
    def pixel_aligned(self) -> bool:
        """True when Gaussian i belongs to input pixel i (view-major, row-major), as LSM predicts them."""
        h, w = self.size
        return len(self.gaussians) == self.num_views * h * w

    @property
    def text_dim(self) -> int:
        return 0 if self.feature_weight is None else self.feature_weight.shape[0]

    # --- semantics ------------------------------------------------------------------------------------------
    def to_text_space(self, features: Tensor) -> Tensor:
        """Compact features [..., F] -> text-space features [..., D]."""
        if self.feature_weight is None:
            raise OpenLSMError("this scene has no semantic features")
        w, b = self.feature_weight.to(features.device), self.feature_bias.to(features.device)
        return features.float() @ w.T + b

    def encoder(self):
        """The text encoder matching the feature space (built once per process; raises if none fits)."""
        if self.feature_weight is None or self.gaussians.features is None:
            raise OpenLSMError("this scene has no semantic features to query")
        enc = self.text_encoder
        if enc is None:
            name = self.text_encoder_name or "minilm"
            if name == "clip":
                raise OpenLSMError("this scene lives in CLIP space: pass encoder=get_text_encoder('clip', "
                                   "weights=...) (or --text-weights) to query it")
            enc = shared_text_encoder(name)
        if getattr(enc, "dim", self.text_dim) != self.text_dim:
            raise OpenLSMError(f"the scene's features are {self.text_dim}-d but the text encoder "
                               f"{getattr(enc, 'name', '?')!r} gives {enc.dim}-d embeddings (random or mismatched "
                               "weights?); semantic queries are not possible")
        return enc

    def _embed(self, names, encoder) -> Tensor:
        from .models.semantics.text import label_embeddings

        return label_embeddings(encoder or self.encoder(), list(names))

    def view_features(self) -> tuple[Tensor, Tensor]:
        """Compact features per input pixel [V, H, W, F] and a validity mask [V, H, W].

        Pixel-aligned scenes read them off the Gaussians; others render them from the input cameras."""
        if self.gaussians.features is None:
            raise OpenLSMError("this scene has no semantic features")
        v, (h, w) = self.num_views, self.size
        if self.pixel_aligned:
            feats = self.gaussians.features.reshape(v, h, w, -1)
            return feats, torch.ones(v, h, w, dtype=torch.bool)
        with torch.no_grad():
            out = self.render(self.cameras, with_features=True)
        # Rendered features are alpha-weighted sums; the affine text map needs the weighted mean.
        return out.features / out.alpha[..., None].clamp_min(1e-6), out.alpha > 0.5

    def _chunked(self, fn, feats: Tensor) -> list:
        return [fn(self.to_text_space(feats[i:i + CHUNK])) for i in range(0, feats.shape[0], CHUNK)]

    def segment(self, labels: list[str] | str, threshold: float = 0.0, encoder=None,
                background: list[str] | None = None, temperature: float = 0.07) -> SceneSegmentation:
        """Label every Gaussian and every input pixel with the most similar of `labels` (OTHER below
        `threshold` on the max probability, or where a `background` name wins)."""
        from .models.semantics.query import segment

        names = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s) for s in labels]
        names = [s for s in names if s]
        if not names:
            raise OpenLSMError("segment needs at least one label")
        texts = self._embed(names, encoder)
        bg = self._embed(background, encoder) if background else None

        def run(f):
            return segment(f, texts, threshold=threshold, temperature=temperature, background=bg)

        parts = self._chunked(run, self.gaussians.features)
        probs, lab, conf = (torch.cat([getattr(p, k) for p in parts]) for k in ("probs", "labels", "confidence"))
        if self.pixel_aligned:
            v, (h, w) = self.num_views, self.size
            view_labels, view_probs = lab.reshape(v, h, w), probs.reshape(v, h, w, -1)
        else:
            feats, valid = self.view_features()
            flat = feats.reshape(-1, feats.shape[-1])
            vp = self._chunked(run, flat)
            view_labels = torch.cat([p.labels for p in vp]).reshape(valid.shape).masked_fill(~valid, OTHER)
            view_probs = torch.cat([p.probs for p in vp]).reshape(*valid.shape, -1)
        return SceneSegmentation(names, probs.cpu(), lab.cpu(), conf.cpu(), view_labels.cpu(), view_probs.cpu())

    def relevancy(self, text: str, encoder=None) -> SceneRelevancy:
        """LERF relevancy of `text` against canonical negatives, per Gaussian and per input pixel."""
        from .models.semantics.query import relevancy
        from .models.semantics.vocab import CANONICAL_NEGATIVES

        if not text or not text.strip():
            raise OpenLSMError("relevancy needs a non-empty query text")
        pos = self._embed([text.strip()], encoder)
        neg = self._embed(list(CANONICAL_NEGATIVES), encoder)
        rel = torch.cat(self._chunked(lambda f: relevancy(f, pos, negatives=neg), self.gaussians.features))
        if self.pixel_aligned:
            views = rel.reshape(self.num_views, *self.size)
        else:
            feats, valid = self.view_features()
            flat = feats.reshape(-1, feats.shape[-1])
            views = torch.cat(self._chunked(lambda f: relevancy(f, pos, negatives=neg), flat))
            views = views.reshape(valid.shape) * valid
        return SceneRelevancy(text.strip(), rel.cpu(), views.cpu())

    def default_segmentation(self) -> SceneSegmentation | None:
        """Segmentation with the scene's own `labels` (cached), or None without labels."""
        if not self.labels:
            return None
        if "segmentation" not in self._cache:
            self._cache["segmentation"] = self.segment(self.labels, self.threshold)
        return self._cache["segmentation"]

    def feature_pca(self):
        """FeaturePCA fitted on the Gaussians' compact features (same colours in every image and frame)."""
        from .models.semantics.query import FeaturePCA

        if "pca" not in self._cache:
            if self.gaussians.features is None:
                raise OpenLSMError("this scene has no semantic features")
            self._cache["pca"] = FeaturePCA.fit(self.gaussians.features, seed=0)
        return self._cache["pca"]

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, cameras: Cameras | None = None, width: int | None = None, height: int | None = None,
               with_features: bool = False, backend: str = "auto"):
        """Render the Gaussians (default: from the input cameras) -> RenderOutput (see openlsm.render)."""
        from .render import render

        cams = self.cameras if cameras is None else cameras
        g = self.gaussians.to(self.images.device)
        with torch.no_grad():
            return render(g, cams.to(g.means.device), width, height, backend=backend, with_features=with_features)

    # --- files ----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False, video: VideoPath = "interpolate",
             frames: int = 30, video_size: int | None = None, extra_config: dict | None = None) -> Path:
        """Write the output folder atomically (all or nothing); see docs/output_format.md."""
        from .io.outputs import output_folder

        if video not in ("interpolate", "orbit", "none"):
            raise OpenLSMError(f"video must be 'interpolate', 'orbit' or 'none', got {video!r}")
        with output_folder(path, overwrite) as tmp:
            self.write(tmp, video=video, frames=frames, video_size=video_size, extra_config=extra_config)
        return Path(path)

    def write(self, folder: Path, video: VideoPath = "interpolate", frames: int = 30,
              video_size: int | None = None, extra_config: dict | None = None) -> None:
        """Write every file into an existing (empty) folder; `save` wraps this in an atomic output folder."""
        from .scene_io import write_scene

        write_scene(self, Path(folder), video=video, frames=frames, video_size=video_size,
                    extra_config=extra_config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scene:
        """Read a folder written by `save` (only the files needed for queries and rendering)."""
        from .scene_io import read_scene

        return read_scene(Path(path))

    def summary(self) -> dict:
        """Plain-data summary (summary.json): sizes, cameras, labels found, timings."""
        from .scene_io import scene_summary

        return scene_summary(self)
