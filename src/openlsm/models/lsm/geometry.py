"""Two-view geometry network (DUSt3R / CroCo layout): a shared ViT encoder with 2D RoPE, two cross-attending
decoders and two DPT point heads. The `paper` preset has exactly the parameter names, shapes and order of the
official `AsymmetricCroCo3DStereo` ViT-L/DPT checkpoint, so naver DUSt3R weights load into it directly.

    net = GeometryNet(GeometryConfig.tiny())
    out = net(img1, img2)            # images [B, 3, H, W] in [-1, 1], H and W multiples of 16
    out.pts3d_1, out.pts3d_2         # [B, H, W, 3] both in view 1's camera frame
    out.conf_1, out.conf_2           # [B, H, W], >= 1
    out.enc_tokens                   # [B, 2*h*w, enc_dim] (after enc_norm; view 1 then view 2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.models.layers import Mlp
from openlsm.models.lsm.dpt import PointHead
from openlsm.models.lsm.rope import RopePositions, apply_rope_2d, patch_positions


@dataclass
class GeometryConfig:
    """Sizes of the geometry network. `dpt_hooks` None = [0, depth/2, 3*depth/4, depth] of the decoder."""

    patch_size: int = 16
    enc_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    dec_dim: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    dpt_layer_dims: list[int] = field(default_factory=lambda: [96, 192, 384, 768])
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    dpt_hooks: list[int] | None = None

    @classmethod
    def paper(cls) -> GeometryConfig:
        """The official DUSt3R ViT-Large encoder / Base decoder / DPT (571,171,208 parameters)."""
        return cls()

    @classmethod
    def small(cls) -> GeometryConfig:
        """About 9.2 M parameters: a 5-block 256-wide encoder, two 3-block decoders of width 160, slim DPTs
        (sized so the whole small LSM ships as <= 40 MB of 16-bit weights)."""
        return cls(enc_dim=256, enc_depth=5, enc_heads=4, dec_dim=160, dec_depth=3, dec_heads=4,
                   dpt_layer_dims=[24, 48, 96, 192], dpt_feature_dim=64, dpt_last_dim=32)

    @classmethod
    def tiny(cls) -> GeometryConfig:
        """For CPU tests (~0.85 M parameters)."""
        return cls(enc_dim=64, enc_depth=2, enc_heads=2, dec_dim=48, dec_depth=4, dec_heads=2,
                   dpt_layer_dims=[8, 16, 24, 32], dpt_feature_dim=32, dpt_last_dim=16)

    @classmethod
    def preset(cls, name: str) -> GeometryConfig:
        presets = {"tiny": cls.tiny, "small": cls.small, "paper": cls.paper}
        if name not in presets:
            raise OpenLSMError(f"unknown geometry preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    @property
    def hooks(self) -> list[int]:
        if self.dpt_hooks is not None:
            return list(self.dpt_hooks)
        d = self.dec_depth
        return [0, d // 2, d * 3 // 4, d]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeometryConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise OpenLSMError(f"unknown geometry config fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class GeometryOutput:
    pts3d_1: Tensor  # [B, H, W, 3] view 1's points, view 1 frame
    pts3d_2: Tensor  # [B, H, W, 3] view 2's points, view 1 frame ("pts3d_in_other_view")
    conf_1: Tensor  # [B, H, W]
    conf_2: Tensor  # [B, H, W]
    enc_tokens: Tensor  # [B, 2*h*w, enc_dim]

    def to_official(self) -> tuple[dict, dict]:
        """DUSt3R's (res1, res2) dicts: {pts3d, conf} and {pts3d_in_other_view, conf}."""
        return {"pts3d": self.pts3d_1, "conf": self.conf_1}, {"pts3d_in_other_view": self.pts3d_2, "conf": self.conf_2}


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    B, N, C = x.shape
    return x.view(B, N, heads, C // heads).transpose(1, 2)  # [B, heads, N, D]


def _merge_heads(x: Tensor) -> Tensor:
    B, H, N, D = x.shape
    return x.transpose(1, 2).reshape(B, N, H * D)


class SelfAttention(nn.Module):
    """Fused qkv (rows: q | k | v, each heads x head_dim), RoPE on q and k."""

    def __init__(self, dim: int, heads: int, rope_base: float):
        super().__init__()
        self.heads, self.rope_base = heads, rope_base
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pos: Tensor | RopePositions) -> Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = apply_rope_2d(q, pos, self.rope_base), apply_rope_2d(k, pos, self.rope_base)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope_base: float):
        super().__init__()
        self.heads, self.rope_base = heads, rope_base
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mem: Tensor, xpos: Tensor | RopePositions, mpos: Tensor | RopePositions) -> Tensor:
        q = apply_rope_2d(_split_heads(self.projq(x), self.heads), xpos, self.rope_base)
        k = apply_rope_2d(_split_heads(self.projk(mem), self.heads), mpos, self.rope_base)
        v = _split_heads(self.projv(mem), self.heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope_base: float):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = SelfAttention(dim, heads, rope_base)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, pos: Tensor | RopePositions) -> Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view's tokens (normalised by norm_y), MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope_base: float):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = SelfAttention(dim, heads, rope_base)
        self.cross_attn = CrossAttention(dim, heads, rope_base)
        self.norm2 = _layer_norm(dim)
        self.norm3 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = _layer_norm(dim)

    def forward(self, x: Tensor, other: Tensor, xpos: Tensor | RopePositions, opos: Tensor | RopePositions) -> Tensor:
        x = x + self.attn(self.norm1(x), xpos)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(other), xpos, opos)
        return x + self.mlp(self.norm3(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, imgs: Tensor) -> Tensor:
        return self.proj(imgs).flatten(2).transpose(1, 2)  # [B, h*w, C], row-major


class GeometryNet(nn.Module):
    """Attribute names and registration order follow the official model; state_dict() matches it key for key."""

    def __init__(self, config: GeometryConfig | None = None):
        super().__init__()
        c = self.config = config or GeometryConfig.paper()
        for name, dim, heads in (("enc", c.enc_dim, c.enc_heads), ("dec", c.dec_dim, c.dec_heads)):
            if dim % heads or (dim // heads) % 4:
                raise OpenLSMError(f"{name} dim {dim} / {heads} heads must give a head dim divisible by 4")
        hooks = c.hooks
        if len(hooks) != 4 or hooks[0] != 0 or not all(1 <= h <= c.dec_depth for h in hooks[1:]):
            raise OpenLSMError(f"dpt_hooks must be [0, a, b, c] with 1 <= a, b, c <= dec_depth, got {hooks}")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_dim))  # unused; kept for the official key set
        self.patch_embed = PatchEmbed(c.patch_size, c.enc_dim)
        self.enc_blocks = nn.ModuleList(
            [EncoderBlock(c.enc_dim, c.enc_heads, c.mlp_ratio, c.rope_base) for _ in range(c.enc_depth)])
        self.enc_norm = _layer_norm(c.enc_dim)
        self.decoder_embed = nn.Linear(c.enc_dim, c.dec_dim)
        self.dec_blocks = nn.ModuleList(
            [DecoderBlock(c.dec_dim, c.dec_heads, c.mlp_ratio, c.rope_base) for _ in range(c.dec_depth)])
        self.dec_norm = _layer_norm(c.dec_dim)
        self.dec_blocks2 = nn.ModuleList(
            [DecoderBlock(c.dec_dim, c.dec_heads, c.mlp_ratio, c.rope_base) for _ in range(c.dec_depth)])
        dims = [c.enc_dim, c.dec_dim, c.dec_dim, c.dec_dim]
        self.downstream_head1 = PointHead(dims, hooks, c.dpt_layer_dims, c.dpt_feature_dim, c.dpt_last_dim)
        self.downstream_head2 = PointHead(dims, hooks, c.dpt_layer_dims, c.dpt_feature_dim, c.dpt_last_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)

    def encode(self, imgs: Tensor) -> tuple[Tensor, RopePositions]:
        """Images [B, 3, H, W] -> tokens [B, h*w, enc_dim] (after enc_norm) and positions [h*w, 2] (with their
        RoPE tables, shared by the encoder and decoder blocks)."""
        p = self.config.patch_size
        H, W = imgs.shape[-2:]
        pos = RopePositions(patch_positions(H // p, W // p, imgs.device))
        x = self.patch_embed(imgs)
        for blk in self.enc_blocks:
            x = blk(x, pos)
        return self.enc_norm(x), pos

    def decode(self, f1: Tensor, f2: Tensor, pos1: RopePositions, pos2: RopePositions) -> tuple[list[Tensor], list[Tensor]]:
        """Per-view lists [enc tokens, dec_1, ..., dec_L] (dec_norm on the last), as the DPT hooks index them."""
        outs1, outs2 = [f1], [f2]
        x1, x2 = self.decoder_embed(f1), self.decoder_embed(f2)
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            # Both views step from the previous layer's outputs (no in-place update between them).
            x1, x2 = blk1(x1, x2, pos1, pos2), blk2(x2, x1, pos2, pos1)
            outs1.append(x1)
            outs2.append(x2)
        outs1[-1], outs2[-1] = self.dec_norm(outs1[-1]), self.dec_norm(outs2[-1])
        return outs1, outs2

    def forward(self, img1: Tensor, img2: Tensor) -> GeometryOutput:
        check_images(img1, img2, self.config.patch_size)
        p = self.config.patch_size
        H, W = img1.shape[-2:]
        h, w = H // p, W // p
        if img1.shape == img2.shape:  # one encoder pass for both views
            f, pos1 = self.encode(torch.cat([img1, img2], 0))
            f1, f2 = f.chunk(2, 0)
            pos2 = pos1
        else:
            (f1, pos1), (f2, pos2) = self.encode(img1), self.encode(img2)
        outs1, outs2 = self.decode(f1, f2, pos1, pos2)
        pts1, conf1 = self.downstream_head1(outs1, h, w)
        pts2, conf2 = self.downstream_head2(outs2, img2.shape[-2] // p, img2.shape[-1] // p)
        return GeometryOutput(pts1, pts2, conf1, conf2, torch.cat([f1, f2], 1))


def check_images(img1: Tensor, img2: Tensor, patch_size: int = 16) -> None:
    for name, img in (("image 1", img1), ("image 2", img2)):
        if img.dim() != 4 or img.shape[1] != 3:
            raise OpenLSMError(f"{name} must be [B, 3, H, W], got {tuple(img.shape)}")
        if img.shape[-2] % patch_size or img.shape[-1] % patch_size:
            raise OpenLSMError(f"{name} size {tuple(img.shape[-2:])} must be a multiple of {patch_size}")
    if img1.shape[0] != img2.shape[0]:
        raise OpenLSMError(f"batch sizes differ: {img1.shape[0]} vs {img2.shape[0]}")


def count_parameters(module: nn.Module) -> int:
    """Unique parameter elements (aliased tensors counted once)."""
    return sum(p.numel() for p in module.parameters())
