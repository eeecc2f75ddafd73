"""Host reads of tensor values in one `small` full-loss training step, by stage (CPU): each is a host sync on a GPU.

    python bench/count_host_reads.py            # shipped weights, one SynthRooms training sample, three views

Counts calls of Tensor.item / tolist / __int__ / __float__ / __bool__ / __index__ / nonzero and of torch.unique,
unique_consecutive, repeat_interleave and nonzero (data-dependent output sizes), attributed to the model stage
running at the time. Prints one line per (stage, call) and a JSON line of totals per stage.
"""

from __future__ import annotations

import collections
import json

import torch

import openlsm.train.step as step_module
from openlsm.data.synthrooms.dataset import SynthRooms
from openlsm.models.lsm import LSM
from openlsm.train.losses import LossWeights
from openlsm.train.step import LossModule

STAGE = ["setup"]  # loading the weights, rendering the sample
COUNTS: collections.Counter = collections.Counter()


def in_stage(name, fn):
    def run(*args, **kwargs):
        previous, STAGE[0] = STAGE[0], name
        try:
            return fn(*args, **kwargs)
        finally:
            STAGE[0] = previous
    return run


def counted(fn, label):
    def run(*args, **kwargs):
        COUNTS[(STAGE[0], label)] += 1
        return fn(*args, **kwargs)
    return run


def main() -> None:
    torch.set_num_threads(2)
    for name in ("item", "tolist", "__int__", "__bool__", "__float__", "nonzero", "__index__"):
        setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name), name))
    for name in ("unique", "unique_consecutive", "repeat_interleave", "nonzero"):
        setattr(torch, name, counted(getattr(torch, name), "torch." + name))
    model = LSM.load("src/openlsm/weights/lsm_small").train()
    for name in ("dust3r", "lseg_feature_extractor", "point_transformer", "gaussian_head"):
        module = getattr(model, name)
        module.forward = in_stage(name, module.forward)
    step_module.render = in_stage("render", step_module.render)
    loss_module = LossModule(model, LossWeights.preset("paper"), None)
    batch = SynthRooms("train", 256, views=3).sample_batch([0])
    STAGE[0] = "forward"
    loss, _ = loss_module(batch, torch.Generator().manual_seed(0))
    STAGE[0] = "backward"
    loss.backward()
    totals: collections.Counter = collections.Counter()
    for (stage, label), n in sorted(COUNTS.items()):
        totals[stage] += n
        print(f"{stage:20s} {label:28s} {n}")
    print(json.dumps({"host_reads": dict(totals)}))


if __name__ == "__main__":
    main()
