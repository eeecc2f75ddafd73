"""CLIP (OpenAI layout): text tower used for LSeg decoding, plus the ViT-B/32 image tower so that the full
`clip_pretrained.*` block of an LSeg checkpoint loads strictly. Parameter names follow OpenAI's state dict.

    >>> clip = CLIP(CLIPConfig.tiny())
    >>> tokens = torch.randint(1, 40, (2, 8)); tokens[:, -1] = 63     # EOT = largest id
    >>> clip.encode_text(tokens).shape
    torch.Size([2, 16])

Weights: `load_clip_weights(clip, path)` accepts an OpenAI/open_clip state dict or an LSeg checkpoint
(`clip_pretrained.` keys, optional `net.` prefix, fp16 tensors are cast to the module dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OpenLSMError


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512  # joint text/image space
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    vision_width: int = 768
    vision_heads: int = 12
    vision_layers: int = 12
    vision_patch: int = 32
    image_size: int = 224

    @staticmethod
    def tiny() -> CLIPConfig:
        return CLIPConfig(embed_dim=16, context_length=8, vocab_size=64, text_width=32, text_heads=2, text_layers=2,
                          vision_width=32, vision_heads=2, vision_layers=2, vision_patch=8, image_size=32)


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in its weights' dtype (fp32 even in fp16 checkpoints), cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.to(self.weight.dtype), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.to(x.dtype)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)  # keys in_proj_weight/bias, out_proj.{weight,bias}
        self.ln_1 = LayerNorm32(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [L, B, C] (sequence-first, as nn.MultiheadAttention defaults)
        dtype = self.attn.in_proj_weight.dtype
        h = self.ln_1(x).to(dtype)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0].to(x.dtype)
        return x + self.mlp(self.ln_2(x).to(dtype)).to(x.dtype)


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    """CLIP image tower (ViT-B/32 by default): conv patchify, class token, pre/post LayerNorm, projection."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        w, grid = cfg.vision_width, cfg.image_size // cfg.vision_patch
        self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, w) * w**-0.5)
        self.proj = nn.Parameter(torch.randn(w, cfg.embed_dim) * w**-0.5)
        self.conv1 = nn.Conv2d(3, w, cfg.vision_patch, stride=cfg.vision_patch, bias=False)
        self.ln_pre = LayerNorm32(w)
        self.transformer = Transformer(w, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = LayerNorm32(w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: [B, 3, S, S] CLIP-normalised, S = image_size
        dt = self.ln_post.weight.dtype  # residual stream dtype (fp32 unless the model was cast)
        x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2).to(dt)  # [B, N, C]
        cls = self.class_embedding.to(dt).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding.to(dt)
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj.to(dt)  # [B, embed_dim]


class CLIP(nn.Module):
    """OpenAI CLIP with state-dict order: positional_embedding, text_projection, logit_scale, visual, transformer,
    token_embedding, ln_final."""

    def __init__(self, cfg: CLIPConfig = CLIPConfig(), with_visual: bool = True):
        super().__init__()
        self.cfg = cfg
        w = cfg.text_width
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, w) * 0.01)
        self.text_projection = nn.Parameter(torch.randn(w, cfg.embed_dim) * w**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        if with_visual:
            self.visual = VisionTransformer(cfg)
        self.transformer = Transformer(w, cfg.text_layers, cfg.text_heads)
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.ln_final = LayerNorm32(w)

    def causal_mask(self, n: int, device: torch.device) -> torch.Tensor:
        # additive mask: position i attends to j <= i only
        return torch.full((n, n), float("-inf"), device=device).triu(1)

    def text_hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] int64 -> final-LayerNorm hidden states [B, L, width]."""
        n = tokens.shape[1]
        if n > self.cfg.context_length:
            raise OpenLSMError(f"token sequence of length {n} exceeds CLIP context {self.cfg.context_length}")
        dt = self.ln_final.weight.dtype  # residual stream dtype (fp32 unless the model was cast)
        x = self.token_embedding(tokens).to(dt) + self.positional_embedding[:n].to(dt)  # [B, L, C]
        mask = self.causal_mask(n, tokens.device).to(self.transformer.resblocks[0].attn.in_proj_weight.dtype)
        x = self.transformer(x.transpose(0, 1), mask).transpose(0, 1)
        return self.ln_final(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, embed_dim] (not normalised): the hidden state at the EOT token (= argmax id)."""
        x = self.text_hidden_states(tokens)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(-1)]  # [B, C]
        return eot @ self.text_projection.to(eot.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def half_linear_weights(clip: nn.Module) -> nn.Module:
    """Cast Linear/Conv/attention weights and both projections to fp16, LayerNorms and embeddings kept fp32:
    the dtype mix of a CLIP saved after `clip.load(device='cuda')` (see lsm_state_dict.md)."""
    for name, p in clip.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = ".ln_" in f".{name}"
        if not is_norm and (leaf in ("in_proj_weight", "in_proj_bias", "text_projection", "proj")
                            or any(k in name for k in ("out_proj.", "c_fc.", "c_proj.", "conv1."))):
            p.data = p.data.half()
    return clip


def extract_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP keys from an OpenAI/open_clip state dict or an LSeg checkpoint (`[net.]clip_pretrained.` prefix)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        k = k.removeprefix("net.")
        if k.startswith("clip_pretrained."):
            out[k[len("clip_pretrained."):]] = v
    if not out:  # plain CLIP state dict (drop non-CLIP extras such as `input_resolution`)
        out = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if "token_embedding.weight" not in out:
        raise OpenLSMError("no CLIP text weights found (expected 'token_embedding.weight' or 'clip_pretrained.*')")
    return out


def load_clip_weights(clip: CLIP, path: str | Path, text_only: bool = False) -> CLIP:
    """Load weights from a user-named file into `clip` (strict on the parts that `clip` has)."""
    path = Path(path)
    if not path.is_file():
        raise OpenLSMError(f"CLIP weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        # LSeg .ckpt files carry pickled hyper-parameters, hence weights_only=False (user-named trusted file).
        state = torch.load(path, map_location="cpu", weights_only=False)
        if hasattr(state, "state_dict") and not isinstance(state, dict):  # a pickled TorchScript/nn.Module
            state = state.state_dict()
    sd = extract_clip_state_dict(state)
    if text_only or not hasattr(clip, "visual"):
        sd = {k: v for k, v in sd.items() if not k.startswith("visual.")}
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise OpenLSMError(f"CLIP weights in {path.name} do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return clip
