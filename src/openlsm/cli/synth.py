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
        import dataclasses
        import time

        import torch
        import yaml

        from ..data.synthrooms import RenderConfig, SynthConfig, make_sample, split_seed
        from ..data.synthrooms.disk import (
            _atomic_bytes,
            contact_sheet,
            write_frames,
            write_json,
            write_labels_json,
        )
        from ..errors import OpenLSMError

        if self.scenes < 1 or self.samples_per_scene < 1 or self.views < 1:
            raise OpenLSMError("--scenes, --samples-per-scene and --views must be >= 1")
        if self.height < 8 or self.width < 8 or self.supersample < 1:
            raise OpenLSMError("image size must be >= 8 and --supersample >= 1")
        out = Path(self.out)
        if out.exists() and not self.overwrite:
            raise OpenLSMError(f"{out} exists; pass --overwrite to write into it")
        seeds = [split_seed(self.split, self.start + i) for i in range(self.scenes)]  # validates the range
        try:
            device = torch.device(self.device)
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as e:
            raise OpenLSMError(f"device {self.device!r} is not usable: {e}") from None
        out.mkdir(parents=True, exist_ok=True)
        cfg = SynthConfig(self.height, self.width, self.views,
                          render=RenderConfig(supersample=self.supersample, shadows=self.shadows))
        meta = {"command": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()},
                "config": dataclasses.asdict(cfg)}
        _atomic_bytes(out / "config.yaml", yaml.safe_dump(_plain(meta), sort_keys=False).encode())
        write_labels_json(out)
        previews, t0 = [], time.perf_counter()
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
        print(f"wrote {len(seeds)} scene(s) x {self.samples_per_scene * self.views} frames to {out} in {dt:.1f}s")
        return 0


def _plain(x):
    """Tuples -> lists so yaml.safe_dump accepts the config."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
