"""Language-aligned semantics: text encoders, 2D semantic feature extractors, open-vocabulary queries.

    >>> from openlsm.models.semantics import get_text_encoder, label_embeddings, segment, CLASSES
    >>> enc = get_text_encoder("minilm")                      # offline MiniLM (384-d)
    >>> texts = label_embeddings(enc, list(CLASSES))          # [17, 384]
    >>> seg = segment(features, texts, threshold=0.3)         # per-Gaussian or per-pixel labels

Extractors (`images [B,3,H,W] in [-1,1] -> [B, D, H/2, W/2]`): `LSegNet` (loads LSeg `demo_e200.ckpt`,
D = 512 CLIP space) and `SmallExtractor` (trained by `train_small_extractor`, D = text encoder dim).
"""

from .base import SemanticExtractor
from .bpe import ClipTokenizer
from .clip_text import CLIP, CLIPConfig, load_clip_weights
from .lseg import LSegConfig, LSegNet, load_lseg_checkpoint
from .query import OTHER, FeaturePCA, Segmentation, relevancy, segment
from .small_extractor import (
    SmallExtractor,
    SmallExtractorConfig,
    SmallTrainConfig,
    batches_from_dataset,
    drop_classes,
    load_small_extractor,
    pixel_accuracy,
    pixel_logits,
    remap_labels,
    save_small_extractor,
    train_small_extractor,
)
from .text import CLIPTextEncoder, MiniLMTextEncoder, TextEncoder, get_text_encoder, label_embeddings
from .vocab import CANONICAL_NEGATIVES, CLASSES, HELD_OUT, TEMPLATES, held_out_names, pluralize, prompts_for

__all__ = [
    "CANONICAL_NEGATIVES",
    "CLASSES",
    "CLIP",
    "HELD_OUT",
    "OTHER",
    "TEMPLATES",
    "CLIPConfig",
    "CLIPTextEncoder",
    "ClipTokenizer",
    "FeaturePCA",
    "LSegConfig",
    "LSegNet",
    "MiniLMTextEncoder",
    "Segmentation",
    "SemanticExtractor",
    "SmallExtractor",
    "SmallExtractorConfig",
    "SmallTrainConfig",
    "TextEncoder",
    "batches_from_dataset",
    "drop_classes",
    "get_text_encoder",
    "held_out_names",
    "label_embeddings",
    "load_clip_weights",
    "load_lseg_checkpoint",
    "load_small_extractor",
    "pixel_accuracy",
    "pixel_logits",
    "pluralize",
    "prompts_for",
    "relevancy",
    "remap_labels",
    "save_small_extractor",
    "segment",
    "train_small_extractor",
]
