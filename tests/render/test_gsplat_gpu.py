"""The gsplat inference path (compiled kernels, fused SH, 32-channel passes) against the autograd gsplat path and the
PyTorch backend. GPU only: skipped without CUDA and gsplat (run on the device by bench/gpu_session10.sh)."""

import importlib.util

import pytest
import torch

from openlsm.cameras import Cameras, look_at
from openlsm.gaussians import Gaussians
from openlsm.render import render

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("gsplat") is None,
                                reason="needs CUDA and gsplat")


def scene(n: int, sh_degree: int, feature_dim: int, cameras: int, size: int = 96):
    g = Gaussians.random(n, sh_degree=sh_degree, feature_dim=feature_dim, seed=1).to("cuda")
    eyes = torch.tensor([[0.3, -0.4, -3.0], [-0.5, 0.2, -2.5], [0.0, 0.5, -3.5]])[:cameras]
    c2w = look_at(eyes, torch.zeros(cameras, 3), torch.tensor([0.0, -1, 0]))
    return g, Cameras.from_fov(60, size, size, c2w).to("cuda")


def with_grad(g: Gaussians) -> Gaussians:
    """The same Gaussians with gradients asked for: render() takes the autograd path."""
    return Gaussians(means=g.means.clone().requires_grad_(), quats=g.quats, log_scales=g.log_scales,
                     opacity_logits=g.opacity_logits, sh=g.sh, features=g.features)


@pytest.mark.parametrize("sh_degree,feature_dim,cameras", [(0, 64, 1), (3, 64, 1), (1, 40, 3), (3, 20, 2), (2, 0, 2)])
def test_inference_path_matches_autograd_path(sh_degree, feature_dim, cameras):
    # 40 channels = passes of 32 + 8 (compiled), 20 = one padded pass (public function), 0 = no features
    g, cams = scene(3000, sh_degree, feature_dim, cameras)
    with torch.no_grad():
        fast = render(g, cams, backend="gsplat")
    slow = render(with_grad(g), cams, backend="gsplat")
    assert fast.rgb.shape == slow.rgb.shape == (cameras, 96, 96, 3)
    torch.testing.assert_close(fast.rgb, slow.rgb.detach(), atol=2e-5, rtol=0)  # SH: gsplat's kernel vs ours
    torch.testing.assert_close(fast.alpha, slow.alpha.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.depth, slow.depth.detach(), atol=1e-5, rtol=1e-5)
    if feature_dim:
        torch.testing.assert_close(fast.features, slow.features.detach(), atol=1e-6, rtol=0)
    else:
        assert fast.features is None and slow.features is None


def test_inference_path_agrees_with_pytorch_backend():
    g, cams = scene(3000, 3, 64, 2)
    with torch.no_grad():
        fast = render(g, cams, backend="gsplat")
        ref = render(g, cams, backend="torch")
    for a, b in ((fast.rgb, ref.rgb), (fast.features, ref.features), (fast.alpha, ref.alpha)):
        d = (a - b).abs().flatten()
        assert d.quantile(0.999) < 1e-4 and d.mean() < 1e-5  # (a pair at the 1/255 cut-off may flip: see benchmarks)


def test_inference_renders_are_repeatable():
    g, cams = scene(20000, 3, 64, 1, size=256)
    with torch.no_grad():
        first = render(g, cams, backend="gsplat")
        for _ in range(5):
            again = render(g, cams, backend="gsplat")
            assert torch.equal(again.rgb, first.rgb) and torch.equal(again.features, first.features)
