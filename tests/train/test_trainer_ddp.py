"""A 2-process gloo DDP step equals a single-process step on the same global batch.

The point transformer has BatchNorm (statistics per forward), so the single-process reference runs the global
batch of 2 as 2 accumulated micro-batches of 1: the same per-forward batches the 2 ranks see. Gradients are
compared through AdamW's first moment after one step (exp_avg = (1 - beta1) grad), and so are the parameters.
They agree exactly: averaging 2 gradients (DDP: (g0 + g1) / 2; accumulation: g0 / 2 + g1 / 2) only involves a
power-of-two scaling and one commutative addition. (A run on sample 0 alone differs by ~5e-2 in exp_avg.)
"""

import dataclasses
import multiprocessing as mp
import os
import socket

import torch

from openlsm.models.lsm import LSM, LSMConfig
from openlsm.train.checkpoint import load_checkpoint
from openlsm.train.trainer import TrainConfig, train


def config(out, **kw) -> TrainConfig:
    base = TrainConfig(model="tiny", resolution=32, views=2, train_size=2, resample_cameras=False, cache_data=True,
                       val_size=0, steps=1, batch_size=2, lr=2e-3, warmup_steps=1, grad_clip=0.0, log_every=1,
                       val_every=0, ckpt_every=0, out=out, device="cpu", quiet=True)
    return dataclasses.replace(base, **kw)


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(config(out))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=ddp_worker, args=(r, 2, port, str(tmp_path / "ddp"))) for r in range(2)]
    for p in procs:
        p.start()
    train(config(tmp_path / "single", accum_steps=2))  # meanwhile, the reference
    for p in procs:
        p.join(timeout=180)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]

    ddp, single = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt"), load_checkpoint(tmp_path / "single" /
                                                                                        "checkpoint.pt")
    assert ddp["train_config"]["world_size"] == 2 and single["train_config"]["world_size"] == 1
    names = [n for n, p in LSM(LSMConfig.tiny()).named_parameters()]
    for n in names:
        assert torch.equal(ddp["model"][n], single["model"][n]), n
    moments_d = [s["exp_avg"] for s in ddp["optimizer"]["state"].values()]
    moments_s = [s["exp_avg"] for s in single["optimizer"]["state"].values()]
    assert len(moments_d) == len(moments_s) > 0
    nonzero = 0
    for a, b in zip(moments_d, moments_s):
        assert torch.equal(a, b)
        nonzero += int(b.abs().sum() > 0)
    assert nonzero > len(moments_s) // 2  # real gradients were compared, not zeros
