"""LSeg-compatible feature extractor (the frozen 2D semantic model of LSM), loading `demo_e200.ckpt`.

Architecture (key names = lang-seg / timm / OpenAI CLIP, see tests/semantics/data/lseg_state_dict.tsv):
  clip_pretrained  CLIP ViT-B/32 (text tower decodes labels; image tower only present for strict loading)
  pretrained.model ViT-L/16 @384 (timm names), hooks after blocks [5, 11, 17, 23]
  pretrained.act_postprocess{1..4}  project readout (Linear 2C->C + GELU), 1x1 conv, resample x4/x2/x1/x0.5
  scratch          layer{1..4}_rn 3x3 convs -> 256, BatchNorm refinenets (fusion, bilinear x2), head1 1x1 -> 512
Input images are in [-1, 1]; features come out at H/2 x W/2.

    >>> net = LSegNet(LSegConfig()).eval()
    >>> load_lseg_checkpoint(net, "checkpoints/pretrained_models/demo_e200.ckpt")
    >>> feats = net(images)                              # [B, 512, H/2, W/2]
    >>> texts = net.text_encoder().encode(["wall", "chair"])  # LSeg uses bare names, no template
    >>> labels = net.decode(feats, texts).argmax(1)      # [B, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OpenLSMError
from ..layers import FusionBlock
from .base import SemanticExtractor
from .clip_text import CLIP, CLIPConfig, half_linear_weights


@dataclass(frozen=True)
class LSegConfig:
    width: int = 1024  # ViT-L/16
    depth: int = 24
    heads: int = 16
    patch: int = 16
    pretrain_size: int = 384  # pos_embed grid = 24x24 (+ cls)
    num_classes: int = 1000  # unused ImageNet head, present in the state dict
    hooks: tuple[int, ...] = (5, 11, 17, 23)
    post_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    features: int = 256
    out_dim: int = 512
    clip: CLIPConfig = field(default_factory=CLIPConfig)

    @staticmethod
    def tiny() -> LSegConfig:
        """Same code and key names, tiny dims (tests)."""
        return LSegConfig(width=32, depth=4, heads=2, patch=16, pretrain_size=64, num_classes=10, hooks=(0, 1, 2, 3),
                          post_dims=(8, 16, 32, 32), features=8, out_dim=16, clip=CLIPConfig.tiny())


# ---------------------------------------------------------------- ViT-L/16 with timm names
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # [B, h, N, d] each
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)


class ViT(nn.Module):
    """timm VisionTransformer parameter layout; forward returns the token maps after the hooked blocks."""

    def __init__(self, cfg: LSegConfig):
        super().__init__()
        grid = cfg.pretrain_size // cfg.patch
        self.patch = cfg.patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, cfg.width) * 0.02)
        self.patch_embed = PatchEmbed(cfg.patch, cfg.width)
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.heads) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, cfg.num_classes)

    def resized_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        """Bilinear resize of the square pretraining grid to gh x gw (cls position kept). -> [1, 1+gh*gw, C]"""
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        g = round(grid.shape[0] ** 0.5)
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # [1, C, g, g]
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], 1)

    def forward(self, images: torch.Tensor, hooks: tuple[int, ...]) -> list[torch.Tensor]:
        gh, gw = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)  # [B, N, C]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.resized_pos_embed(gh, gw)
        outs = []
        for i, block in enumerate(self.blocks[: max(hooks) + 1]):  # later blocks, norm and head are unused
            x = block(x)
            if i in hooks:
                outs.append(x)
        return outs


# ---------------------------------------------------------------- DPT neck ("pretrained.act_postprocess*")
class ProjectReadout(nn.Module):
    """Concatenate the cls token to every patch token, project 2C -> C."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x[:, 1:]  # [B, N, C]
        return self.project(torch.cat([patches, x[:, :1].expand_as(patches)], -1))


def make_postprocess(width: int, out: int, resample: str) -> nn.Sequential:
    # indices 1, 2 (transpose / unflatten) have no parameters; the reshape is done in `Backbone.forward`
    layers = [ProjectReadout(width), nn.Identity(), nn.Identity(), nn.Conv2d(width, out, 1)]
    if resample == "up4":
        layers.append(nn.ConvTranspose2d(out, out, 4, stride=4))
    elif resample == "up2":
        layers.append(nn.ConvTranspose2d(out, out, 2, stride=2))
    elif resample == "down2":
        layers.append(nn.Conv2d(out, out, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    def __init__(self, cfg: LSegConfig):
        super().__init__()
        self.hooks = cfg.hooks
        self.model = ViT(cfg)
        for i, (dim, resample) in enumerate(zip(cfg.post_dims, ("up4", "up2", "none", "down2")), start=1):
            self.add_module(f"act_postprocess{i}", make_postprocess(cfg.width, dim, resample))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        gh, gw = images.shape[-2] // self.model.patch, images.shape[-1] // self.model.patch
        layers = []
        for i, tokens in enumerate(self.model(images, self.hooks), start=1):
            post = getattr(self, f"act_postprocess{i}")
            x = post[0](tokens).transpose(1, 2)  # [B, C, N]
            x = x.reshape(x.shape[0], x.shape[1], gh, gw)
            layers.append(post[3:](x))
        return layers  # strides 4, 8, 16, 32


# ---------------------------------------------------------------- DPT decoder ("scratch")
class Scratch(nn.Module):
    def __init__(self, cfg: LSegConfig):
        super().__init__()
        for i, dim in enumerate(cfg.post_dims, start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(dim, cfg.features, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FusionBlock(cfg.features, batch_norm=True))
        self.head1 = nn.Conv2d(cfg.features, cfg.out_dim, 1)

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(layers, start=1))
        path = self.refinenet4(l4)
        path = self.refinenet3(path, l3)
        path = self.refinenet2(path, l2)
        path = self.refinenet1(path, l1)  # [B, features, H/2, W/2]
        return self.head1(path)


class LSegNet(SemanticExtractor):
    """LSeg as LSM builds it (`half_res=True`): `extract_features` = head1 output at H/2."""

    size_multiple = 32

    def __init__(self, cfg: LSegConfig = LSegConfig(), official_dtypes: bool = False):
        super().__init__()
        self.cfg = cfg
        self.feature_dim = cfg.out_dim
        self.logit_scale = 1 / 0.07  # plain attribute, not in the state dict (as in lang-seg)
        self.clip_pretrained = CLIP(cfg.clip)
        self.pretrained = Backbone(cfg)
        self.scratch = Scratch(cfg)
        if official_dtypes:  # fp16 CLIP linear weights, as in checkpoints saved from a CUDA run
            half_linear_weights(self.clip_pretrained)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self.scratch(self.pretrained(images))  # [B, out_dim, H/2, W/2]

    def text_encoder(self):
        """A cached `TextEncoder` over this model's CLIP text tower."""
        from .text import CLIPTextEncoder

        if getattr(self, "_text_encoder", None) is None:
            device = self.clip_pretrained.token_embedding.weight.device
            object.__setattr__(self, "_text_encoder", CLIPTextEncoder(clip=self.clip_pretrained, device=device))
        return self._text_encoder


def lseg_state_dict(obj) -> dict[str, torch.Tensor]:
    """LSeg weights from a Lightning checkpoint dict (`{'state_dict': {'net.…': …}}`) or a bare state dict."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise OpenLSMError("not an LSeg checkpoint: expected a dict with a 'state_dict' entry")
    return {(k.removeprefix("net.")): v for k, v in state.items()}


def load_lseg_checkpoint(net: LSegNet, source: str | Path | dict) -> LSegNet:
    """Strict load (as LSM does), `net.` prefix stripped, tensors cast to the module's dtypes."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise OpenLSMError(f"LSeg checkpoint not found: {path}")
        # Lightning checkpoints pickle their hyper-parameters; the user names this file, so full unpickling is allowed.
        source = torch.load(path, map_location="cpu", weights_only=False)
    state = lseg_state_dict(source)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise OpenLSMError(f"LSeg checkpoint does not match the model: {len(missing)} missing (e.g. {missing[:2]}), "
                           f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise OpenLSMError(f"LSeg checkpoint shape mismatch at {bad[0]}: {tuple(state[bad[0]].shape)} "
                           f"vs {tuple(own[bad[0]].shape)}")
    net.load_state_dict(state, strict=True)
    return net
