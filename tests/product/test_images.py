"""Image loading: formats, orientation, size limits before decoding, and the resize/crop transform."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from openlsm.errors import OpenLSMError
from openlsm.io.images import MAX_PIXELS, fit_transform, load_image, load_images, prepare_images


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes | None) -> bytes:
    """A PNG written by hand (so headers can claim any size, and 16-bit RGB is possible)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(raw_rows if raw_rows is not None else b"\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_rgb_png_values_exact(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 20, 30) and img.dtype == torch.float32
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 30, 3), np.uint8)  # h=20, w=30
    stored[:4, :4] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif, quality=100)
    img = load_image(tmp_path / "o.jpg")
    assert img.shape == (3, 30, 20)  # displayed: w=20, h=30
    # 90 deg clockwise: stored (r, c) -> displayed (c, H-1-r); the top-left block lands at the top-right.
    assert img[0, :3, -3:].mean() > 0.8 and img[1, :3, -3:].mean() < 0.2
    assert img[0, :3, :3].mean() < 0.2


def test_grayscale_palette_rgba_cmyk_become_rgb(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8), "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (3, 16, 16) and torch.allclose(g, torch.full_like(g, 128 / 255))

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 0)  # transparent red -> white background
    rgba[:, 8:] = (0, 0, 255, 255)  # opaque blue
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    assert torch.allclose(a[:, :, :8], torch.ones(3, 16, 8))
    assert torch.allclose(a[:, :, 8:], torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 16, 8))

    p = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8), (16, 1)), "P")
    p.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    p.save(tmp_path / "p.png")
    pi = load_image(tmp_path / "p.png")
    assert torch.allclose(pi[0, 0], torch.arange(16) / 255) and torch.allclose(pi[1, 0], (255 - torch.arange(16)) / 255)

    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # CMYK red
    c = load_image(tmp_path / "c.jpg")
    assert c.shape == (3, 16, 16) and c[0].mean() > 0.9 and c[1].mean() < 0.1


def test_16bit_gray_keeps_precision_and_16bit_rgb_loads(tmp_path):
    vals = np.full((16, 16), 1000, np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.png")
    g = load_image(tmp_path / "g16.png")
    assert torch.allclose(g, torch.full_like(g, 1000 / 65535))  # an 8-bit path would give 0 or 1/255

    rows = b"".join(b"\0" + struct.pack(">" + "H" * 48, *([0x1234, 0x8000, 0xFFFF] * 16)) for _ in range(16))
    (tmp_path / "rgb16.png").write_bytes(png_bytes(16, 16, 16, 2, rows))
    c = load_image(tmp_path / "rgb16.png")
    expect = torch.tensor([0x1234, 0x8000, 0xFFFF]) / 65535
    assert c.shape == (3, 16, 16) and torch.allclose(c[:, 5, 5], expect, atol=1 / 255)


@pytest.mark.parametrize("case", ["missing", "folder", "text", "truncated_png", "truncated_jpg", "tiny", "huge",
                                  "over_limit", "empty"])
def test_bad_files_are_one_line_errors(tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "folder":
        path.mkdir()
    elif case == "text":
        path.write_text("hello, I am not an image\n")
    elif case in ("truncated_png", "truncated_jpg"):
        arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        path = tmp_path / ("t.png" if case == "truncated_png" else "t.jpg")
        Image.fromarray(arr).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    elif case == "huge":  # 20000 x 20000 claimed by the header; decoding would need 1.2 GB
        path.write_bytes(png_bytes(20000, 20000, 8, 2, None))
    elif case == "over_limit":  # between Pillow's warning and error limits: our own limit must catch it
        w = 11000
        h = MAX_PIXELS // w + 1
        path.write_bytes(png_bytes(w, h, 8, 2, None))
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(OpenLSMError) as e:
        load_image(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path.name) in msg
    if case in ("huge", "over_limit"):
        assert "too large" in msg
    if case == "tiny":
        assert "too small" in msg


def test_fit_transform_maps_model_pixels_back_to_input_pixels():
    # Input 80 wide x 40 high whose colour encodes the pixel position: R = x / 80, G = y / 40.
    h, w = 40, 80
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    img = torch.stack([xs / w, ys / h, torch.zeros_like(xs)])
    prep = prepare_images([img], (32, 32))
    t = prep.transforms[0]
    assert t.scale == (0.8, 0.8) and t.crop == (16, 0) and t.size == (32, 32)
    out = prep.images[0]
    vs, us = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    uv_in = t.to_input(torch.stack([us, vs], -1))  # [32, 32, 2] input coordinates of every model pixel
    inner = (slice(2, -2), slice(2, -2))  # away from the resize borders, a linear ramp stays exact
    assert torch.allclose(out[0][inner], (uv_in[..., 0] / w)[inner], atol=2e-3)
    assert torch.allclose(out[1][inner], (uv_in[..., 1] / h)[inner], atol=2e-3)


def test_input_cameras_project_where_to_input_says():
    from openlsm.cameras import Cameras, make_K, project

    t = fit_transform(300, 200, (64, 96))  # H=64, W=96
    cams = Cameras(make_K(80.0, 80.0, 48.0, 32.0), torch.eye(4), 96, 64)
    pts = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])
    uv_model, _ = project(pts, cams.Ks, cams.viewmats)
    cin = t.input_cameras(cams)
    uv_in, _ = project(pts, cin.Ks, cin.viewmats)
    assert (cin.width, cin.height) == (300, 200)
    assert torch.allclose(uv_in, t.to_input(uv_model), atol=1e-4)


def test_load_images_prepares_any_sizes(tmp_path):
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((90, 33, 3), np.uint8)).save(tmp_path / "b.png")
    p = load_images([tmp_path / "a.png", tmp_path / "b.png"], 32)
    assert p.images.shape == (2, 3, 32, 32) and len(p.transforms) == 2
    assert p.transforms[1].input_size == (33, 90)
    with pytest.raises(OpenLSMError, match="multiples of 16"):
        load_images([tmp_path / "a.png"], 40)
