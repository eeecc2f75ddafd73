"""The running viewer: colour modes through the GUI state, the CLI entry, and a real headless Chromium showing
the scene from the first input camera (OpenCV: +x right, +y down in the image)."""

import os
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import torch
import tyro

from openlsm.cli.view import View
from openlsm.errors import OpenLSMError
from openlsm.viewer import MODES, start_viewer
from openlsm.viewer.colors import label_palette

from .fake_scene import NAMES, FakeEncoder, write_fake_output

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer") / "out"
    ids, U, W, b = write_fake_output(out, per_blob=700)
    v = start_viewer(out, port=0, encoder=FakeEncoder(U, W, b))
    v.ids = ids
    yield v
    v.stop()


def test_viewer_serves_the_page_and_builds_the_scene(viewer):
    assert viewer.url == f"http://localhost:{viewer.port}" and viewer.port > 0
    with urllib.request.urlopen(viewer.url, timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    assert viewer.startup_s > 0
    assert len(viewer.camera_nodes) == 4  # two frustums + their labels
    assert tuple(viewer.mode_input.options) == MODES


def test_colour_modes_through_the_gui_state(viewer):
    ids = viewer.ids
    viewer.set_mode("Semantic class")
    assert viewer.error is None and viewer.mode == "Semantic class"
    assert torch.equal(viewer.label_ids, ids)
    np.testing.assert_allclose(viewer.colors, label_palette(4)[ids].numpy())
    assert "magenta (700)" in viewer.legend.content
    viewer.set_labels("green, red")  # editing the labels recolours at once
    assert (viewer.label_ids[ids == 1] == 0).all() and (viewer.label_ids[ids == 0] == 1).all()
    assert set(viewer.label_ids.tolist()) == {0, 1}  # no threshold: every Gaussian takes one of the two
    viewer.set_labels(" , ")  # no label: an error in the panel, the colours stay
    assert "at least one label" in viewer.error and viewer.mode == "Semantic class"
    viewer.set_labels(", ".join(NAMES))
    viewer.set_mode("Text query")
    viewer.set_query("green")
    heat = viewer.heat
    assert heat[ids == 1].min() > heat[ids != 1].max()
    viewer.set_mode("Feature PCA")
    assert viewer.error is None and viewer.colors.shape == (len(ids), 3)
    viewer.set_mode("RGB")
    assert (viewer.colors[ids == 0] == [1, 0, 0]).all()
    with pytest.raises(OpenLSMError, match="unknown colour mode"):
        viewer.set_mode("Depth")
    viewer.cameras_input.value = False
    assert not any(n.visible for n in viewer.camera_nodes)
    viewer.cameras_input.value = True


def test_missing_feature_map_is_a_panel_error_not_a_crash(tmp_path):
    _ids, U, W, b = write_fake_output(tmp_path / "out", per_blob=5, feature_map=False)
    (tmp_path / "out" / "cameras.json").unlink()  # and no cameras: default view from the origin
    v = start_viewer(tmp_path / "out", port=0, encoder=FakeEncoder(U, W, b))
    try:
        assert v.camera_nodes == []
        v.set_mode("Semantic class")
        assert "64-d but the text encoder gives 384-d (feature_map.safetensors is missing)" in v.error
        v.set_mode("Feature PCA")  # needs no text space
        assert v.error is None and v.mode == "Feature PCA"
    finally:
        v.stop()


def test_cli_view_bad_folder_is_one_line_error(tmp_path):
    with pytest.raises(OpenLSMError, match="output folder not found"):
        tyro.cli(View, args=[str(tmp_path / "nope")]).run()
    (tmp_path / "x").mkdir()
    with pytest.raises(OpenLSMError, match="has no gaussians.ply"):
        tyro.cli(View, args=[str(tmp_path / "x"), "--port", "0"]).run()
    with pytest.raises(OpenLSMError, match="--port must be in 0..65535"):  # not a traceback in viser's thread
        tyro.cli(View, args=[str(tmp_path / "x"), "--port", "80001"]).run()


def _masks(img: np.ndarray) -> dict[str, np.ndarray]:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    hi, lo = 200, 70
    return {"red": (r > hi) & (g < lo) & (b < lo), "green": (g > hi) & (r < lo) & (b < lo),
            "yellow": (r > hi) & (g > hi) & (b < lo), "magenta": (r > hi) & (b > hi) & (g < lo)}


def _shot(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(page.screenshot())).convert("RGB"))


def _wait_for(page, ok, timeout=40.0) -> np.ndarray:
    end = time.monotonic() + timeout
    while True:
        img = _shot(page)
        if ok(img) or time.monotonic() > end:
            return img
        time.sleep(0.5)


def test_headless_chromium_shows_the_scene_from_the_first_camera(viewer):
    if not os.path.exists(CHROMIUM):
        # .ci/run installs Chromium, so in CI a missing browser is a failure, not a silent skip.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    viewer.set_mode("RGB")
    viewer.set_labels(NAMES)
    w, h = 1000, 700
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                                                   viewport={"width": w, "height": h})
        try:
            page = ctx.new_page()
            page.goto(viewer.url, wait_until="load", timeout=30_000)
            page.wait_for_selector("canvas", timeout=30_000)
            share = 0.003 * w * h
            img = _wait_for(page, lambda im: all(m.sum() > share for m in _masks(im).values()))
            masks = _masks(img)
            counts = {k: int(m.sum()) for k, m in masks.items()}
            assert all(c > share for c in counts.values()), f"scene colours missing from the page: {counts}"
            assert img.astype(float).std() > 30  # not a blank canvas
            ys, xs = np.mgrid[:h, :w]
            cx = {k: xs[m].mean() for k, m in masks.items()}
            cy = {k: ys[m].mean() for k, m in masks.items()}
            # OpenCV camera 0 seen as OpenCV: +x right, +y down, the cross centred on the optical axis
            assert cx["red"] > cx["green"] + 0.15 * w and abs(cy["red"] - cy["green"]) < 0.1 * h
            assert cy["yellow"] > cy["magenta"] + 0.15 * h and abs(cx["yellow"] - cx["magenta"]) < 0.1 * w
            centre = np.mean([[cx[k], cy[k]] for k in masks], 0)
            assert abs(centre[0] - w / 2) < 0.1 * w and abs(centre[1] - h / 2) < 0.1 * h

            # switching the colour mode reaches the browser: pure green gives way to the class palette
            viewer.set_mode("Semantic class")
            pal = (label_palette(4) * 255).numpy()
            gx, gy = int(cx["green"]), int(cy["green"])

            def recoloured(im):
                return _masks(im)["green"].sum() < share and np.abs(im[gy, gx] - pal[1]).max() < 40

            img = _wait_for(page, recoloured)
            assert recoloured(img), f"semantic colours not shown: pixel {img[gy, gx]} vs {pal[1]}"
        finally:
            ctx.close()
            viewer.set_mode("RGB")


def test_default_text_encoder_is_minilm_loaded_on_first_use(tmp_path, monkeypatch):
    """Features already in MiniLM space (no feature map): the viewer asks for 'minilm' only when a semantic
    mode is first used, and the real embeddings label each blob by its own name."""
    from openlsm.gaussians import Gaussians, rgb_to_sh0, save_ply
    from openlsm.models.semantics import text as text_mod

    enc = text_mod.get_text_encoder("minilm")
    names = ["sofa", "bed", "lamp", "plant"]
    ids = torch.arange(4).repeat_interleave(25)
    g = torch.Generator().manual_seed(0)
    feats = text_mod.label_embeddings(enc, names)[ids] + 0.01 * torch.randn(100, 384, generator=g)
    n = len(ids)
    (tmp_path / "out").mkdir()
    save_ply(tmp_path / "out" / "gaussians.ply", Gaussians(
        means=torch.randn(n, 3, generator=g) + torch.tensor([0, 0, 4.0]), quats=torch.randn(n, 4, generator=g),
        log_scales=torch.full((n, 3), -3.0), opacity_logits=torch.zeros(n), sh=rgb_to_sh0(torch.rand(n, 1, 3)),
        features=feats))
    calls = []
    monkeypatch.setattr(text_mod, "get_text_encoder", lambda name, **kw: calls.append(name) or enc)
    v = start_viewer(tmp_path / "out", port=0)
    try:
        assert calls == []  # nothing loaded at start-up
        v.set_labels(names)
        v.set_mode("Semantic class")
        assert calls == ["minilm"] and v.error is None
        assert torch.equal(v.label_ids, ids)
        v.set_mode("Text query")
        v.set_query("lamp")
        assert calls == ["minilm"]  # loaded once
        assert v.heat[ids == 2].min() > v.heat[ids != 2].max() and v.heat[ids == 2].min() > 0.5
    finally:
        v.stop()


def test_clip_space_scene_without_weights_is_a_panel_error(tmp_path):
    import json

    write_fake_output(tmp_path, per_blob=3)
    (tmp_path / "summary.json").write_text(json.dumps({"text_encoder": "clip"}))
    v = start_viewer(tmp_path, port=0)
    try:
        v.set_mode("Text query")
        assert "CLIP space" in v.error and "--text-weights" in v.error and v.mode == "RGB"
    finally:
        v.stop()
