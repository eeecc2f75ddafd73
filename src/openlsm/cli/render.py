"""`openlsm render SCENE.ply`: images, depth maps and a video of a Gaussian scene along a camera path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class Render:
    """Render a 3DGS PLY file (ours or any standard one) along a camera path."""

    scene: tyro.conf.Positional[Path]
    """Gaussian scene (.ply, standard 3DGS layout), or a folder written by `openlsm reconstruct` (its
    gaussians.ply, with its cameras.json as the default key cameras)."""
    out: Path = Path("renders")
    """Output folder (refused if it exists, unless --overwrite)."""
    cameras: Path | None = None
    """Key cameras: cameras.json, nerfstudio transforms.json or a COLMAP text folder. Default: around the scene."""
    path: Literal["orbit", "spiral", "interpolate", "keyframes"] = "orbit"
    """Camera path through/around the key cameras ('keyframes' renders exactly the given cameras)."""
    frames: int = 60
    width: int = 256
    height: int = 256
    fov: float = 60.0
    """Horizontal field of view in degrees, when no camera file is given."""
    video: bool = True
    """Also write rgb.mp4 and depth.mp4."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    overwrite: bool = False

    def run(self) -> int:
        import torch
        from rich.console import Console

        from openlsm.cameras import Cameras
        from openlsm.cameras.io import write_cameras_json
        from openlsm.gaussians import load_ply
        from openlsm.io.outputs import (
            colorize,
            dump_config,
            output_folder,
            save_depth_png16,
            save_png,
            save_video,
            to_uint8,
        )
        from openlsm.render import render
        from openlsm.render.views import default_cameras, load_key_cameras, make_path
        from openlsm.runtime import pick_device

        device = pick_device(self.device)
        ply, key_file = self.scene, self.cameras
        if self.scene.is_dir():
            ply = self.scene / "gaussians.ply"
            if key_file is None and (self.scene / "cameras.json").is_file():
                key_file = self.scene / "cameras.json"
        g = load_ply(ply).to(device)
        keys = load_key_cameras(key_file) if key_file else default_cameras(g, self.fov, self.width,
                                                                                   self.height)
        keys = keys.rescale(self.width, self.height) if key_file else keys
        c2ws = keys.c2w if self.path == "keyframes" else make_path(keys.c2w, self.path, self.frames)
        cams = Cameras(keys.Ks[:1].expand(len(c2ws), 3, 3), c2ws, self.width, self.height).to(device)
        console = Console(stderr=True)
        rgbs, depths = [], []
        with output_folder(self.out, self.overwrite) as tmp:
            for i in range(len(c2ws)):
                with torch.no_grad():
                    o = render(g, cams[i], backend=self.backend, with_features=False)
                rgbs.append(to_uint8(o.rgb))
                depths.append(colorize(o.depth, valid=o.alpha > 0.5))
                save_png(tmp / "rgb" / f"{i:04d}.png", rgbs[-1])
                save_depth_png16(tmp / "depth" / f"{i:04d}.png", torch.where(o.alpha > 0.5, o.depth, 0))
            if self.video and len(rgbs) > 1:
                save_video(tmp / "rgb.mp4", rgbs)
                save_video(tmp / "depth.mp4", depths)
            write_cameras_json(tmp / "cameras.json", cams.to("cpu"))
            dump_config(tmp / "config.yaml", command=self)
        console.print(f"rendered {len(rgbs)} views of {len(g)} Gaussians to {self.out}")
        return 0
