"""Read what the viewer shows from an `openlsm reconstruct` output folder.

Needed: gaussians.ply. Used when present: cameras.json (input cameras, OpenCV), feature_map.safetensors
(weight [D_text, F] and bias [D_text]: per-Gaussian features -> text space; pca.*: the folder's feature PCA),
summary.json (labels, text encoder, threshold), semantics/labels.json or labels.json (class names).
This reads only those files, so it also works on folders without the input images that `Scene.load` needs.

    scene = load_view_scene("out/")
    scene.gaussians, scene.cameras, scene.labels, scene.text_features()   # [N, D_text] or None
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ..cameras import Cameras
from ..errors import OpenLSMError
from ..gaussians import Gaussians
from ..models.semantics.query import FeaturePCA
from .colors import to_text_space

# SynthRooms classes without "void" (kept literal so the viewer needs no data-generation imports)
DEFAULT_LABELS = ["wall", "floor", "ceiling", "door", "window", "chair", "table", "sofa", "bed", "cabinet",
                  "shelf", "lamp", "plant", "tv", "rug", "desk", "box"]


@dataclass
class ViewScene:
    folder: Path
    gaussians: Gaussians
    cameras: Cameras | None = None
    camera_names: list[str] = field(default_factory=list)
    W: Tensor | None = None  # [D_text, F]
    b: Tensor | None = None  # [D_text]
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    threshold: float = 0.0  # OTHER below this max probability (the folder's default segmentation)
    text_encoder: str = "minilm"  # which encoder's space the features live in ("minilm" or "clip")
    pca: FeaturePCA | None = None  # the folder's PCA (pca.* in feature_map.safetensors)
    _text: Tensor | None = field(default=None, init=False, repr=False)  # cached text_features()

    @property
    def has_features(self) -> bool:
        return self.gaussians.features is not None

    def text_features(self) -> Tensor | None:
        """Per-Gaussian features in the text-embedding space [N, D_text] (cached); None without features."""
        if self.gaussians.features is None:
            return None
        if self._text is None:
            self._text = to_text_space(self.gaussians.features, self.W, self.b)
        return self._text


def _read_feature_map(path: Path, feature_dim: int) -> tuple[Tensor, Tensor | None, FeaturePCA | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise OpenLSMError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None
    W = state.get("weight", state.get("W"))
    b = state.get("bias", state.get("b"))
    if W is None or W.ndim != 2:
        raise OpenLSMError(f"{path}: expected a 2-D tensor 'weight' [D_text, {feature_dim}], found keys {sorted(state)}")
    if W.shape[1] != feature_dim:
        raise OpenLSMError(f"{path}: W maps {W.shape[1]}-d features, but gaussians.ply has {feature_dim}")
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise OpenLSMError(f"{path}: b has shape {tuple(b.shape)}, expected ({W.shape[0]},)")
    pca_state = {k[4:]: t.float() for k, t in state.items() if k.startswith("pca.")}
    pca = None
    if pca_state.keys() == {"mean", "components", "low", "high"} and pca_state["mean"].shape == (feature_dim,):
        pca = FeaturePCA.from_state_dict(pca_state)
    return W.float(), None if b is None else b.float(), pca


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenLSMError(f"{path} is not valid JSON ({e})") from None


def _label_list(doc) -> list[str] | None:
    """Names from a list, {"labels": [...]} or {"0": name, ...}; None if the layout is unknown."""
    if isinstance(doc, dict) and isinstance(doc.get("labels"), list):
        doc = doc["labels"]
    if isinstance(doc, dict) and doc and all(str(k).isdigit() for k in doc):
        doc = [doc[k] for k in sorted(doc, key=int)]
    if isinstance(doc, list) and doc and all(isinstance(n, str) for n in doc):
        return [n for n in doc if n != "void"] or None
    return None


def load_view_scene(folder: str | Path) -> ViewScene:
    """Load an output folder; a missing folder or gaussians.ply is a one-line OpenLSMError."""
    from ..cameras.io import read_cameras_json
    from ..gaussians import load_ply

    folder = Path(folder)
    if not folder.is_dir():
        raise OpenLSMError(f"output folder not found: {folder}")
    ply = folder / "gaussians.ply"
    if not ply.is_file():
        raise OpenLSMError(f"{folder} has no gaussians.ply (is it an `openlsm reconstruct` output folder?)")
    g = load_ply(ply)
    if len(g) == 0:
        raise OpenLSMError(f"{ply} holds no Gaussians")
    scene = ViewScene(folder=folder, gaussians=g)
    if (folder / "cameras.json").is_file():
        scene.cameras, scene.camera_names = read_cameras_json(folder / "cameras.json")
    if g.features is not None and (folder / "feature_map.safetensors").is_file():
        scene.W, scene.b, scene.pca = _read_feature_map(folder / "feature_map.safetensors", g.feature_dim)
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
    summary = summary if isinstance(summary, dict) else {}
    for path in (folder / "semantics" / "labels.json", folder / "labels.json"):  # least preferred first
        if path.is_file():
            scene.labels = _label_list(_read_json(path)) or scene.labels
    scene.labels = _label_list(summary.get("labels")) or scene.labels
    if isinstance(summary.get("threshold"), (int, float)):
        scene.threshold = float(summary["threshold"])
    if summary.get("text_encoder") in ("minilm", "clip"):
        scene.text_encoder = summary["text_encoder"]
    return scene


def ensure_text_dim(scene: ViewScene, text_dim: int) -> None:
    """Semantic modes compare features with text embeddings: their dims must agree."""
    feats = scene.text_features()
    if feats is not None and feats.shape[-1] != text_dim:
        hint = "" if scene.W is not None else " (feature_map.safetensors is missing)"
        raise OpenLSMError(f"features are {feats.shape[-1]}-d but the text encoder gives {text_dim}-d{hint}")

