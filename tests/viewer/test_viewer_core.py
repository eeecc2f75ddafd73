"""Pure parts of the viewer: covariances, colour modes, OpenCV -> viser poses, reading an output folder."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from openlsm.errors import OpenLSMError
from openlsm.viewer.colors import (
    OTHER_COLOR,
    class_colors,
    covariances,
    label_palette,
    parse_labels,
    pca_colors,
    relevancy_colors,
    to_text_space,
)
from openlsm.viewer.data import DEFAULT_LABELS, load_view_scene
from openlsm.viewer.poses import c2w_to_wxyz_position, frustum_fov_aspect, initial_view, scene_extent

from .fake_scene import NAMES, FakeEncoder, make_parts, write_fake_output


def test_covariances_match_float64_rotation_reference():
    g = torch.Generator().manual_seed(1)
    quats, log_scales = torch.randn(50, 4, generator=g).double(), torch.randn(50, 3, generator=g).double() * 0.5
    covs = covariances(quats, log_scales)
    # scipy quaternions are xyzw; the container stores wxyz
    R = torch.from_numpy(Rotation.from_quat(quats[:, [1, 2, 3, 0]].numpy()).as_matrix())
    S = torch.diag_embed(log_scales.exp())
    torch.testing.assert_close(covs, R @ S @ S @ R.transpose(1, 2), rtol=1e-10, atol=1e-12)
    # eigenvalues are the variances
    torch.testing.assert_close(torch.linalg.eigvalsh(covs), (2 * log_scales).exp().sort(-1).values)


def test_to_text_space_is_the_affine_map_and_checks_dims():
    f, W, b = torch.randn(7, 5).double(), torch.randn(3, 5).double(), torch.randn(3).double()
    ref = torch.einsum("df,nf->nd", W, f) + b
    torch.testing.assert_close(to_text_space(f, W, b).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(to_text_space(f, None, None).double(), f, rtol=1e-6, atol=1e-6)
    with pytest.raises(OpenLSMError, match="expects 4-d"):
        to_text_space(f, torch.randn(3, 4), None)


def test_parse_labels_and_palette():
    assert parse_labels(" wall, floor ,,chair\nsofa, wall ") == ["wall", "floor", "chair", "sofa"]
    assert parse_labels(" , ") == []
    pal = label_palette(17)
    assert pal.shape == (17, 3) and pal.min() >= 0 and pal.max() <= 1
    d = torch.cdist(pal, pal) + torch.eye(17) * 9
    assert d.min() > 0.05  # every class gets its own colour
    torch.testing.assert_close(label_palette(17)[:5], label_palette(5))  # stable when labels are added


@pytest.fixture(scope="module")
def parts():
    gauss, ids, U, W, b = make_parts(per_blob=60, seed=3)
    return gauss, ids, FakeEncoder(U, W, b), to_text_space(gauss.features, W, b)


def test_class_colors_label_each_blob_by_its_name(parts):
    _, ids, enc, text = parts
    rgb, got = class_colors(text, NAMES, enc)
    assert torch.equal(got, ids)
    torch.testing.assert_close(rgb, label_palette(len(NAMES))[ids])
    # reversed label order -> reversed ids, same grouping
    _, rev = class_colors(text, NAMES[::-1], enc)
    assert torch.equal(rev, len(NAMES) - 1 - ids)
    # an unreachable threshold leaves everything as OTHER (grey)
    rgb, got = class_colors(text, NAMES, enc, threshold=1.01)
    assert (got == -1).all() and torch.allclose(rgb, torch.tensor(OTHER_COLOR).expand_as(rgb))
    with pytest.raises(OpenLSMError, match="at least one label"):
        class_colors(text, [], enc)


def test_relevancy_colors_are_hottest_on_the_queried_blob(parts):
    _, ids, enc, text = parts
    rgb, heat = relevancy_colors(text, "  yellow ", enc)
    k = NAMES.index("yellow")
    assert rgb.shape == (len(ids), 3) and 0 < heat.min() and heat.max() < 1
    assert heat[ids == k].min() > heat[ids != k].max()
    assert heat[ids == k].min() > 0.5  # preferred over every canonical negative
    with pytest.raises(OpenLSMError, match="text query"):
        relevancy_colors(text, "  ", enc)


def test_pca_colors_separate_blobs(parts):
    gauss, ids, _, _ = parts
    rgb = pca_colors(gauss.features)
    assert rgb.shape == (len(ids), 3) and rgb.min() >= 0 and rgb.max() <= 1
    means = torch.stack([rgb[ids == k].mean(0) for k in range(len(NAMES))])
    spread = max(float(rgb[ids == k].std(0).norm()) for k in range(len(NAMES)))
    gaps = torch.cdist(means, means) + torch.eye(len(NAMES)) * 9
    assert gaps.min() > 3 * spread


def test_opencv_pose_to_viser_hand_computed():
    # 90 degrees about +y: camera x -> world -z, camera z (forward) -> world +x
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    c2w[:3, 3] = torch.tensor([1.0, 2, 3])
    wxyz, pos = c2w_to_wxyz_position(c2w)
    h = math.sqrt(0.5)
    torch.testing.assert_close(wxyz, torch.tensor([h, 0, h, 0], dtype=torch.float64))
    torch.testing.assert_close(pos, torch.tensor([1.0, 2, 3], dtype=torch.float64))
    # points 1, 2 and 4 m ahead (world +x): orbit 2 m ahead, from 1 m behind, image up = -y
    pts = torch.tensor([[2.0, 2, 3], [3, 2, 3], [5, 2, 3]])
    position, target, up = initial_view(c2w, pts, pull_back=0.5)
    f64 = lambda *v: torch.tensor(v, dtype=torch.float64)
    torch.testing.assert_close(target, f64(3.0, 2, 3))
    torch.testing.assert_close(position, f64(0.0, 2, 3))
    torch.testing.assert_close(up, f64(0.0, -1, 0))
    # OpenGL-style flip (180 degrees about x) -> wxyz (0, 1, 0, 0)
    flip = torch.diag(torch.tensor([1.0, -1, -1, 1], dtype=torch.float64))
    torch.testing.assert_close(c2w_to_wxyz_position(flip)[0], torch.tensor([0.0, 1, 0, 0], dtype=torch.float64))


def test_viser_reads_our_quaternions_as_the_same_rotations():
    viser_tf = pytest.importorskip("viser.transforms")
    R = torch.from_numpy(Rotation.random(6, random_state=0).as_matrix())
    c2w = torch.eye(4, dtype=torch.float64).repeat(6, 1, 1)
    c2w[:, :3, :3] = R
    wxyz, _ = c2w_to_wxyz_position(c2w)
    for i in range(6):
        np.testing.assert_allclose(viser_tf.SO3(wxyz[i].numpy()).as_matrix(), R[i].numpy(), atol=1e-12)


def test_frustum_fov_and_initial_view_fallback():
    K = torch.tensor([[150.0, 0, 100], [0, 100, 100], [0, 0, 1]])
    fov, aspect = frustum_fov_aspect(K, 300, 200)
    assert fov == pytest.approx(math.pi / 2) and aspect == pytest.approx(1.5)
    # identity camera, 200x200 image: (0,0,2) and (0.5,0.5,1) project inside, (3,0,1) outside, (0,0,-2) behind
    inside = torch.tensor([[0.0, 0, 2], [0.5, 0.5, 1]])
    pts = torch.cat([inside, torch.tensor([[3.0, 0, 1], [0, 0, -2]])])
    K = torch.tensor([[100.0, 0, 100], [0, 100, 100], [0, 0, 1]])
    _, target, _ = initial_view(torch.eye(4), pts, K, 200, 200, min_visible=0.5)
    torch.testing.assert_close(target, torch.tensor([0.0, 0, 1.0], dtype=torch.float64))  # median of 1, 2 (lower)
    # when too few are seen, look at the points' median from 1.5 extents back along the camera axis
    position, target, _up = initial_view(torch.eye(4), pts, K, 200, 200, min_visible=0.75)
    centre = pts.double().median(0).values
    torch.testing.assert_close(target, centre)
    torch.testing.assert_close(position, centre - torch.tensor([0, 0, 1.5 * scene_extent(pts)], dtype=torch.float64))
    box = torch.rand(5000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 4, 0])
    assert scene_extent(box) == pytest.approx(5 * 0.96, rel=0.03)  # 2-98 % of a 3 x 4 box: 0.96 of 5


def test_load_view_scene_reads_the_folder(tmp_path):
    _ids, _U, W, b = write_fake_output(tmp_path / "out", per_blob=10)
    scene = load_view_scene(tmp_path / "out")
    assert len(scene.gaussians) == 40 and scene.gaussians.feature_dim == 64
    assert scene.cameras.c2w.shape == (2, 4, 4) and scene.camera_names == ["view_0.png", "view_1.png"]
    assert scene.labels == NAMES
    torch.testing.assert_close(scene.W, W)
    torch.testing.assert_close(scene.text_features(), to_text_space(scene.gaussians.features, W, b))


@pytest.mark.parametrize("doc, expected", [
    (["void", "wall", "sofa"], ["wall", "sofa"]),
    ({"0": "void", "2": "sofa", "1": "wall"}, ["wall", "sofa"]),
    ({"labels": ["bed", "lamp"]}, ["bed", "lamp"]),
    ({"something": "else"}, DEFAULT_LABELS),
])
def test_labels_json_layouts(tmp_path, doc, expected):
    write_fake_output(tmp_path, per_blob=2)
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    assert load_view_scene(tmp_path).labels == expected


def test_bad_folders_give_one_line_errors(tmp_path):
    cases = []
    with pytest.raises(OpenLSMError, match="output folder not found") as e:
        load_view_scene(tmp_path / "missing")
    cases.append(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpenLSMError, match="has no gaussians.ply") as e:
        load_view_scene(tmp_path / "empty")
    cases.append(e)
    write_fake_output(tmp_path / "a", per_blob=2)
    (tmp_path / "a" / "labels.json").write_text("{not json")
    with pytest.raises(OpenLSMError, match="not valid JSON") as e:
        load_view_scene(tmp_path / "a")
    cases.append(e)
    write_fake_output(tmp_path / "b", per_blob=2)
    (tmp_path / "b" / "feature_map.safetensors").write_bytes(b"garbage")
    with pytest.raises(OpenLSMError, match="not a readable safetensors") as e:
        load_view_scene(tmp_path / "b")
    cases.append(e)
    write_fake_output(tmp_path / "c", per_blob=2)
    (tmp_path / "c" / "gaussians.ply").write_text("ply\nnonsense\n")
    with pytest.raises(OpenLSMError) as e:
        load_view_scene(tmp_path / "c")
    cases.append(e)
    assert all("\n" not in str(c.value) for c in cases)


def test_feature_map_of_the_wrong_width_is_refused(tmp_path):
    from safetensors.torch import save_file

    write_fake_output(tmp_path, per_blob=2)
    save_file({"W": torch.zeros(384, 32), "b": torch.zeros(384)}, str(tmp_path / "feature_map.safetensors"))
    with pytest.raises(OpenLSMError, match="W maps 32-d features, but gaussians.ply has 64"):
        load_view_scene(tmp_path)


def test_folder_metadata_summary_pca_and_short_key_names(tmp_path):
    from safetensors.torch import save_file


    _, _, W, b = write_fake_output(tmp_path, per_blob=5)
    comps = torch.zeros(64, 3)
    comps[5, 0] = comps[6, 1] = comps[7, 2] = 1.0  # the folder's PCA reads feature dims 5, 6, 7
    pca = {"pca.mean": torch.zeros(64), "pca.components": comps, "pca.low": -torch.ones(3), "pca.high": torch.ones(3)}
    save_file({"W": W, "b": b, **pca}, str(tmp_path / "feature_map.safetensors"))
    (tmp_path / "semantics").mkdir()
    (tmp_path / "semantics" / "labels.json").write_text(json.dumps({"labels": ["x"], "colors": [[1, 2, 3]]}))
    (tmp_path / "summary.json").write_text(json.dumps({"labels": ["sofa", "bed"], "threshold": 0.4,
                                                       "text_encoder": "clip"}))
    scene = load_view_scene(tmp_path)
    assert scene.labels == ["sofa", "bed"] and scene.threshold == 0.4 and scene.text_encoder == "clip"
    torch.testing.assert_close(scene.W, W)
    f = scene.gaussians.features
    expected = ((f[:, 5:8] + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(pca_colors(f, scene.pca), expected)
    assert not torch.allclose(pca_colors(f), expected, atol=0.05)  # a fresh fit would differ
    (tmp_path / "summary.json").unlink()
    assert load_view_scene(tmp_path).labels == NAMES  # then the top-level labels.json
    (tmp_path / "labels.json").unlink()
    assert load_view_scene(tmp_path).labels == ["x"]  # then the segmentation's semantics/labels.json
