"""`openlsm synth`: write SynthRooms scenes to disk in the ScanNet-like processed layout.

    openlsm synth --out data/synth_val --scenes 20 --split val --preview
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Synth:
    """Generate procedural rooms and write colour, depth, labels, instances and cameras per frame."""

    out: Path
    """Output folder (one sub-folder per scene)."""
    scenes: int = 1
    """Number of scenes to write."""
    split: Literal["train", "val", "test"] = "val"
    """Seed range to draw scenes from (ranges never overlap)."""
    start: int = 0
    """Index of the first scene within the split."""
    samples_per_scene: int = 1
    """k-view samples (camera draws) per scene; frames are numbered consecutively."""
    views: int = 3
    """Views per sample (two inputs + targets)."""
    height: int = 256
    width: int = 256
    supersample: int = 2
    """RGB samples per pixel side (1 = off)."""
    shadows: bool = True
    """Hard shadows via shadow rays."""
    preview: bool = False
    """Also write preview.png, a contact sheet (colour | depth | labels | instances)."""
    overwrite: bool = False
    """Write into an existing output folder."""
    device: str = "cpu"
    """Torch device for ray casting."""

    def run(self) -> int:
        import time

        import torch

        from ..data.synthrooms import RenderConfig, SynthConfig, make_sample, split_seed
        from ..data.synthrooms.disk import contact_sheet, write_frames, write_json, write_labels_json
        from ..errors import OpenLSMError
        from ..io.outputs import dump_config, output_folder

        if self.scenes < 1 or self.samples_per_scene < 1 or self.views < 1:
            raise OpenLSMError("--scenes, --samples-per-scene and --views must be >= 1")
        if self.height < 8 or self.width < 8 or self.supersample < 1:
            raise OpenLSMError("image size must be >= 8 and --supersample >= 1")
        seeds = [split_seed(self.split, self.start + i) for i in range(self.scenes)]  # validates the range
        try:
            device = torch.device(self.device)
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as e:
            raise OpenLSMError(f"device {self.device!r} is not usable: {e}") from None
        cfg = SynthConfig(self.height, self.width, self.views,
                          render=RenderConfig(supersample=self.supersample, shadows=self.shadows))
        previews, t0 = [], time.perf_counter()
        with output_folder(self.out, self.overwrite) as out:  # appears complete or not at all
            dump_config(out / "config.yaml", command=self, config=cfg)
            write_labels_json(out)
            for seed in seeds:
                scene_dir = out / f"synth_{seed:08d}"
                samples = []
                for k in range(self.samples_per_scene):
                    s = make_sample(seed, cfg, epoch=k, device=device)
                    frames = write_frames(scene_dir, s, start=k * self.views)
                    samples.append({"frames": frames, "covisibility": float(s["covisibility"])})
                    if self.preview and len(previews) < 8:
                        previews.append(s)
                write_json(scene_dir / "samples.json", {"scene_seed": seed, "samples": samples})
            if self.preview:
                contact_sheet(previews, out / "preview.png")
        dt = time.perf_counter() - t0
        print(f"wrote {len(seeds)} scene(s) x {self.samples_per_scene * self.views} frames to {self.out} in {dt:.1f}s")
        return 0

