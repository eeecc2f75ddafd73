"""Geometry network: official key layout, shapes, RoPE, attention layout, DPT post-processing, view symmetry."""

from pathlib import Path

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.lsm.dpt import postprocess_points
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet, SelfAttention, count_parameters
from openlsm.models.lsm.rope import RopePositions, apply_rope_2d, patch_positions

TSV = Path(__file__).parent / "data" / "dust3r_vitl_dpt_state_dict.tsv"


def _images(B, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return GeometryNet(GeometryConfig.tiny()).eval()


def test_paper_state_dict_matches_official_tsv():
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    expected = [(k, tuple(int(s) for s in shape.split(",") if s)) for k, shape, _ in rows]
    with torch.device("meta"):
        net = GeometryNet(GeometryConfig.paper())
    got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert len(got) == 1009
    assert got == expected  # names, order and shapes
    assert count_parameters(net) == 571_171_208
    # The aliased DPT projections are one tensor under two names.
    s = net.downstream_head1.dpt.scratch
    assert s.layer1_rn is s.layer_rn[0] and s.layer4_rn.weight is s.layer_rn[3].weight


def test_hooks_scale_with_depth():
    assert GeometryConfig.paper().hooks == [0, 6, 9, 12]
    assert GeometryConfig.tiny().hooks == [0, 2, 3, 4]
    assert GeometryConfig.small().hooks == [0, 1, 2, 3]  # decoder depth 3: [0, d/2, 3d/4, d] rounded


def test_small_lsm_ships_in_40_mb_of_16_bit_weights():
    from openlsm.models.lsm.model import LSM, LSMConfig

    with torch.device("meta"):
        n = count_parameters(LSM(LSMConfig.small()))
    assert 10e6 < n and 2 * n < 40e6


@pytest.mark.parametrize("H,W", [(32, 48), (48, 32), (48, 80)])
def test_shapes_and_ranges(tiny_net, H, W):
    B = 2
    with torch.no_grad():
        out = tiny_net(_images(B, H, W, 1), _images(B, H, W, 2))
    h, w = H // 16, W // 16
    assert out.pts3d_1.shape == out.pts3d_2.shape == (B, H, W, 3)
    assert out.conf_1.shape == out.conf_2.shape == (B, H, W)
    assert out.enc_tokens.shape == (B, 2 * h * w, 64)
    for t in (out.pts3d_1, out.pts3d_2, out.conf_1, out.conf_2, out.enc_tokens):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert (out.conf_1 >= 1).all() and (out.conf_2 >= 1).all()
    res1, res2 = out.to_official()
    assert res1["pts3d"] is out.pts3d_1 and res2["pts3d_in_other_view"] is out.pts3d_2


def test_bad_inputs(tiny_net):
    with pytest.raises(OpenLSMError, match="multiple of 16"):
        tiny_net(_images(1, 30, 48, 0), _images(1, 30, 48, 0))
    with pytest.raises(OpenLSMError, match=r"\[B, 3, H, W\]"):
        tiny_net(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(OpenLSMError):
        GeometryConfig.preset("huge")


def test_rope_relative_positions():
    torch.manual_seed(0)
    D = 16
    q, k = torch.randn(1, 1, 1, D, dtype=torch.float64), torch.randn(1, 1, 1, D, dtype=torch.float64)

    def score(pq, pk):
        rq = apply_rope_2d(q, torch.tensor([pq], dtype=torch.float64))
        rk = apply_rope_2d(k, torch.tensor([pk], dtype=torch.float64))
        return (rq * rk).sum()

    base = score((3, 5), (1, 2))
    for shift in [(7, -4), (-2, 11), (0, 30)]:
        s = score((3 + shift[0], 5 + shift[1]), (1 + shift[0], 2 + shift[1]))
        assert torch.allclose(s, base, atol=1e-10)
    assert not torch.allclose(score((3, 5), (1, 3)), base)  # changing the difference does change it


def test_rope_layout_y_first_half_x_second():
    """Brute force: pair (i, i + D'/2) of each half rotates by pos * 100**(-2i/D'); y drives the first half."""
    D, half = 16, 8
    x = torch.randn(1, 1, 1, D, dtype=torch.float64)
    pos = torch.tensor([[3.0, 7.0]], dtype=torch.float64)  # (y, x)
    out = apply_rope_2d(x, pos)[0, 0, 0]
    ref = torch.empty(D, dtype=torch.float64)
    for h, p in ((0, 3.0), (1, 7.0)):
        seg = x[0, 0, 0, h * half:(h + 1) * half]
        for i in range(half // 2):
            a = p * 100.0 ** (-2 * i / half)
            c, s = torch.cos(torch.tensor(a)), torch.sin(torch.tensor(a))
            x1, x2 = seg[i], seg[i + half // 2]
            ref[h * half + i] = x1 * c - x2 * s
            ref[h * half + i + half // 2] = x2 * c + x1 * s
    assert torch.allclose(out, ref, atol=1e-12)


def test_rope_tables_are_built_once_and_rotate_the_same():
    """RopePositions (what the network passes) rotates exactly as a bare position tensor, per dtype and head dim,
    with one table per (head dim, dtype, base) however many layers use it; per-sample positions too."""
    torch.manual_seed(1)
    pos = RopePositions(patch_positions(3, 5))
    for dtype in (torch.float32, torch.bfloat16):
        for D in (8, 16):
            x = torch.randn(2, 3, 15, D).to(dtype)
            assert torch.equal(apply_rope_2d(x, pos), apply_rope_2d(x, pos.pos))
            cos, _ = pos.tables(D, dtype, 100.0)
            apply_rope_2d(x, pos)
            assert pos.tables(D, dtype, 100.0)[0] is cos  # reused, not rebuilt
    assert len(pos._tables) == 4
    per_sample = torch.randint(0, 9, (2, 15, 2))
    x = torch.randn(2, 3, 15, 8)
    want = torch.stack([apply_rope_2d(x[b:b + 1], per_sample[b]) for b in range(2)])[:, 0]
    assert torch.equal(apply_rope_2d(x, RopePositions(per_sample)), want)


def test_self_attention_matches_bruteforce():
    """Official layout: qkv rows are [q | k | v], each heads x head_dim; softmax(q k^T / sqrt(D)) v."""
    torch.manual_seed(0)
    dim, heads, N = 16, 2, 6
    attn = SelfAttention(dim, heads, 100.0).double()
    x = torch.randn(1, N, dim, dtype=torch.float64)
    pos = patch_positions(2, 3)
    out = attn(x, pos)
    qkv = attn.qkv(x).reshape(1, N, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # [3, B, H, N, D]
    q, k, v = apply_rope_2d(qkv[0], pos), apply_rope_2d(qkv[1], pos), qkv[2]
    w = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, -1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(1, N, dim))
    assert torch.allclose(out, ref, atol=1e-12)


def test_postprocess_exp_depth_and_conf():
    raw = torch.tensor([0.3, -0.4, 1.2, 0.5]).view(1, 4, 1, 1)
    pts, conf = postprocess_points(raw)
    d = torch.tensor([0.3, -0.4, 1.2]).norm()
    assert torch.allclose(pts.norm(dim=-1), torch.expm1(d))
    assert torch.allclose(pts[0, 0, 0] / pts.norm(), torch.tensor([0.3, -0.4, 1.2]) / d)
    assert torch.allclose(conf, 1 + torch.exp(torch.tensor(0.5)))


def test_encoder_tokens_independent_of_other_view(tiny_net):
    a, b, c = _images(1, 32, 48, 1), _images(1, 32, 48, 2), _images(1, 32, 48, 3)
    with torch.no_grad():
        ab, ac = tiny_net(a, b), tiny_net(a, c)
    n = ab.enc_tokens.shape[1] // 2
    assert torch.allclose(ab.enc_tokens[:, :n], ac.enc_tokens[:, :n], atol=1e-6)
    assert not torch.allclose(ab.enc_tokens[:, n:], ac.enc_tokens[:, n:], atol=1e-3)
    # ... but the decoder makes view 1's points depend on view 2 (cross-attention is active).
    assert not torch.allclose(ab.pts3d_1, ac.pts3d_1, atol=1e-4)


def test_tied_decoders_swap_symmetrically():
    torch.manual_seed(1)
    net = GeometryNet(GeometryConfig.tiny()).eval()
    net.dec_blocks2.load_state_dict(net.dec_blocks.state_dict())
    net.downstream_head2.load_state_dict(net.downstream_head1.state_dict())
    a, b = _images(2, 32, 48, 4), _images(2, 32, 48, 5)
    with torch.no_grad():
        ab, ba = net(a, b), net(b, a)
    assert torch.allclose(ab.pts3d_1, ba.pts3d_2, atol=1e-5)
    assert torch.allclose(ab.pts3d_2, ba.pts3d_1, atol=1e-5)
    assert torch.allclose(ab.conf_1, ba.conf_2, atol=1e-5)
    n = ab.enc_tokens.shape[1] // 2
    assert torch.allclose(ab.enc_tokens, torch.cat([ba.enc_tokens[:, n:], ba.enc_tokens[:, :n]], 1), atol=1e-6)


def test_batch_elements_independent_and_differing_sizes(tiny_net):
    a, b = _images(2, 32, 32, 6), _images(2, 32, 32, 7)
    with torch.no_grad():
        full = tiny_net(a, b)
        single = tiny_net(a[1:], b[1:])
        mixed = tiny_net(_images(1, 32, 48, 8), _images(1, 48, 32, 9))  # views of different sizes
    assert torch.allclose(full.pts3d_2[1:], single.pts3d_2, atol=1e-5)
    assert mixed.pts3d_1.shape == (1, 32, 48, 3) and mixed.pts3d_2.shape == (1, 48, 32, 3)


def test_backward_reaches_encoder(tiny_net):
    net = GeometryNet(GeometryConfig.tiny())
    out = net(_images(1, 32, 32, 1), _images(1, 32, 32, 2))
    (out.pts3d_1.mean() + out.conf_2.mean() + out.enc_tokens.mean()).backward()
    assert net.patch_embed.proj.weight.grad.abs().sum() > 0
    assert net.dec_blocks2[0].cross_attn.projk.weight.grad.abs().sum() > 0
