"""LPIPS-VGG from user-supplied weights (random stand-ins with the real names and shapes) against a float64
reference written here from the definition."""

import pytest
import torch
import torch.nn.functional as F

from openlsm.errors import OpenLSMError
from openlsm.eval.lpips import load_lpips

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16.features conv indices


def fake_weights():
    g = torch.Generator().manual_seed(0)
    backbone, c, convs = {}, 3, iter(CONVS)
    for v in CFG:
        if v == "M":
            continue
        i = next(convs)
        backbone[f"features.{i}.weight"] = (torch.randn(v, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5).half()
        backbone[f"features.{i}.bias"] = (0.01 * torch.randn(v, generator=g)).half()
        c = v
    backbone["classifier.0.weight"] = torch.zeros(4, 4)  # present in torchvision's file, unused
    lins = {f"lin{k}.model.1.weight": torch.rand(1, ch, 1, 1, generator=g).half()
            for k, ch in enumerate([64, 128, 256, 512, 512])}
    return backbone, lins


def reference(backbone, lins, a, b):
    """float64 LPIPS: shift/scale, VGG to relu5_3, channel-normalise at relu{1_2,2_2,3_3,4_3,5_3}, weight, average."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def feats(x):
        x = (x.double() * 2 - 1 - shift) / scale
        out, convs = [], iter(CONVS)
        for v in CFG:
            if v == "M":
                out.append(x)  # the tap before each max-pool
                x = F.max_pool2d(x, 2)
                continue
            i = next(convs)
            x = F.relu(F.conv2d(x, backbone[f"features.{i}.weight"].double(), backbone[f"features.{i}.bias"].double(),
                                padding=1))
        out.append(x)
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in out]

    total = 0
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        w = lins[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total = total + ((fa - fb) ** 2 * w).sum(1).mean((1, 2))
    return total


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    backbone, lins = fake_weights()
    torch.save(backbone, d / "vgg16.pth")
    torch.save(lins, d / "lin.pth")
    return d, backbone, lins


def test_lpips_matches_reference(files):
    d, backbone, lins = files
    lp = load_lpips(d / "vgg16.pth", d / "lin.pth")
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    got = lp(a, b)
    assert got.shape == (2,) and torch.all(got > 0)
    assert torch.allclose(got.double(), reference(backbone, lins, a, b), rtol=1e-4)
    assert torch.allclose(lp(a, a), torch.zeros(2), atol=1e-7)
    assert torch.allclose(lp(b, a), got, rtol=1e-5)


def test_lpips_full_state_dict_names(files):
    d, backbone, lins = files
    slices = {range(4): 1, range(4, 9): 2, range(9, 16): 3, range(16, 23): 4, range(23, 30): 5}
    full = dict(lins)
    for key, v in backbone.items():
        if key.startswith("features."):
            i = int(key.split(".")[1])
            s = next(n for r, n in slices.items() if i in r)
            full[f"net.slice{s}.{i}.{key.split('.')[2]}"] = v
    torch.save(full, d / "full.pth")
    a = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    b = a.flip(-1)
    assert torch.allclose(load_lpips(d / "full.pth")(a, b), load_lpips(d / "vgg16.pth", d / "lin.pth")(a, b))


def test_lpips_refuses_incomplete_weights(files):
    d, _, lins = files
    with pytest.raises(OpenLSMError, match="linear"):
        load_lpips(d / "vgg16.pth")
    bad = dict(lins)
    bad["lin2.model.1.weight"] = torch.rand(1, 64, 1, 1)
    torch.save(bad, d / "bad.pth")
    with pytest.raises(OpenLSMError, match="lins.2.weight"):
        load_lpips(d / "vgg16.pth", d / "bad.pth")
