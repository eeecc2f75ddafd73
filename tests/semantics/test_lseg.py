import re
from pathlib import Path

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics.lseg import LSegConfig, LSegNet, load_lseg_checkpoint

TSV = Path(__file__).parent / "data" / "lseg_state_dict.tsv"


def read_tsv():
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    return [(k, tuple(int(s) for s in shape.split(",") if s), dtype) for k, shape, dtype in rows]


def test_full_model_matches_reference_state_dict():
    with torch.device("meta"):
        net = LSegNet(LSegConfig(), official_dtypes=True)
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    ref = read_tsv()
    assert len(ref) == 730
    assert ours == ref  # names, order, shapes, dtypes
    assert sum(p.numel() for p in net.parameters()) == 495_136_489


def tiny(seed=0):
    torch.manual_seed(seed)
    return LSegNet(LSegConfig.tiny())


def key_patterns(keys):
    return list(dict.fromkeys(re.sub(r"blocks\.\d+\.", "blocks.*.", k) for k in keys))


def randomize_bn(net, seed):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_tiny_checkpoint_same_names_loads_strictly(tmp_path):
    src = tiny(1)
    randomize_bn(src, 0)
    # the tiny config keeps every key name (up to the number of repeated blocks)
    assert key_patterns(src.state_dict()) == key_patterns(k for k, _, _ in read_tsv())
    ckpt = {"state_dict": {f"net.{k}": v.half() if v.is_floating_point() and "clip_pretrained" in k and v.ndim > 1
                           else v for k, v in src.state_dict().items()}, "epoch": 200}
    torch.save(ckpt, tmp_path / "demo_e200.ckpt")
    dst = load_lseg_checkpoint(tiny(2), tmp_path / "demo_e200.ckpt").eval()
    src.eval()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], ckpt["state_dict"]["net." + k].to(v.dtype))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(dst(images), src(images))

    broken = {"state_dict": dict(ckpt["state_dict"])}
    broken["state_dict"].pop("net.scratch.head1.bias")
    with pytest.raises(OpenLSMError, match="missing"):
        load_lseg_checkpoint(tiny(), broken)
    wrong = {"state_dict": {**ckpt["state_dict"], "net.scratch.head1.bias": torch.zeros(3)}}
    with pytest.raises(OpenLSMError, match="shape"):
        load_lseg_checkpoint(tiny(), wrong)


def test_forward_shapes_tokens_and_decode():
    net = tiny().eval()
    images = torch.rand(3, 3, 64, 96) * 2 - 1
    before = images.clone()
    feats = net(images)
    assert feats.shape == (3, 16, 32, 48)  # [B, out_dim, H/2, W/2]
    assert torch.equal(images, before)  # no in-place activation on the input
    # eval-mode BatchNorm: a sample's features do not depend on the rest of the batch
    torch.testing.assert_close(net(images[1:2]), feats[1:2], rtol=1e-4, atol=1e-5)
    tokens = net.pool_tokens(feats)
    assert tokens.shape == (3, 4 * 6, 16)
    torch.testing.assert_close(tokens[0, 0], feats[0, :, :8, :8].mean((1, 2)))
    texts = torch.randn(5, 16)
    logits = net.decode(feats, texts)
    assert logits.shape == (3, 5, 64, 96)
    cos = torch.nn.functional.cosine_similarity(feats[0, :, 0, 0], texts[2], dim=0)
    torch.testing.assert_close(logits[0, 2, 0, 0], cos / 0.07, rtol=1e-4, atol=1e-4)  # corner kept by align_corners
    with pytest.raises(OpenLSMError):
        net(torch.rand(1, 3, 60, 64))


def test_pos_embed_resize():
    vit = tiny().pretrained.model  # pretraining grid 4x4
    same = vit.resized_pos_embed(4, 4)
    torch.testing.assert_close(same, vit.pos_embed)
    half = vit.resized_pos_embed(2, 2)[0, 1:].reshape(2, 2, -1)
    grid = vit.pos_embed[0, 1:].reshape(4, 4, -1)
    # bilinear x0.5 (align_corners=False) samples exactly between 2x2 pixel blocks: their mean
    torch.testing.assert_close(half[1, 0], grid[2:4, 0:2].mean((0, 1)))
    torch.testing.assert_close(vit.resized_pos_embed(2, 2)[0, 0], vit.pos_embed[0, 0])


def test_text_encoder_uses_clip_tower():
    net = tiny().eval()
    enc = net.text_encoder()
    assert enc.clip is net.clip_pretrained and enc.dim == 16
