"""LSM's point aggregation network: a Point Transformer V3 U-Net with cross-modal fusion, in pure PyTorch.

Input is a merged point cloud of B samples (rows grouped by sample, `offsets` = cumulative ends as in PTv3):
normalised coordinates [N, 3] in [-1, 1] and features [N, 6] (xyz + rgb in [-1, 1]). Output is a 64-d feature
per input point, in input order. The `paper` preset has exactly the official `point_transformer.*` state dict.

    cfg = PTv3Config.tiny()
    net = PointTransformer(cfg).eval()
    coords, center, scale = normalize_points(pts)            # pts [B, M, 3]
    feats = torch.cat([coords, rgb], -1).reshape(-1, 6)      # rgb [B, M, 3] in [-1, 1]
    offsets = torch.arange(1, B + 1) * M
    out = net(coords.reshape(-1, 3), feats, offsets, geo_tokens, sem_tokens)   # [B*M, 64]

Pipeline: voxel grid (0.01, per-sample min) -> serialise (z, z-trans, hilbert, hilbert-trans codes, batch in
the high bits) -> stem SubMConv3d(k=5) -> 5 encoder stages (serialized max-pooling, stride 2) -> geometry and
semantic fusion at the bottleneck -> 4 decoder stages (unpooling + skip), semantic fusion after the first.

Differences from the official code (all documented choices):
- attention runs in the input dtype through SDPA (official: flash-attn in fp16);
- orders are fixed unless `shuffle_orders` (official shuffles on every forward, also at eval);
- a patch holds `patch_size` points; a sample with more points is padded to a multiple of the patch size by
  repeating the points one patch earlier (as PTv3 does); a sample with fewer points forms one shorter patch
  (masked). Official flash mode instead shrinks the patch size of the whole batch to the smallest sample, and
  takes the grid minimum and serialisation depth over the whole batch; `official_batching=True` reproduces
  that (then samples influence each other). By default everything is per sample, so batching does not
  change any sample's result.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.models.layers import Mlp
from openlsm.models.lsm.fusion import CrossModalBlock
from openlsm.models.lsm.serialization import MAX_DEPTH, ORDERS, bit_length, encode_orders, sort_codes
from openlsm.models.lsm.sparse_conv import SubMConv3d, VoxelIndex


@dataclass(frozen=True)
class PTv3Config:
    in_channels: int = 6
    enc_depths: tuple[int, ...] = (1, 1, 1, 3, 1)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    enc_num_heads: tuple[int, ...] = (2, 4, 8, 16, 32)
    enc_patch_sizes: tuple[int, ...] = (1024,) * 5
    dec_depths: tuple[int, ...] = (1, 1, 1, 1)
    dec_channels: tuple[int, ...] = (64, 64, 128, 256)
    dec_num_heads: tuple[int, ...] = (4, 4, 8, 16)
    dec_patch_sizes: tuple[int, ...] = (1024,) * 4
    orders: tuple[str, ...] = ORDERS
    stem_kernel: int = 5
    mlp_ratio: float = 4.0
    drop_path: float = 0.3  # linspace over blocks, training only
    grid_size: float = 0.01
    shuffle_orders: bool = False  # official: True (random order permutation on every forward)
    official_batching: bool = False  # batch-wide grid min, depth and patch size, as the official code
    conv_method: str = "auto"  # sparse conv: "pairs" (CPU), "im2col" (GPU), "auto" = by device
    # cross-modal fusion (LSM)
    cross_geometry: bool = True  # official `cross_dust`
    cross_semantic: bool = True  # official `cross_lseg`
    cross_multi_scale: bool = True
    geometry_dim: int = 1024  # geometry-encoder token width (DUSt3R ViT-L 1024; GeometryConfig small 384, tiny 64)
    semantic_dim: int = 512  # semantic token width (LSeg 512; small extractor 384; LSeg tiny 16)
    cross_num_heads: int = 8  # bottleneck fusion blocks
    multi_scale_num_heads: int = 4  # fusion after the first decoder stage

    @property
    def out_channels(self) -> int:
        return self.dec_channels[0]

    @staticmethod
    def paper() -> PTv3Config:
        return PTv3Config()

    @staticmethod
    def small() -> PTv3Config:
        return PTv3Config(
            enc_depths=(1, 1, 1, 2, 1), enc_channels=(16, 32, 64, 128, 256), enc_num_heads=(1, 2, 4, 8, 16),
            enc_patch_sizes=(512,) * 5, dec_channels=(64, 32, 64, 128), dec_num_heads=(4, 2, 4, 8),
            dec_patch_sizes=(512,) * 4, geometry_dim=256, semantic_dim=384, cross_num_heads=8,
            multi_scale_num_heads=4,
        )

    @staticmethod
    def tiny() -> PTv3Config:
        return PTv3Config(
            enc_depths=(1, 1, 1, 4, 1), enc_channels=(8, 16, 16, 32, 32), enc_num_heads=(1, 2, 2, 4, 4),
            enc_patch_sizes=(16,) * 5, dec_channels=(16, 16, 16, 32), dec_num_heads=(2, 2, 2, 4),
            dec_patch_sizes=(16,) * 4, geometry_dim=64, semantic_dim=16, cross_num_heads=4,
            multi_scale_num_heads=2,
        )

    def __post_init__(self) -> None:
        n = len(self.enc_channels)
        if not (len(self.enc_depths) == len(self.enc_num_heads) == len(self.enc_patch_sizes) == n):
            raise OpenLSMError("enc_depths/enc_channels/enc_num_heads/enc_patch_sizes must have equal lengths")
        if not (len(self.dec_depths) == len(self.dec_channels) == len(self.dec_num_heads)
                == len(self.dec_patch_sizes) == n - 1):
            raise OpenLSMError("decoder lists must have one entry fewer than the encoder lists")
        if self.conv_method not in ("auto", "pairs", "im2col"):
            raise OpenLSMError(f"conv_method must be auto, pairs or im2col, got {self.conv_method!r}")
        for order in self.orders:
            if order not in ORDERS:
                raise OpenLSMError(f"unknown order {order!r}; expected one of {ORDERS}")


# ----------------------------------------------------------------------------------------------------------
# Point levels: geometry and serialisation of one resolution, shared by encoder and decoder stages


@dataclass
class PointLevel:
    coords: Tensor  # [N, 3] float (mean of the children's coords after pooling)
    grid: Tensor  # [N, 3] int64 voxel coordinates
    batch: Tensor  # [N] sample index, rows grouped by sample
    counts: list[int]  # points per sample (host)
    depths: Tensor  # [N] serialisation depth of each point's sample
    codes: Tensor  # [O, N] local curve codes (without batch bits)
    orders: Tensor  # [O, N] sorted position -> point
    inverses: Tensor  # [O, N] point -> sorted position
    shift: int  # bit position of the batch index in the sort key
    voxels: VoxelIndex
    cluster: Tensor | None = None  # [N_parent] parent point -> this level's point (set on pooled levels)
    _patches: dict = field(default_factory=dict)

    @property
    def counts_tensor(self) -> Tensor:
        return torch.tensor(self.counts, device=self.batch.device)

    def patches(self, order_index: int, patch_size: int, batch_min: bool) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """Patch layout for one order: slots [P*K] point index per slot, back [N] slot of each point,
        key mask [P, 1, 1, K] (True = attend) or None when every patch is full, and K."""
        key = (order_index, patch_size, batch_min)
        if key not in self._patches:
            k = min(min(self.counts), patch_size) if batch_min else patch_size
            positions, unpad, mask = patch_layout(self.counts, k, self.batch.device)
            slots = self.orders[order_index][positions]
            back = unpad[self.inverses[order_index]]
            self._patches[key] = (slots, back, None if mask is None else mask.view(-1, 1, 1, k), k)
        return self._patches[key]


def patch_layout(counts: list[int], k: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Padded patch layout of samples with `counts` points each (positions in the batch-sorted sequence).

    A sample with n >= k points takes ceil(n/k) patches; the missing n_pad - n slots of its last patch repeat
    the points one patch earlier (PTv3's padding). A sample with n < k points takes one patch whose last
    k - n slots are masked. Returns positions [S] (sequence position per slot), unpad [N] (slot of each
    sequence position) and the valid-key mask [S // k, k] or None.
    """
    # Per-sample numbers on the host (counts are host ints), sent in one copy: no device round trip for sizes.
    padded = [k if n < k else (n + k - 1) // k * k for n in counts]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    pad_starts = [sum(padded[:i]) for i in range(len(counts))]
    total, short_any = sum(padded), any(n < k for n in counts)
    n, padded_t, starts_t, pad_starts_t = torch.tensor([counts, padded, starts, pad_starts], device=device)  # [B]
    short = n < k
    ids = torch.arange(len(counts), device=device)
    sample = torch.repeat_interleave(ids, padded_t, output_size=total)  # [S] slot -> sample
    t = torch.arange(total, device=device) - pad_starts_t[sample]  # slot within the sample
    n_slot = n[sample]
    real = t < n_slot
    src = torch.where(real, t, torch.where(short[sample], n_slot - 1, t - k))
    positions = starts_t[sample] + src
    seq_sample = torch.repeat_interleave(ids, n, output_size=sum(counts))
    unpad = torch.arange(sum(counts), device=device) - starts_t[seq_sample] + pad_starts_t[seq_sample]
    mask = (real | ~short[sample]).view(-1, k) if short_any else None  # repeats are valid keys
    return positions, unpad, mask


def serialize(coords: Tensor, grid: Tensor, batch: Tensor, counts: list[int], depths: Tensor, shift: int,
              orders: tuple[str, ...], generator: torch.Generator | None, shuffle: bool) -> PointLevel:
    voxels = VoxelIndex.build(grid, batch)
    if voxels.first is not None:  # one point per voxel
        codes = encode_orders(grid, depths, orders)  # [O, N]
    else:  # points of one voxel share its codes: encode each voxel once (point maps: ~2 points per voxel)
        first = torch.empty_like(voxels.keys).scatter_(0, voxels.inverse, torch.arange(len(grid), device=grid.device))
        codes = encode_orders(grid[first], depths[first], orders)[:, voxels.inverse]
    if shuffle:
        codes = codes[torch.randperm(len(orders), generator=generator).to(codes.device)]
    sorted_points, inverses = sort_codes(codes, batch, shift)
    return PointLevel(coords, grid, batch, counts, depths, codes, sorted_points, inverses, shift, voxels)


def build_root_level(coords: Tensor, offsets: Tensor, cfg: PTv3Config,
                     generator: torch.Generator | None = None) -> PointLevel:
    """Voxelise and serialise the merged input cloud."""
    counts_t = torch.diff(offsets.long(), prepend=offsets.new_zeros(1).long())
    counts = counts_t.tolist()
    b = len(counts)
    batch = torch.repeat_interleave(torch.arange(b, device=coords.device), counts_t.to(coords.device),
                                    output_size=coords.shape[0])
    if cfg.official_batching:
        mins = coords.min(0).values.expand(b, 3)
    else:
        mins = torch.full((b, 3), float("inf"), dtype=coords.dtype, device=coords.device)
        mins = mins.scatter_reduce(0, batch[:, None].expand(-1, 3), coords, "amin")
    grid = torch.floor((coords - mins[batch]) / cfg.grid_size).long()  # [N, 3]
    sample_max = torch.zeros(b, dtype=torch.long, device=coords.device).scatter_reduce(
        0, batch, grid.max(1).values, "amax")
    sample_depths = bit_length(sample_max.max().expand(b) if cfg.official_batching else sample_max)  # [B]
    max_depth = int(sample_depths.max())
    if max_depth > MAX_DEPTH:
        raise OpenLSMError(f"voxel grid too deep ({max_depth} bits > {MAX_DEPTH}); are the coordinates "
                           f"normalised to [-1, 1]? (grid_size={cfg.grid_size})")
    return serialize(coords, grid, batch, counts, sample_depths[batch], 3 * max_depth, cfg.orders,
                     generator, cfg.shuffle_orders)


def pool_level(level: PointLevel, cfg: PTv3Config, generator: torch.Generator | None) -> PointLevel:
    """Parent cells of stride 2: children share `code >> 3` (the same for every order)."""
    keys = (level.batch << level.shift) | (level.codes[0] >> 3)
    _, cluster, group_counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    u = group_counts.shape[0]
    head = torch.empty(u, dtype=torch.long, device=keys.device).scatter_(
        0, cluster, torch.arange(len(cluster), device=keys.device))  # any child; all agree on what we read
    coords = level.coords.new_zeros(u, 3).index_add(0, cluster, level.coords) / group_counts[:, None]
    batch = level.batch[head]
    counts = torch.bincount(batch, minlength=len(level.counts)).tolist()
    codes = level.codes[:, head] >> 3
    if cfg.shuffle_orders:
        codes = codes[torch.randperm(codes.shape[0], generator=generator).to(codes.device)]
    grid = level.grid[head] >> 1
    orders, inverses = sort_codes(codes, batch, level.shift)
    parent = PointLevel(coords, grid, batch, counts, (level.depths[head] - 1).clamp(min=0), codes, orders,
                        inverses, level.shift, VoxelIndex.build(grid, batch))
    parent.cluster = cluster
    return parent


# ----------------------------------------------------------------------------------------------------------
# Modules (attribute names = official state-dict names)

ROW_CHUNK = 8192  # rows per chunk on the CPU inference path


def chunked(feats: Tensor) -> bool:
    """CPU inference: row-wise work goes in row chunks. Same math; whole-cloud temporaries (30+ MB at 64
    channels) are fresh mmaps that page-fault on every allocation, which cost more than the arithmetic."""
    return feats.device.type == "cpu" and not torch.is_grad_enabled()



def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per row (per point, as PTv3 applies timm's DropPath to [N, C])."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], 1).bernoulli_(1 - p)
    return x * keep / (1 - p)


class SerializedAttention(nn.Module):
    def __init__(self, channels: int, num_heads: int, patch_size: int, order_index: int):
        super().__init__()
        if channels % num_heads:
            raise OpenLSMError(f"{channels} channels are not divisible by {num_heads} heads")
        self.num_heads, self.patch_size, self.order_index = num_heads, patch_size, order_index
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, feats: Tensor, level: PointLevel, batch_min: bool = False) -> Tensor:
        """feats [N, C] (already normalised) -> [N, C]."""
        out, back = self.forward_slots(feats, level, batch_min)
        return out.index_select(0, back)

    def patches(self, level: PointLevel, batch_min: bool = False) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """This layer's patch layout on `level` (see `PointLevel.patches`)."""
        return level.patches(self.order_index % level.codes.shape[0], self.patch_size, batch_min)

    def forward_slots(self, feats: Tensor, level: PointLevel, batch_min: bool = False,
                      norm: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """feats [N, C] (normalised by the row-wise `norm` first, if given) -> outputs per patch slot [P*K, C]
        and back [N] (each point's slot). Points are gathered into patches before the row-wise layers, which
        moves C, not 3C, columns; on the CPU inference path patches go through in chunks."""
        c = feats.shape[1]
        slots, back, mask, k = self.patches(level, batch_min)
        step = max(1, ROW_CHUNK // k) * k if chunked(feats) else len(slots)
        out = None if step >= len(slots) else feats.new_empty(len(slots), c)
        for i in range(0, len(slots), step):
            x = feats.index_select(0, slots[i:i + step])  # [S, C]
            if norm is not None:
                x = norm(x)
            x = self.attend(x, k, None if mask is None else mask[i // k:(i + step) // k])  # [S, C]
            if out is None:
                return x, back
            out[i:i + step] = x
        return out, back

    def attend(self, x: Tensor, k: int, mask: Tensor | None) -> Tensor:
        """x [P*K, C] normalised rows of P patches of K -> [P*K, C]; mask [P, 1, 1, K]: bool (True = attend)
        or float (added to the scores), or None."""
        c, h = x.shape[1], self.num_heads
        qkv = self.qkv(x).view(-1, k, 3, h, c // h).permute(2, 0, 3, 1, 4)  # [3, P, H, K, D]
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # [P, H, K, D]
        return self.proj(x.transpose(1, 2).reshape(-1, c))


class Block(nn.Module):
    """cpe (sparse conv -> Linear -> LN) residual, then pre-norm patch attention and MLP."""

    def __init__(self, channels: int, num_heads: int, patch_size: int, order_index: int, mlp_ratio: float,
                 drop_path: float, conv_method: str = "auto"):
        super().__init__()
        self.cpe = nn.Sequential(SubMConv3d(channels, channels, 3, bias=True), nn.Linear(channels, channels),
                                 nn.LayerNorm(channels))
        self.norm1 = nn.Sequential(nn.LayerNorm(channels))
        self.attn = SerializedAttention(channels, num_heads, patch_size, order_index)
        self.norm2 = nn.Sequential(nn.LayerNorm(channels))
        self.mlp = nn.Sequential(Mlp(channels, int(channels * mlp_ratio)))
        self.drop_path = drop_path
        self.conv_method = conv_method

    def forward(self, feats: Tensor, level: PointLevel, batch_min: bool = False) -> Tensor:
        conv, linear, norm = self.cpe
        if not self.training and chunked(feats):
            return self._forward_chunked(feats, level, batch_min)
        feats = feats + norm(linear(conv(feats, level.voxels, self.conv_method)))
        feats = feats + drop_path(self.attn(self.norm1(feats), level, batch_min), self.drop_path, self.training)
        return feats + drop_path(self.mlp(self.norm2(feats)), self.drop_path, self.training)

    def _forward_chunked(self, feats: Tensor, level: PointLevel, batch_min: bool) -> Tensor:
        """The same computation on the CPU inference path: the cpe's row-wise layers run once per voxel, the
        rest in row chunks written into one output buffer, or once per run of equal rows (`_forward_runs`)."""
        conv, linear, norm = self.cpe
        cpe = norm(linear(conv.forward_voxels(feats, level.voxels, self.conv_method)))  # [U, C]
        out = torch.empty_like(feats)
        for i in range(0, len(out), ROW_CHUNK):  # out= writes the chunk in place (no temporary + copy)
            rows = slice(i, i + ROW_CHUNK)
            torch.add(feats[rows], cpe.index_select(0, level.voxels.inverse[rows]), out=out[rows])
        if level.voxels.first is None:  # points share voxels
            slots, back, mask, k = self.attn.patches(level, batch_min)
            if mask is None:
                return self._forward_runs(out, slots, back, k)
        attn, back = self.attn.forward_slots(out, level, batch_min, self.norm1)  # [P*K, C], [N]
        for i in range(0, len(out), ROW_CHUNK):
            rows = slice(i, i + ROW_CHUNK)
            x = out[rows] + attn.index_select(0, back[rows])
            torch.add(x, self.mlp(self.norm2(x)), out=out[rows])
        return out

    def _forward_runs(self, feats: Tensor, slots: Tensor, back: Tensor, k: int) -> Tensor:
        """Attention and MLP once per run of equal rows in a patch (CPU inference, full patches).

        The points of one voxel carry equal features (the stem and the cpe work per voxel) and sit next to each
        other in every order, so a patch of K points holds only R <= K distinct rows (point maps: ~0.4 K).
        Equal rows have equal queries and outputs, and n equal keys weigh as one key with log(n) added to its
        score: exp(s + log n) = n exp(s). So each patch attends over its R runs; patches sorted by R go through
        in chunks of equal width, padded keys masked with -inf."""
        slot_run, heads, lengths, per_patch = patch_runs(feats, slots, k)
        widths = per_patch.tolist()
        by_width = sorted(range(len(widths)), key=lambda p: -widths[p])
        first_run = torch.cumsum(per_patch, 0) - per_patch  # [P]
        log_lengths = lengths.to(feats.dtype).log()  # [R]
        head_points = slots.index_select(0, heads)  # [R] a point of each run
        runs_out = feats.new_empty(len(heads), feats.shape[1])  # [R, C]
        i = 0
        while i < len(by_width):
            w = widths[by_width[i]]
            group = torch.tensor(by_width[i:i + max(1, ROW_CHUNK // w)], device=feats.device)  # [G] patches
            i += len(group)
            cols = torch.arange(w, device=feats.device)
            valid = cols < per_patch[group][:, None]  # [G, W]
            runs = torch.where(valid, first_run[group][:, None] + cols, first_run[group][:, None])  # [G, W]
            x = feats.index_select(0, head_points.index_select(0, runs.view(-1)))  # [G*W, C]
            bias = log_lengths[runs].masked_fill(~valid, float("-inf")).view(-1, 1, 1, w)
            x = x + self.attn.attend(self.norm1(x), w, bias)
            x = x + self.mlp(self.norm2(x))
            runs_out.index_copy_(0, runs[valid], x[valid.view(-1)])
        return runs_out.index_select(0, slot_run.index_select(0, back))


def patch_runs(feats: Tensor, slots: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Runs of equal consecutive rows of feats [N, C] within each patch of slots [P*K] (point per slot).

    Returns slot_run [P*K] (the run of each slot; runs numbered patch by patch), heads [R] (first slot of each
    run), lengths [R] (slots per run) and per_patch [P] (runs per patch)."""
    p = len(slots) // k
    starts = torch.ones(p, k, dtype=torch.bool, device=feats.device)
    step = max(1, ROW_CHUNK // k)
    for i in range(0, p, step):
        x = feats.index_select(0, slots[i * k:(i + step) * k]).view(-1, k, feats.shape[1])  # [G, K, C]
        starts[i:i + step, 1:] = (x[:, 1:] != x[:, :-1]).any(-1)
    heads = starts.view(-1).nonzero().squeeze(1)  # every patch starts a run, so a patch's last run ends at
    lengths = torch.diff(heads, append=heads.new_tensor([len(slots)]))  # the next patch's first head
    return starts.view(-1).cumsum(0) - 1, heads, lengths, starts.sum(1)


def batch_norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


class SerializedPooling(nn.Module):
    """proj -> max over the children of each stride-2 cell -> BN -> GELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.Sequential(batch_norm(out_channels))
        self.act = nn.Sequential(nn.GELU())

    def forward(self, feats: Tensor, parent: PointLevel) -> Tensor:
        """feats [N_child, C_in] at the finer level, parent = pooled level (with .cluster) -> [N_parent, C]."""
        x = self.proj(feats)
        index = parent.cluster[:, None].expand_as(x)
        out = x.new_zeros(parent.grid.shape[0], x.shape[1]).scatter_reduce(0, index, x, "amax",
                                                                           include_self=False)
        return self.act(self.norm(out))


class SerializedUnpooling(nn.Module):
    """parent = proj_skip(skip) + proj(coarse)[cluster]."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), batch_norm(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), batch_norm(out_channels),
                                       nn.GELU())

    def forward(self, feats: Tensor, skip: Tensor, cluster: Tensor) -> Tensor:
        if self.training or not chunked(skip):
            return self.proj_skip(skip) + self.proj(feats).index_select(0, cluster)  # backward: index_add, not sort
        coarse = self.proj(feats)
        out = skip.new_empty(len(skip), coarse.shape[1])
        for i in range(0, len(out), ROW_CHUNK):
            rows = slice(i, i + ROW_CHUNK)
            torch.add(self.proj_skip(skip[rows]), coarse.index_select(0, cluster[rows]), out=out[rows])
        return out


class Embedding(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernel_size: int, conv_method: str = "auto"):
        super().__init__()
        self.conv_method = conv_method
        self.stem = nn.Sequential(OrderedDict(
            conv=SubMConv3d(in_channels, channels, kernel_size, bias=False), norm=batch_norm(channels),
            act=nn.GELU()))

    def forward(self, feats: Tensor, level: PointLevel) -> Tensor:
        if self.training:  # BN statistics over the points
            return self.stem.act(self.stem.norm(self.stem.conv(feats, level.voxels, self.conv_method)))
        # eval BN and GELU are row-wise: once per voxel, then each point reads its voxel's row
        voxels = self.stem.act(self.stem.norm(self.stem.conv.forward_voxels(feats, level.voxels, self.conv_method)))
        return voxels.index_select(0, level.voxels.inverse)


class PointTransformer(nn.Module):
    def __init__(self, config: PTv3Config):
        super().__init__()
        cfg = self.config = config
        self.embedding = Embedding(cfg.in_channels, cfg.enc_channels[0], cfg.stem_kernel, cfg.conv_method)
        enc_rates = torch.linspace(0, cfg.drop_path, sum(cfg.enc_depths), device="cpu").tolist()
        self.enc = nn.ModuleDict()
        for s, (depth, ch) in enumerate(zip(cfg.enc_depths, cfg.enc_channels)):
            stage = nn.ModuleDict()
            if s > 0:
                stage["down"] = SerializedPooling(cfg.enc_channels[s - 1], ch)
            rates = enc_rates[sum(cfg.enc_depths[:s]): sum(cfg.enc_depths[: s + 1])]
            for i in range(depth):
                stage[f"block{i}"] = Block(ch, cfg.enc_num_heads[s], cfg.enc_patch_sizes[s], i % len(cfg.orders),
                                           cfg.mlp_ratio, rates[i], cfg.conv_method)
            self.enc[f"enc{s}"] = stage
        dec_rates = torch.linspace(0, cfg.drop_path, sum(cfg.dec_depths), device="cpu").tolist()
        self.dec = nn.ModuleDict()
        ins = list(cfg.dec_channels[1:]) + [cfg.enc_channels[-1]]
        for s in reversed(range(len(cfg.dec_channels))):
            ch = cfg.dec_channels[s]
            stage = nn.ModuleDict()
            stage["up"] = SerializedUnpooling(ins[s], cfg.enc_channels[s], ch)
            rates = dec_rates[sum(cfg.dec_depths[:s]): sum(cfg.dec_depths[: s + 1])][::-1]
            for i in range(cfg.dec_depths[s]):
                stage[f"block{i}"] = Block(ch, cfg.dec_num_heads[s], cfg.dec_patch_sizes[s], i % len(cfg.orders),
                                           cfg.mlp_ratio, rates[i], cfg.conv_method)
            self.dec[f"dec{s}"] = stage
        bottleneck, first_dec = cfg.enc_channels[-1], cfg.dec_channels[-1]
        if cfg.cross_geometry:
            self.dust_feat_proj = nn.Linear(cfg.geometry_dim, bottleneck)
            self.decoder_block_dust = CrossModalBlock(bottleneck, cfg.cross_num_heads, cfg.mlp_ratio)
        if cfg.cross_semantic:
            self.lseg_feat_proj = nn.Linear(cfg.semantic_dim, bottleneck)
            self.decoder_block_lseg = CrossModalBlock(bottleneck, cfg.cross_num_heads, cfg.mlp_ratio)
        if cfg.cross_multi_scale:
            self.multi_scale_proj = nn.Linear(cfg.semantic_dim, first_dec)
            self.decoder_block_multi_scale = CrossModalBlock(first_dec, cfg.multi_scale_num_heads, cfg.mlp_ratio)

    def forward(self, coords: Tensor, feats: Tensor, offsets: Tensor, geo_tokens: Tensor | None = None,
                sem_tokens: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """coords [N, 3] normalised, feats [N, C_in], offsets [B] cumulative ends, geo_tokens [B, L1, Cg],
        sem_tokens [B, L2, Cs] -> [N, out_channels] in input order."""
        cfg = self.config
        self._check_inputs(coords, feats, offsets, geo_tokens, sem_tokens)
        batch_min = cfg.official_batching
        level = build_root_level(coords, offsets, cfg, generator)
        x = self.embedding(feats, level)
        skips: list[tuple[PointLevel, Tensor]] = []
        for s, stage in enumerate(self.enc.values()):
            if s > 0:
                skips.append((level, x))
                level = pool_level(level, cfg, generator)
                x = stage["down"](x, level)
            for name, block in stage.items():
                if name != "down":
                    x = block(x, level, batch_min)
        counts = level.counts_tensor  # the padded width max(level.counts) is passed from the host: no read-back
        if cfg.cross_geometry:
            x = self.decoder_block_dust.forward_points(x, counts, self.dust_feat_proj(geo_tokens), max(level.counts))
        if cfg.cross_semantic:
            x = self.decoder_block_lseg.forward_points(x, counts, self.lseg_feat_proj(sem_tokens), max(level.counts))
        for i, stage in enumerate(self.dec.values()):
            parent, skip = skips.pop()
            x = stage["up"](x, skip, level.cluster)
            level = parent
            for name, block in stage.items():
                if name != "up":
                    x = block(x, level, batch_min)
            if i == 0 and cfg.cross_multi_scale:
                x = self.decoder_block_multi_scale.forward_points(x, level.counts_tensor,
                                                                  self.multi_scale_proj(sem_tokens), max(level.counts))
        return x

    def _check_inputs(self, coords, feats, offsets, geo_tokens, sem_tokens) -> None:
        cfg = self.config
        n = coords.shape[0]
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise OpenLSMError(f"coords must be [N, 3], got {tuple(coords.shape)}")
        if feats.shape != (n, cfg.in_channels):
            raise OpenLSMError(f"feats must be [{n}, {cfg.in_channels}], got {tuple(feats.shape)}")
        if offsets.ndim != 1 or offsets.numel() == 0:
            raise OpenLSMError(f"offsets must be a non-empty [B] tensor, got {tuple(offsets.shape)}")
        counts = torch.diff(offsets.long(), prepend=offsets.new_zeros(1).long())
        if bool((counts <= 0).any()) or int(offsets[-1]) != n:
            raise OpenLSMError(f"offsets must be increasing cumulative counts ending at N={n}, "
                               f"got {offsets.tolist()}")
        b = offsets.shape[0]
        for use, tokens, dim, what in ((cfg.cross_geometry, geo_tokens, cfg.geometry_dim, "geo_tokens"),
                                       (cfg.cross_semantic or cfg.cross_multi_scale, sem_tokens,
                                        cfg.semantic_dim, "sem_tokens")):
            if use and (tokens is None or tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != dim):
                got = None if tokens is None else tuple(tokens.shape)
                raise OpenLSMError(f"{what} must be [{b}, L, {dim}], got {got}")


def normalize_points(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """points [B, M, 3] -> coords [B, M, 3] in [-1, 1], center [B, 1, 3] (mean), scale [B, 1, 1]
    (max |p - center| over points and axes); points = coords * scale + center."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise OpenLSMError(f"points must be [B, M, 3], got {tuple(points.shape)}")
    center = points.mean(1, keepdim=True)
    scale = (points - center).abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return (points - center) / scale, center, scale
