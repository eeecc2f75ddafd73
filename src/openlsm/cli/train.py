"""`openlsm train`: train LSM on SynthRooms (one device, or several with torchrun), resumable.

    openlsm train --config small --data synthrooms --resolution 256 --steps 20000 --out runs/small \\
        --semantic-weights small_extractor.safetensors --max-minutes 9 --resume
    torchrun --nproc_per_node=2 -m openlsm.cli.main train --config small --out runs/ddp ...

The run folder gets config.yaml, metrics.jsonl, checkpoint.pt (latest, written atomically) and, when the run ends
or stops, model/ (an LSM.save folder for `openlsm eval --checkpoint OUT/model`). `--max-minutes M`
stops cleanly before M minutes with a final checkpoint; run the same command again with `--resume` to continue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Train:
    """Train the Large Spatial Model (losses of the LSM paper, DUSt3R confidence loss) with checkpoints."""

    config: Literal["tiny", "small", "paper"] = "small"
    """LSM preset."""
    data: str = "synthrooms"
    """Training data: synthrooms (rooms rendered on the fly on the training device) or a dataset spec such as
    scannet:PATH, scannetpp:PATH, replica:PATH, folder:PATH, synthrooms-disk:PATH (see `openlsm eval --help`)."""
    out: Path = Path("runs/lsm")
    """Run folder: config.yaml, metrics.jsonl, checkpoint.pt, model/."""
    steps: int = 10_000
    """Optimizer steps in total (a resumed run continues up to this step)."""
    batch_size: int = 8
    """Global batch (pairs per step over all ranks and accumulation steps)."""
    accum_steps: int = 1
    """Gradient-accumulation micro-batches per rank and step."""
    batch_reuse: int = 1
    """Optimizer steps per fetched batch (for data-bound runs); every second reuse swaps the two input views, so
    the reference frame, targets and cameras differ. The schedule still counts optimizer steps."""
    resolution: int = 256
    """Square image size (a multiple of 16)."""
    views: int = 3
    """Views per sample: 0 and 1 are the inputs, every view is rendered and supervised."""
    train_size: int | None = None
    """Use only the first N training rooms (default: the whole split)."""
    resample_cameras: bool = True
    """Draw new cameras on every pass over the training rooms."""
    cache_data: bool = False
    """Keep rendered samples in memory (for small fixed sets)."""
    prefetch: bool = True
    """Render the next batch in a background thread while the current step trains (CUDA only)."""
    data_workers: int = 0
    """SynthRooms: worker processes (per rank) that build rooms and cameras ahead; the GPU renders them."""
    val_size: int = 16
    """Fixed validation rooms (SynthRooms val split); 0 = no validation."""
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 500
    cosine: bool = True
    """Half-cosine decay to --min-lr after warm-up (else constant)."""
    weight_decay: float = 0.05
    """AdamW decay (none on biases, norms, embeddings)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (DUSt3R's training defaults)."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = off)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Autocast dtype of the model on CUDA (CPU always runs fp32)."""
    freeze: tuple[str, ...] = ()
    """Frozen parts: geometry_encoder, geometry, point_transformer, gaussian_head, feature_heads, or prefixes."""
    loss: Literal["paper", "official-code", "geometry"] = "paper"
    """Loss weights: paper (L1 + 0.25 D-SSIM + 0.3 feature + 1.5 conf), the shipped code's, or geometry (1.5 conf
    only: trains the geometry network alone, several times faster a step; continue with --init OUT/model)."""
    semantic_weights: Path | None = None
    """Frozen 2D extractor weights (`openlsm train-semantics` output; an LSeg checkpoint for --config paper)."""
    init: Path | None = None
    """Initial LSM weights: this trainer's checkpoint.pt, model/ or weights/ folder, an LSM.save folder, an
    official LSM checkpoint, or a DUSt3R checkpoint (geometry network only, as the official training starts)."""
    resume: bool = False
    """Continue from OUT/checkpoint.pt when it exists (else start fresh)."""
    overwrite: bool = False
    """Start over even if OUT holds a checkpoint."""
    max_minutes: float | None = None
    """Stop cleanly (with a checkpoint) before this many minutes of wall time."""
    log_every: int = 10
    val_every: int = 500
    """Validate every N steps (and at the end); 0 = only at the end."""
    ckpt_every: int = 500
    """Checkpoint every N steps (and at the end / when stopped)."""
    seed: int = 0
    device: str = "auto"
    """auto, cpu or cuda (under torchrun each rank uses cuda:LOCAL_RANK)."""
    sync_bn: bool = True
    """SyncBatchNorm in the point transformer under multi-GPU DDP."""
    quiet: bool = False
    """No console lines (metrics.jsonl is still written)."""
    export_weights: bool = False
    """With each checkpoint also write OUT/weights/: bf16 safetensors shards of at most 15 MiB (small enough to
    copy off a remote machine; usable as --init or for evaluation)."""

    def to_config(self):
        from ..train.trainer import TrainConfig

        fields = {k: v for k, v in vars(self).items() if k != "config"}
        return TrainConfig(model=self.config, **fields)

    def run(self) -> int:
        import json
        import logging

        from ..train.trainer import train

        logging.basicConfig(level=logging.WARNING, format="openlsm: %(message)s")
        summary = train(self.to_config())
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(summary))
        return 130 if summary["stopped"] == "signal" else 0
