"""Count the PyTorch ops (dispatcher calls) of one LSM forward per stage, on the CPU but along the GPU's code path
(im2col sparse conv, unchunked point-transformer blocks, capped kNN search): on a GPU an eager forward is bound by
how many ops it launches, not by their arithmetic, so this is a CPU-side proxy for the host time there. Since
session 12 a GPU with Triton runs the kNN as one kernel (`knn_tiles`: a sort and a few dozen ops) instead of the
capped grid search counted here, which is still its `method="grid"` and fallback.

    python bench/count_ops.py                       # shipped weights, bundled armchairs pair, 256²
    python bench/count_ops.py --functions           # also per point-transformer function
    python bench/count_ops.py --knn-capped none     # the kNN's grouped search instead

Views count as ops here (they cost host time, launch no kernel). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from openlsm.examples import example_images
from openlsm.models.lsm import fusion, ptv3, sparse_conv
from openlsm.models.lsm import gaussian_head as head_module
from openlsm.models.lsm import knn as knn_module
from openlsm.reconstruct import as_prepared, load_lsm

STAGES = ("geometry", "semantics", "point_transformer", "gaussian_head")
STACK = ["other"]
COUNTS: collections.Counter = collections.Counter()  # per stage
FUNCTIONS: collections.Counter = collections.Counter()  # per innermost labelled function


class _Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        COUNTS[next((s for s in STACK if s in STAGES), "other")] += 1
        if STACK[-1] not in STAGES:
            FUNCTIONS[STACK[-1]] += 1
        return func(*args, **(kwargs or {}))


def _label(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        STACK.append(label)
        try:
            return fn(*args, **kwargs)
        finally:
            STACK.pop()

    setattr(owner, name, wrapped)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default="src/openlsm/weights/lsm_small")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--functions", action="store_true", help="also count inside the point transformer's functions")
    p.add_argument("--knn-capped", default=str(getattr(knn_module, "CAPPED_QUANTILE", "none")),
                   help='the kNN search ("none": grouped, with the GPU\'s chunk sizes)')
    a = p.parse_args()
    model = load_lsm(a.checkpoint, "cpu")
    ptv3.chunked = lambda feats: False  # the GPU path of the blocks
    for m in model.modules():
        if hasattr(m, "conv_method"):
            m.conv_method = "im2col"
    # "none" passes no `capped`, so older versions of the kNN (without the option) can be counted too
    capped = {} if a.knn_capped == "none" else {"capped": float(a.knn_capped)}
    head_module.knn_mean_sq_dist = functools.partial(knn_module.knn_mean_sq_dist, max_elements=1 << 26,
                                                     chunk_growth=2.0, **capped)  # the GPU's chunk sizes
    for label, mod in zip(STAGES, (model.dust3r, model.lseg_feature_extractor, model.point_transformer,
                                   model.gaussian_head)):
        _label(mod, "forward", label)
    if a.functions:
        for owner, name in ((ptv3, "encode_orders"), (ptv3, "patch_layout"), (ptv3, "pool_level"),
                            (sparse_conv.VoxelIndex, "neighbours"), (sparse_conv.VoxelIndex, "build"),
                            (sparse_conv, "submanifold_conv3d_voxels"), (fusion, "attend"),
                            (ptv3.SerializedAttention, "forward"), (ptv3.Block, "forward")):
            _label(owner, name, f"{owner.__name__.split('.')[-1]}.{name}")
    x = as_prepared(example_images("armchairs"), a.size).images * 2 - 1  # [2, 3, H, W]
    with torch.no_grad():
        model(x[:1], x[1:])  # warm-up: caches, lazy imports
        COUNTS.clear()
        FUNCTIONS.clear()
        with _Count():
            model(x[:1], x[1:])
    print(json.dumps({"bench": "count_ops", "checkpoint": a.checkpoint, "size": a.size, "knn_capped": a.knn_capped,
                      "total": sum(COUNTS.values()), "stages": dict(COUNTS.most_common()),
                      "functions": dict(FUNCTIONS.most_common())}))


if __name__ == "__main__":
    main()
