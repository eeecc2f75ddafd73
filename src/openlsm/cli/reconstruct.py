"""`openlsm reconstruct IMG1 IMG2`: two photos -> Gaussians, cameras, depth, semantics and a video in one folder.

    openlsm reconstruct a.jpg b.jpg --labels wall,floor,chair --out out/room
    openlsm reconstruct a.jpg b.jpg --checkpoint runs/lsm_small --video orbit --device cuda

The output folder appears complete or not at all (written to a temporary folder, renamed at the end).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from ..errors import OpenLSMError

CPU_VIDEO_SIZE = 128  # px; measured ~2 CPU-s per 160 px frame of 131k Gaussians with the torch rasteriser
STAGE_NAMES = {"preprocess": "preprocessing images", "forward": "running the model",
               "camera_recovery": "recovering cameras", "refine": "refining the Gaussians",
               "color_fit": "fitting colours to the views",
               "feature_fit": "fitting features to the views", "semantic_decode": "decoding semantics",
               "save": "writing files and the video"}


def parse_labels(text: str | None) -> list[str] | None:
    """'wall, floor,chair' -> ['wall', 'floor', 'chair']; '' or None -> None."""
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names and text.strip():
        raise OpenLSMError(f"--labels {text!r} names no label (use comma-separated names)")
    if len(set(names)) != len(names):
        raise OpenLSMError(f"--labels lists a name twice: {text!r}")
    return names or None


def check_output(out: Path, overwrite: bool) -> None:
    """Fail before the expensive work, not after it."""
    if out.exists() and not overwrite:
        raise OpenLSMError(f"output folder {out} already exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise OpenLSMError(f"output path {out} exists and is not a folder")


class Reporter:
    """Stage messages on stderr (a rich status spinner), silent with --quiet."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True)
        self.status = None

    def __enter__(self):
        if not self.quiet:
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def stage(self, name: str) -> None:
        if self.status is not None:
            self.status.update(f"{STAGE_NAMES.get(name, name)}...")

    def warn(self, message: str) -> None:
        print(f"openlsm: warning: {message}", file=sys.stderr, flush=True)  # one line, never wrapped

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.__exit__(*exc)
        return False


def print_summary(scene, out: Path, quiet: bool) -> None:
    """Where the result is, and what was found (stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    if quiet:
        console.print(str(out), highlight=False)
        return
    s = scene.summary()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("output", str(out))
    t = scene.timings
    table.add_row("time", ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in t.items())
                  + f" (total {sum(t.values()):.1f} s)")
    table.add_row("Gaussians", f"{s['num_gaussians']:,} at {s['resolution'][0]}x{s['resolution'][1]}")
    cams = s["cameras"]
    fov = cams["fov_x_deg"]
    table.add_row("focal", ", ".join(f"{f:.1f} px" + (f" ({v:.1f} deg fov)" if v else "")
                                     for f, v in zip(cams["focal_px"], fov)))
    for i, p in enumerate(cams["views_in_view0"], 1):
        table.add_row(f"pose of view {i + 1}", f"rotated {p['rotation_deg']:.1f} deg, baseline {p['baseline']:.3f} "
                      f"(t = {', '.join(f'{v:+.3f}' for v in p['translation'])}) in view 1's frame")
    if s["labels_found"]:
        table.add_row("labels found", ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["labels_found"].items()))
    console.print(table)


@dataclass
class Reconstruct:
    """Reconstruct semantic 3D Gaussians and cameras from two photos of one scene."""

    images: tyro.conf.Positional[tuple[Path, ...]]
    """The two input photos (any size, aspect or common format)."""
    checkpoint: Path | None = None
    """LSM weights: an openlsm model folder (model.safetensors + config.json) or an official .pth. Default: shipped."""
    labels: str | None = None
    """Comma-separated class names for the label maps, e.g. wall,floor,chair. Default: the SynthRooms classes."""
    threshold: float = 0.0
    """Pixels whose best label probability is below this are labelled 'other'."""
    out: Path = Path("openlsm-out")
    """Output folder (refused if it exists, unless --overwrite)."""
    overwrite: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    video: Literal["interpolate", "orbit", "none"] = "interpolate"
    """Novel-view video of RGB, depth and semantics side by side."""
    frames: int = 30
    """Video frames."""
    video_size: int = 0
    """Longest side of each video pane; 0: the model resolution on a GPU, at most 128 px on a CPU."""
    resolution: int = 256
    """Model resolution: images are resized (shorter side) and centre-cropped to this square (multiple of 16)."""
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
    """Print only the output folder (and errors)."""

    def run(self) -> int:
        return run_reconstruct(self, self.images, self.checkpoint, default_labels=True)


def run_reconstruct(cmd, images, checkpoint, default_labels: bool, fallback: bool = False,
                    note: str | None = None, resolution: int | None = None) -> int:
    """Shared by `reconstruct` and `demo`: validate everything cheap first, then load, run and write."""
    import time

    import torch

    from ..io.images import load_images, parse_size
    from ..io.outputs import output_folder
    from ..models.semantics.vocab import CLASSES
    from ..reconstruct import fallback_config, load_lsm, reconstruct, set_view_fits
    from ..runtime import pick_device

    if len(images) != 2:
        raise OpenLSMError(f"reconstruct takes exactly two images, got {len(images)}")
    if cmd.frames < 2 and cmd.video != "none":
        raise OpenLSMError(f"--frames must be at least 2 for a video, got {cmd.frames}")
    for flag, steps in (("--feature-fit", cmd.feature_fit), ("--color-fit", cmd.color_fit), ("--refine", cmd.refine)):
        if steps is not None and steps < 0:
            raise OpenLSMError(f"{flag} must be >= 0 (0: off), got {steps}")
    labels = parse_labels(cmd.labels)
    strict = labels is not None
    if labels is None and default_labels:
        labels = list(CLASSES)
    size = parse_size(resolution or cmd.resolution)
    device = pick_device(cmd.device)
    check_output(cmd.out, cmd.overwrite)
    t0 = time.perf_counter()
    prepared = load_images(list(images), size)  # bad images fail here, before the model is loaded
    t_images = time.perf_counter() - t0
    with Reporter(cmd.quiet) as rep:
        if note:
            rep.warn(note)
        t0 = time.perf_counter()
        if fallback:
            from ..models.lsm.model import LSM

            torch.manual_seed(cmd.seed)
            model = LSM(fallback_config()).to(device).eval()
        else:
            rep.stage("loading the model")
            model = load_lsm(checkpoint, device)
        set_view_fits(model, cmd.feature_fit, cmd.color_fit, cmd.refine)
        t_model = time.perf_counter() - t0

        def run_into(tmp: Path):
            scene = reconstruct(model, prepared, labels, device=device, threshold=cmd.threshold,
                                strict_labels=strict, seed=cmd.seed, progress=rep.stage)
            scene.timings = {"load_model": t_model, **scene.timings}
            scene.timings["preprocess"] = scene.timings.get("preprocess", 0.0) + t_images  # decoded before loading
            for w in [] if fallback else scene.info.get("warnings", []):  # random weights: one warning is enough
                rep.warn(w)
            if fallback:
                scene.info["warnings"].append("random weights: results are meaningless")
            scene.info["model"]["checkpoint"] = None if fallback else str(checkpoint or "shipped")
            rep.stage("save")
            video_size = cmd.video_size or (None if device.type == "cuda" else min(CPU_VIDEO_SIZE, max(size)))
            scene.write(tmp, video=cmd.video, frames=cmd.frames, video_size=video_size,
                        extra_config={"command": cmd})
            return scene

        try:
            with output_folder(cmd.out, cmd.overwrite) as tmp:  # created now: an unwritable location fails early
                scene = run_into(tmp)
        except OSError as e:  # e.g. disk full while writing; output_folder has removed the partial folder
            raise OpenLSMError(f"cannot write {cmd.out}: {e.strerror or e}") from None
    print_summary(scene, cmd.out, cmd.quiet)
    return 0
