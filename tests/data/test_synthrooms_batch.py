"""Batched SynthRooms (merge_scenes / render_batch / make_samples) equals the per-sample path."""

import numpy as np
import torch

from openlsm.cameras import Cameras
from openlsm.data.synthrooms import SynthConfig, SynthRooms, make_sample, make_samples
from openlsm.data.synthrooms.raycast import RenderConfig, render, render_batch, scene_tensors
from openlsm.data.synthrooms.sampler import sample_views
from openlsm.data.synthrooms.scene import generate_scene


def test_render_batch_matches_render():
    # seeds mixing box and L-shaped rooms, different light and primitive counts (padding is exercised)
    scenes = [generate_scene(s) for s in (3, 5, 8)]
    sts = [scene_tensors(sc) for sc in scenes]
    assert len({st.room_lo.shape[1] for st in sts}) == 2 and len({st.lights.shape[1] for st in sts}) == 2
    cams = [sample_views(st, sc, np.random.default_rng(1), 40, 32)[0] for st, sc in zip(sts, scenes)]
    batch = Cameras(torch.stack([c.Ks for c in cams]), torch.stack([c.c2w for c in cams]), 40, 32)
    cfg = RenderConfig(supersample=2)
    out = render_batch(sts, batch, cfg)
    for i, (st, c) in enumerate(zip(sts, cams)):
        ref = render(st, c, cfg)
        for k in ("depth", "valid", "labels", "instances"):
            assert torch.equal(out[k][i], ref[k]), k
        for k in ("rgb", "normals"):
            assert (out[k][i] - ref[k]).abs().max() <= 1e-5, k
        assert ref["valid"].float().mean() > 0.9  # a real image, not an empty one


def test_make_samples_matches_make_sample():
    cfg = SynthConfig(24, 32, 3)
    seeds = [11, 21]
    batch = make_samples(seeds, cfg)
    for i, s in enumerate(seeds):
        ref = make_sample(s, cfg)
        for k, v in ref.items():
            assert torch.equal(batch[k][i], v), k
    ds = SynthRooms("val", resolution=(24, 32), views=2, length=4)
    b = ds.sample_batch([2, 0])
    assert b["images"].shape == (2, 2, 3, 24, 32) and torch.equal(b["depths"][1], ds[0]["depths"])
