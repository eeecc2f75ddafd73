"""Replay static-shape inference stages as CUDA graphs.

A forward of the `paper` LSM launches thousands of small kernels; on an H100 the host spends several times
longer issuing them than the GPU spends running them. A CUDA graph records a stage's kernels once per input
signature (shapes, dtypes, device, autocast state) and then replays them with a single launch: each call copies
its inputs into the graph's input buffers, replays, and returns copies of the output buffers.

    graphs = GraphCache()
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
        geo = graphs.run("geometry", model.dust3r, img1, img2)   # first call per shape: warm-up + capture

Only for stages whose work does not depend on the values of their inputs (no host syncs, no data-dependent
shapes), without autograd: `run` falls back to calling the stage when gradients are enabled or an input is not
a CUDA tensor. The stage's weights must not be replaced afterwards (in-place updates are fine: the graph reads
the same memory); call `clear()` after loading other weights into new tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def flatten(obj: Any) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    """Tensors of a nest of tensors, tuples, lists, dicts and dataclasses (other leaves kept as they are), and a
    function that builds the same nest from a list of replacement tensors."""
    if isinstance(obj, Tensor):
        return [obj], lambda ts: ts[0]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = [f.name for f in dataclasses.fields(obj)]
        tensors, build = flatten([getattr(obj, n) for n in names])
        return tensors, lambda ts: dataclasses.replace(obj, **dict(zip(names, build(ts), strict=True)))
    if isinstance(obj, dict):
        keys = list(obj)
        tensors, build = flatten([obj[k] for k in keys])
        return tensors, lambda ts: dict(zip(keys, build(ts), strict=True))
    if isinstance(obj, (tuple, list)):
        parts = [flatten(x) for x in obj]
        sizes = [len(t) for t, _ in parts]

        def build(ts: list[Tensor]):
            out, i = [], 0
            for (_, b), n in zip(parts, sizes, strict=True):
                out.append(b(ts[i:i + n]))
                i += n
            return type(obj)(out) if isinstance(obj, list) or type(obj) is tuple else type(obj)(*out)

        return [t for ts, _ in parts for t in ts], build
    return [], lambda ts: obj


class GraphCache:
    """CUDA graphs of named stages, one per input signature; see the module docstring."""

    def __init__(self, warmup: int = 2):
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[list[Tensor], list[Tensor], Callable, torch.cuda.CUDAGraph]] = {}
        self.captures = 0  # how many graphs were recorded (tests and benchmarks read it)

    def clear(self) -> None:
        self.graphs.clear()

    def run(self, name: str, stage: Callable, *args: Tensor):
        if torch.is_grad_enabled() or not all(isinstance(a, Tensor) and a.is_cuda for a in args):
            return stage(*args)
        autocast = torch.is_autocast_enabled("cuda")
        key = (name, autocast, torch.get_autocast_dtype("cuda") if autocast else None,
               tuple((tuple(a.shape), a.dtype, a.device) for a in args))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(stage, args, autocast)
        inputs, outputs, build, graph = entry
        for buf, a in zip(inputs, args, strict=True):
            buf.copy_(a)
        graph.replay()
        return build([t.clone() for t in outputs])

    def _capture(self, stage: Callable, args: tuple[Tensor, ...], autocast: bool):
        inputs = [a.clone() for a in args]
        # autocast's cache of cast weights would live in (and be freed from) the graph's memory: keep it off
        cast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=autocast, cache_enabled=False)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), cast:  # warm-up off the default stream, as capture requires
            for _ in range(self.warmup):
                stage(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), cast:
            out = stage(*inputs)
        outputs, build = flatten(out)
        self.captures += 1
        return inputs, outputs, build, graph
