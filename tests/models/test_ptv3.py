"""PTv3 + LSM fusion: official state-dict layout, patch attention vs brute force, invariances, gradients."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from openlsm.errors import OpenLSMError
from openlsm.models.lsm.fusion import CrossModalBlock, attend
from openlsm.models.lsm.ptv3 import (
    PointTransformer,
    PTv3Config,
    SerializedAttention,
    build_root_level,
    normalize_points,
    patch_layout,
)

TSV = Path(__file__).parent / "data" / "ptv3_state_dict.tsv"
TINY = PTv3Config.tiny()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cloud(n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """n points in distinct 0.01-voxels (lattice step 0.03), normalised to [-1, 1]; feats = xyz + rgb."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randperm(40**3, generator=gen)[:n]
    lattice = torch.stack([cells // 1600, cells // 40 % 40, cells % 40], -1).to(dtype)
    coords = normalize_points(((lattice + 0.5) * 0.03)[None])[0][0]
    rgb = torch.rand(n, 3, generator=gen, dtype=dtype) * 2 - 1
    return coords, torch.cat([coords, rgb], -1)


def tokens(b: int, seed: int, dtype=torch.float64, cfg=TINY):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 7, cfg.geometry_dim, generator=gen, dtype=dtype),
            torch.randn(b, 5, cfg.semantic_dim, generator=gen, dtype=dtype))


def tiny_net(seed: int = 0, cfg: PTv3Config = TINY, dtype=torch.float64) -> PointTransformer:
    torch.manual_seed(seed)
    net = PointTransformer(cfg).to(dtype).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_paper_config_has_the_official_state_dict():
    with torch.device("meta"):
        net = PointTransformer(PTv3Config.paper())
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    expected = [(k, tuple(int(s) for s in shape.split(",")) if shape else (), dtype) for k, shape, dtype in rows]
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    assert len(expected) == 342
    assert got == expected  # same keys, order, shapes, dtypes
    assert sum(p.numel() for p in net.parameters()) == 33_689_888


def test_tiny_output_shapes_for_two_samples_of_different_sizes():
    (c0, f0), (c1, f1) = cloud(150, 0), cloud(97, 1)
    geo, sem = tokens(2, 0)
    out = tiny_net()(torch.cat([c0, c1]), torch.cat([f0, f1]), torch.tensor([150, 247]), geo, sem)
    assert out.shape == (247, TINY.out_channels)
    assert torch.isfinite(out).all()


def test_patch_layout_pads_by_repeating_the_previous_patch_and_masks_short_samples():
    counts, k = [5, 16, 37], 16
    positions, unpad, mask = patch_layout(counts, k, torch.device("cpu"))
    assert positions.shape == (16 + 16 + 48,)
    assert torch.equal(positions[unpad], torch.arange(58))  # every point sits in its own slot
    assert positions[:5].tolist() == list(range(5)) and mask[0].tolist() == [True] * 5 + [False] * 11
    assert positions[16:32].tolist() == list(range(5, 21)) and mask[1].all()
    last = positions[64:80].tolist()  # sample 2 (starts at 21): 37 = 2*16 + 5
    assert last[:5] == list(range(21 + 32, 21 + 37))
    assert last[5:] == list(range(21 + 21, 21 + 32))  # slots 5..15 of the previous patch
    assert mask[2:].all()
    assert patch_layout([32, 17], 16, torch.device("cpu"))[2] is None  # no short sample -> no mask


@pytest.mark.parametrize("order_index", [0, 2])
def test_patch_attention_matches_brute_force(order_index):
    (c0, _), (c1, _) = cloud(37, 3), cloud(11, 4)
    coords, counts, k = torch.cat([c0, c1]), [37, 11], 16
    level = build_root_level(coords, torch.tensor([37, 48]), TINY)
    torch.manual_seed(0)
    attn = SerializedAttention(8, 2, k, order_index).double()
    feats = torch.randn(48, 8, dtype=torch.float64)
    out = attn(feats, level)

    q, kk, v = attn.qkv(feats).detach().view(48, 3, 2, 4).unbind(1)  # [N, H, D]
    expected = torch.empty(48, 8, dtype=torch.float64)
    order, start = level.orders[order_index], 0
    for n in counts:
        seq = order[start: start + n]
        for i in range(n):
            if n <= k:
                patch = seq
            elif i < n // k * k:
                patch = seq[i // k * k: i // k * k + k]
            else:
                patch = seq[n - k:]  # PTv3's padded last patch holds exactly the last k points
            p = seq[i]
            w = torch.softmax((q[p][:, None, :] * kk[patch].transpose(0, 1)).sum(-1) / 2.0, dim=-1)  # [H, K]
            expected[p] = (w[:, :, None] * v[patch].transpose(0, 1)).sum(1).reshape(8)
        start += n
    expected = attn.proj(expected)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_output_follows_a_permutation_of_the_input_points():
    (c0, f0), (c1, f1) = cloud(150, 5), cloud(97, 6)
    geo, sem = tokens(2, 1)
    net = tiny_net(1)
    out = net(torch.cat([c0, c1]), torch.cat([f0, f1]), torch.tensor([150, 247]), geo, sem)
    gen = torch.Generator().manual_seed(7)
    perm = torch.cat([torch.randperm(150, generator=gen), 150 + torch.randperm(97, generator=gen)])
    out_perm = net(torch.cat([c0, c1])[perm], torch.cat([f0, f1])[perm], torch.tensor([150, 247]), geo, sem)
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-10, atol=1e-10)


def test_batching_does_not_change_a_samples_result():
    (c0, f0), (c1, f1) = cloud(150, 8), cloud(61, 9)
    geo, sem = tokens(2, 2)
    net = tiny_net(2)
    together = net(torch.cat([c0, c1]), torch.cat([f0, f1]), torch.tensor([150, 211]), geo, sem)
    alone0 = net(c0, f0, torch.tensor([150]), geo[:1], sem[:1])
    alone1 = net(c1, f1, torch.tensor([61]), geo[1:], sem[1:])
    torch.testing.assert_close(together, torch.cat([alone0, alone1]), rtol=1e-10, atol=1e-10)


def test_official_batching_equals_default_for_one_sample():
    c, f = cloud(120, 10)
    geo, sem = tokens(1, 3)
    default = tiny_net(3)(c, f, torch.tensor([120]), geo, sem)
    official = tiny_net(3, PTv3Config(**{**TINY.__dict__, "official_batching": True}))
    torch.testing.assert_close(official(c, f, torch.tensor([120]), geo, sem), default, rtol=1e-10, atol=1e-10)


def test_sparse_conv_methods_agree_inside_the_network():
    c, f = cloud(120, 16)
    geo, sem = tokens(1, 8)
    outs = [tiny_net(5, PTv3Config(**{**TINY.__dict__, "conv_method": m}))(c, f, torch.tensor([120]), geo, sem)
            for m in ("pairs", "im2col")]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)


def test_shuffled_orders_are_reproducible_with_a_seeded_generator():
    c, f = cloud(120, 11)
    geo, sem = tokens(1, 4)
    net = tiny_net(4, PTv3Config(**{**TINY.__dict__, "shuffle_orders": True}))
    run = [net(c, f, torch.tensor([120]), geo, sem, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    torch.testing.assert_close(run[0], run[1], rtol=0, atol=0)
    assert not torch.equal(torch.randperm(4, generator=torch.Generator().manual_seed(0)),
                           torch.randperm(4, generator=torch.Generator().manual_seed(1)))
    assert not torch.allclose(run[0], run[2])


def test_gradients_reach_every_parameter():
    (c0, f0), (c1, f1) = cloud(90, 12, torch.float32), cloud(70, 13, torch.float32)
    geo, sem = tokens(2, 5, torch.float32)
    net = tiny_net(5, dtype=torch.float32)
    out = net(torch.cat([c0, c1]), torch.cat([f0, f1]), torch.tensor([90, 160]), geo, sem)
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_training_mode_updates_batchnorm_statistics():
    c, f = cloud(100, 14, torch.float32)
    geo, sem = tokens(1, 6, torch.float32)
    net = tiny_net(6, dtype=torch.float32).train()
    before = net.embedding.stem.norm.running_mean.clone()
    out = net(c, f, torch.tensor([100]), geo, sem)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert not torch.equal(before, net.embedding.stem.norm.running_mean)


def test_fusion_block_padding_mask_matches_unpadded_samples():
    torch.manual_seed(0)
    block = CrossModalBlock(16, 4).double().eval()
    feats = torch.randn(13, 16, dtype=torch.float64)
    toks = torch.randn(2, 3, 16, dtype=torch.float64)
    joint = block.forward_points(feats, torch.tensor([9, 4]), toks)
    first = block(feats[None, :9], None, toks[:1])[0]
    second = block(feats[None, 9:], None, toks[1:])[0]
    torch.testing.assert_close(joint, torch.cat([first, second]), rtol=1e-10, atol=1e-10)
    assert block.attn.in_proj_bias is None and block.cross_attn.out_proj.bias is None


def test_attend_equals_the_multihead_attention_module():
    """The fusion blocks' direct attention against torch's nn.MultiheadAttention with the same weights: self and
    cross attention, with and without a key padding mask (which must hide the padded keys)."""
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(16, 4, bias=False, batch_first=True).double()
    x, mem = torch.randn(2, 7, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    for q, kv, mask in ((x, x, None), (x, x, pad), (x, mem, None)):
        want = mha(q, kv, kv, key_padding_mask=mask, need_weights=False)[0]
        torch.testing.assert_close(attend(mha, q, kv, mask), want, rtol=1e-12, atol=1e-12)
    changed = x.clone()
    changed[1, 4:] += 5.0  # padded keys: no effect on any output row
    torch.testing.assert_close(attend(mha, changed, changed, pad)[:, :4], attend(mha, x, x, pad)[:, :4])


def test_normalize_points_centres_and_scales_each_sample():
    pts = torch.randn(2, 50, 3, dtype=torch.float64) * torch.tensor([[[3.0]], [[0.1]]]) + 5
    coords, center, scale = normalize_points(pts)
    torch.testing.assert_close(coords.mean(1), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(coords.abs().amax(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(coords * scale + center, pts)


def test_bad_inputs_are_user_errors():
    c, f = cloud(40, 15)
    geo, sem = tokens(1, 7)
    net = tiny_net()
    with pytest.raises(OpenLSMError, match="offsets"):
        net(c, f, torch.tensor([30]), geo, sem)
    with pytest.raises(OpenLSMError, match="geo_tokens"):
        net(c, f, torch.tensor([40]), None, sem)
    with pytest.raises(OpenLSMError, match="sem_tokens"):
        net(c, f, torch.tensor([40]), geo, sem[..., :3])
    with pytest.raises(OpenLSMError, match="feats"):
        net(c, f[:, :4], torch.tensor([40]), geo, sem)
    assert math.isclose(PTv3Config.paper().grid_size, 0.01)
