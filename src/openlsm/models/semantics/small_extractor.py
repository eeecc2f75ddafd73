"""Compact semantic extractor (~2M parameters) trained LSeg-style: per-pixel features aligned with the text
embeddings of class names through a softmax cross-entropy over cosine similarities / temperature.

    >>> names = ["wall", "floor", "chair"]
    >>> model = train_small_extractor(batches, SmallTrainConfig(steps=200), class_names=names)
    >>> feats = model(images * 2 - 1)                     # [B, D, H/2, W/2], D = text encoder dim
    >>> save_small_extractor(model, "small.safetensors"); model = load_small_extractor("small.safetensors")

`batches` is any iterable of `(images [B,3,H,W] in [0,1], labels [B,H,W] int64)`; label < 0 is ignored.
Use `batches_from_dataset` for a map-style dataset of dicts (`images [V,3,H,W]`, `labels [V,H,W]`).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OpenLSMError
from ...io.atomic import atomic_write
from .base import SemanticExtractor
from .vocab import TEMPLATES


@dataclass(frozen=True)
class SmallExtractorConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)  # stages at strides 2, 4, 8, 16
    feature_dim: int = 384  # = text encoder dim (384 MiniLM, 512 CLIP)
    groups: int = 8  # GroupNorm groups (batch-size independent)
    decoder_width: int | None = None  # channels of the top-down decoder (None: widths[0], the shipped extractor)


def conv_block(c_in: int, c_out: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(min(groups, c_out), c_out),
                         nn.GELU())


class ResBlock(nn.Module):
    def __init__(self, c: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(conv_block(c, c, 1, groups), nn.Conv2d(c, c, 3, 1, 1, bias=False),
                                  nn.GroupNorm(min(groups, c), c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.body(x))


class SmallExtractor(SemanticExtractor):
    """Conv encoder (strides 2..16) + FPN-style top-down decoder to stride 2 + 1x1 head to the text space."""

    size_multiple = 16

    def __init__(self, cfg: SmallExtractorConfig = SmallExtractorConfig()):
        super().__init__()
        self.cfg = cfg
        self.feature_dim = cfg.feature_dim
        w, g = cfg.widths, cfg.groups
        self.size_multiple = 2 ** len(w)
        chans = (3,) + tuple(w)
        self.downs = nn.ModuleList(
            [nn.Sequential(conv_block(chans[i], chans[i + 1], 2, g), ResBlock(chans[i + 1], g)) for i in range(len(w))])
        d = cfg.decoder_width or w[0]
        self.laterals = nn.ModuleList([nn.Conv2d(c, d, 1) for c in w])  # every level to the decoder width
        self.fuse = nn.Sequential(conv_block(d, d, 1, g), ResBlock(d, g))
        self.head = nn.Conv2d(d, cfg.feature_dim, 1)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        x, levels = images, []
        for down in self.downs:
            x = down(x)
            levels.append(x)  # strides 2, 4, 8, ...
        top = self.laterals[-1](levels[-1])
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(levels[:-1])):
            top = F.interpolate(top, size=level.shape[-2:], mode="bilinear", align_corners=False) + lateral(level)
        return self.head(self.fuse(top))  # [B, D, H/2, W/2]


@dataclass
class SmallTrainConfig:
    steps: int = 2000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07  # logits = cos / temperature
    text_encoder: str = "minilm"
    templates: tuple[str, ...] = TEMPLATES
    widths: tuple[int, ...] = (32, 64, 128, 256)
    decoder_width: int | None = None  # None: widths[0]
    seed: int = 0
    device: str = "cpu"
    hflip: bool = True
    class_balance: float = 0.5  # cross-entropy weight per class ~ frequency^-class_balance (0: unweighted)
    max_seconds: float | None = None  # wall-clock budget: the schedule follows max(step, time) progress and ends
    # by then, so a run fits a fixed time slot and still anneals (such runs are not bit-reproducible)
    batch_reuse: int = 1  # optimizer steps per fetched batch, each on its own random flip / crop (data-bound GPUs)
    crop_scale: float = 1.0  # smallest random crop side as a share of the image, resized back (1: no crops)
    align_weight: float = 0.0  # + weight x mean(1 - cos(feature, its class's text embedding)): keeps features near
    # the text vectors themselves, not only ranked right; meant for unseen synonyms, which it did not help in the
    # one GPU run that tried it (docs/benchmarks.md, session 6)


def class_weights(counts: torch.Tensor, power: float) -> torch.Tensor:
    """counts [K] (pixels seen per class) -> weights [K] ~ (count / total)^-power, mean 1 over seen classes,
    clamped to [0.1, 10] so a class seen a handful of times cannot dominate. Unseen classes get weight 1."""
    seen = counts > 0
    w = torch.ones_like(counts, dtype=torch.float32)
    if power == 0 or not bool(seen.any()):
        return w
    freq = counts[seen].float() / counts[seen].sum()
    raw = freq.pow(-power)
    w[seen] = (raw / raw.mean()).clamp(0.1, 10.0)
    return w


def augment(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, hflip: bool = True,
            crop_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip, and with `crop_scale` < 1 a random crop per image (the image's aspect, sides
    crop_scale..1 of it) resized back: bilinear for images [B,3,H,W], nearest for labels [B,H,W]."""
    if crop_scale >= 1:  # the whole batch flipped or not
        if hflip and torch.rand((), generator=gen) < 0.5:
            images, labels = images.flip(-1), labels.flip(-1)
        return images, labels
    b = images.shape[0]
    scale = crop_scale + (1 - crop_scale) * torch.rand(b, generator=gen)  # [B]
    shift = (1 - scale)[:, None] * (2 * torch.rand(b, 2, generator=gen) - 1)  # [B, 2], keeps the crop inside
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale * sign, scale, shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(labels[:, None].to(grid.dtype), grid, mode="nearest", padding_mode="border",
                        align_corners=False)
    return out, lab[:, 0].round().long()


def _repeat(batches: Iterable, times: int) -> Iterable:
    for item in batches:
        for _ in range(times):
            yield item


def _checked(batches: Iterable, device: torch.device, num_classes: int) -> Iterable:
    # each fetched batch moved to the device and validated once, however often it is reused
    for images, labels in batches:
        images, labels = images.to(device).float(), labels.to(device).long()
        if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[-2:]):
            raise OpenLSMError(f"bad batch: images {tuple(images.shape)}, labels {tuple(labels.shape)}")
        if int(labels.max()) >= num_classes:
            raise OpenLSMError(f"label {int(labels.max())} out of range for {num_classes} classes")
        yield images, labels


def _cycle(batches: Iterable) -> Iterable:
    # re-iterate a re-iterable (list / DataLoader) forever; a one-shot iterator simply ends
    for epoch in itertools.count():
        n = 0
        for item in batches:
            n += 1
            yield item
        if n == 0:
            raise OpenLSMError("the training data yielded no batches" if epoch == 0 else "training data exhausted")


def batches_from_dataset(dataset, batch_size: int, seed: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random batches from a map-style dataset of dicts (`images [V,3,H,W]`, `labels [V,H,W]`); views
    are flattened into the batch."""
    if len(dataset) == 0:
        raise OpenLSMError("empty dataset")
    gen = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(len(dataset), (batch_size,), generator=gen).tolist()
        items = [dataset[i] for i in idx]
        images = torch.cat([torch.as_tensor(it["images"]).reshape(-1, *it["images"].shape[-3:]) for it in items])
        labels = torch.cat([torch.as_tensor(it["labels"]).reshape(-1, *it["labels"].shape[-2:]) for it in items])
        yield images.float(), labels.long()


def drop_classes(names: list[str], ignore: tuple[str, ...] = ("void",)) -> tuple[list[str], torch.Tensor]:
    """Names kept for training and a lookup table old id -> new id (-1 = ignored), e.g. to skip 'void'."""
    kept = [n for n in names if n not in ignore]
    lut = torch.tensor([kept.index(n) if n not in ignore else -1 for n in names], dtype=torch.int64)
    return kept, lut


def remap_labels(batches: Iterable, lut: torch.Tensor) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Apply `lut` to the labels of every batch (negative labels stay ignored)."""
    for images, labels in batches:
        yield images, torch.where(labels >= 0, lut.to(labels.device)[labels.clamp_min(0)], labels)


MAX_UPSAMPLED_ELEMENTS = 1 << 30


def pixel_logits(model: SemanticExtractor, images01: torch.Tensor, text_features: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """[B, K, H, W] logits = cos(feature, text) / temperature, features upsampled to full resolution."""
    feats = model(images01 * 2 - 1)  # the extractor interface takes [-1, 1]
    texts = F.normalize(text_features, dim=-1)
    # the upsampled features [B, D, H, W] are the big tensor: build them a few images at a time, below CUDA's
    # 2^31-element kernel limit (64 images of 256² x 384 channels already hold 1.6 G elements)
    per_image = feats.shape[1] * images01.shape[-2] * images01.shape[-1]
    step = max(1, MAX_UPSAMPLED_ELEMENTS // per_image)
    cos = [torch.einsum("bdhw,kd->bkhw", F.normalize(F.interpolate(
        chunk, size=images01.shape[-2:], mode="bilinear", align_corners=False), dim=1), texts)
        for chunk in feats.split(step)]
    return torch.cat(cos) / temperature


def train_small_extractor(batches: Iterable, config: SmallTrainConfig, class_names: list[str] | None = None,
                          text_features: torch.Tensor | None = None,
                          callback: Callable[[int, float], None] | None = None,
                          init: SmallExtractor | None = None) -> SmallExtractor:
    """Train from scratch, or go on from `init` (same widths and feature dim). Give `class_names` (embedded with
    `config.text_encoder` and its templates) or precomputed `text_features [K, D]`. Returns the model (eval mode)
    with `.class_names`, `.text_encoder_name`.

    With `config.class_balance` > 0 each class's cross-entropy weight follows the running pixel counts
    (`class_weights`), so small objects (lamps, plants) are not drowned by walls and floors."""
    if text_features is None:
        if not class_names:
            raise OpenLSMError("train_small_extractor needs class_names or text_features")
        from .text import get_text_encoder, label_embeddings

        text_features = label_embeddings(get_text_encoder(config.text_encoder), class_names, config.templates)
    device = torch.device(config.device)
    texts = F.normalize(text_features.float(), dim=-1).to(device)  # [K, D], fixed (the text side is frozen)
    num_classes = texts.shape[0]
    torch.manual_seed(config.seed)
    model = SmallExtractor(SmallExtractorConfig(widths=tuple(config.widths), feature_dim=texts.shape[1],
                                                decoder_width=config.decoder_width))
    if init is not None:
        def shape(c):
            return tuple(c.widths), c.decoder_width or c.widths[0], c.feature_dim

        if shape(init.cfg) != shape(model.cfg):
            raise OpenLSMError(f"init extractor has widths / decoder width / dim {shape(init.cfg)}; training wants "
                               f"{shape(model.cfg)}")
        model.load_state_dict(init.state_dict())
    model = model.to(device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)  # pixels seen per class
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.steps < 1:
        raise OpenLSMError(f"steps must be >= 1, got {config.steps}")
    warmup = max(1, config.steps // 20)  # linear warm-up, then cosine decay to 5%

    def progress(step: int, seconds: float) -> float:  # steps done, or the budget's share used x steps if larger
        if config.max_seconds is None:
            return step
        return max(step, seconds / config.max_seconds * config.steps)

    def lr_factor(done: float) -> float:
        if done < warmup:
            return (done + 1) / warmup
        t = min(1.0, (done - warmup) / max(1, config.steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    if config.batch_reuse < 1 or not 0 < config.crop_scale <= 1:
        raise OpenLSMError(f"batch_reuse must be >= 1 and crop_scale in (0, 1], got {config.batch_reuse}, "
                           f"{config.crop_scale}")
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    stream = _repeat(_checked(_cycle(batches), device, num_classes), config.batch_reuse)
    for step, (images, labels) in zip(range(config.steps), stream):
        if step == 0:  # the clock starts with the first batch (not with data workers starting up)
            start = time.perf_counter()
        done = progress(step, time.perf_counter() - start)
        if step > 0 and done >= config.steps:  # time budget used up
            break
        for group in opt.param_groups:
            group["lr"] = config.lr * lr_factor(done)
        images, labels = augment(images, labels, gen, config.hflip, config.crop_scale)
        logits = pixel_logits(model, images, texts, config.temperature)
        weight = None
        if config.class_balance > 0:
            counts += torch.bincount(labels[labels >= 0], minlength=num_classes)
            weight = class_weights(counts, config.class_balance)
        loss = F.cross_entropy(logits, labels.masked_fill(labels < 0, -100), weight=weight, ignore_index=-100)
        if config.align_weight > 0:
            valid = labels >= 0
            cos = logits.gather(1, labels.clamp_min(0)[:, None])[:, 0] * config.temperature  # [B, H, W]
            loss = loss + config.align_weight * (1 - cos[valid]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    model.eval()
    model.class_names = list(class_names) if class_names else None
    model.text_encoder_name = config.text_encoder
    return model


@torch.no_grad()
def pixel_accuracy(model: SemanticExtractor, batches: Iterable, text_features: torch.Tensor,
                   max_batches: int = 10) -> float:
    """Fraction of labelled pixels whose argmax-cosine class is right."""
    model.eval()
    device = next(model.parameters()).device
    right = total = 0
    for images, labels in itertools.islice(batches, max_batches):
        labels = labels.to(device)
        pred = pixel_logits(model, images.to(device).float(), text_features.to(device).float(), 1.0).argmax(1)
        valid = labels >= 0
        right += int((pred[valid] == labels[valid]).sum())
        total += int(valid.sum())
    return right / max(total, 1)


def save_small_extractor(model: SmallExtractor, path: str | Path) -> None:
    """safetensors file with the config, class names and text encoder name in its metadata (atomic write)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"config": json.dumps(asdict(model.cfg)), "class_names": json.dumps(getattr(model, "class_names", None)),
            "text_encoder": str(getattr(model, "text_encoder_name", "minilm"))}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_small_extractor(path: str | Path, device: str | torch.device = "cpu") -> SmallExtractor:
    """A `save_small_extractor` file, or an `LSM.save` folder (such as the shipped `small` weights, whose frozen
    2D extractor is this model) -> the extractor in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        from ..lsm.model import LSM

        lsm = LSM.load(path)
        if lsm.config.semantic != "small":
            raise OpenLSMError(f"{path} holds an LSM with the {lsm.config.semantic!r} extractor, not the small one")
        model = lsm.lseg_feature_extractor
        model.class_names, model.text_encoder_name = None, "minilm"  # LSM files keep no class list
        return model.to(device).eval()
    if not path.is_file():
        raise OpenLSMError(f"small extractor weights not found: {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise OpenLSMError(f"{path.name} is not a small-extractor file (no config metadata)")
    raw = json.loads(meta["config"])
    cfg = SmallExtractorConfig(**{**raw, "widths": tuple(raw["widths"])})
    model = SmallExtractor(cfg)
    model.load_state_dict(load_file(str(path)), strict=True)
    model.class_names = json.loads(meta.get("class_names", "null"))
    model.text_encoder_name = meta.get("text_encoder", "minilm")
    return model.to(device).eval()
