""".splat export: 32-byte records decoded by hand with struct, importance order, quantisation."""

import math
import struct

import torch

from openlsm.gaussians import Gaussians
from openlsm.gaussians.splat import load_splat, save_splat

SH_C0 = 0.28209479177387814


def test_splat_byte_layout_and_order(tmp_path):
    g = Gaussians.random(60, sh_degree=1, feature_dim=4, seed=3)
    path = save_splat(tmp_path / "s.splat", g)
    raw = path.read_bytes()
    assert len(raw) == 32 * len(g)
    recs = [struct.unpack("<3f3f4B4B", raw[i * 32:(i + 1) * 32]) for i in range(len(g))]

    # float64 reference of the order: opacity x volume, largest first
    imp = [1 / (1 + math.exp(-float(o))) * math.exp(float(s.sum())) for o, s in
           zip(g.opacity_logits.double(), g.log_scales.double())]
    order = sorted(range(len(g)), key=lambda i: -imp[i])
    for rec, i in zip(recs, order):
        pos, scale, rgba, rot = rec[0:3], rec[3:6], rec[6:10], rec[10:14]
        assert torch.allclose(torch.tensor(pos), g.means[i], atol=0)  # float32 stored exactly
        assert torch.allclose(torch.tensor(scale, dtype=torch.float64), g.log_scales[i].double().exp(), rtol=1e-6)
        rgb = [min(1.0, max(0.0, 0.5 + SH_C0 * float(c))) for c in g.sh[i, 0]]
        alpha = 1 / (1 + math.exp(-float(g.opacity_logits[i])))
        for got, want in zip(rgba, rgb + [alpha]):
            assert abs(got - want * 255) <= 0.5 + 1e-3
        q = g.quats[i].double() / g.quats[i].double().norm()  # wxyz
        for got, want in zip(rot, q.tolist()):
            assert abs(got - min(255.0, max(0.0, want * 128 + 128))) <= 0.5 + 1e-3


def test_splat_reads_back_within_quantisation(tmp_path):
    g = Gaussians.random(40, sh_degree=0, seed=1)
    back = load_splat(save_splat(tmp_path / "s.splat", g))
    order = torch.sort(-(g.opacities * g.scales.prod(-1)), stable=True).indices
    ref = g.select(order)
    assert torch.equal(back.means, ref.means)
    assert torch.allclose(back.log_scales, ref.log_scales, atol=1e-6)
    assert torch.allclose(back.colors_dc, ref.colors_dc, atol=1 / 255)
    assert torch.allclose(back.opacities, ref.opacities, atol=1 / 255)
    qa = back.quats / back.quats.norm(dim=-1, keepdim=True)
    qb = ref.quats / ref.quats.norm(dim=-1, keepdim=True)
    assert ((qa * qb).sum(-1).abs() > 0.995).all()  # same rotation up to 8-bit quantisation
