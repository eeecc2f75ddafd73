"""LSM own format: config dicts (nested, tuples, validation), save/load round trips, fp16, wrong files."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from openlsm.errors import OpenLSMError
from openlsm.models.checkpoint_io import save_model
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet
from openlsm.models.lsm.model import LSM, LSMConfig

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1


def _outputs(model):
    with torch.no_grad():
        out = model(*_images())
    return [getattr(out.gaussians, f) for f in FIELDS] + [out.geometry.conf_1, out.semantic_features]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = LSM(LSMConfig.tiny()).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that buffers are checked too
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_config_dict_round_trip(preset):
    cfg = LSMConfig.preset(preset)
    d = json.loads(json.dumps(cfg.to_dict()))  # through JSON: tuples become lists
    assert isinstance(d["point_transformer"]["enc_depths"], list)
    back = LSMConfig.from_dict(d)
    assert back == cfg  # dataclass equality: a list where a tuple belongs would differ
    assert isinstance(back.point_transformer.enc_depths, tuple) and isinstance(back.geometry.dpt_layer_dims, list)
    assert LSMConfig.from_dict({}) == LSMConfig.paper()  # absent fields keep their defaults


def test_config_dict_validation():
    d = LSMConfig.tiny().to_dict()
    for path, value, match in [
        (("extra",), 1, "unknown LSMConfig field.*extra"),
        (("point_transformer", "enc_depth"), 1, "point_transformer.enc_depth"),
        (("point_transformer", "enc_depths"), "1,1", "point_transformer.enc_depths must be a list"),
        (("geometry", "enc_dim"), "64", "geometry.enc_dim must be int"),
        (("geometry", "enc_dim"), 64.0, "geometry.enc_dim must be int"),
        (("head", "rgb_residual"), 1, "head.rgb_residual must be bool"),
        (("semantic",), "clip", "semantic must be one of"),
        (("lseg", "post_dims"), [1, 2, 3], "lseg.post_dims must have 4 entries"),
        (("geometry",), [1], "config geometry must be a dict"),
        (("head", "in_dim"), 7, "head in_dim 7"),  # cross-field check of LSMConfig itself
    ]:
        bad = json.loads(json.dumps(d))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(OpenLSMError, match=match):
            LSMConfig.from_dict(bad)
    ok = json.loads(json.dumps(d))
    ok["head"]["scale_min"] = 1  # an int where a float belongs is fine
    assert LSMConfig.from_dict(ok).head.scale_min == 1.0
    ok["geometry"]["dpt_hooks"] = None
    assert LSMConfig.from_dict(ok).geometry.dpt_hooks is None


def test_save_load_round_trip(tiny, tmp_path):
    weights = tiny.save(tmp_path / "lsm")
    assert sorted(p.name for p in (tmp_path / "lsm").iterdir()) == ["config.json", "model.safetensors"]
    assert weights == tmp_path / "lsm" / "model.safetensors"
    meta = json.loads((tmp_path / "lsm" / "config.json").read_text())
    assert meta["module"] == "LSM" and LSMConfig.from_dict(meta["config"]) == tiny.config
    ref = _outputs(tiny)
    for source in (tmp_path / "lsm", weights):  # the folder or the weights file in it
        loaded = LSM.load(source)
        assert not loaded.training and loaded.config == tiny.config
        for a, b in zip(_outputs(loaded), ref):
            assert torch.equal(a, b)
        for name, buf in tiny.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], buf), name


def test_fp16_halves_the_file_and_stays_close(tiny, tmp_path):
    tiny.save(tmp_path / "fp32")
    tiny.save(tmp_path / "fp16", dtype="fp16")
    stored = load_file(tmp_path / "fp16" / "model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert stored["point_transformer.enc.enc0.block0.attn.qkv.weight"].dtype == torch.float16
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert 0.45 < size16 / size32 < 0.55
    loaded = LSM.load(tmp_path / "fp16")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    # Exactly the model whose weights went through fp16 ...
    rounded = LSM(LSMConfig.tiny()).eval()
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in tiny.state_dict().items()})
    for a, b in zip(_outputs(loaded), _outputs(rounded)):
        assert torch.equal(a, b)
    # ... and close to the fp32 original (fp16 keeps ~3 significant digits) where the model is continuous:
    # point maps, confidences, semantic features. (The point transformer voxelises the points, so a point
    # moving across a 0.01 voxel boundary changes its neighbourhood; its outputs are not compared.)
    with torch.no_grad():
        a, b = loaded(*_images()), tiny(*_images())
    for x, y in ((a.geometry.pts3d_1, b.geometry.pts3d_1), (a.geometry.pts3d_2, b.geometry.pts3d_2),
                 (a.geometry.conf_1, b.geometry.conf_1), (a.semantic_features, b.semantic_features),
                 (a.gaussians.means, b.gaussians.means)):
        assert (x - y).abs().max() <= 1e-2 * y.abs().max()  # within 1 % of the tensor's range


def test_wrong_files_rejected(tiny, tmp_path):
    torch.manual_seed(1)
    net = GeometryNet(GeometryConfig.tiny())
    save_model(tmp_path / "geo", net, net.config)
    with pytest.raises(OpenLSMError, match="GeometryNet model, not an LSM"):
        LSM.load(tmp_path / "geo")
    tiny.save(tmp_path / "lsm")
    weights = tmp_path / "lsm" / "model.safetensors"
    state = load_file(weights)
    state["renamed.weight"] = state.pop("gaussian_head.gaussian_proj.weight")
    save_file(state, weights)
    with pytest.raises(OpenLSMError, match=r"does not fit LSM: 1 missing \[gaussian_head.gaussian_proj.weight\]"
                                           r"; 1 unexpected \[renamed.weight\]"):
        LSM.load(tmp_path / "lsm")
    # A config whose sizes differ from the weights: mis-shaped tensors are named.
    tiny.save(tmp_path / "lsm2")
    meta = json.loads((tmp_path / "lsm2" / "config.json").read_text())
    other = replace(tiny.config, head=replace(tiny.config.head, sh_degree=1))
    meta["config"] = other.to_dict()
    (tmp_path / "lsm2" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(OpenLSMError, match="mis-shaped.*gaussian_head.gaussian_proj.weight"):
        LSM.load(tmp_path / "lsm2")
    with pytest.raises(OpenLSMError, match="not found"):
        LSM.load(tmp_path / "absent")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "junk" / "config.json").write_text("{}")
    with pytest.raises(OpenLSMError, match="cannot read"):
        LSM.load(tmp_path / "junk")
    with pytest.raises(OpenLSMError, match="dtype"):
        tiny.save(tmp_path / "x", dtype="int8")
    with pytest.raises(OpenLSMError, match="folder"):
        tiny.save(tmp_path / "x.safetensors")
