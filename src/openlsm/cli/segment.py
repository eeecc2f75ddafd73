"""`openlsm segment OUT_DIR --labels ... | --query "text"`: open-vocabulary queries on a saved reconstruction.

    openlsm segment out/room --labels sofa,table,lamp          # -> out/room/segment-sofa-table-lamp/
    openlsm segment out/room --query "something to sit on"     # -> out/room/query-something-to-sit-on/

Results go to a new sub-folder of the scene folder, written atomically (complete or absent): per-input label
maps (or relevancy heat maps), a legend, per-Gaussian values, and a PLY coloured by the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import tyro

from ..errors import OpenLSMError


def slug(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s[:limit].rstrip("-") or "query")


def colored_gaussians(g, colors):
    """Degree-0 Gaussians whose colour is `colors` [N, 3] in [0, 1] (features dropped), for any 3DGS viewer."""
    from ..gaussians import rgb_to_sh0

    return replace(g, sh=rgb_to_sh0(colors.clamp(0, 1))[:, None, :].to(g.sh), features=None)


@dataclass
class Segment:
    """Label a saved scene with class names, or score it against a free-text query."""

    scene: tyro.conf.Positional[Path]
    """Output folder of `openlsm reconstruct` / `openlsm demo`."""
    labels: str | None = None
    """Comma-separated class names, e.g. sofa,table,lamp."""
    query: str | None = None
    """Free text; writes LERF-style relevancy maps (against the canonical negatives object/things/stuff/texture)."""
    threshold: float = 0.0
    """--labels: pixels whose best probability is below this are 'other'."""
    name: str | None = None
    """Sub-folder name. Default: segment-<labels> or query-<text>."""
    overwrite: bool = False
    """Replace an existing sub-folder of the same name."""
    text_weights: Path | None = None
    """CLIP / LSeg checkpoint, for scenes whose features live in CLIP space (the official LSM)."""
    quiet: bool = False

    def run(self) -> int:
        import torch

        from ..gaussians import save_ply
        from ..io.outputs import colorize, output_folder
        from ..scene import Scene
        from ..scene_io import write_relevancy, write_segmentation
        from .reconstruct import parse_labels

        if (self.labels is None) == (self.query is None):
            raise OpenLSMError("give exactly one of --labels and --query")
        labels = parse_labels(self.labels) if self.labels is not None else None
        if self.labels is not None and not labels:
            raise OpenLSMError("--labels is empty")
        if self.query is not None and not self.query.strip():
            raise OpenLSMError("--query is empty")
        if not 0.0 <= self.threshold <= 1.0:
            raise OpenLSMError(f"--threshold must be in [0, 1], got {self.threshold}")
        name = self.name or (f"segment-{slug('-'.join(labels))}" if labels else f"query-{slug(self.query)}")
        if "/" in name or name in (".", "..") or not name.strip():
            raise OpenLSMError(f"--name must be a plain folder name, got {name!r}")
        scene = Scene.load(self.scene)
        out = self.scene / name
        if out.exists() and not self.overwrite:
            raise OpenLSMError(f"{out} already exists (pass --overwrite to replace it, or --name)")
        encoder = None
        if self.text_weights is not None:
            from ..models.semantics.text import get_text_encoder

            encoder = get_text_encoder("clip", weights=self.text_weights)
        with output_folder(out, self.overwrite) as tmp:
            if labels:
                seg = scene.segment(labels, self.threshold, encoder=encoder)
                write_segmentation(tmp, seg, self.threshold)
                save_ply(tmp / "labelled.ply", colored_gaussians(scene.gaussians, seg.colors()))
                report = ", ".join(f"{k} {100 * v:.0f}%" for k, v in seg.fractions().items() if v >= 0.005)
            else:
                rel = scene.relevancy(self.query, encoder=encoder)
                write_relevancy(tmp, rel)
                heat = torch.from_numpy(colorize(rel.gaussians[None], lo=0.5, hi=1.0)[0]).float() / 255
                save_ply(tmp / "relevancy.ply", colored_gaussians(scene.gaussians, heat))
                share = float((rel.views > 0.5).float().mean())
                report = f"{100 * share:.1f}% of input pixels more relevant than the negatives " \
                         f"(max {float(rel.gaussians.max()):.3f})"
        print(str(out) if self.quiet else f"{out}: {report}")
        return 0
