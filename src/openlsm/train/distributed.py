"""Process-group set-up for `torchrun --nproc_per_node=N openlsm train ...` (env:// variables), no-ops alone.

    ctx = setup_distributed("auto")      # DistContext(rank, world_size, local_rank, device)
    ...
    ctx.all_mean({"loss": loss})          # averaged over ranks (identity when world_size == 1)
    teardown_distributed(ctx)

NCCL on CUDA, gloo on CPU. Each rank drives the GPU `cuda:LOCAL_RANK`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from openlsm.errors import OpenLSMError
from openlsm.runtime import pick_device

CPU = torch.device("cpu")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = CPU
    owns_group: bool = False  # we created the process group (and destroy it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean over ranks of 0-d tensors (one collective for the whole dict)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        packed = torch.stack([values[k].detach().float().to(self.device) for k in keys])
        dist.all_reduce(packed)
        return {k: v / self.world_size for k, v in zip(keys, packed)}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return DistContext(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise OpenLSMError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    return DistContext(rank, world, local_rank, dev, owns)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
