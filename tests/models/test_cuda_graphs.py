"""CUDA-graph replay of static LSM stages: the nest flattening (CPU) and graphed == eager (GPU only)."""

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch

from openlsm.models.cuda_graphs import GraphCache, flatten
from openlsm.models.lsm.model import LSM, LSMConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@dataclass
class Out:
    a: torch.Tensor
    rest: tuple
    tag: str


class Pair(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


def test_flatten_rebuilds_nests_with_new_tensors():
    t = [torch.full((2,), float(i)) for i in range(5)]
    nest = Out(t[0], (t[1], {"k": t[2], "n": 3}, Pair(t[3], t[4])), "name")
    tensors, build = flatten(nest)
    assert [int(x[0]) for x in tensors] == [0, 1, 2, 3, 4]
    new = build([x + 10 for x in tensors])
    assert isinstance(new, Out) and new.tag == "name" and new.rest[1]["n"] == 3
    assert isinstance(new.rest[2], Pair) and float(new.rest[2].y[0]) == 14.0
    assert float(new.a[0]) == 10.0 and float(new.rest[1]["k"][0]) == 12.0
    assert float(nest.a[0]) == 0.0  # the original is untouched


def test_cpu_and_training_fall_back_to_the_stage():
    calls = []
    graphs = GraphCache()

    def stage(x):
        calls.append(1)
        return x * 2

    x = torch.ones(3)
    with torch.no_grad():
        assert torch.equal(graphs.run("s", stage, x), x * 2)  # CPU input: called directly
    assert graphs.captures == 0 and len(calls) == 1
    model = LSM(LSMConfig.tiny()).use_cuda_graphs()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = LSM(LSMConfig.tiny()).eval()
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.eval()(img, img.flip(-1)).gaussians.means,
                                   ref(img, img.flip(-1)).gaussians.means)
    assert model.graphs.captures == 0
    assert "graphs" not in "".join(model.state_dict())  # the cache is not part of the weights


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphed_forward_equals_eager_on_gpu(dtype):
    torch.manual_seed(0)
    model = LSM(LSMConfig.small()).cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(1)
    pairs = [(torch.rand(1, 3, 64, 96, device="cuda", generator=g) * 2 - 1,
              torch.rand(1, 3, 64, 96, device="cuda", generator=g) * 2 - 1) for _ in range(2)]
    with torch.inference_mode(), torch.autocast("cuda", dtype, enabled=dtype != torch.float32):
        eager = [model(a, b) for a, b in pairs]
        model.use_cuda_graphs()
        graphed = [model(a, b) for a, b in pairs]  # the second pair replays the graphs of the first
    assert model.graphs.captures == 2  # geometry + semantics, once
    for e, r in zip(eager, graphed, strict=True):
        torch.testing.assert_close(r.geometry.pts3d_2, e.geometry.pts3d_2, rtol=0, atol=0)
        torch.testing.assert_close(r.semantic_features, e.semantic_features, rtol=0, atol=0)
    # the outputs are copies: a later replay must not overwrite what an earlier call returned
    assert not torch.equal(graphed[0].geometry.pts3d_1, graphed[1].geometry.pts3d_1)
