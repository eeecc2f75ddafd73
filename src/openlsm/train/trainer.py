"""The LSM trainer: AdamW + warm-up/cosine, bf16 autocast on CUDA, gradient clipping and accumulation, frozen
parts, periodic validation, JSON-lines logs, atomic checkpoints that resume bit-exactly, and DDP under torchrun.

    summary = train(TrainConfig(model="tiny", resolution=32, steps=20, batch_size=2, out=Path("runs/t")))
    torchrun --nproc_per_node=2 -m openlsm.cli.main train --config small --steps 2000 --out runs/ddp

Determinism: the global batch of step s is a function of (seed, s) (see data.py) and every micro-batch re-seeds
torch (and its PTv3 generator) from (seed, s, shard), so a run is a pure function of its config and the step it
resumes from. A checkpoint still stores every RNG state (python, numpy, torch CPU/CUDA), the optimizer, the
LR schedule and the grad scaler. On CPU a killed and resumed run equals an uninterrupted one bit for bit; on CUDA
the data and random draws are equal but some kernels (atomics) are not bit-deterministic.

Run folder: config.yaml, metrics.jsonl (one JSON object per log/validation line), checkpoint.pt (latest, for
--resume), model/ (LSM.save folder written when a run ends or stops: `openlsm eval --checkpoint out/model`), and
with export_weights, weights/ (bf16 safetensors shards of <= 15 MiB, small enough to copy off a remote machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from openlsm.errors import OpenLSMError

from .checkpoint import export_weights, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from .data import Prefetcher, global_batch, make_source, mix_seed
from .distributed import DistContext, setup_distributed, teardown_distributed
from .losses import LossWeights
from .optim import freeze, lr_at, param_groups, set_train_mode
from .runlog import METRICS, Reporter, StopFlag, truncate_metrics
from .step import LossModule

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
# Config fields that change the data, the maths of a step or the learning-rate schedule: resuming with other
# values is refused (a resume that forgot --warmup-steps would otherwise silently warm up again).
RESUME_FIXED = ("model", "data", "resolution", "views", "train_size", "resample_cameras", "batch_size",
                "batch_reuse", "accum_steps", "seed", "loss", "freeze", "precision", "steps", "lr", "min_lr",
                "warmup_steps", "cosine", "weight_decay", "betas")


@dataclass
class TrainConfig:
    model: str = "small"  # LSM preset: tiny, small, paper
    data: str = "synthrooms"
    resolution: int = 256  # square images, a multiple of 16
    views: int = 3  # views 0, 1 are the inputs; all views are rendered and supervised
    train_size: int | None = None  # use the first N training rooms (None = the whole split)
    resample_cameras: bool = True  # new camera draws on every pass over the training rooms
    cache_data: bool = False  # keep rendered samples in memory (small fixed sets)
    prefetch: bool = True  # render the next batch in a background thread (CUDA only)
    data_workers: int = 0  # SynthRooms: processes per rank building scenes + cameras ahead (the GPU renders them)
    val_size: int = 16  # fixed validation rooms (SynthRooms val split)
    steps: int = 10_000
    batch_size: int = 8  # global batch: pairs per optimizer step over all ranks and accumulation steps
    accum_steps: int = 1  # micro-batches per rank and step
    batch_reuse: int = 1  # optimizer steps per fetched batch; odd reuses swap the two input views (swap_inputs)
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 500
    cosine: bool = True  # half-cosine decay to min_lr after warm-up (else constant)
    weight_decay: float = 0.05  # none on biases, norms, embeddings and tokens
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"  # autocast dtype of the model on CUDA; CPU runs fp32
    sync_bn: bool = True  # SyncBatchNorm in the point transformer under multi-GPU DDP
    freeze: tuple[str, ...] = ()  # e.g. geometry_encoder, geometry, point_transformer, or parameter prefixes
    loss: Literal["paper", "official-code", "geometry"] = "paper"  # geometry: only model.dust3r trains (step.py)
    log_every: int = 10
    val_every: int = 500  # 0 = only at the end
    ckpt_every: int = 500  # 0 = only at the end / when stopped
    seed: int = 0
    out: Path = Path("runs/lsm")
    resume: bool = False  # continue from out/checkpoint.pt when it exists
    overwrite: bool = False  # start over even if out/ holds a checkpoint
    device: str = "auto"
    semantic_weights: Path | None = None  # frozen extractor weights (`openlsm train-semantics` output); with
    # --init they replace the extractor the initial weights brought
    init: Path | None = None  # initial weights: trainer checkpoint/export, LSM.save folder, official LSM or DUSt3R
    max_minutes: float | None = None  # stop cleanly (final checkpoint) before this much wall time
    quiet: bool = False
    export_weights: bool = False  # with each checkpoint also write out/weights/ (bf16 safetensors, <= 15 MiB each)

    def validate(self, world_size: int) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.accum_steps < 1 or self.batch_reuse < 1:
            raise OpenLSMError("steps, batch_size, accum_steps and batch_reuse must be >= 1")
        if self.batch_size % (world_size * self.accum_steps):
            raise OpenLSMError(f"batch_size {self.batch_size} must be divisible by ranks x accum_steps = "
                               f"{world_size} x {self.accum_steps}")
        if self.resolution % 16 or self.resolution < 16:
            raise OpenLSMError(f"resolution must be a positive multiple of 16, got {self.resolution}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise OpenLSMError("need warmup_steps >= 0 and lr > 0")
        LossWeights.preset(self.loss)


def swap_inputs(batch: dict) -> dict:
    """The batch with input views 0 and 1 exchanged (every tensor is [S, V, ...]): view 1 becomes the reference
    frame, so the regression targets, the predicted cameras and the Gaussians all change: a reused batch still
    teaches something new."""
    order = [1, 0, *range(2, batch["images"].shape[1])]
    return {k: v[:, order] for k, v in batch.items()}


def plain(x):
    """Dataclass/dict/tuple/Path -> YAML/JSON/torch.load(weights_only)-safe values."""
    if dataclasses.is_dataclass(x):
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return str(x) if isinstance(x, Path) else x


# --- model --------------------------------------------------------------------------------------------------------

def load_semantic_weights(model, path: Path) -> None:
    """Put the frozen 2D extractor's weights (small-extractor safetensors, or an LSeg checkpoint) into `model`."""
    if model.config.semantic == "small":
        from openlsm.models.semantics.small_extractor import load_small_extractor

        ext = load_small_extractor(path)
        want = model.config.small_extractor
        if (tuple(ext.cfg.widths), ext.cfg.feature_dim) != (tuple(want.widths), want.feature_dim):
            raise OpenLSMError(f"{path.name}: extractor widths {ext.cfg.widths} / dim {ext.cfg.feature_dim} do not "
                               f"fit the model's ({want.widths} / {want.feature_dim})")
        model.lseg_feature_extractor.load_state_dict(ext.state_dict())
    else:
        from openlsm.models.semantics.lseg import load_lseg_checkpoint

        load_lseg_checkpoint(model.lseg_feature_extractor, path)


def load_initial_weights(model, path: Path, preset: str) -> None:
    """--init: a trainer checkpoint, weights export or LSM.save folder (strict), an official LSM checkpoint, or a
    DUSt3R checkpoint (geometry network only; the rest keeps its initialisation)."""
    from .checkpoint import is_saved_model, is_trainer_checkpoint, read_weights

    if Path(path).is_dir() or is_saved_model(path) or is_trainer_checkpoint(path):
        state = read_weights(path)[0]
        own = model.state_dict()
        bad = [k for k in own if k not in state or state[k].shape != own[k].shape] + [k for k in state if k not in own]
        if bad:
            raise OpenLSMError(f"--init {path} does not fit the {preset} model: {len(bad)} keys missing, "
                               f"extra or mis-shaped (e.g. {bad[0]})")
        model.load_state_dict(state)
    else:
        from openlsm.models.checkpoint_io import load_dust3r_state, load_official_checkpoint, model_state_of
        from openlsm.models.lsm.model import load_official_lsm_checkpoint

        if not Path(path).is_file():
            raise OpenLSMError(f"--init file not found: {path}")
        ckpt = load_official_checkpoint(path)
        state = model_state_of(ckpt)
        if any(k.startswith("dust3r.") for k in state):
            load_official_lsm_checkpoint(model, ckpt)
        else:  # a naver DUSt3R checkpoint: the geometry network starts from it (as the official LSM training)
            load_dust3r_state(state, net=model.dust3r.dust3r)


def freeze_unused(model, loss: str) -> None:
    """A geometry-only loss runs model.dust3r alone: freeze the rest (out of AdamW and of DDP's gradient buckets;
    --freeze geometry then leaves nothing to train, which the trainer reports)."""
    if LossWeights.preset(loss).geometry_only:
        freeze(model, tuple(sorted({n.split(".")[0] + "." for n, _ in model.named_parameters()} - {"dust3r."})))


def build_model(cfg: TrainConfig, ctx: DistContext, fresh: bool):
    from openlsm.models.lsm.model import LSM, LSMConfig

    torch.manual_seed(mix_seed(cfg.seed, 0x1417))  # identical initial weights on every rank
    model = LSM(LSMConfig.preset(cfg.model))
    geometry_only = LossWeights.preset(cfg.loss).geometry_only
    if fresh:  # a resumed run takes every weight from its checkpoint
        if cfg.init is not None:
            load_initial_weights(model, cfg.init, cfg.model)
        if cfg.semantic_weights is not None:  # after --init: swaps the extractor that --init brought
            load_semantic_weights(model, cfg.semantic_weights)
        elif cfg.init is None and ctx.is_main and not geometry_only:
            log.warning("no --semantic-weights: the frozen semantic extractor keeps random weights, so the feature "
                        "targets carry no semantics (train one with `openlsm train-semantics`)")
    freeze(model, tuple(cfg.freeze))
    freeze_unused(model, cfg.loss)
    model.to(ctx.device)
    if ctx.distributed and ctx.device.type == "cuda" and cfg.sync_bn:
        model.point_transformer = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.point_transformer)
    return model


# --- run folder / logs -------------------------------------------------------------------------------------------

def prepare_out(cfg: TrainConfig, ctx: DistContext) -> Path | None:
    """Checks on every rank, writes on rank 0. Returns the checkpoint to resume from (or None)."""
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not cfg.resume and not cfg.overwrite:
        raise OpenLSMError(f"{out} already holds a checkpoint: pass --resume to continue or --overwrite to restart")
    resume_from = ckpt if cfg.resume and ckpt.exists() else None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite and not cfg.resume:
            ckpt.unlink(missing_ok=True)
            (out / METRICS).unlink(missing_ok=True)
        from openlsm.io.outputs import dump_config

        tmp = out / ".config.yaml.tmp"
        dump_config(tmp, train=plain(cfg))
        os.replace(tmp, out / "config.yaml")
    ctx.barrier()
    return resume_from


# --- training ------------------------------------------------------------------------------------------------------

def amp_dtype_of(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


@torch.no_grad()
def validate(loss_module: LossModule, source, cfg: TrainConfig, micro: int) -> dict[str, float]:
    """Mean losses and target-view PSNR over the fixed validation rooms (eval mode)."""
    model = loss_module.model
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = len(source)
    for start in range(0, n, micro):
        pairs = [(i, 0) for i in range(start, min(n, start + micro))]
        gen = torch.Generator().manual_seed(mix_seed(cfg.seed, 0x7A1))
        _, scalars = loss_module(source.fetch(pairs), gen)
        for k, v in scalars.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(pairs)
    if was_training:
        set_train_mode(model)
    return {k: v / n for k, v in sums.items()}


def train(cfg: TrainConfig, callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume) per `cfg`. `callback(step, scalars)` runs at the end of every step, after its logging
    and checkpointing (tests use it to simulate a crash). Returns a summary dict (final step, why it stopped, last train/val metrics)."""
    t_start = time.perf_counter()
    ctx = setup_distributed(cfg.device)
    try:
        return _train(cfg, ctx, callback, t_start)
    finally:
        teardown_distributed(ctx)


def save_final_model(model, out: Path) -> None:
    """out/model/: an `LSM.save` folder (model.safetensors + config.json), what `openlsm eval` and `--init` take."""
    from openlsm.io.outputs import output_folder

    from .checkpoint import make_readable

    with output_folder(out / "model", overwrite=True) as tmp:
        model.save(tmp)
        make_readable(tmp)


def _train(cfg: TrainConfig, ctx: DistContext, callback, t_start: float) -> dict:
    cfg.validate(ctx.world_size)
    resume_from = prepare_out(cfg, ctx)
    state = load_checkpoint(resume_from) if resume_from else None
    if state is not None:
        saved = state["train_config"]
        changed = [k for k in RESUME_FIXED if plain(getattr(cfg, k)) != saved.get(k)]
        if changed:
            hint = "; to change the loss start a new run with --init OUT/model" if "loss" in changed else ""
            raise OpenLSMError(f"cannot resume {resume_from}: {', '.join(changed)} differ from the saved run "
                               f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}){hint}")
        if saved.get("world_size", 1) != ctx.world_size and ctx.is_main:
            log.warning("resuming a %s-rank run on %s ranks: same data, but batch statistics may differ",
                        saved.get("world_size", 1), ctx.world_size)

    device = ctx.device
    model = build_model(cfg, ctx, fresh=state is None)
    groups = param_groups(model, cfg.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    if not trainable:
        raise OpenLSMError("every parameter is frozen; nothing to train")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_at(s, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.cosine) / cfg.lr)
    amp_dtype = amp_dtype_of(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ranks = state["rng"]
        set_rng_states(ranks[ctx.rank] if len(ranks) == ctx.world_size else ranks[0])
        step = int(state["step"])
        if ctx.is_main:
            truncate_metrics(Path(cfg.out) / METRICS, step)
    del state

    loss_module = LossModule(model, LossWeights.preset(cfg.loss), amp_dtype)
    runner = loss_module
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # find_unused_parameters: the DPT's last refinenet block has an unused residual unit (as in DUSt3R)
        runner = DDP(loss_module, device_ids=[device.index] if device.type == "cuda" else None,
                     find_unused_parameters=True)
    train_src = make_source(cfg.data, "train", cfg.resolution, cfg.views, cfg.train_size, device,
                            cfg.resample_cameras, cfg.cache_data, cfg.data_workers)
    val_src = make_source(cfg.data, "val", cfg.resolution, cfg.views, cfg.val_size, device, False, True) \
        if ctx.is_main and cfg.val_size > 0 else None
    reporter = Reporter(cfg, ctx.is_main)
    local = cfg.batch_size // ctx.world_size
    micro = local // cfg.accum_steps
    n_params = sum(p.numel() for p in trainable)
    # final checkpoint + model/ before any was timed: ~16 bytes per parameter (weights, AdamW moments, model/)
    # written at >= 200 MB/s
    save_estimate = 16 * sum(p.numel() for p in model.parameters()) / 200e6
    reporter.note(f"[bold]openlsm train[/] {cfg.model} @ {cfg.resolution}², {n_params / 1e6:.2f} M trainable, "
                  f"{ctx.world_size} rank(s) on {device}, batch {cfg.batch_size} "
                  f"({ctx.world_size}x{cfg.accum_steps}x{micro}), {'resuming at step ' + str(step) if step else 'from step 0'}")

    def checkpoint(at: int) -> float:
        t = time.perf_counter()
        rngs = ctx.gather_objects(rng_states())
        if ctx.is_main:
            save_checkpoint(Path(cfg.out) / CHECKPOINT, {
                "step": at, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                "data": {"samples_seen": -(-at // reuse) * cfg.batch_size, "train_rooms": len(train_src)},
                "train_config": {**plain(cfg), "world_size": ctx.world_size}})
            if cfg.export_weights:
                export_weights(model.state_dict(), Path(cfg.out) / "weights", plain(cfg), at)
        ctx.barrier()
        return time.perf_counter() - t

    val_time = [0.0]

    def run_validation(at: int) -> dict:
        out = {}
        t = time.perf_counter()
        if val_src is not None:
            out = validate(loss_module, val_src, cfg, micro)
            reporter.write({"step": at, "split": "val", **out, "time_s": round(time.perf_counter() - t, 3)})
        ctx.barrier()
        val_time[0] = time.perf_counter() - t
        return out

    stop_reason, last, last_val = "done", {}, {}
    step_times: list[float] = []
    ckpt_time = 0.0
    window: dict[str, float] = {}
    window_n, window_t = 0, time.perf_counter()
    set_train_mode(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    def pairs_of(s: int) -> list[tuple[int, int]]:  # this rank's slice of data step s's global batch
        return global_batch(cfg.seed, s, cfg.batch_size, len(train_src))[ctx.rank * local:(ctx.rank + 1) * local]

    reuse = cfg.batch_reuse
    fetched: tuple[int, dict] | None = None  # (data step, its batch): optimizer step s trains on data step s // reuse

    prefetcher = Prefetcher(train_src, cfg.prefetch and device.type == "cuda")
    # closing train_src ends its worker processes with the loop, also on errors
    with StopFlag() as stop, contextlib.closing(prefetcher), contextlib.closing(train_src):
        while step < cfg.steps:
            t0 = time.perf_counter()
            data_step = step // reuse
            if fetched is None or fetched[0] != data_step:
                fetched = (data_step, prefetcher.get(data_step, pairs_of(data_step)))
                if (data_step + 1) * reuse < cfg.steps:
                    prefetcher.schedule(data_step + 1, pairs_of(data_step + 1))
            batch = swap_inputs(fetched[1]) if step % reuse % 2 else fetched[1]
            t_data = time.perf_counter() - t0
            sums: dict[str, torch.Tensor] = {}
            for a in range(cfg.accum_steps):
                shard = ctx.rank * cfg.accum_steps + a  # this micro-batch's place in the global batch
                key = mix_seed(cfg.seed, step, shard)
                torch.manual_seed(key)  # drop-path & co. depend on (seed, step, shard) only
                gen = torch.Generator().manual_seed(key)
                chunk = {k: v[a * micro:(a + 1) * micro] for k, v in batch.items()}
                sync = runner.no_sync() if ctx.distributed and a < cfg.accum_steps - 1 else contextlib.nullcontext()
                with sync:
                    loss, scalars = runner(chunk, gen)
                    scaler.scale(loss / cfg.accum_steps).backward()
                for k, v in scalars.items():
                    sums[k] = sums.get(k, 0) + v / cfg.accum_steps
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            finite = bool(torch.isfinite(grad_norm))
            if finite or scaler.is_enabled():
                scaler.step(opt)  # a scaler skips non-finite steps itself
            scaler.update()
            opt.zero_grad(set_to_none=True)
            lr = opt.param_groups[0]["lr"]
            sched.step()
            step += 1
            step_times.append(time.perf_counter() - t0)
            for k, v in {**sums, "grad_norm": grad_norm.detach().float(), "skipped": torch.tensor(float(not finite))}.items():
                window[k] = window.get(k, 0.0) + v.to(device)
            window_n += 1

            if step % cfg.log_every == 0 or step == cfg.steps:
                means = ctx.all_mean({k: v / window_n for k, v in window.items()})
                elapsed = time.perf_counter() - window_t
                rate = window_n * cfg.batch_size / max(elapsed, 1e-9)
                last = {k: float(v) for k, v in means.items()}
                rec = {"step": step, "split": "train", **last, "lr": lr, "pairs_per_s": rate,
                       "data_s": t_data, "step_s": step_times[-1],
                       "eta_min": (cfg.steps - step) * cfg.batch_size / max(rate, 1e-9) / 60,
                       "elapsed_min": (time.perf_counter() - t_start) / 60}
                if device.type == "cuda":
                    rec["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                reporter.write(rec)
                window, window_n, window_t = {}, 0, time.perf_counter()
            if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                last_val = run_validation(step)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                ckpt_time = checkpoint(step)

            if callback is not None:
                callback(step, {k: float(v) for k, v in sums.items()})
            # Stop early when a signal arrived or the next step (with a validation and the final checkpoint, at
            # their last measured cost, plus margins) could overrun the time budget.
            recent = sorted(step_times[-20:])[len(step_times[-20:]) // 2]
            needed = 2 * recent + 2 * max(ckpt_time, save_estimate) + val_time[0] + 5
            over = cfg.max_minutes is not None and time.perf_counter() - t_start + needed >= cfg.max_minutes * 60
            if ctx.any(stop.signal is not None or over) and step < cfg.steps:
                stop_reason = "signal" if stop.signal is not None else "time"
                break
    if stop_reason == "done":
        last_val = run_validation(step)
    checkpoint(step)
    if ctx.is_main:
        save_final_model(model, Path(cfg.out))
    ctx.barrier()
    summary = {"step": step, "steps": cfg.steps, "stopped": stop_reason, "train": last, "val": last_val,
               "minutes": (time.perf_counter() - t_start) / 60, "out": str(cfg.out)}
    if stop_reason != "done":
        reporter.note(f"[yellow]stopped at step {step}/{cfg.steps} ({stop_reason}); continue with --resume[/]")
    return summary
