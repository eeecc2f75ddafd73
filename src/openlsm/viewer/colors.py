"""Per-Gaussian colours for the viewer's colour modes, and the splat covariances viser draws.

Pure functions on tensors (any device); the viewer moves the results to numpy.

    covs = covariances(g.quats, g.log_scales)                    # [N, 3, 3]
    text_feats = to_text_space(g.features, W, b)                 # [N, 384] (feature_map.safetensors)
    rgb, ids = class_colors(text_feats, ["wall", "chair"], enc)  # [N, 3] in [0, 1], [N] (OTHER = -1)
    rgb = pca_colors(g.features)                                 # [N, 3]
    rgb, heat = relevancy_colors(text_feats, "sofa", enc)        # [N, 3], [N] in (0, 1)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import quat_to_rotmat
from ..errors import OpenLSMError
from ..models.semantics.query import OTHER, FeaturePCA, relevancy, segment

OTHER_COLOR = (48 / 255, 48 / 255, 48 / 255)  # "none of the labels", as in the output folder's label maps


def covariances(quats: Tensor, log_scales: Tensor) -> Tensor:
    """Sigma = R diag(s^2) R^T  [N, 3, 3] from wxyz quaternions (any norm) [N, 4] and log std devs [N, 3]."""
    R = quat_to_rotmat(quats)  # [N, 3, 3]
    s2 = (2 * log_scales).exp()  # [N, 3] variances along the local axes
    return (R * s2[..., None, :]) @ R.transpose(-1, -2)


def to_text_space(features: Tensor, W: Tensor | None, b: Tensor | None) -> Tensor:
    """Per-Gaussian features [N, F] -> text-embedding space [N, D] with the linear map W [D, F], b [D]."""
    if W is None:
        return features.float()
    if W.shape[-1] != features.shape[-1]:
        raise OpenLSMError(f"feature map expects {W.shape[-1]}-d features, the Gaussians have {features.shape[-1]}")
    out = features.float() @ W.float().T  # [N, D]
    return out if b is None else out + b.float()


def label_palette(k: int) -> Tensor:
    """k distinct colours [k, 3] in [0, 1]: the output folder's palette (semantics/legend.png), fixed order."""
    from ..scene import label_palette as palette_u8

    return palette_u8(k).float() / 255


def parse_labels(text: str) -> list[str]:
    """'wall, floor ,chair,,' -> ['wall', 'floor', 'chair'] (order kept, duplicates dropped)."""
    names = [t.strip() for t in text.replace("\n", ",").split(",")]
    return list(dict.fromkeys(n for n in names if n))


def class_colors(text_feats: Tensor, labels: list[str], encoder, threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    """Nearest-label colours [N, 3] and label ids [N] (OTHER where below `threshold`)."""
    if not labels:
        raise OpenLSMError("type at least one label (comma-separated) for the semantic colour mode")
    ids = segment(text_feats, labels, encoder=encoder, threshold=threshold).labels  # [N]
    pal = torch.cat([label_palette(len(labels)), torch.tensor([OTHER_COLOR])]).to(text_feats.device)  # [K+1, 3]
    return pal[torch.where(ids == OTHER, len(labels), ids)], ids


def pca_colors(features: Tensor, pca: FeaturePCA | None = None, seed: int = 0) -> Tensor:
    """Features as RGB [N, 3] through `pca` (the output folder's, so colours match its PCA images), or the top-3
    principal components fitted here (robust 1-99 % range)."""
    return (pca or FeaturePCA.fit(features, seed=seed)).apply(features)


def heat_colors(values: Tensor, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Scalars [N] -> RGB [N, 3] with the project's colour ramp over [lo, hi] (default: 2nd-98th percentile)."""
    from ..io.outputs import colorize

    return torch.from_numpy(colorize(values.reshape(1, -1), lo, hi).reshape(-1, 3)).float().div(255).to(values.device)


def relevancy_colors(text_feats: Tensor, query: str, encoder) -> tuple[Tensor, Tensor]:
    """LERF relevancy of every Gaussian to `query`: heat colours [N, 3] over 0.5 ('as relevant as the canonical
    negatives', as in the output folder's relevancy maps) to 1, and the relevancy [N] in (0, 1)."""
    query = query.strip()
    if not query:
        raise OpenLSMError("type a text query for the relevancy colour mode")
    heat = relevancy(text_feats, query, encoder=encoder)  # [N]
    return heat_colors(heat, 0.5, 1.0), heat
