"""Class-name queries for evaluation: text embeddings in the model's feature space and held-out synonyms.

    space = text_space(model, "auto")        # LSeg -> its CLIP tower (bare names); 384-d -> MiniLM (templates)
    texts = space.embed(["wall", "floor"])   # [K, D] unit vectors
    sets = synonym_sets(["wall", "tv"])      # [["partition", "screen"], ["room divider wall", "television set"]]

"table" reads embeddings precomputed by `openlsm train-semantics --write-text-table` (for machines without the
MiniLM wheel); it holds the MiniLM template prompts of the class names and their synonyms. "random" gives seeded unit vectors per name (stable across calls): only for smoke tests of models whose
feature space has no text encoder (e.g. the `tiny` preset); semantic scores are then meaningless.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from openlsm.errors import OpenLSMError
from openlsm.models.semantics.vocab import HELD_OUT, TEMPLATES


@dataclass
class TextSpace:
    name: str  # "clip (lseg)", "minilm", "random"
    dim: int
    encode: Callable[[list[str]], torch.Tensor]  # names -> [K, D]
    meaningful: bool = True  # False for random embeddings

    def embed(self, names: list[str]) -> torch.Tensor:
        if not names:
            raise OpenLSMError("no class names to query")
        emb = self.encode(list(names)).float()
        if emb.shape != (len(names), self.dim):
            raise OpenLSMError(f"text embeddings have shape {tuple(emb.shape)}, expected ({len(names)}, {self.dim})")
        return F.normalize(emb, dim=-1)


def random_embeddings(names: list[str], dim: int) -> torch.Tensor:
    """[K, D] unit vectors seeded by each name's CRC32 (same name, same vector)."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(n.encode()))) for n in names]
    return F.normalize(torch.stack(rows), dim=-1)


def text_space(model, choice: str = "auto", table: Path | None = None) -> TextSpace:
    """The text space that the model's semantic features decode against.

    auto: an LSeg model uses its own CLIP text tower with bare names (as LSeg does); otherwise a given `table`;
    a 384-d feature space uses MiniLM with the training templates; any other dimension falls back to "random"."""
    cfg = model.config
    dim = cfg.semantic_dim
    if choice == "auto":
        choice = "clip" if cfg.semantic == "lseg" else (
            "table" if table is not None else ("minilm" if dim == 384 else "random"))
    if choice == "random":
        return TextSpace("random", dim, lambda names: random_embeddings(names, dim), meaningful=False)
    if choice in ("minilm", "table"):
        from openlsm.models.semantics.text import get_text_encoder, label_embeddings

        if choice == "table" and table is None:
            raise OpenLSMError("--text-encoder table needs --text-table PATH")
        if choice == "minilm" and dim != 384:  # checked before loading the encoder
            raise OpenLSMError(f"minilm text embeddings are 384-d but the model's semantic space is {dim}-d")
        enc = get_text_encoder("minilm") if choice == "minilm" else get_text_encoder("table", path=table)
        if enc.dim and enc.dim != dim:
            raise OpenLSMError(f"{choice} text embeddings are {enc.dim}-d but the model's semantic space is {dim}-d")
        return TextSpace(choice if choice == "minilm" else f"table ({enc.name})", dim,
                         lambda names: label_embeddings(enc, names, TEMPLATES))
    if choice == "clip":
        if cfg.semantic != "lseg":
            raise OpenLSMError("--text-encoder clip needs a model with the LSeg extractor (its CLIP text tower)")
        from openlsm.models.semantics.text import label_embeddings

        enc = model.lseg_feature_extractor.text_encoder()
        return TextSpace("clip (lseg)", dim, lambda names: label_embeddings(enc, names, ("{}",)))
    raise OpenLSMError(f"unknown text encoder {choice!r} (choose auto, minilm, clip, table or random)")


def synonym_sets(names: list[str]) -> list[list[str]]:
    """Query lists where every class is replaced by its j-th held-out synonym (j = 0, 1, ...); classes without
    synonyms keep their name. Empty when no class has synonyms."""
    syn = [HELD_OUT.get(n, ()) for n in names]
    depth = max((len(s) for s in syn), default=0)
    return [[s[j] if j < len(s) else n for n, s in zip(names, syn)] for j in range(depth)]
