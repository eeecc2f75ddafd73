import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from openlsm.cameras import Cameras, look_at
from openlsm.cameras.io import read_cameras_json, write_transforms_json
from openlsm.cli.main import main
from openlsm.gaussians import save_ply
from openlsm.render.demo_scene import demo_scene


@pytest.fixture
def scene_ply(tmp_path):
    return save_ply(tmp_path / "scene.ply", demo_scene(n_floor=24, n_sphere=200))


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "render backends" in capsys.readouterr().out


def test_render_writes_images_depth_video_and_cameras(tmp_path, scene_ply):
    out = tmp_path / "r"
    assert main(["render", str(scene_ply), "--out", str(out), "--frames", "3", "--width", "48", "--height", "32"]) == 0
    rgb = np.asarray(Image.open(out / "rgb" / "0001.png"))
    depth = np.asarray(Image.open(out / "depth" / "0001.png"))
    assert rgb.shape == (32, 48, 3) and rgb.max() > 50  # the scene is visible
    assert depth.dtype == np.uint16 and depth.max() > 0
    assert (out / "rgb.mp4").stat().st_size > 0
    cams, _ = read_cameras_json(out / "cameras.json")
    assert cams.c2w.shape == (3, 4, 4) and (cams.width, cams.height) == (48, 32)


def test_render_along_given_transforms_json(tmp_path, scene_ply):
    c2w = look_at(torch.tensor([[0.0, -0.5, -1.0], [0.3, -0.5, -1.0]]), torch.tensor([[0.0, 0.6, 2.5]] * 2),
                  torch.tensor([0.0, -1.0, 0.0]))
    write_transforms_json(tmp_path / "t.json", Cameras.from_fov(60, 64, 64, c2w))
    out = tmp_path / "r"
    assert main(["render", str(scene_ply), "--out", str(out), "--cameras", str(tmp_path / "t.json"),
                 "--path", "keyframes", "--width", "32", "--height", "32", "--no-video"]) == 0
    assert sorted(p.name for p in (out / "rgb").iterdir()) == ["0000.png", "0001.png"]
    cams, _ = read_cameras_json(out / "cameras.json")
    assert torch.allclose(cams.c2w, c2w, atol=1e-5)  # keyframes are rendered exactly where given


@pytest.mark.parametrize("case", ["missing", "garbage", "exists"])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, scene_ply, case):
    out = tmp_path / "out"
    scene = scene_ply
    if case == "missing":
        scene = tmp_path / "nope.ply"
    elif case == "garbage":
        scene = tmp_path / "bad.ply"
        scene.write_bytes(b"this is not a ply file")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "openlsm.cli.main", "render", str(scene), "--out", str(out),
                        "--frames", "2", "--width", "16", "--height", "16"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("openlsm: error:")
    assert "Traceback" not in r.stderr
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]  # untouched
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left behind


def test_failure_midway_leaves_no_partial_output(tmp_path, scene_ply, monkeypatch):
    from openlsm.io import outputs

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "save_video", boom)
    with pytest.raises(OSError):
        main(["render", str(scene_ply), "--out", str(tmp_path / "r"), "--frames", "2", "--width", "16",
              "--height", "16"])
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]
