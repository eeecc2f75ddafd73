"""Viewer start-up benchmark on an output folder of 131k pixel-aligned Gaussians (two 256² views, 64-d features).

    python bench/bench_viewer.py                  # start-up in-process and as a fresh `openlsm view` process
    python bench/bench_viewer.py --browser        # + time to the first drawn frame in headless Chromium
    python bench/bench_viewer.py --modes          # + time per colour mode (loads MiniLM once)
Prints one JSON line per measurement. CPU only: the viewer never uses a GPU (the browser draws the splats).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_render import pixel_aligned_scene
from safetensors.torch import save_file

from openlsm.cameras import Cameras, look_at
from openlsm.cameras.io import write_cameras_json
from openlsm.gaussians import save_ply
from openlsm.viewer import start_viewer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def write_folder(folder: Path, res: int) -> int:
    gs, _ = pixel_aligned_scene(res)
    folder.mkdir(parents=True)
    save_ply(folder / "gaussians.ply", gs)
    eyes = torch.tensor([[-0.2, 0.0, 0.0], [0.2, 0.0, 0.0]])
    c2w = look_at(eyes, torch.tensor([[0.0, 0.0, 3.0]] * 2), torch.tensor([0.0, -1.0, 0.0]))
    write_cameras_json(folder / "cameras.json", Cameras.from_fov(60, res, res, c2w))
    g = torch.Generator().manual_seed(0)
    save_file({"W": torch.randn(384, 64, generator=g) / 8, "b": torch.zeros(384)}, str(folder / "feature_map.safetensors"))
    return len(gs)


def emit(**kw) -> None:
    print(json.dumps({"machine": platform.node(), "threads": torch.get_num_threads(), **kw}), flush=True)


def cold_start(folder: Path) -> float:
    """Seconds from launching a fresh Python process running `openlsm view` to its printed link."""
    code = ("import sys; from openlsm.cli.view import View; "
            "View(folder=__import__('pathlib').Path(sys.argv[1]), port=0).run()")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("openlsm viewer: http://"):
                return time.perf_counter() - t0
        raise RuntimeError("`openlsm view` exited without printing its link")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def first_frame(url: str, timeout: float = 120.0) -> dict:
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", args=FLAGS,
                                                   headless=True, viewport={"width": 1000, "height": 700})
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url, wait_until="load")
        page.wait_for_selector("canvas")
        t_canvas = time.perf_counter() - t0
        while time.perf_counter() - t0 < timeout:  # the scene is drawn once the middle is not background
            img = np.asarray(Image.open(__import__("io").BytesIO(page.screenshot(timeout=120_000))).convert("RGB"))
            if (np.abs(img[250:450, 300:700].astype(int) - 255).sum(-1) > 60).mean() > 0.5:
                break
        t_frame = time.perf_counter() - t0
        ctx.close()
    return {"canvas_s": round(t_canvas, 3), "first_frame_s": round(t_frame, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=256, help="views are res x res: 2 res² Gaussians")
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--modes", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "out"
        n = write_folder(folder, args.res)
        v = start_viewer(folder, port=0)
        emit(what="start_viewer (in-process: load + server + splats)", gaussians=n, seconds=round(v.startup_s, 3))
        try:
            if args.browser and os.path.exists("/usr/bin/chromium"):
                emit(what="headless chromium (SwiftShader, no GPU)", gaussians=n, **first_frame(v.url))
            if args.modes:
                t0 = time.perf_counter()
                v.encoder()
                emit(what="MiniLM text encoder load", seconds=round(time.perf_counter() - t0, 3))
                for mode in ("Feature PCA", "Semantic class", "Text query", "RGB"):
                    t0 = time.perf_counter()
                    v.set_mode(mode)
                    emit(what=f"colour mode {mode}", gaussians=n, seconds=round(time.perf_counter() - t0, 3),
                         error=v.error)
        finally:
            v.stop()
        emit(what="`openlsm view` fresh process to printed link", gaussians=n, seconds=round(cold_start(folder), 3))


if __name__ == "__main__":
    main()
