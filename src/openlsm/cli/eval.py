"""`openlsm eval`: the paper's metrics on a test split, with baselines side by side.

    openlsm eval --checkpoint ckpt.pth --data synthrooms:test --scenes 40 --out eval --baselines a,c
    openlsm eval --preset tiny --scenes 2 --resolution 64 --out /tmp/eval      # random weights (smoke test)

Writes OUT/metrics.json (per scene, mean ± std, pooled segmentation, held-out synonym queries, device, versions,
git commit, config) and prints a short table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Eval:
    """Evaluate LSM (and baselines) on a test split: mIoU/Acc, depth AbsRel/τ, PSNR/SSIM, time, FPS, pose.

    Target PSNR is reported on the whole image and on the pixels the two inputs see (GT depth reprojection, 5 %
    tolerance): the rest of a target view cannot be reconstructed, only hallucinated."""

    checkpoint: Path | None = None
    """LSM weights (official .pth, trainer checkpoint, .safetensors or a saved model folder)."""
    preset: Literal["tiny", "small", "paper"] | None = None
    """Model size; alone it means random weights (smoke tests), with --checkpoint the architecture to load into."""
    data: str = "synthrooms:test"
    """synthrooms[:split], or a loader spec such as scannet-test:data/scannet_test (its test split)."""
    scenes: int = 10
    out: Path = Path("eval")
    """Output folder (refused if it exists, unless --overwrite)."""
    resolution: int = 256
    """Square image size (a multiple of 16)."""
    views: int = 3
    """Views per scene: 0 and 1 are the inputs, the rest targets."""
    class_names: tuple[str, ...] = ()
    """Classes to score (default: every dataset class except void); other pixels are ignored."""
    text_encoder: Literal["auto", "minilm", "clip", "table", "random"] = "auto"
    """Text space of the class queries (auto: LSeg's CLIP, else --text-table, else MiniLM for 384-d features,
    else random)."""
    text_table: Path | None = None
    """Precomputed text embeddings (`openlsm train-semantics --write-text-table`), for machines without MiniLM."""
    baselines: str = ""
    """Comma-separated: a = per-scene 3DGS from GT-posed inputs, b = pycolmap SfM poses, c = 2D extractor only."""
    gs_steps: int = 1000
    """Optimisation steps of baseline a."""
    gs_init: Literal["depth", "random"] = "depth"
    """Baseline a starts from the unprojected GT depth of the inputs or from random points."""
    gs_features: bool = True
    """Baseline a also distils the 2D extractor's features (Feature-3DGS style), giving it mIoU scores."""
    render_repeats: int = 3
    """Timed renders per scene for the render FPS."""
    pose: bool = True
    """Recover cameras from the point maps and report the pose error."""
    feature_fit: int | None = None
    """Override the model's feature-fit steps (0: off; default: the weights' config). The fit goes through the
    cameras recovered from the point maps, never the ground truth, and its time counts as reconstruction."""
    color_fit: int | None = None
    """Override the model's colour-fit steps (0: off; default: the weights' config); as --feature-fit."""
    refine: int | None = None
    """Override the model's refinement steps (0: off; default: the weights' config); as --feature-fit."""
    lpips_weights: Path | None = None
    """LPIPS-VGG weights: torchvision's vgg16 file (with --lpips-linear) or one full LPIPS state dict. Without
    them LPIPS is reported unavailable (never approximated)."""
    lpips_linear: Path | None = None
    """The LPIPS linear layers (the lpips package's weights/v0.1/vgg.pth)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    overwrite: bool = False

    def run(self) -> int:
        from rich.console import Console

        from openlsm.errors import OpenLSMError
        from openlsm.eval.baselines import GaussianFitConfig
        from openlsm.eval.harness import EvalConfig, evaluate, parse_baselines, print_table, write_metrics
        from openlsm.io.outputs import output_folder

        if self.resolution % 16:
            raise OpenLSMError(f"--resolution must be a multiple of 16, got {self.resolution}")
        if self.out.exists() and not self.overwrite:  # fail before the (long) evaluation, not after
            raise OpenLSMError(f"output folder {self.out} already exists (pass --overwrite to replace it)")
        cfg = EvalConfig(checkpoint=self.checkpoint, preset=self.preset, data=self.data, scenes=self.scenes,
                         resolution=self.resolution, views=self.views, class_names=tuple(self.class_names),
                         text_encoder=self.text_encoder, text_table=self.text_table, baselines=parse_baselines(self.baselines),
                         gs=GaussianFitConfig(steps=self.gs_steps, init=self.gs_init), gs_features=self.gs_features,
                         render_repeats=self.render_repeats, recover_pose=self.pose, feature_fit=self.feature_fit,
                         color_fit=self.color_fit, refine=self.refine,
                         lpips_weights=self.lpips_weights, lpips_linear=self.lpips_linear,
                         backend=self.backend, device=self.device, seed=self.seed)
        console = Console(stderr=True)
        result = evaluate(cfg, log=lambda msg: console.print(msg, highlight=False))
        with output_folder(self.out, self.overwrite) as tmp:
            write_metrics(result, tmp / "metrics.json")
        print_table(result, Console())
        console.print(f"metrics written to {self.out / 'metrics.json'}")
        return 0
