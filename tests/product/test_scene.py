"""Scene queries on hand-made scenes (float64 references), the output folder, and Scene.load(save()) round trips."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from openlsm.cameras import Cameras, make_K, unproject_depth
from openlsm.cameras.io import read_cameras_json, read_colmap_text, read_transforms_json
from openlsm.errors import OpenLSMError
from openlsm.gaussians import Gaussians, load_ply, rgb_to_sh0
from openlsm.models.semantics.text import label_embeddings
from openlsm.models.semantics.vocab import CANONICAL_NEGATIVES
from openlsm.scene import OTHER, Scene

NAMES = ["apple", "banana", "cherry"]
V, H, W = 2, 16, 16


def pixel_aligned_scene(enc, labels=None) -> tuple[Scene, torch.Tensor]:
    """Every pixel's Gaussian carries one of three features e_k; the text map sends e_k to the embedding of
    NAMES[k] (plus a bias that the scene must add back)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 3, (V * H * W,), generator=g)
    texts = label_embeddings(enc, NAMES)  # [3, 16]
    bias = 0.05 * torch.randn(16, generator=g)
    weight = texts.T.clone()  # [16, 3]: e_k -> t_k
    feats = F.one_hot(truth, 3).float() * 1.0  # [N, 3]
    c2w = torch.eye(4).repeat(V, 1, 1)
    c2w[1, 0, 3] = 0.2
    cams = Cameras(make_K(12.0, 12.0, W / 2, H / 2).expand(V, 3, 3).clone(), c2w, W, H)
    depths = torch.full((V, H, W), 2.0) + 0.1 * torch.rand(V, H, W, generator=g)
    means = unproject_depth(depths, cams.Ks, cams.c2w).reshape(-1, 3)
    n = means.shape[0]
    gs = Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
                   log_scales=torch.full((n, 3), -2.0), opacity_logits=torch.full((n,), 3.0),
                   sh=rgb_to_sh0(torch.rand(n, 1, 3, generator=g)), features=feats)
    scene = Scene(gaussians=gs, cameras=cams, images=torch.rand(V, 3, H, W, generator=g), depths=depths,
                  confidences=1 + torch.rand(V, H, W, generator=g), feature_weight=weight,
                  feature_bias=bias, text_encoder_name="hash16", names=["x.png", "y.png"], labels=labels,
                  text_encoder=enc, timings={"forward": 0.5}, info={"camera_confidence": [1.0, 0.9]})
    return scene, truth


def reference_probs(scene: Scene, names, enc, temperature=0.07) -> torch.Tensor:
    f = scene.gaussians.features.double() @ scene.feature_weight.double().T + scene.feature_bias.double()
    t = label_embeddings(enc, names).double()
    cos = F.normalize(f, dim=-1) @ F.normalize(t, dim=-1).T
    return torch.softmax(cos / temperature, -1)


def test_segment_pixel_aligned_matches_reference(hash_encoder):
    scene, truth = pixel_aligned_scene(hash_encoder)
    seg = scene.segment(NAMES)
    ref = reference_probs(scene, NAMES, hash_encoder)
    assert torch.allclose(seg.probs.double(), ref, atol=1e-5)
    assert torch.equal(seg.labels, ref.argmax(-1))
    assert torch.equal(seg.labels, truth)  # the map sends e_k to t_k: every Gaussian gets its own class
    assert torch.equal(seg.view_labels, truth.reshape(V, H, W))
    fr = seg.fractions()
    assert abs(sum(fr.values()) - 1) < 1e-9 and fr["other"] == 0
    assert abs(fr["apple"] - float((truth == 0).float().mean())) < 1e-9
    # a threshold above every confidence sends everything to OTHER
    assert (scene.segment(NAMES, threshold=1.01).labels == OTHER).all()
    # a comma-separated string is the same query
    assert torch.equal(scene.segment("apple, banana,cherry").labels, seg.labels)


def test_relevancy_matches_lerf_reference(hash_encoder):
    scene, truth = pixel_aligned_scene(hash_encoder)
    rel = scene.relevancy("banana")
    f = scene.gaussians.features.double() @ scene.feature_weight.double().T + scene.feature_bias.double()
    q = label_embeddings(hash_encoder, ["banana"]).double()
    n = label_embeddings(hash_encoder, list(CANONICAL_NEGATIVES)).double()
    cq = F.normalize(f, dim=-1) @ F.normalize(q, dim=-1).T  # [N, 1]
    cn = F.normalize(f, dim=-1) @ F.normalize(n, dim=-1).T  # [N, M]
    ref = (cq.exp() / (cq.exp() + cn.exp())).min(-1).values
    assert torch.allclose(rel.gaussians.double(), ref, atol=1e-5)
    assert torch.equal(rel.views, rel.gaussians.reshape(V, H, W))
    assert rel.gaussians[truth == 1].min() > rel.gaussians[truth != 1].max()
    with pytest.raises(OpenLSMError):
        scene.relevancy("  ")


def test_segment_renders_features_when_not_pixel_aligned(hash_encoder):
    """Two big Gaussians, left one 'apple', right one 'banana': per-pixel labels come from rendering."""
    texts = label_embeddings(hash_encoder, NAMES)
    g = Gaussians(means=torch.tensor([[-0.5, 0.0, 2.0], [0.5, 0.0, 2.0]]),
                  quats=torch.tensor([[1.0, 0, 0, 0]] * 2), log_scales=torch.full((2, 3), float(np.log(0.3))),
                  opacity_logits=torch.full((2,), 5.0), sh=rgb_to_sh0(torch.full((2, 1, 3), 0.5)),
                  features=torch.eye(3)[:2])
    cams = Cameras(make_K(16.0, 16.0, 8.0, 8.0)[None], torch.eye(4)[None], 16, 16)
    scene = Scene(gaussians=g, cameras=cams, images=torch.zeros(1, 3, 16, 16), depths=torch.zeros(1, 16, 16),
                  confidences=torch.ones(1, 16, 16), feature_weight=texts.T.clone(), feature_bias=torch.zeros(16),
                  text_encoder=hash_encoder)
    assert not scene.pixel_aligned
    seg = scene.segment(NAMES)
    assert seg.labels.tolist() == [0, 1]
    lab = seg.view_labels[0]
    assert lab[8, 4] == 0 and lab[8, 12] == 1  # projected centres: u = 8 -/+ 16 * 0.5 / 2
    assert lab[0, 0] == OTHER and lab[15, 15] == OTHER  # nothing covers the corners


def test_encoder_dimension_mismatch_is_a_clear_error(hash_encoder):
    scene, _ = pixel_aligned_scene(hash_encoder)
    scene.text_encoder = type(hash_encoder)(8)
    with pytest.raises(OpenLSMError, match="16-d"):
        scene.segment(NAMES)


def test_save_writes_every_file_and_load_round_trips(tmp_path, hash_encoder):
    scene, _ = pixel_aligned_scene(hash_encoder, labels=["apple", "cherry"])
    out = scene.save(tmp_path / "out", video="orbit", frames=3)
    expected = ["gaussians.ply", "cameras.json", "transforms.json", "colmap/cameras.txt", "colmap/images.txt",
                "colmap/points3D.txt", "images/0000.png", "images/0001.png", "depth/0000.png",
                "depth/0001_color.png", "confidence/0001.png", "maps.safetensors", "features/0000_pca.png",
                "feature_map.safetensors", "semantics/0000.png", "semantics/0001_ids.png", "semantics/labels.json",
                "semantics/legend.png", "semantics/probabilities.safetensors", "video.mp4", "config.yaml",
                "summary.json", "timings.json"]
    for f in expected:
        assert (out / f).is_file(), f
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left

    back = Scene.load(out)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh", "features"):
        assert torch.equal(getattr(back.gaussians, name), getattr(scene.gaussians, name)), name
    assert torch.allclose(back.cameras.Ks, scene.cameras.Ks) and torch.allclose(back.cameras.c2w, scene.cameras.c2w)
    assert (back.images - scene.images).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(back.depths, scene.depths) and torch.equal(back.confidences, scene.confidences)
    assert torch.equal(back.feature_weight, scene.feature_weight) and torch.equal(back.feature_bias, scene.feature_bias)
    assert back.labels == ["apple", "cherry"] and back.text_encoder_name == "hash16"
    assert back.timings["forward"] == 0.5 and "save" in back.timings and "video" in back.timings
    pca_a, pca_b = scene.feature_pca(), back.feature_pca()
    assert torch.equal(pca_a.apply(scene.gaussians.features), pca_b.apply(back.gaussians.features))
    back.text_encoder = hash_encoder  # encoders are not stored, only their names
    assert torch.equal(back.segment(NAMES).labels, scene.segment(NAMES).labels)

    # the per-file contents agree with the scene
    ids = np.asarray(Image.open(out / "semantics" / "0001_ids.png"))
    seg = scene.default_segmentation()
    assert np.array_equal(ids, seg.view_labels[1].numpy().astype(np.uint8))  # no OTHER here (threshold 0)
    summary = json.loads((out / "summary.json").read_text())
    d16 = np.asarray(Image.open(out / "depth" / "0000.png"))
    assert d16.dtype == np.uint16
    assert np.array_equal(d16, np.round(scene.depths[0].numpy() * summary["depth_png_scale"]).astype(np.uint16))
    assert summary["num_gaussians"] == V * H * W and summary["labels"] == ["apple", "cherry"]
    assert set(summary["labels_found"]) <= {"apple", "cherry", "other"}
    labels_doc = json.loads((out / "semantics" / "labels.json").read_text())
    assert labels_doc["labels"] == ["apple", "cherry"] and len(labels_doc["colors"]) == 2
    import imageio.v3 as iio

    frames = iio.imread(out / "video.mp4")
    assert frames.shape == (3, H, 3 * W, 3)  # RGB | depth | semantics side by side


def test_camera_files_round_trip_to_the_same_cameras(tmp_path, hash_encoder):
    scene, _ = pixel_aligned_scene(hash_encoder)
    out = scene.save(tmp_path / "out", video="none")
    for reader, path in ((read_cameras_json, "cameras.json"), (read_transforms_json, "transforms.json"),
                         (read_colmap_text, "colmap")):
        cams, names = reader(out / path)
        assert torch.allclose(cams.Ks, scene.cameras.Ks, atol=1e-5), path
        assert torch.allclose(cams.c2w, scene.cameras.c2w, atol=1e-5), path
        assert (cams.width, cams.height) == (W, H)
        assert [n.split("/")[-1] for n in names] == ["0000.png", "0001.png"]
    g = load_ply(out / "gaussians.ply")
    assert torch.equal(g.means, scene.gaussians.means) and torch.equal(g.features, scene.gaussians.features)
    assert not (out / "video.mp4").exists()


def test_save_refuses_existing_folder_and_leaves_it_alone(tmp_path, hash_encoder):
    scene, _ = pixel_aligned_scene(hash_encoder)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(OpenLSMError, match="already exists"):
        scene.save(tmp_path / "out", video="none")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    scene.save(tmp_path / "out", overwrite=True, video="none")
    assert (tmp_path / "out" / "gaussians.ply").is_file() and not (tmp_path / "out" / "mine.txt").exists()


def test_render_from_input_cameras_sees_the_scene(hash_encoder):
    scene, _ = pixel_aligned_scene(hash_encoder)
    out = scene.render()
    assert out.rgb.shape == (V, H, W, 3)
    assert (out.alpha > 0.5).float().mean() > 0.9  # the pixel-aligned Gaussians cover their own views
    assert torch.allclose(out.depth[0][out.alpha[0] > 0.9], scene.depths[0][out.alpha[0] > 0.9], atol=0.15)


def test_video_paths_start_at_view_one_and_look_at_the_scene(hash_encoder):
    from openlsm.cameras import project
    from openlsm.scene_io import video_path

    scene, _ = pixel_aligned_scene(hash_encoder)
    for frames in (2, 5, 8):
        path = video_path(scene, "interpolate", frames)
        assert path.shape == (frames, 4, 4)
        assert torch.allclose(path[0], scene.cameras.c2w[0], atol=1e-6)
        if frames % 2 == 0:  # the middle frame is the last input view
            assert torch.allclose(path[frames // 2], scene.cameras.c2w[1], atol=1e-5)
    orbit = video_path(scene, "orbit", 6)
    centre = scene.gaussians.means.mean(0)
    uv, z = project(centre.expand(6, 1, 3), scene.cameras.Ks[:1].expand(6, 3, 3), torch.linalg.inv(orbit))
    assert (z > 0).all() and ((uv - torch.tensor([W / 2, H / 2])).abs() < W / 2).all()  # scene stays in view
