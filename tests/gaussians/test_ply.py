import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from openlsm.errors import OpenLSMError
from openlsm.gaussians import Gaussians, load_ply, save_ply
from openlsm.gaussians.ply import ply_property_names


@pytest.mark.parametrize("degree,feat", [(0, 0), (1, 0), (3, 8)])
def test_round_trip_is_exact(tmp_path, degree, feat):
    g = Gaussians.random(50, sh_degree=degree, feature_dim=feat, seed=degree)
    save_ply(tmp_path / "a.ply", g)
    h = load_ply(tmp_path / "a.ply")
    for name in ["means", "quats", "log_scales", "opacity_logits", "sh"]:
        assert torch.equal(getattr(h, name), getattr(g, name)), name
    assert (h.features is None) == (feat == 0)
    if feat:
        assert torch.equal(h.features, g.features)


def test_written_layout_is_standard_3dgs(tmp_path):
    g = Gaussians.random(3, sh_degree=3, feature_dim=4, seed=1)
    save_ply(tmp_path / "a.ply", g)
    ply = PlyData.read(str(tmp_path / "a.ply"))
    names = [p.name for p in ply["vertex"].properties]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
                + [f"semantic_{i}" for i in range(4)])
    assert names == expected == ply_property_names(3, 4)
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    assert ply.byte_order == "<"
    v = ply["vertex"].data
    # f_rest is channel-major: f_rest_0..14 are the red coefficients 1..15 of Gaussian 0
    assert np.allclose([v[0][f"f_rest_{i}"] for i in range(15)], g.sh[0, 1:, 0].numpy())
    assert np.allclose([v[0][f"f_rest_{15 + i}"] for i in range(15)], g.sh[0, 1:, 1].numpy())
    assert np.allclose([v[1][f"rot_{i}"] for i in range(4)], g.quats[1].numpy())  # wxyz
    assert np.isclose(v[2]["opacity"], g.opacity_logits[2].item())  # logit, not sigmoid


def test_reads_file_from_another_writer_in_other_order_without_normals(tmp_path):
    """A hand-written degree-1 PLY with shuffled property order and no normals."""
    rng = np.random.default_rng(0)
    n = 7
    props = ["rot_3", "scale_1", "f_dc_2", "x", "opacity", "f_rest_8", "rot_0", "y", "f_rest_0", "z", "scale_0",
             "f_dc_0", "rot_1", "f_rest_4", "scale_2", "f_dc_1", "rot_2"] + \
        [f"f_rest_{i}" for i in (1, 2, 3, 5, 6, 7)]
    data = np.empty(n, dtype=[(p, "f4") for p in props])
    for p in props:
        data[p] = rng.normal(size=n).astype(np.float32)
    PlyData([PlyElement.describe(data, "vertex")], text=True).write(str(tmp_path / "other.ply"))
    g = load_ply(tmp_path / "other.ply")
    assert g.sh_degree == 1 and len(g) == n
    assert np.allclose(g.means[:, 1].numpy(), data["y"])
    assert np.allclose(g.quats[:, 3].numpy(), data["rot_3"])
    # channel-major: green coefficient 2 of SH band 1 is f_rest_(3*1 + 1) = f_rest_4
    assert np.allclose(g.sh[:, 2, 1].numpy(), data["f_rest_4"])
    assert np.allclose(g.sh[:, 3, 2].numpy(), data["f_rest_8"])


def _write(tmp_path, props, n=3, fill=0.0):
    data = np.full(n, fill, dtype=[(p, "f4") for p in props])
    path = tmp_path / "x.ply"
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    return path


BASE = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
        "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.mark.parametrize("case,match", [
    ("missing", "missing properties"),
    ("rest4", "not a multiple of 3|degree"),
    ("rest_gap", "without gaps"),
    ("garbage", "not a readable PLY"),
    ("nan", "NaN"),
    ("nofile", "not found"),
])
def test_malformed_files_are_rejected_with_clear_errors(tmp_path, case, match):
    if case == "missing":
        path = _write(tmp_path, [p for p in BASE if p != "scale_1"])
    elif case == "rest4":
        path = _write(tmp_path, BASE + [f"f_rest_{i}" for i in range(6)])  # 2 per channel: not (d+1)^2 - 1
    elif case == "rest_gap":
        path = _write(tmp_path, BASE + ["f_rest_0", "f_rest_1", "f_rest_5"])
    elif case == "garbage":
        path = tmp_path / "x.ply"
        path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\x00")
    elif case == "nan":
        path = _write(tmp_path, BASE, fill=float("nan"))
    else:
        path = tmp_path / "absent.ply"
    with pytest.raises(OpenLSMError, match=match):
        load_ply(path)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.ply"
    save_ply(target, Gaussians.random(5, seed=0))
    before = target.read_bytes()

    def broken_write(self, stream):
        stream.write(b"ply\npartial")
        raise OSError("disk full")

    monkeypatch.setattr(PlyData, "write", broken_write)
    with pytest.raises(OSError):
        save_ply(target, Gaussians.random(9, seed=1))
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]  # no temp file left behind
    with pytest.raises(ValueError):  # a batch of scenes is refused
        save_ply(tmp_path / "b.ply", Gaussians.stack([Gaussians.random(5)]))


def test_stack_pads_with_invisible_gaussians():
    a, b = Gaussians.random(5, sh_degree=1, seed=0), Gaussians.random(3, sh_degree=0, seed=1)
    s = Gaussians.stack([a, b])
    assert s.means.shape == (2, 5, 3) and s.sh.shape == (2, 5, 4, 3)
    assert (s.opacities[1, 3:] < 1e-12).all()
    assert torch.equal(s[1].means[:3], b.means)
    c = Gaussians.cat([a, b])
    assert len(c) == 8 and c.sh_degree == 1
