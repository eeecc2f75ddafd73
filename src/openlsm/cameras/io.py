"""Camera files at the I/O edge: nerfstudio `transforms.json` (OpenGL c2w), COLMAP text, and our `cameras.json`.

Inside openlsm every camera is OpenCV c2w; these functions convert on the way in and out.

    write_transforms_json("out/transforms.json", cams, ["images/0.png", "images/1.png"])
    cams, names = read_colmap_text("out/colmap")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import OpenLSMError
from ..io.atomic import write_text_atomic
from .cameras import (
    Cameras,
    invert_rigid,
    make_K,
    opencv_to_opengl,
    opengl_to_opencv,
    quat_to_rotmat,
    rotmat_to_quat,
)


def _read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OpenLSMError(f"camera file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenLSMError(f"{path} is not valid JSON ({e})") from None


def _names(cams: Cameras, names: list[str] | None) -> list[str]:
    n = len(cams.flatten())
    names = names or [f"{i:04d}.png" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} cameras")
    return names


# --- nerfstudio transforms.json --------------------------------------------------------------------------------

def write_transforms_json(path, cams: Cameras, names: list[str] | None = None) -> Path:
    cams = cams.flatten()
    frames = []
    for i, name in enumerate(_names(cams, names)):
        K = cams.Ks[i].tolist()
        frames.append({"file_path": name, "fl_x": K[0][0], "fl_y": K[1][1], "cx": K[0][2], "cy": K[1][2],
                       "w": cams.width, "h": cams.height,
                       "transform_matrix": opencv_to_opengl(cams.c2w[i].double()).tolist()})
    doc = {"camera_model": "OPENCV", "w": cams.width, "h": cams.height, "frames": frames}
    return write_text_atomic(path, json.dumps(doc, indent=2))


def read_transforms_json(path) -> tuple[Cameras, list[str]]:
    doc = _read_json(path)
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise OpenLSMError(f"{path} has no 'frames' list")
    Ks, c2ws, names, sizes = [], [], [], set()
    try:
        for fr in frames:
            get = lambda k, fr=fr: fr[k] if k in fr else doc[k]
            w, h = int(get("w")), int(get("h"))
            fx = float(get("fl_x"))
            fy = float(fr.get("fl_y", doc.get("fl_y", fx)))
            cx, cy = float(fr.get("cx", doc.get("cx", w / 2))), float(fr.get("cy", doc.get("cy", h / 2)))
            Ks.append(make_K(fx, fy, cx, cy))
            c2ws.append(opengl_to_opencv(torch.tensor(fr["transform_matrix"], dtype=torch.float64)).float())
            names.append(str(fr["file_path"]))
            sizes.add((w, h))
    except (KeyError, TypeError, ValueError) as e:
        raise OpenLSMError(f"{path}: malformed frame ({type(e).__name__}: {e})") from None
    if len(sizes) != 1:
        raise OpenLSMError(f"{path}: frames of different image sizes are not supported: {sorted(sizes)}")
    (w, h), = sizes
    return Cameras(torch.stack(Ks), torch.stack(c2ws), w, h), names


# --- COLMAP text -----------------------------------------------------------------------------------------------

def write_colmap_text(folder, cams: Cameras, names: list[str] | None = None) -> Path:
    """cameras.txt (PINHOLE), images.txt (w2c quaternion wxyz + translation) and an empty points3D.txt."""
    folder = Path(folder)
    cams = cams.flatten()
    w2c = cams.viewmats.double()
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, name in enumerate(_names(cams, names)):
        K = cams.Ks[i].double()
        cam_lines.append(f"{i + 1} PINHOLE {cams.width} {cams.height} {K[0, 0]:.10g} {K[1, 1]:.10g} "
                         f"{K[0, 2]:.10g} {K[1, 2]:.10g}")
        q = rotmat_to_quat(w2c[i, :3, :3]).tolist()
        t = w2c[i, :3, 3].tolist()
        img_lines += [f"{i + 1} " + " ".join(f"{v:.17g}" for v in q + t) + f" {i + 1} {name}", ""]
    write_text_atomic(folder / "cameras.txt", "\n".join(cam_lines) + "\n")
    write_text_atomic(folder / "images.txt", "\n".join(img_lines) + "\n")
    write_text_atomic(folder / "points3D.txt", "# 3D point list (empty)\n")
    return folder


def _data_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except FileNotFoundError:
        raise OpenLSMError(f"COLMAP file not found: {path}") from None


def read_colmap_text(folder) -> tuple[Cameras, list[str]]:
    folder = Path(folder)
    intr, sizes = {}, {}
    for ln in _data_lines(folder / "cameras.txt"):
        p = ln.split()
        try:
            cid, model, w, h, params = p[0], p[1], int(p[2]), int(p[3]), [float(v) for v in p[4:]]
        except (IndexError, ValueError):
            raise OpenLSMError(f"{folder / 'cameras.txt'}: malformed line: {ln!r}") from None
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            (fx, cx, cy), distortion = params[:3], params[3:]
            fy = fx
        elif model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            (fx, fy, cx, cy), distortion = params[:4], params[4:]
        else:
            raise OpenLSMError(f"COLMAP camera model {model} is not supported (use a pinhole or OpenCV model)")
        if any(v != 0 for v in distortion):
            raise OpenLSMError(f"COLMAP camera {cid} has lens distortion; undistort the images first")
        intr[cid], sizes[cid] = make_K(fx, fy, cx, cy), (w, h)
    lines = folder / "images.txt"
    if not lines.exists():
        raise OpenLSMError(f"COLMAP file not found: {lines}")
    Ks, c2ws, names = [], [], []
    # images.txt alternates pose lines and POINTS2D lines (which may be empty); keep the pose lines.
    raw = [ln for ln in lines.read_text().splitlines() if not ln.startswith("#")]
    for ln in raw[0::2]:
        p = ln.split()
        if not p:
            continue
        try:
            q = torch.tensor([float(v) for v in p[1:5]], dtype=torch.float64)
            t = torch.tensor([float(v) for v in p[5:8]], dtype=torch.float64)
            cid, name = p[8], " ".join(p[9:])
            K = intr[cid]
        except (IndexError, ValueError, KeyError):
            raise OpenLSMError(f"{lines}: malformed image line: {ln!r}") from None
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3], w2c[:3, 3] = quat_to_rotmat(q), t
        Ks.append(K)
        c2ws.append(invert_rigid(w2c).float())
        names.append(name)
    if not names:
        raise OpenLSMError(f"{lines} lists no images")
    size_set = {sizes[c] for c in intr}
    if len(size_set) != 1:
        raise OpenLSMError(f"{folder}: cameras of different image sizes are not supported")
    (w, h), = size_set
    return Cameras(torch.stack(Ks), torch.stack(c2ws), w, h), names


# --- cameras.json (ours: explicit about the convention) ----------------------------------------------------------

def write_cameras_json(path, cams: Cameras, names: list[str] | None = None) -> Path:
    cams = cams.flatten()
    doc = {"convention": "opencv", "pose": "camera_to_world", "width": cams.width, "height": cams.height,
           "cameras": [{"name": n, "K": cams.Ks[i].tolist(), "c2w": cams.c2w[i].tolist()}
                       for i, n in enumerate(_names(cams, names))]}
    return write_text_atomic(path, json.dumps(doc, indent=2))


def read_cameras_json(path) -> tuple[Cameras, list[str]]:
    doc = _read_json(path)
    if doc.get("convention", "opencv") != "opencv" or doc.get("pose", "camera_to_world") != "camera_to_world":
        raise OpenLSMError(f"{path}: expected convention 'opencv' and pose 'camera_to_world'")
    try:
        Ks = torch.tensor([c["K"] for c in doc["cameras"]], dtype=torch.float32)
        c2w = torch.tensor([c["c2w"] for c in doc["cameras"]], dtype=torch.float32)
        return Cameras(Ks, c2w, int(doc["width"]), int(doc["height"])), [c["name"] for c in doc["cameras"]]
    except (KeyError, TypeError, ValueError) as e:
        raise OpenLSMError(f"{path}: malformed cameras.json ({type(e).__name__}: {e})") from None
