"""Common interface of the 2D semantic feature extractors (LSeg-compatible and small).

An extractor maps images `[B, 3, H, W]` in [-1, 1] to per-pixel features `[B, D, H/2, W/2]` that live in a
text-embedding space (D = the text encoder's dim), plus pooled tokens for the LSM cross-attention blocks.

    >>> feats = extractor(images)                          # [B, D, H/2, W/2]
    >>> tokens = extractor.pool_tokens(feats)              # [B, (H/16)*(W/16), D] (8x8 average pooling)
    >>> logits = extractor.decode(feats, text_features)    # [B, K, H, W] cosine * logit_scale
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OpenLSMError


class SemanticExtractor(nn.Module):
    feature_dim: int = 0
    size_multiple: int = 32  # H and W must be multiples of this
    logit_scale: float = 1 / 0.07

    def check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise OpenLSMError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise OpenLSMError(f"image size {h}x{w} must be a multiple of {m} for this extractor")

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract_features(images)

    @staticmethod
    def pool_tokens(features: torch.Tensor, kernel: int = 8) -> torch.Tensor:
        """[B, D, h, w] -> [B, (h/k)*(w/k), D], like LSM's `tokenizer = AvgPool2d(8, 8)`."""
        pooled = F.avg_pool2d(features, kernel, kernel)  # [B, D, h/k, w/k]
        return pooled.flatten(2).transpose(1, 2)

    def decode(self, features: torch.Tensor, text_features: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        """Per-pixel class logits: logit_scale * cos(feature, text). [B, D, h, w], [K, D] -> [B, K, h(*2), w(*2)]."""
        if text_features.shape[-1] != features.shape[1]:
            raise OpenLSMError(f"text dim {text_features.shape[-1]} != feature dim {features.shape[1]}")
        feats = F.normalize(features.float(), dim=1)
        texts = F.normalize(text_features.float().to(feats.device), dim=-1)
        logits = self.logit_scale * torch.einsum("bdhw,kd->bkhw", feats, texts)
        if upsample:  # LSeg's output_conv: bilinear x2 (align_corners=True)
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)
        return logits
