"""The product commands end to end (reconstruct, segment, export, render on a saved folder, demo) and every
bad input of issue 7: exit code != 0, exactly one line on stderr, no traceback, nothing left behind."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from openlsm.cameras.io import read_colmap_text, read_transforms_json
from openlsm.gaussians import load_ply
from openlsm.gaussians.splat import SPLAT_DTYPE
from openlsm.scene import Scene, label_palette

from .conftest import run_cli, run_cli_subprocess
from .test_images import png_bytes

R = 32
OUTPUT_FILES = ["gaussians.ply", "cameras.json", "transforms.json", "colmap/cameras.txt", "colmap/images.txt",
                "colmap/points3D.txt", "images/0000.png", "images/0001.png", "depth/0000.png", "depth/0000_color.png",
                "depth/0001.png", "depth/0001_color.png", "confidence/0000.png", "confidence/0001.png",
                "semantics/0000.png", "semantics/0001.png", "semantics/0000_ids.png", "semantics/labels.json",
                "semantics/legend.png", "features/0000_pca.png", "features/0001_pca.png", "video.mp4",
                "feature_map.safetensors", "maps.safetensors", "config.yaml", "timings.json", "summary.json"]


@pytest.fixture(scope="module")
def recon(tmp_path_factory, minilm_checkpoint, photo_pair):
    out = tmp_path_factory.mktemp("recon") / "room"
    rc, stdout, stderr = run_cli(["reconstruct", *photo_pair, "--checkpoint", minilm_checkpoint, "--out", out,
                                  "--resolution", R, "--frames", 3, "--labels", "wall,floor", "--video", "orbit"])
    assert rc == 0, stderr
    return out, stdout, stderr


def test_reconstruct_writes_every_listed_file(recon):
    out, stdout, stderr = recon
    for f in OUTPUT_FILES:
        assert (out / f).is_file(), f
    assert "Traceback" not in stderr and "Gaussians" in stdout and str(out) in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["wall", "floor"] and summary["num_gaussians"] == 2 * R * R
    assert summary["inputs"][0]["input_size"] == [52, 40] and summary["inputs"][1]["input_size"] == [36, 45]
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings) == ["load_model", "preprocess", "forward", "camera_recovery", "semantic_decode", "save",
                             "video"]
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["command"]["labels"] == "wall,floor" and cfg["scene"]["video"] == "orbit"
    frames = iio.imread(out / "video.mp4")
    assert frames.shape == (3, R, 3 * R, 3)
    g = load_ply(out / "gaussians.ply")
    assert len(g) == 2 * R * R and g.feature_dim == 16  # the tiny model's compact features


def test_segment_labels_and_query_write_new_subfolders(recon):
    out, _, _ = recon
    before = sorted(p.name for p in out.iterdir())
    rc, _, stderr = run_cli(["segment", out, "--labels", "sofa,table"])
    assert rc == 0, stderr
    seg_dir = out / "segment-sofa-table"
    for f in ("0000.png", "0001_ids.png", "legend.png", "labels.json", "probabilities.safetensors", "labelled.ply"):
        assert (seg_dir / f).is_file(), f
    ids = np.asarray(Image.open(seg_dir / "0000_ids.png"))
    colours = np.asarray(Image.open(seg_dir / "0000.png"))
    pal = label_palette(2).numpy()
    for k in (0, 1):  # the colour map is the id map through the legend's palette
        assert (colours[ids == k] == pal[k]).all()
    labelled = load_ply(seg_dir / "labelled.ply")
    scene = Scene.load(out)
    seg = scene.segment(["sofa", "table"])
    assert torch.allclose(labelled.colors_dc, seg.colors(), atol=1e-5)

    rc, _, stderr = run_cli(["segment", out, "--query", "a red chair"])
    assert rc == 0, stderr
    q = out / "query-a-red-chair"
    assert (q / "0000.png").is_file() and (q / "relevancy.safetensors").is_file() and (q / "relevancy.ply").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(before + ["segment-sofa-table", "query-a-red-chair"])

    for argv in (["segment", out], ["segment", out, "--labels", "a", "--query", "b"],
                 ["segment", out, "--labels", "sofa,table"]):  # neither, both, already exists
        rc, _, stderr = run_cli(argv)
        assert rc == 2 and stderr.count("\n") == 1 and stderr.startswith("openlsm: error:")


def test_export_formats(recon, tmp_path):
    out, _, _ = recon
    scene = Scene.load(out)
    n = len(scene.gaussians)
    assert run_cli(["export", out, "--format", "splat", "--to", tmp_path / "s.splat"])[0] == 0
    raw = np.frombuffer((tmp_path / "s.splat").read_bytes(), dtype=SPLAT_DTYPE)
    assert len(raw) == n and (tmp_path / "s.splat").stat().st_size == 32 * n
    assert run_cli(["export", out, "--format", "ply", "--to", tmp_path / "p.ply", "--no-semantics"])[0] == 0
    p = load_ply(tmp_path / "p.ply")
    assert p.features is None and torch.equal(p.means, scene.gaussians.means)
    assert run_cli(["export", out, "--format", "colmap", "--to", tmp_path / "colmap", "--max-points", 100])[0] == 0
    cams, names = read_colmap_text(tmp_path / "colmap" / "sparse" / "0")
    assert torch.allclose(cams.c2w, scene.cameras.c2w, atol=1e-5) and torch.allclose(cams.Ks, scene.cameras.Ks)
    assert all((tmp_path / "colmap" / "images" / nm).is_file() for nm in names)
    pts = [ln for ln in (tmp_path / "colmap" / "sparse" / "0" / "points3D.txt").read_text().splitlines()
           if not ln.startswith("#")]
    assert len(pts) == 100
    assert run_cli(["export", out, "--format", "transforms", "--to", tmp_path / "ns"])[0] == 0
    cams, names = read_transforms_json(tmp_path / "ns" / "transforms.json")
    assert torch.allclose(cams.c2w, scene.cameras.c2w, atol=1e-5)
    assert all((tmp_path / "ns" / nm).is_file() for nm in names)
    rc, _, stderr = run_cli(["export", out, "--format", "splat", "--to", tmp_path / "s.splat"])
    assert rc == 2 and stderr.count("\n") == 1 and "already exists" in stderr


def test_render_command_on_a_saved_folder(recon, tmp_path):
    out, _, _ = recon
    rc, _, stderr = run_cli(["render", out / "gaussians.ply", "--cameras", out / "cameras.json", "--path",
                             "keyframes", "--width", R, "--height", R, "--no-video", "--out", tmp_path / "r"])
    assert rc == 0, stderr
    rendered = np.asarray(Image.open(tmp_path / "r" / "rgb" / "0000.png")).astype(np.float32) / 255
    scene = Scene.load(out)
    ours = scene.render(scene.cameras[0]).rgb.clamp(0, 1).numpy()
    assert np.abs(rendered - ours).max() <= 1 / 255 + 1e-6  # same scene, same camera, same pixels


def test_demo_without_weights_warns_once_and_writes_the_folder(tmp_path, monkeypatch):
    import openlsm.reconstruct

    monkeypatch.setattr(openlsm.reconstruct, "shipped_weights", lambda: None)
    out = tmp_path / "demo"
    rc, stdout, stderr = run_cli(["demo", "--example", "armchairs", "--resolution", R, "--video", "none",
                                  "--labels", "wall,floor", "--out", out])
    assert rc == 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "meaningless" in lines[0] and lines[0].startswith("openlsm: warning:")
    assert (out / "summary.json").is_file() and (out / "semantics" / "legend.png").is_file()
    assert "Gaussians" in stdout and "time" in stdout
    rc, stdout, _ = run_cli(["demo", "--list-examples"])
    assert rc == 0 and {"armchairs", "meeting_room"} <= {ln.split(":")[0] for ln in stdout.splitlines()}


def test_synth_example_writer(tmp_path):
    from openlsm.examples import write_synth_example

    d = write_synth_example(tmp_path / "synth", resolution=32)
    gt = json.loads((d / "ground_truth.json").read_text())
    assert len(gt["Ks"]) == 2 and len(gt["c2w"]) == 2 and gt["width"] == 32
    assert Image.open(d / "image_0.png").size == (32, 32) and Image.open(d / "image_1.png").size == (32, 32)


# --- bad input ---------------------------------------------------------------------------------------------------

def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def _read_only_dir(tmp_path: Path) -> Path | None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").mkdir()
    except OSError:
        return d
    (d / "probe").rmdir()  # running as root: permissions do not apply; use a file system that refuses writes
    sys_dir = Path("/sys")
    try:
        (sys_dir / "openlsm-probe").mkdir()
    except OSError:
        return sys_dir
    return None


BAD = ["missing", "folder", "unreadable", "truncated", "not_an_image", "one_by_one", "huge", "one_image",
       "wrong_checkpoint", "exists", "read_only", "negative_feature_fit", "negative_color_fit",
       "negative_refine"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_no_traceback_nothing_left(case, tmp_path, photo_pair, tiny_checkpoint):
    a, b = photo_pair
    out = tmp_path / "out"
    ckpt = tiny_checkpoint
    images, extra = [a, b], []
    if case == "missing":
        images = [a, tmp_path / "nope.jpg"]
    elif case == "folder":
        (tmp_path / "dir.png").mkdir()
        images = [tmp_path / "dir.png", b]
    elif case == "unreadable":
        bad = tmp_path / "locked.png"
        bad.write_bytes(a.read_bytes())
        bad.chmod(0)
        if _readable(bad):  # root ignores permissions: use a file the kernel refuses even to root
            bad = Path("/proc/1/mem")
            if _readable(bad):
                pytest.skip("no unreadable file available")
        images = [a, bad]
    elif case == "truncated":
        bad = tmp_path / "cut.jpg"
        bad.write_bytes(b.read_bytes()[:300])
        images = [a, bad]
    elif case == "not_an_image":
        bad = tmp_path / "notes.png"
        bad.write_text("just text")
        images = [bad, b]
    elif case == "one_by_one":
        Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
        images = [a, tmp_path / "dot.png"]
    elif case == "huge":
        (tmp_path / "huge.png").write_bytes(png_bytes(20000, 20000, 8, 2, None))
        images = [tmp_path / "huge.png", b]
    elif case == "one_image":
        images = [a]
    elif case == "wrong_checkpoint":
        from openlsm.models.checkpoint_io import save_model
        from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet

        ckpt = save_model(tmp_path / "geo", GeometryNet(GeometryConfig.tiny()), GeometryConfig.tiny()).parent
    elif case == "exists":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    elif case == "read_only":
        ro = _read_only_dir(tmp_path)
        if ro is None:
            pytest.skip("no read-only location available")
        out = ro / "out"
    elif case == "negative_feature_fit":
        extra = ["--feature-fit", "-1"]
    elif case == "negative_color_fit":
        extra = ["--color-fit", "-1"]
    elif case == "negative_refine":
        extra = ["--refine", "-1"]
    rc, _, stderr = run_cli(["reconstruct", *images, "--checkpoint", ckpt, "--out", out, "--resolution", R,
                             "--video", "none", *extra])
    assert rc == 2
    assert stderr.count("\n") == 1 and stderr.startswith("openlsm: error:"), stderr
    assert "Traceback" not in stderr
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    else:
        assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]  # no temporary folder left


@pytest.mark.parametrize("case", ["huge", "wrong_checkpoint"])
def test_bad_input_in_a_real_process(case, tmp_path, photo_pair, tiny_checkpoint):
    """The console entry point itself: nothing else (warnings, logging, tracebacks) reaches stderr."""
    a, b = photo_pair
    images, ckpt = [a, b], tiny_checkpoint
    if case == "huge":
        (tmp_path / "huge.png").write_bytes(png_bytes(20000, 20000, 8, 2, None))
        images = [a, tmp_path / "huge.png"]
    else:
        (tmp_path / "x.pth").write_bytes(b"not a checkpoint at all")
        ckpt = tmp_path / "x.pth"
    r = run_cli_subprocess(["reconstruct", *images, "--checkpoint", ckpt, "--out", tmp_path / "out",
                            "--resolution", R])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("openlsm: error:"), r.stderr
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_nothing(tmp_path, photo_pair, tiny_checkpoint, monkeypatch, hash_encoder):
    import openlsm.reconstruct
    import openlsm.scene_io

    from .test_scene import pixel_aligned_scene

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    def quick(*a, **k):  # the model is not under test here: a hand-made scene keeps this fast
        scene, _ = pixel_aligned_scene(hash_encoder, labels=["apple"])
        scene.info["model"] = {}
        return scene

    monkeypatch.setattr(openlsm.reconstruct, "reconstruct", quick)
    monkeypatch.setattr(openlsm.scene_io, "save_video", disk_full)
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["reconstruct", *photo_pair, "--checkpoint", tiny_checkpoint, "--out", out,
                             "--resolution", R, "--frames", 2])
    assert rc == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("openlsm: error:") and "No space left" in last and "Traceback" not in stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_render_command_takes_the_folder_itself(recon, tmp_path):
    out, _, _ = recon
    args = ["--path", "keyframes", "--width", R, "--height", R, "--no-video"]
    assert run_cli(["render", out, *args, "--out", tmp_path / "a"])[0] == 0
    assert run_cli(["render", out / "gaussians.ply", "--cameras", out / "cameras.json", *args, "--out",
                    tmp_path / "b"])[0] == 0
    a = np.asarray(Image.open(tmp_path / "a" / "rgb" / "0000.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / "rgb" / "0000.png")))
