"""reconstruct() with the tiny model: stages, geometry bookkeeping, the feature map, and model loading."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from openlsm.cameras import invert_rigid
from openlsm.errors import OpenLSMError
from openlsm.reconstruct import load_lsm, reconstruct

NAMES = ["wall", "floor", "chair"]
R = 32


@pytest.fixture(scope="module")
def scene(tiny_model, hash_encoder):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 40, 52, generator=g), torch.rand(3, 45, 36, generator=g)]  # any sizes
    stages = []
    s = reconstruct(tiny_model, images, labels=NAMES, resolution=R, text_encoder=hash_encoder,
                    progress=stages.append)
    s.info["stages_seen"] = stages
    return s


def test_stages_are_timed_in_order(scene):
    order = ["preprocess", "forward", "camera_recovery", "semantic_decode"]
    assert scene.info["stages_seen"] == order
    assert list(scene.timings) == order and all(v >= 0 for v in scene.timings.values())


def test_geometry_bookkeeping(scene):
    assert len(scene.gaussians) == 2 * R * R and scene.pixel_aligned and scene.size == (R, R)
    assert torch.equal(scene.cameras.c2w[0], torch.eye(4))  # view 1 is the world frame
    R_ = scene.cameras.c2w[1, :3, :3].double()
    assert torch.allclose(R_ @ R_.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    means = scene.gaussians.means.reshape(2, R, R, 3)  # LSM's Gaussians sit on the predicted points
    assert torch.allclose(scene.depths[0], means[0, ..., 2].clamp_min(0))
    w2c = invert_rigid(scene.cameras.c2w[1].double())
    z2 = (means[1].double() @ w2c[:3, :3].T + w2c[:3, 3])[..., 2]
    assert torch.allclose(scene.depths[1].double(), z2.clamp_min(0), atol=1e-4)
    assert scene.images.shape == (2, 3, R, R) and scene.transforms[1].input_size == (36, 45)


def test_feature_map_is_the_models_1x1_conv(scene, tiny_model):
    conv = tiny_model.feature_expansion[1]
    f = scene.gaussians.features[:100]  # [100, F]
    via_conv = conv(f.T[None, :, None, :])[0, :, 0, :].T  # treat the Gaussians as a 1 x 100 image
    assert torch.allclose(scene.to_text_space(f), via_conv, atol=1e-5)
    assert scene.text_dim == tiny_model.config.semantic_dim


def test_labels_are_decoded(scene):
    seg = scene.default_segmentation()
    assert seg.names == NAMES and seg.view_labels.shape == (2, R, R)
    assert torch.equal(seg.view_labels.flatten(), seg.labels)


def test_image_count_and_type_errors(tiny_model, hash_encoder):
    img = torch.rand(3, 32, 32)
    for bad in ([img], [img, img, img], "one.png", [img, "x.png"]):
        with pytest.raises(OpenLSMError):
            reconstruct(tiny_model, bad, resolution=R)
    with pytest.raises(OpenLSMError, match="multiples of 16"):
        reconstruct(tiny_model, [img, img], resolution=40)


def test_explicit_labels_need_a_matching_encoder(tiny_model):
    from openlsm.models.semantics.text import TextEncoder

    class Wrong(TextEncoder):
        name, dim = "wrong", 7

        def _encode_batch(self, texts):
            return torch.ones(len(texts), 7)

    img = torch.rand(3, 32, 32)
    stages = []
    with pytest.raises(OpenLSMError, match="16-d"):
        reconstruct(tiny_model, [img, img.flip(-1)], labels=NAMES, resolution=R, text_encoder=Wrong(),
                    progress=stages.append)
    assert stages == []  # refused before any work
    with pytest.raises(OpenLSMError, match="16-d semantic space"):  # the tiny model has no real text encoder
        reconstruct(tiny_model, [img, img.flip(-1)], labels=NAMES, resolution=R)
    s = reconstruct(tiny_model, [img, img.flip(-1)], labels=NAMES, resolution=R, text_encoder=Wrong(),
                    strict_labels=False)
    assert s.labels is None and any("labels skipped" in w for w in s.info["warnings"])


def test_checkpoint_round_trip_and_wrong_models(tmp_path, tiny_model, tiny_checkpoint):
    back = load_lsm(tiny_checkpoint)
    a, b = tiny_model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from openlsm.models.checkpoint_io import save_model
    from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet

    save_model(tmp_path / "geo", GeometryNet(GeometryConfig.tiny()), GeometryConfig.tiny())
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "junk.json").write_text("{}")
    torch.save({"model": {"enc.weight": torch.zeros(2)}, "args": argparse.Namespace(model="AsymmetricCroCo3DStereo(x)")},
               tmp_path / "dust3r.pth")
    torch.save({"model": {"enc.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    for bad in ("geo", "junk.safetensors", "dust3r.pth", "other.pth", "missing"):
        with pytest.raises(OpenLSMError) as e:
            load_lsm(tmp_path / bad)
        assert "\n" not in str(e.value)


def test_text_space_is_affine_like_the_conv_with_upsampling_removed(tiny_model):
    """feature_expansion = Upsample(0.5) + 1x1 conv; on a constant map the upsample is the identity, so the
    per-Gaussian map must equal the whole module there."""
    conv = tiny_model.feature_expansion[1]
    f = torch.randn(conv.in_channels)
    const = f[None, :, None, None].expand(1, -1, 4, 4)
    full = tiny_model.expand_features(const)[0, :, 0, 0]
    w = conv.weight.reshape(conv.out_channels, conv.in_channels)
    assert torch.allclose(full, w @ f + conv.bias, atol=1e-5)
    assert torch.allclose(F.normalize(full, dim=0), F.normalize(w @ f + conv.bias, dim=0), atol=1e-5)


def test_view_fit_stages_run_only_with_recovered_cameras(tiny_model, monkeypatch):
    """The fits themselves are tested in tests/models/test_feature_fit.py and, on a real room, with the shipped
    weights."""
    import dataclasses

    import openlsm.reconstruct as rec

    images = [torch.rand(3, R, R, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    plain = reconstruct(tiny_model, images, resolution=R)
    assert "feature_fit" not in plain.timings and "color_fit" not in plain.timings  # off by default
    monkeypatch.setattr(tiny_model, "config", dataclasses.replace(tiny_model.config, feature_fit_iters=3,
                                                                  color_fit_iters=2, refine_steps=2))
    skipped = reconstruct(tiny_model, images, resolution=R)  # random weights: camera recovery falls back
    assert "refinement, colour fit, feature fit skipped: no recovered cameras" in skipped.info["warnings"]
    assert torch.equal(skipped.gaussians.features, plain.gaussians.features)
    assert torch.equal(skipped.gaussians.sh, plain.gaussians.sh)

    recover = rec.recover_scene_cameras  # take the fallback cameras as if recovered: the fits run through them
    monkeypatch.setattr(rec, "recover_scene_cameras", lambda *a: recover(*a)[:2] + (None,))
    fitted = reconstruct(tiny_model, images, resolution=R)
    assert list(fitted.timings) == ["preprocess", "forward", "camera_recovery", "refine", "color_fit",
                                    "feature_fit", "semantic_decode"]
    assert torch.equal(fitted.gaussians.sh[:, 1:], plain.gaussians.sh[:, 1:])
    assert torch.equal(fitted.gaussians.means, plain.gaussians.means)
    assert fitted.info["model"]["config"]["color_fit_iters"] == 2
    assert fitted.info["model"]["config"]["refine_steps"] == 2
    assert fitted.info["model"]["config"]["feature_fit_iters"] == 3  # recorded with the scene
