"""Baselines: per-scene 3DGS optimisation improves on its initialisation; SfM without pycolmap is unavailable;
2D-only segmentation decodes the extractor's features."""

import importlib.util

import pytest
import torch

from openlsm.cameras import Cameras
from openlsm.data.synthrooms import SynthRooms
from openlsm.eval.baselines import (
    BaselineUnavailable,
    GaussianFitConfig,
    init_gaussians,
    optimize_gaussians,
    render_views,
    segment_2d,
    sfm_two_view,
)
from openlsm.eval.metrics import image_metrics
from openlsm.metrics.align import relative_to_first


@pytest.fixture(scope="module")
def scene():
    s = SynthRooms("test", 32, views=3, length=1)[0]
    cams = Cameras(s["Ks"], relative_to_first(s["c2w"][None])[0], 32, 32)
    return s, cams


def test_3dgs_improves_psnr_over_its_initialisation(scene):
    s, cams = scene
    inputs = (s["images"][:2], s["depths"][:2], s["valid"][:2], cams[:2])
    cfg = GaussianFitConfig(steps=5, backend="torch")
    g0 = init_gaussians(*inputs, cfg)
    assert len(g0) == int(s["valid"][:2].sum())  # one Gaussian per valid input pixel
    teacher = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    losses = []
    g, info = optimize_gaussians(*inputs, cfg, teacher, callback=lambda step, loss: losses.append(loss))
    assert len(losses) == 5 and info["time_s"] > 0 and losses[-1] < losses[0]
    rgb0, _ = render_views(g0, cams, "torch")
    rgb, feats = render_views(g, cams, "torch")
    assert feats.shape == (3, 8, 16, 16)
    before, after = image_metrics(rgb0, s["images"])["psnr"], image_metrics(rgb, s["images"])["psnr"]
    assert torch.all(after[:2] > before[:2] + 1.0), (before, after)  # the input (training) views
    assert after[2] > before[2] + 0.5, (before, after)  # and the held-out target view


def test_3dgs_random_init_fits_too(scene):
    s, cams = scene
    inputs = (s["images"][:2], s["depths"][:2], s["valid"][:2], cams[:2])
    cfg = GaussianFitConfig(steps=4, init="random", stride=4, backend="torch")
    g0 = init_gaussians(*inputs, cfg)
    pts = g0.means
    assert len(g0) == int(s["valid"][:2, ::4, ::4].sum()) and torch.isfinite(pts).all()
    g, info = optimize_gaussians(*inputs, cfg)
    assert info["loss_last"] < info["loss_first"] and g.features is None


@pytest.mark.skipif(importlib.util.find_spec("pycolmap") is not None, reason="pycolmap is installed")
def test_sfm_without_pycolmap_is_unavailable(scene):
    s, _ = scene
    with pytest.raises(BaselineUnavailable, match="pycolmap"):
        sfm_two_view(s["images"][:2], s["Ks"][:2])


def test_segment_2d_decodes_extractor_features():
    class OneHot(torch.nn.Module):
        """Extractor stand-in: class 1 where the red channel is bright, else class 0, at half resolution."""

        def extract_semantics(self, images):
            red = torch.nn.functional.avg_pool2d(images[:, :1], 2) > 0  # images in [-1, 1]
            return torch.cat([~red, red], 1).float()  # [V, 2, H/2, W/2]

    from openlsm.models.semantics.base import SemanticExtractor

    model = OneHot()
    model.lseg_feature_extractor = SemanticExtractor()
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0, :, 4:] = 1.0  # right half red
    labels = segment_2d(model, images, torch.eye(2))
    assert labels.shape == (1, 8, 8)
    assert torch.all(labels[0, :, :3] == 0) and torch.all(labels[0, :, 5:] == 1)
