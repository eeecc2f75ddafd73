"""`openlsm export OUT_DIR --format ply|splat|colmap|transforms --to PATH`: a saved scene for other tools.

    openlsm export out/room --format splat --to room.splat            # antimatter15 / SuperSplat viewers
    openlsm export out/room --format ply --to room.ply --no-semantics  # plain 3DGS PLY
    openlsm export out/room --format colmap --to room_colmap           # images/ + sparse/0/*.txt (3DGS training)
    openlsm export out/room --format transforms --to room_ns           # nerfstudio: transforms.json + images/

Files are written atomically, folders appear complete or not at all; an existing target needs --overwrite.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tyro

from ..errors import OpenLSMError


def write_points3d_text(path: Path, g, max_points: int) -> None:
    """COLMAP points3D.txt from the most opaque Gaussians (empty tracks): initial points for 3DGS training."""
    from ..cameras.io import write_text_atomic

    order = g.opacities.argsort(descending=True)[:max_points]
    xyz = g.means[order].double().tolist()
    rgb = (g.colors_dc[order] * 255).round().to(int).tolist()
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    lines += [f"{i + 1} {p[0]:.9g} {p[1]:.9g} {p[2]:.9g} {c[0]} {c[1]} {c[2]} 0" for i, (p, c) in
              enumerate(zip(xyz, rgb))]
    write_text_atomic(path, "\n".join(lines) + "\n")


@dataclass
class Export:
    """Export a saved scene as a 3DGS PLY, a .splat file, a COLMAP text model or a nerfstudio transforms.json."""

    scene: tyro.conf.Positional[Path]
    """Output folder of `openlsm reconstruct` / `openlsm demo`."""
    format: Literal["ply", "splat", "colmap", "transforms"]
    to: Path
    """Target file (ply, splat) or folder (colmap, transforms)."""
    overwrite: bool = False
    semantics: bool = True
    """ply: keep the semantic_* properties (--no-semantics for viewers that reject unknown properties)."""
    max_points: int = 100_000
    """colmap: at most this many Gaussians (most opaque first) as points3D."""

    def run(self) -> int:
        from ..cameras.io import write_colmap_text, write_transforms_json
        from ..gaussians import save_ply
        from ..gaussians.splat import save_splat
        from ..io.outputs import output_folder
        from ..scene import Scene

        if self.to.exists() and not self.overwrite:
            raise OpenLSMError(f"{self.to} already exists (pass --overwrite to replace it)")
        scene = Scene.load(self.scene)
        g = scene.gaussians
        if self.format in ("ply", "splat"):
            if self.to.is_dir():
                raise OpenLSMError(f"--to {self.to} is a folder; give a file name for --format {self.format}")
            try:
                self.to.parent.mkdir(parents=True, exist_ok=True)
                if self.format == "ply":
                    save_ply(self.to, g if self.semantics else replace(g, features=None))
                else:
                    save_splat(self.to, g)
            except OSError as e:
                raise OpenLSMError(f"cannot write {self.to}: {e.strerror or e}") from None
        else:
            cams = scene.cameras.flatten()
            files = [f"images/{i:04d}.png" for i in range(scene.num_views)]
            with output_folder(self.to, self.overwrite) as tmp:
                (tmp / "images").mkdir()
                for f in files:
                    shutil.copyfile(self.scene / f, tmp / f)
                if self.format == "colmap":
                    write_colmap_text(tmp / "sparse" / "0", cams, [Path(f).name for f in files])
                    write_points3d_text(tmp / "sparse" / "0" / "points3D.txt", g, self.max_points)
                else:
                    write_transforms_json(tmp / "transforms.json", cams, files)
        print(f"exported {len(g):,} Gaussians and {scene.num_views} cameras as {self.format} to {self.to}")
        return 0
