"""Freezing, AdamW parameter groups and the warm-up + cosine learning-rate schedule.

    frozen = freeze(model, ("geometry_encoder",))     # names or parameter-name prefixes -> count frozen
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.05), lr=1e-4, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, ...) / lr)
"""

from __future__ import annotations

import math

from torch import nn

from openlsm.errors import OpenLSMError

# Named parts of LSM. `geometry_encoder` is DUSt3R's set_freeze('encoder'): mask_token, patch_embed, enc_blocks
# (enc_norm stays trainable, as in the official run).
FREEZE_GROUPS = {
    "geometry_encoder": ("dust3r.dust3r.mask_token", "dust3r.dust3r.patch_embed.", "dust3r.dust3r.enc_blocks."),
    "geometry": ("dust3r.",),
    "point_transformer": ("point_transformer.",),
    "gaussian_head": ("gaussian_head.",),
    "feature_heads": ("feature_expansion.", "feature_reduction."),
}
NO_DECAY_SUFFIXES = ("mask_token", "cls_token", "pos_embed")


def freeze(model: nn.Module, parts: tuple[str, ...]) -> int:
    """requires_grad_(False) on every part (a FREEZE_GROUPS name or a parameter-name prefix). Returns the
    number of parameter elements frozen by these parts."""
    named = dict(model.named_parameters())
    total = 0
    for part in parts:
        prefixes = FREEZE_GROUPS.get(part, (part,))
        hits = [p for n, p in named.items() if n.startswith(prefixes)]
        if not hits:
            raise OpenLSMError(f"--freeze {part!r} matches no parameter; use one of {sorted(FREEZE_GROUPS)} or a "
                               "parameter-name prefix")
        for p in hits:
            if p.requires_grad:
                total += p.numel()
            p.requires_grad_(False)
    return total


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but modules whose own parameters are all frozen stay in eval mode (BatchNorm statistics
    of frozen parts do not drift)."""
    model.train()
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            m.eval()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (matrices, conv kernels) and not decayed (biases, norms,
    embeddings and tokens)."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or id(p) in embedding_weights or name.endswith(NO_DECAY_SUFFIXES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int, cosine: bool = True) -> float:
    """Linear warm-up from lr/warmup to lr over `warmup` steps, then half-cosine down to min_lr at `total`
    (or constant lr when not cosine)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if not cosine:
        return lr
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
