"""Open-vocabulary queries on a reconstructed scene's features (per-Gaussian [N, D] or per-pixel [..., H, W, D]),
with features already in the text-embedding space (for LSM: after `feature_expansion`).

    >>> enc = get_text_encoder("minilm")
    >>> seg = segment(features, ["sofa", "table"], encoder=enc, threshold=0.5)
    >>> seg.labels            # [...] int64, index into the names, OTHER (-1) where below threshold
    >>> heat = relevancy(features, "couch", encoder=enc)      # [...] in (0, 1), LERF canonical negatives
    >>> pca = FeaturePCA.fit(features_view0); rgb = pca.apply(features_view1)   # same colours everywhere
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import OpenLSMError
from .vocab import CANONICAL_NEGATIVES, TEMPLATES

OTHER = -1  # label of "none of the queried classes"


def _text_matrix(texts, encoder, templates) -> torch.Tensor:
    """[K, D] unit text embeddings from names (needs `encoder`) or a given tensor."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, torch.Tensor):
        emb = texts if texts.ndim == 2 else texts[None]
    else:
        if encoder is None:
            raise OpenLSMError("text given as strings: pass encoder= (e.g. get_text_encoder('minilm'))")
        from .text import label_embeddings

        emb = label_embeddings(encoder, list(texts), templates)
    return F.normalize(emb.float(), dim=-1)


def cosine(features: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """[..., D] x [K, D] -> [..., K] cosine similarities."""
    if features.shape[-1] != texts.shape[-1]:
        raise OpenLSMError(f"feature dim {features.shape[-1]} != text dim {texts.shape[-1]}")
    return F.normalize(features.float(), dim=-1) @ texts.to(features.device).T


@dataclass
class Segmentation:
    probs: torch.Tensor  # [..., K] softmax over the queried classes
    labels: torch.Tensor  # [...] int64 in [0, K) or OTHER
    confidence: torch.Tensor  # [...] max probability (over queried + background classes)


def segment(features: torch.Tensor, texts, encoder=None, threshold: float = 0.0, temperature: float = 0.07,
            background: list[str] | torch.Tensor | None = None, templates=TEMPLATES) -> Segmentation:
    """Label every feature with its most similar text. `threshold` on the max probability gives OTHER;
    `background` names (e.g. ["other", "background"]) compete as extra classes and also map to OTHER.
    Works on per-Gaussian [N, D] and per-view [V, H, W, D] features alike."""
    text = _text_matrix(texts, encoder, templates)  # [K, D]
    k = text.shape[0]
    if background is not None and len(background) > 0:
        extra = background if isinstance(background, torch.Tensor) else list(background)
        text = torch.cat([text, _text_matrix(extra, encoder, templates)])
    probs = torch.softmax(cosine(features, text) / temperature, dim=-1)  # [..., K(+B)]
    confidence, labels = probs.max(-1)
    labels = labels.masked_fill((labels >= k) | (confidence < threshold), OTHER)
    return Segmentation(probs=probs[..., :k], labels=labels, confidence=confidence)


def relevancy(features: torch.Tensor, text, encoder=None, negatives=CANONICAL_NEGATIVES, temperature: float = 1.0,
              templates=TEMPLATES) -> torch.Tensor:
    """LERF relevancy: min over negatives n of softmax([cos(f, q), cos(f, n)] / temperature)[0]. -> [...]"""
    pos = _text_matrix(text, encoder, templates)[:1]  # [1, D]
    neg = _text_matrix(list(negatives) if not isinstance(negatives, torch.Tensor) else negatives, encoder, templates)
    sims = cosine(features, torch.cat([pos, neg])) / temperature  # [..., 1+M]
    pairwise = torch.softmax(torch.stack([sims[..., :1].expand_as(sims[..., 1:]), sims[..., 1:]], -1), -1)[..., 0]
    return pairwise.min(-1).values


@dataclass
class FeaturePCA:
    """Fixed 3-component projection of D-d features to RGB: fit once, apply to every view and frame."""

    mean: torch.Tensor  # [D]
    components: torch.Tensor  # [D, 3]
    low: torch.Tensor  # [3] robust min (1st percentile) of the fitted projections
    high: torch.Tensor  # [3] robust max (99th percentile)

    @staticmethod
    def fit(features: torch.Tensor, max_samples: int = 100_000, seed: int = 0) -> FeaturePCA:
        x = features.reshape(-1, features.shape[-1]).double()
        if x.shape[0] < 2:
            raise OpenLSMError("FeaturePCA.fit needs at least two feature vectors")
        if x.shape[0] > max_samples:
            idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
            x = x[idx.to(x.device)]
        mean = x.mean(0)
        cov = (x - mean).T @ (x - mean) / (x.shape[0] - 1)  # [D, D]
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        comps = vecs[:, -3:].flip(-1)  # [D, 3] top-3, largest first
        if comps.shape[1] < 3:  # D < 3: pad with zero components
            comps = F.pad(comps, (0, 3 - comps.shape[1]))
        # deterministic sign: the largest-magnitude loading of each component is positive
        largest = comps.gather(0, comps.abs().argmax(0, keepdim=True))  # [1, 3]
        comps = comps * torch.where(largest < 0, -1.0, 1.0).to(comps.dtype)
        proj = (x - mean) @ comps  # [M, 3]
        low, high = torch.quantile(proj.float(), 0.01, dim=0).double(), torch.quantile(proj.float(), 0.99, dim=0).double()
        return FeaturePCA(mean.float(), comps.float(), low.float(), high.float())

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., 3] colours in [0, 1]."""
        proj = (features.float() - self.mean.to(features.device)) @ self.components.to(features.device)
        low, high = self.low.to(features.device), self.high.to(features.device)
        return ((proj - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components, "low": self.low, "high": self.high}

    @staticmethod
    def from_state_dict(state: dict[str, torch.Tensor]) -> FeaturePCA:
        return FeaturePCA(**{k: state[k] for k in ("mean", "components", "low", "high")})
