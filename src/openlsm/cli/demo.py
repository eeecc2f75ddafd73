"""`openlsm demo`: the README's first command. Reconstructs a bundled example pair with the shipped weights and
writes the full output folder (the same one `openlsm reconstruct` writes), then prints a short summary.

    openlsm demo                              # first bundled example -> ./openlsm-demo
    openlsm demo --example armchairs --video orbit
    openlsm demo --list-examples
    openlsm demo --regenerate-synth-example   # re-render the SynthRooms pair into the package's examples

Without shipped weights (or --checkpoint) it still runs every stage with random `tiny` weights, after one
warning line saying that the results are meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_RESOLUTION, FALLBACK_RESOLUTION = 256, 128
RANDOM_WEIGHTS_NOTE = ("no trained weights in this install (and no --checkpoint): using random tiny weights, "
                       "so the results are meaningless; only the pipeline is shown")


@dataclass
class Demo:
    """Reconstruct a bundled example image pair end to end and write the results to --out."""

    example: str = "auto"
    """Bundled example to run (see --list-examples); 'auto' takes the first one."""
    out: Path = Path("openlsm-demo")
    """Output folder (refused if it exists, unless --overwrite)."""
    overwrite: bool = False
    checkpoint: Path | None = None
    """LSM weights to use instead of the shipped ones."""
    labels: str | None = None
    """Comma-separated class names. Default: the SynthRooms classes."""
    threshold: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    video: Literal["interpolate", "orbit", "none"] = "interpolate"
    frames: int = 16
    """Video frames (rendering them is the slowest part on a CPU)."""
    video_size: int = 0
    """Longest side of each video pane; 0: the model resolution on a GPU, at most 128 px on a CPU."""
    resolution: int | None = None
    """Model resolution (square, multiple of 16). Default: 256 with trained weights, 128 with random ones."""
    seed: int = 0
    feature_fit: int | None = None
    """Conjugate-gradient steps of the feature fit (the Gaussians' features refitted so the input views render
    back their own pixels' features; ~7 s on a 2-core CPU at 8 steps with the [cpu] extra, ~13 s without, 0.3 s
    on an H100). 0: off. Default: the weights' config."""
    color_fit: int | None = None
    """Conjugate-gradient steps of the colour fit (the Gaussians' colours refitted so the input views render back
    the input images: sharper renders near the inputs). 0: off. Default: the weights' config."""
    refine: int | None = None
    """Adam steps of the test-time refinement (opacities, scales and colours fitted to the input views; ~10 ms a
    step on a GPU, ~0.9 s on a 2-core CPU with the [cpu] extra, ~13 s and ~6 GB without). 0: off. Default: the
    weights' config."""
    quiet: bool = False
    list_examples: bool = False
    """Print the bundled examples and exit."""
    regenerate_synth_example: bool = False
    """Re-render the SynthRooms test pair into the installed examples folder and exit."""

    def run(self) -> int:
        from ..examples import (
            default_example,
            example_images,
            ground_truth,
            list_examples,
            write_synth_example,
        )
        from ..reconstruct import shipped_weights
        from .reconstruct import run_reconstruct

        if self.regenerate_synth_example:
            print(f"wrote {write_synth_example()}")
            return 0
        if self.list_examples:
            for name, paths in list_examples().items():
                print(f"{name}: {', '.join(p.name for p in paths)}")
            return 0
        name = default_example() if self.example == "auto" else self.example
        images = example_images(name)
        fallback = self.checkpoint is None and shipped_weights() is None
        resolution = self.resolution or (FALLBACK_RESOLUTION if fallback else DEFAULT_RESOLUTION)
        rc = run_reconstruct(self, images, self.checkpoint, default_labels=True, fallback=fallback,
                             note=RANDOM_WEIGHTS_NOTE if fallback else None, resolution=resolution)
        gt = ground_truth(name)
        if gt is not None and not self.quiet:
            print_ground_truth(gt, self.out)
        return rc


def print_ground_truth(gt: dict, out: Path) -> None:
    """Ground-truth focal and relative rotation of a synthetic example, next to the estimate."""
    import json
    import math

    import torch

    c2w = torch.tensor(gt["c2w"], dtype=torch.float64)
    rel = torch.linalg.inv(c2w[0]) @ c2w[1]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(rel[:3, :3].trace()) - 1) / 2))))
    summary = json.loads((out / "summary.json").read_text())
    est = summary["cameras"]
    focal = gt["Ks"][0][0][0] * summary["inputs"][0]["scale"][0]  # at the model resolution
    pose = est["views_in_view0"][0] if est["views_in_view0"] else {"rotation_deg": float("nan")}
    print(f"ground truth: focal {focal:.1f} px (estimated {est['focal_px'][0]:.1f}), view 2 rotated "
          f"{angle:.1f} deg (estimated {pose['rotation_deg']:.1f})")
