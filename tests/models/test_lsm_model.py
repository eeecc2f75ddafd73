"""Full LSM: official key set and parameter counts (meta device), tiny forward, checkpoint loading."""

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.lsm.model import LSM, LSMConfig, count_parameters, load_official_lsm_checkpoint
from openlsm.models.semantics.lseg import LSegConfig

TSV = Path(__file__).parent / "data" / "lsm_state_dict.tsv"


def _images(B, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g) * 2 - 1, torch.rand(B, 3, H, W, generator=g) * 2 - 1


def _brute_nn(points):
    """[M, 3] -> sqrt of the mean squared distance to the 3 nearest other points, float64."""
    p = points.double()
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    d2.fill_diagonal_(float("inf"))
    return d2.sort(1).values[:, :3].mean(1).clamp_min(1e-7).sqrt()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LSM(LSMConfig.tiny()).eval()


def test_paper_state_dict_matches_official_tsv():
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    expected = {k: tuple(int(s) for s in shape.split(",") if s) for k, shape, _ in rows}
    with torch.device("meta"):
        model = LSM(LSMConfig.paper())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(got) == len(expected) == 2087
    assert set(got) == set(expected)
    assert got == expected
    counts = {"dust3r": 571_171_208, "point_transformer": 33_689_888, "lseg_feature_extractor": 495_136_489,
              "gaussian_head": 7_800, "feature_expansion": 33_280, "feature_reduction": 32_832}
    for name, n in counts.items():
        assert count_parameters(getattr(model, name)) == n, name
    assert count_parameters(model) == 1_100_071_497
    assert "gaussian_head.sh_mask" not in got
    assert not any(p.requires_grad for p in model.lseg_feature_extractor.parameters())  # frozen LSeg


def test_tiny_forward_gives_valid_gaussians(tiny_model):
    B, H, W = 2, 32, 48
    img1, img2 = _images(B, H, W, 0)
    with torch.no_grad():
        out = tiny_model(img1, img2)
    g, geo = out.gaussians, out.geometry
    n = 2 * H * W
    assert g.means.shape == (B, n, 3) and g.quats.shape == (B, n, 4) and g.log_scales.shape == (B, n, 3)
    assert g.opacity_logits.shape == (B, n) and g.sh.shape == (B, n, 16, 3) and g.features.shape == (B, n, 16)
    for t in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, g.features):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    # Means are the point maps, view-1 pixels then view-2 pixels, row-major.
    torch.testing.assert_close(out.view(0).means, geo.pts3d_1.reshape(B, H * W, 3))
    torch.testing.assert_close(out.view(1).means, geo.pts3d_2.reshape(B, H * W, 3))
    torch.testing.assert_close(g.means[:, H * W + 5 * W + 7], geo.pts3d_2[:, 5, 7])
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(B, n))
    for b in range(B):  # scales inside [0.1, 3] x the sample's median NN distance (float64 reference)
        med = _brute_nn(g.means[b]).median()
        rel = g.scales[b].double() / med
        assert rel.min() >= 0.1 - 1e-5 and rel.max() <= 3.0 + 1e-5
    # Normalisation of the merged points: coords in [-1, 1] with max |coord| = 1.
    coords = (g.means - out.center) / out.scale
    torch.testing.assert_close(coords.abs().amax(dim=(1, 2)), torch.ones(B))
    assert out.semantic_features.shape == (B, 2, 16, H // 2, W // 2)
    assert out.center.shape == (B, 1, 3) and out.scale.shape == (B, 1, 1)
    assert tiny_model.expand_features(torch.zeros(1, 16, H, W)).shape == (1, 16, H // 2, W // 2)


def test_batch_independence(tiny_model):
    img1, img2 = _images(2, 32, 32, 1)
    with torch.no_grad():
        both = tiny_model(img1, img2).gaussians
        one = tiny_model(img1[1:], img2[1:]).gaussians
    torch.testing.assert_close(both.features[1:], one.features, rtol=1e-4, atol=1e-5)
    # Untrained point maps are dense (NN distance ~1e-4): last-bit differences of the batched geometry
    # pass move the kNN scales by ~1e-4 relative.
    torch.testing.assert_close(both.log_scales[1:], one.log_scales, rtol=0, atol=2e-3)
    torch.testing.assert_close(both.means[1:], one.means, rtol=1e-5, atol=1e-6)


def _lifted_and_targets(model, img1, img2):
    """Lifted features [B, 2HW, d] and the (upsampled, bias-free) extractor features they fit [B, 2HW, D]."""
    with torch.no_grad():
        out = model(img1, img2)
    conv = model.feature_expansion[1]
    wm, bias = conv.weight[:, :, 0, 0].double(), conv.bias.double()
    sem = out.semantic_features.flatten(0, 1).double()  # [2B, D, H/2, W/2]
    up = torch.nn.functional.interpolate(sem, scale_factor=2, mode="bilinear")
    b, h, w = img1.shape[0], img1.shape[2], img1.shape[3]
    targets = up.permute(0, 2, 3, 1).reshape(b, 2 * h * w, -1) - bias
    return out.gaussians.features.double(), targets, wm


def test_semantic_lift_is_the_least_squares_inverse_of_the_expansion():
    cfg = LSMConfig.tiny()
    cfg.head = replace(cfg.head, feature_dim=8)  # expansion 8 -> 16: a tall matrix, so the inverse is a real fit
    torch.manual_seed(3)
    model = LSM(cfg).eval()
    B, H, W = 2, 32, 32
    img1, img2 = _images(B, H, W, 4)
    with torch.no_grad():
        head = model(img1, img2)
        model.config.semantic_lift = True
        lifted = model(img1, img2)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):  # only the features change
        assert torch.equal(getattr(lifted.gaussians, name), getattr(head.gaussians, name))
    _, targets, Wm = _lifted_and_targets(model, img1, img2)  # [B, 2HW, 16], [16, 8]
    ref = torch.linalg.lstsq(Wm.expand(B, -1, -1), targets.transpose(1, 2)).solution.transpose(1, 2)  # [B, 2HW, 8]
    got = lifted.gaussians.features
    assert got.shape == (B, 2 * H * W, 8)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    residual = got.double() @ Wm.T - targets
    assert (residual @ Wm).abs().max() < 1e-4 * targets.abs().max()  # normal equations: residual ⟂ columns
    assert not torch.allclose(got, head.gaussians.features)
    model.train()  # training keeps the head's features (they carry the gradient of the feature loss)
    with torch.no_grad():  # (drop path draws from the global generator)
        torch.manual_seed(5)
        train_lift = model(img1, img2, torch.Generator().manual_seed(0)).gaussians.features
        model.config.semantic_lift = False
        torch.manual_seed(5)
        train_head = model(img1, img2, torch.Generator().manual_seed(0)).gaussians.features
    torch.testing.assert_close(train_lift, train_head)
    assert LSMConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "semantic_lift"}).semantic_lift is False
    assert LSMConfig.from_dict(replace(cfg, semantic_lift=True).to_dict()).semantic_lift is True


def test_semantic_lift_in_a_text_metric_keeps_the_class_dot_products(tmp_path):
    cfg = replace(LSMConfig.tiny(), semantic_lift=True)
    cfg.head = replace(cfg.head, feature_dim=8)  # 16-d extractor space, 8-d Gaussian features
    torch.manual_seed(3)
    model = LSM(cfg).eval()
    img1, img2 = _images(2, 32, 32, 4)
    plain, targets, wm = _lifted_and_targets(model, img1, img2)
    texts = torch.nn.functional.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    names = [f"class{i}" for i in range(5)]
    tx = texts.double()

    def text_error(feats):  # dot products with the texts: lifted (after the expansion's 1x1 conv) vs extractor
        return ((feats @ wm.T - targets) @ tx.T).abs().max()

    model.config.lift_ridge = 0.0  # exact on the texts: 5 conditions, 8 unknowns per pixel
    exact, _, _ = _lifted_and_targets(model.set_lift_vocabulary(names, texts * 3), img1, img2)  # rescaled: normalised
    assert model.config.lift_vocabulary == tuple(names) and cfg.lift_vocabulary == ()  # the model's own copy
    assert text_error(exact) < 1e-4 * targets.abs().max()
    assert text_error(plain) > 100 * text_error(exact)  # plain least squares does not keep them

    def fit_error(feats):  # the plain least-squares objective
        return (feats @ wm.T - targets).norm()

    model.config.lift_ridge = 1e4  # a large ridge: back to plain least squares
    got, _, _ = _lifted_and_targets(model, img1, img2)
    assert (got - plain).abs().max() < 0.01 * (exact - plain).abs().max()
    model.config.lift_ridge = 0.05  # a small one: nearly exact on the texts, least squares in the free directions
    lifted, _, _ = _lifted_and_targets(model, img1, img2)
    assert text_error(lifted) < 0.05 * text_error(plain)
    assert fit_error(lifted) < 0.9 * fit_error(exact)
    model.save(tmp_path / "m")
    loaded = LSM.load(tmp_path / "m")
    assert loaded.config.lift_vocabulary == tuple(names) and loaded.config.lift_ridge == 0.05
    torch.testing.assert_close(loaded.lift_texts, texts)
    again, _, _ = _lifted_and_targets(loaded, img1, img2)
    torch.testing.assert_close(again, lifted, rtol=1e-4, atol=1e-5)
    assert "lift_texts" not in LSM(LSMConfig.tiny()).state_dict()  # without a vocabulary: the official key set
    with pytest.raises(OpenLSMError, match="lift texts"):
        model.set_lift_vocabulary(names, texts[:, :8])
    with pytest.raises(OpenLSMError, match="lift_ridge"):
        replace(cfg, lift_ridge=-1.0)


def test_gradients_reach_trainable_parts_only():
    torch.manual_seed(1)
    model = LSM(LSMConfig.tiny()).train()
    assert not model.lseg_feature_extractor.training  # frozen extractor stays in eval mode
    img1, img2 = _images(1, 32, 32, 2)
    g = model(img1, img2).gaussians
    (g.features.square().mean() + g.sh.square().mean() + g.log_scales.mean()).backward()
    assert model.gaussian_head.gaussian_proj.weight.grad.abs().sum() > 0
    assert model.point_transformer.embedding.stem.conv.weight.grad.abs().sum() > 0
    assert model.feature_reduction[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.lseg_feature_extractor.parameters())
    # Means are detached points: no gradient reaches the decoders or point heads. The encoder tokens feed the
    # point transformer's cross-attention, so enc_norm (trainable in the official setup) does get one.
    net = model.dust3r.dust3r
    for part in (net.decoder_embed, net.dec_blocks, net.dec_blocks2, net.downstream_head1, net.downstream_head2):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in part.parameters())
    assert net.enc_norm.weight.grad.abs().sum() > 0


def test_lseg_variant_has_official_prefixes():
    ptv3 = LSMConfig.tiny().point_transformer
    cfg = replace(LSMConfig.tiny(), semantic="lseg", lseg=LSegConfig.tiny())
    assert cfg.semantic_dim == ptv3.semantic_dim
    torch.manual_seed(2)
    model = LSM(cfg).eval()
    keys = model.state_dict().keys()
    assert "lseg_feature_extractor.scratch.head1.weight" in keys
    assert "dust3r.dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight" in keys
    assert "feature_reduction.0.weight" in keys and "feature_expansion.1.weight" in keys
    img1, img2 = _images(1, 32, 32, 3)
    with torch.no_grad():
        out = model(img1, img2)
    assert out.gaussians.features.shape == (1, 2048, 16) and torch.isfinite(out.gaussians.features).all()


def test_official_format_checkpoint_round_trip(tmp_path, tiny_model):
    sd = tiny_model.state_dict()
    alias = "dust3r.dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight"
    assert alias in sd
    sd = {k: v.clone() for k, v in sd.items() if k != alias}  # an alias may come under one name only
    path = tmp_path / "checkpoint-final.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model="LSM_Dust3R(config={'tiny': True})"), "epoch": 3},
               path)
    torch.manual_seed(123)
    fresh = LSM(LSMConfig.tiny()).eval()
    img1, img2 = _images(1, 32, 32, 4)
    with torch.no_grad():
        before = fresh(img1, img2).gaussians.features
    report = load_official_lsm_checkpoint(fresh, path)
    assert report.ok and not report.missing
    with torch.no_grad():
        a, b = tiny_model(img1, img2).gaussians, fresh(img1, img2).gaussians
    assert not torch.allclose(before, b.features)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh", "features"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_checkpoint_errors_and_skip_prefixes(tiny_model):
    sd = tiny_model.state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("dust3r.")}
    torch.manual_seed(5)
    other = LSM(LSMConfig.tiny())
    with pytest.raises(OpenLSMError, match="missing"):
        load_official_lsm_checkpoint(other, {"model": partial})
    report = load_official_lsm_checkpoint(other, {"model": partial}, strict=False)
    assert report.missing and all(k.startswith("dust3r.") for k in report.missing)
    torch.testing.assert_close(other.gaussian_head.gaussian_proj.weight, tiny_model.gaussian_head.gaussian_proj.weight)
    # The official loader's behaviour: dust3r / lseg weights come from elsewhere.
    report = load_official_lsm_checkpoint(other, {"model": partial}, skip_prefixes=("dust3r.", "lseg_feature_extractor."))
    assert report.ok
    bad = dict(sd)
    bad["gaussian_head.gaussian_proj.bias"] = torch.zeros(7)
    with pytest.raises(OpenLSMError, match="mis-shaped"):
        load_official_lsm_checkpoint(other, {"model": bad}, strict=False)
    with pytest.raises(OpenLSMError, match="not an LSM checkpoint"):
        load_official_lsm_checkpoint(other, {"model": sd, "args": argparse.Namespace(model="AsymmetricCroCo3DStereo()")})


def test_config_validation_and_bad_images(tiny_model):
    with pytest.raises(OpenLSMError):
        replace(LSMConfig.tiny(), semantic="clip")
    with pytest.raises(OpenLSMError):
        LSMConfig.preset("huge")
    with pytest.raises(OpenLSMError):
        replace(LSMConfig.tiny(), head=replace(LSMConfig.tiny().head, in_dim=7))
    img1, img2 = _images(1, 32, 32, 0)
    with pytest.raises(OpenLSMError):
        tiny_model(img1, img2[..., :16])
    with pytest.raises(OpenLSMError):
        tiny_model(img1[..., :24], img2[..., :24])
