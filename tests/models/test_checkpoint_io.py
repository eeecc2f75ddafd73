"""Checkpoint I/O: safe official loading, naver/LSM key conventions, reports, our safetensors format."""

import argparse
import os

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.checkpoint_io import (
    load_dust3r_checkpoint,
    load_geometry_net,
    load_lsm_dust3r,
    load_official_checkpoint,
    load_state,
    load_strict,
    report_keys,
    save_model,
    tied_keys,
)
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet

TINY_STRING = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
               "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
               "enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=48, dec_depth=4, dec_num_heads=2)")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return GeometryNet(GeometryConfig.tiny()).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, 32, 48, generator=g) * 2 - 1, torch.rand(1, 3, 32, 48, generator=g) * 2 - 1


def _outputs(model, images):
    with torch.no_grad():
        out = model.eval()(*images)
    return torch.cat([out.pts3d_1.flatten(), out.pts3d_2.flatten(), out.conf_1.flatten(), out.enc_tokens.flatten()])


class _Payload:
    """Unpickling this would create a marker file through os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_naver_checkpoint_with_namespace_loads(net, images, tmp_path):
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("dec_blocks2.")}  # naver files may omit it
    path = tmp_path / "dust3r.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model=TINY_STRING), "epoch": 3}, path)
    ckpt = load_official_checkpoint(path)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].model == TINY_STRING
    loaded = load_dust3r_checkpoint(path)
    assert loaded.config.enc_heads == 2 and loaded.config.dpt_layer_dims == [8, 16, 24, 32]
    assert report_keys(loaded.state_dict(), net.state_dict()).ok
    # dec_blocks2 starts as a copy of dec_blocks (not shared storage).
    for k, v in loaded.dec_blocks.state_dict().items():
        assert torch.equal(loaded.dec_blocks2.state_dict()[k], v)
    assert loaded.dec_blocks2[0].norm1.weight is not loaded.dec_blocks[0].norm1.weight
    tied = GeometryNet(GeometryConfig.tiny())
    tied.load_state_dict({**net.state_dict(), **{k.replace("dec_blocks.", "dec_blocks2.", 1): v
                          for k, v in net.state_dict().items() if k.startswith("dec_blocks.")}})
    assert torch.equal(_outputs(loaded, images), _outputs(tied, images))


def test_full_checkpoint_gives_identical_outputs(net, images, tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": net.state_dict(), "args": argparse.Namespace(model=TINY_STRING)}, path)
    assert torch.equal(_outputs(load_dust3r_checkpoint(path), images), _outputs(net, images))


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(OpenLSMError, match="refusing"):
        load_official_checkpoint(path)
    with pytest.raises(OpenLSMError):
        load_dust3r_checkpoint(path)
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(OpenLSMError, match="not found"):
        load_official_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OpenLSMError):
        load_official_checkpoint(bad)


def test_lsm_block_loader(net, images, tmp_path):
    lsm_state = {"dust3r.dust3r." + k: v for k, v in net.state_dict().items()}
    lsm_state["point_transformer.embedding.stem.conv.weight"] = torch.zeros(32, 5, 5, 5, 6)
    lsm_state["gaussian_head.gaussian_proj.weight"] = torch.zeros(120, 64)
    path = tmp_path / "lsm.pth"
    torch.save({"model": lsm_state, "args": argparse.Namespace(model="LSM_Dust3R(config={})")}, path)
    loaded = load_lsm_dust3r(path, net=GeometryNet(GeometryConfig.tiny()))
    assert torch.equal(_outputs(loaded, images), _outputs(net, images))


def test_report_and_strict_loading(net):
    state = dict(net.state_dict())
    state.pop("enc_norm.weight")
    state["extra.weight"] = torch.zeros(3)
    state["decoder_embed.bias"] = torch.zeros(7)
    report = report_keys(net.state_dict(), state)
    assert report.missing == ["enc_norm.weight"] and report.unexpected == ["extra.weight"]
    assert report.mismatched == [("decoder_embed.bias", (48,), (7,))]
    text = str(report)
    assert "1 missing" in text and "extra.weight" in text and "[48] vs checkpoint [7]" in text
    with pytest.raises(OpenLSMError, match="mis-shaped"):
        load_strict(GeometryNet(GeometryConfig.tiny()), state)
    # A rename map fixes differently named keys.
    good = dict(net.state_dict())
    good["old_norm.weight"] = good.pop("enc_norm.weight")
    fresh = GeometryNet(GeometryConfig.tiny())
    assert load_strict(fresh, good, alias_map={"old_norm.weight": "enc_norm.weight"}).ok
    assert torch.equal(fresh.enc_norm.weight, net.enc_norm.weight)


def test_tied_names_either_alias_suffices(net, images):
    groups = tied_keys(net)
    assert len(groups) == 8  # 4 projections x 2 heads
    assert groups["downstream_head1.dpt.scratch.layer1_rn.weight"] == [
        "downstream_head1.dpt.scratch.layer1_rn.weight", "downstream_head1.dpt.scratch.layer_rn.0.weight"]
    only_list_names = {k: v for k, v in net.state_dict().items() if "_rn.weight" not in k or "layer_rn" in k}
    fresh = GeometryNet(GeometryConfig.tiny())
    load_strict(fresh, only_list_names)
    assert torch.equal(_outputs(fresh, images), _outputs(net, images))


@pytest.mark.parametrize("name", ["model_dir", "geo.safetensors"])
def test_save_load_round_trip(net, images, tmp_path, name):
    target = tmp_path / name
    save_model(target, net, net.config)
    files = sorted(p.name for p in (target if target.suffix == "" else tmp_path).iterdir())
    assert not [f for f in files if f.endswith(".tmp")]  # atomic writes leave no temp files
    state, meta = load_state(target)
    assert meta["config"] == GeometryConfig.tiny().to_dict() and meta["module"] == "GeometryNet"
    assert len(state) == len(net.state_dict()) - 8  # tied tensors stored once
    loaded = load_geometry_net(target)
    assert torch.equal(_outputs(loaded, images), _outputs(net, images))
    with pytest.raises(OpenLSMError, match="not found"):
        load_geometry_net(tmp_path / "absent")
