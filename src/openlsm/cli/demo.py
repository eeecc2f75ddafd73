"""`openlsm demo`: the README's first command.

Until the shipped LSM weights land, the demo exercises the rendering stack end to end: it builds a small
procedural Gaussian scene (a checkered floor and three coloured spheres, with 8-d "semantic" features),
writes it as a standard 3DGS PLY, and renders an orbit video with RGB and depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Demo:
    """Run the bundled example end to end and write the results to --out."""

    out: Path = Path("openlsm-demo")
    """Output folder (refused if it exists, unless --overwrite)."""
    frames: int = 30
    size: int = 192
    device: Literal["auto", "cpu", "cuda"] = "auto"
    overwrite: bool = False

    def run(self) -> int:
        import time

        from rich.console import Console

        from openlsm.gaussians import save_ply
        from openlsm.io.outputs import output_folder
        from openlsm.render.demo_scene import demo_scene

        console = Console(stderr=True)
        t0 = time.perf_counter()
        g = demo_scene()
        with output_folder(self.out, self.overwrite) as tmp:
            save_ply(tmp / "gaussians.ply", g)
        t1 = time.perf_counter()
        from .render import Render

        Render(scene=self.out / "gaussians.ply", out=self.out / "renders", frames=self.frames, width=self.size,
               height=self.size, device=self.device).run()
        t2 = time.perf_counter()
        console.print(f"[bold]openlsm demo[/bold]: {len(g)} Gaussians -> {self.out}/gaussians.ply "
                      f"({t1 - t0:.1f} s); {self.frames} views -> {self.out}/renders ({t2 - t1:.1f} s)")
        return 0
